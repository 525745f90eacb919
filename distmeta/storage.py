"""Where files live: a local path, or a URI of any filesystem pyarrow knows (``file://``, ``s3://``, ``gs://``,
``hdfs://``), with its options in the query string (``s3://bucket/runs?endpoint_override=HOST:PORT&scheme=http``).

The one place that tells a URI from a path; the query string travels with
every location derived from a URI, so a checkpoint under an S3-compatible
endpoint is read back from that endpoint, not from AWS.

>>> absolute("runs/a").startswith("/"), absolute("s3://b/runs?region=eu-west-1")
(True, 's3://b/runs?region=eu-west-1')
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile

import pyarrow.fs as pafs


def is_uri(location) -> bool:
    return "://" in str(location)


def absolute(location) -> str:
    """A URI as it is, a local path made absolute (so it means the same from any working directory)."""
    location = str(location)
    return location if is_uri(location) else os.path.abspath(location)


def resolve(location) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it) of a local path or a URI."""
    location = str(location)
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def located(like, path: str) -> str:
    """``path`` (on the filesystem of ``like``) as a location of the same form: scheme and query kept."""
    like = str(like)
    if not is_uri(like):
        return path
    scheme = like.split("://", 1)[0]
    query = like.split("?", 1)[1] if "?" in like else ""
    return f"{scheme}://{path}" + (f"?{query}" if query else "")


def join(location, *parts: str) -> str:
    """``location/part/...``, a URI's query string kept at the end."""
    location = str(location)
    if not is_uri(location):
        return os.path.join(location, *parts)
    base, _, query = location.partition("?")
    return posixpath.join(base, *parts) + (f"?{query}" if query else "")


@contextlib.contextmanager
def local_copy(location):
    """A local path holding ``location`` (a file or a folder): itself when local, else a temporary copy."""
    if not is_uri(location):
        yield str(location)
        return
    fs, path = resolve(location)
    info = fs.get_file_info(path)
    with tempfile.TemporaryDirectory(prefix="distmeta-") as folder:
        local = os.path.join(folder, info.base_name or "data")
        if info.type == pafs.FileType.Directory:
            os.makedirs(local)  # copy_files fills a folder, it does not make one
        if info.type != pafs.FileType.NotFound:  # else the caller finds nothing there and says so
            pafs.copy_files(path, local, source_filesystem=fs)
        yield local
