"""Reading lake files (metadata JSON, Avro manifests, Parquet) by location, for the read path.

Local warehouses (`file://` URIs or plain paths) are read directly, any other scheme (s3://, gs://, ...) through
pyarrow's filesystems, which take their credentials from the environment. Writers use pyiceberg's FileIO instead.

Parquet is always read from a pyarrow native file, never a Python file object: Arrow's I/O threads would call back
into Python for every read, and a call still in flight when the interpreter exits aborts the process ("terminate
called without an active exception": a thread that asks for the GIL during finalization is ended by pthread_exit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

_FILE_SCHEME = "file://"


def local_path(location: str) -> str | None:
    """The filesystem path of a local location (None: a remote one)."""
    if location.startswith(_FILE_SCHEME):
        return location[len(_FILE_SCHEME):]
    return None if "://" in location else location


def open_input(location: str) -> pa.NativeFile:
    """The file as a pyarrow native file (for Parquet readers)."""
    import pyarrow as pa
    from pyarrow import fs

    path = local_path(location)
    if path is not None:
        return pa.OSFile(path, "rb")
    filesystem, remote = fs.FileSystem.from_uri(location)
    return filesystem.open_input_file(remote)


def read_bytes(location: str) -> bytes:
    """The whole file (metadata JSON, manifests: small)."""
    path = local_path(location)
    if path is not None:
        with open(path, "rb") as stream:
            return stream.read()
    with open_input(location) as native:
        return bytes(native.read())
