"""Reading lake files (metadata JSON, Avro manifests, Parquet) by location, for the read path.

Local warehouses (`file://` URIs or plain paths) are read directly, s3:// through pyarrow's S3 filesystem with the
endpoint and keys of the settings (`use_object_store`, called by whatever opens the lake: one process, one
configuration), any other scheme through pyarrow's filesystems and the environment's credentials. Writers use
pyiceberg's FileIO instead.

Parquet is always read from a pyarrow native file, never a Python file object: Arrow's I/O threads would call back
into Python for every read, and a call still in flight when the interpreter exits aborts the process ("terminate
called without an active exception": a thread that asks for the GIL during finalization is ended by pthread_exit).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    from pyarrow import fs

    from k2.settings import Settings

_S3_SCHEMES = ("s3://", "s3a://")
_s3_options: dict[str, Any] = {}
_s3_filesystem: list[fs.S3FileSystem] = []
_lock = threading.Lock()


def use_object_store(settings: Settings) -> None:
    """Read s3:// locations with the settings' endpoint and keys from now on."""
    options: dict[str, Any] = {"region": settings.s3_region}
    if settings.s3_access_key_id:
        options.update(access_key=settings.s3_access_key_id, secret_key=settings.s3_secret_access_key)
    if settings.s3_endpoint:
        scheme, _, host = settings.s3_endpoint.rpartition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
    with _lock:
        if options != _s3_options:
            _s3_options.clear()
            _s3_options.update(options)
            _s3_filesystem.clear()


def _s3() -> fs.S3FileSystem:
    from pyarrow import fs

    with _lock:
        if not _s3_filesystem:
            _s3_filesystem.append(fs.S3FileSystem(**_s3_options))
        return _s3_filesystem[0]


def local_path(location: str) -> str | None:
    """The filesystem path of a local location (None: a remote one). Java writers (Spark, Trino) spell local
    files `file:/path`, Python ones `file:///path`: both are the same file."""
    if location.startswith("file:"):
        rest = location[len("file:"):]
        return "/" + rest.lstrip("/") if rest.startswith("/") else rest
    return None if "://" in location else location


def readable(location: str) -> str:
    """The name DuckDB and pyarrow open a lake file by: a plain path for local files, the URI otherwise."""
    path = local_path(location)
    return location if path is None else path


def open_input(location: str) -> pa.NativeFile:
    """The file as a pyarrow native file (for Parquet readers)."""
    import pyarrow as pa
    from pyarrow import fs

    path = local_path(location)
    if path is not None:
        return pa.OSFile(path, "rb")
    if location.startswith(_S3_SCHEMES):
        return _s3().open_input_file(location.split("://", 1)[1])
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


@dataclass(frozen=True)
class StoredFile:
    location: str  # a plain path for a local warehouse, else scheme://bucket/key
    modified: float  # seconds since the epoch
    size: int


def list_files(root: str) -> Iterator[StoredFile]:
    """Every file under the directory or prefix `root`, recursively (object stores: s3:// with the settings)."""
    path = local_path(root)
    if path is not None:
        for folder, _, names in os.walk(path):
            for name in names:
                found = os.path.join(folder, name)
                stat = os.stat(found)
                yield StoredFile(found, stat.st_mtime, stat.st_size)
        return
    filesystem, prefix, scheme = _remote(root)
    from pyarrow import fs

    for info in filesystem.get_file_info(fs.FileSelector(prefix, recursive=True, allow_not_found=True)):
        if info.type == fs.FileType.File:
            modified = info.mtime.timestamp() if info.mtime is not None else time.time()
            yield StoredFile(f"{scheme}://{info.path}", modified, int(info.size or 0))


def delete_file(location: str) -> None:
    path = local_path(location)
    if path is not None:
        os.unlink(path)
        return
    filesystem, key, _ = _remote(location)
    filesystem.delete_file(key)


def _remote(location: str) -> tuple[fs.FileSystem, str, str]:
    from pyarrow import fs

    scheme, _, rest = location.partition("://")
    if location.startswith(_S3_SCHEMES):
        return _s3(), rest.rstrip("/"), scheme
    filesystem, remote = fs.FileSystem.from_uri(location)
    return filesystem, remote.rstrip("/"), scheme


def file_size(location: str) -> int | None:
    """The file's size in bytes, None when there is no such file."""
    path = local_path(location)
    if path is not None:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None
    from pyarrow import fs

    filesystem, key, _ = _remote(location)
    info = filesystem.get_file_info(key)
    return int(info.size or 0) if info.type == fs.FileType.File else None


_COPY_CHUNK = 8 << 20


def copy_file(source: str, target: str) -> int:
    """Copy one file between any two locations (local or object store), returning its size. A local target is
    written under a temporary name and renamed, an object is put whole: a copy cut short leaves no file that
    looks complete. FileNotFoundError when `source` is gone."""
    import shutil

    source_path, target_path = local_path(source), local_path(target)
    if target_path is not None:
        os.makedirs(os.path.dirname(target_path) or ".", exist_ok=True)
        partial = f"{target_path}.{os.getpid()}.{threading.get_ident()}.partial"
        try:
            if source_path is not None:
                shutil.copyfile(source_path, partial)
            else:
                with open_input(source) as stream, open(partial, "wb") as out:
                    while chunk := stream.read(_COPY_CHUNK):
                        out.write(chunk)
            os.replace(partial, target_path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return os.stat(target_path).st_size
    filesystem, key, _ = _remote(target)
    size = 0
    with open_input(source) as stream, filesystem.open_output_stream(key) as out:
        while chunk := stream.read(_COPY_CHUNK):
            out.write(chunk)
            size += len(chunk)
    return size


def write_bytes(location: str, data: bytes) -> None:
    """Write a small file (`k2 doctor`'s storage probe); local directories are created."""
    path = local_path(location)
    if path is not None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(data)
        return
    filesystem, key, _ = _remote(location)
    with filesystem.open_output_stream(key) as stream:
        stream.write(data)
