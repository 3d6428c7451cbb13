"""Reading lake files (metadata JSON, Avro manifests, Parquet) by location, for the read path.

Local warehouses (`file://` URIs or plain paths) are read with the standard library; any other scheme (s3://,
gs://, ...) goes through pyarrow's filesystems, which take their credentials from the environment. Writers use
pyiceberg's FileIO instead.
"""

from __future__ import annotations

from typing import BinaryIO

_FILE_SCHEME = "file://"


def local_path(location: str) -> str | None:
    """The filesystem path of a local location (None: a remote one)."""
    if location.startswith(_FILE_SCHEME):
        return location[len(_FILE_SCHEME):]
    return None if "://" in location else location


def open_input(location: str) -> BinaryIO:
    path = local_path(location)
    if path is not None:
        return open(path, "rb")
    from pyarrow import fs

    filesystem, remote = fs.FileSystem.from_uri(location)
    stream: BinaryIO = filesystem.open_input_file(remote)
    return stream


def read_bytes(location: str) -> bytes:
    with open_input(location) as stream:
        return stream.read()
