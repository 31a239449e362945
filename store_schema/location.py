"""Where a store lives: a local path, or a URL on object storage (``s3://bucket/prefix/x.zarr``,
or any other fsspec protocol written ``proto://...``).

Local paths keep their exact behaviour (``pathlib.Path``). A remote location is a :class:`URL`, a
``str`` that also answers ``.name`` and ``/`` like a path, so code that prints or names a store
works for both. Remote stores are read and written through fsspec (``s3fs`` for ``s3://``:
``pip install mosic[remote]``); credentials and the endpoint come from the environment as for any
boto client (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for an S3-compatible server such as MinIO).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import zarr


class URL(str):
    """A remote store location, e.g. ``s3://bucket/stores/x.zarr`` (no trailing slash)."""

    def __new__(cls, value: str):
        return super().__new__(cls, value.rstrip("/"))

    @property
    def protocol(self) -> str:
        return self.split("://", 1)[0]

    @property
    def name(self) -> str:
        return self.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "URL":
        return URL(self.rsplit("/", 1)[0])

    def __truediv__(self, other: str) -> "URL":
        return URL(f"{self}/{str(other).strip('/')}")

    def __reduce__(self):
        return (URL, (str(self),))


Location = Union[Path, URL]


def is_remote(loc: Any) -> bool:
    """A URL with a protocol (``s3://...``), as opposed to a local path."""
    return isinstance(loc, URL) or (isinstance(loc, str) and "://" in loc)


def as_location(loc: str | os.PathLike) -> Location:
    """``Path`` for a local path, :class:`URL` for ``proto://...``."""
    return URL(str(loc)) if is_remote(loc) else Path(loc)


def join(loc: str | os.PathLike, name: str) -> Location:
    return as_location(loc) / name


def name(loc: str | os.PathLike) -> str:
    return as_location(loc).name


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for ``url``. s3fs (through botocore) reads the credentials, region and
    ``AWS_ENDPOINT_URL`` from the environment itself; ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
    are also passed explicitly so that an older botocore that ignores them still reaches the
    configured server."""
    if URL(url).protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            return {"client_kwargs": {"endpoint_url": endpoint}}
    return {}


def filesystem(url: str):
    """``(fs, path)``: the fsspec filesystem for ``url`` and the path within it."""
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(str(url), **storage_options(url))
    except ImportError as e:
        raise ImportError(f"reading {url} needs the fsspec backend for its protocol ({e}); "
                          "for s3:// install mosic[remote] (s3fs)") from None


def exists(loc: str | os.PathLike) -> bool:
    """Whether anything is at ``loc`` (locally: the path exists; remotely: any object under it)."""
    loc = as_location(loc)
    if not is_remote(loc):
        return loc.exists()
    fs, path = filesystem(loc)
    fs.invalidate_cache(path)  # another process may have created it since we last looked
    return fs.exists(path)


def open_group(loc: str | os.PathLike, mode: str) -> zarr.Group:
    """The Zarr v3 group at ``loc`` (a local path or a URL)."""
    loc = as_location(loc)
    if is_remote(loc):
        return zarr.open_group(str(loc), mode=mode, zarr_format=3, storage_options=storage_options(loc))
    return zarr.open_group(loc, mode=mode, zarr_format=3)


def size_bytes(loc: str | os.PathLike) -> int:
    """Bytes the store takes: the files on disk, or the objects under a URL."""
    loc = as_location(loc)
    if is_remote(loc):
        fs, path = filesystem(loc)
        return int(fs.du(path, total=True))
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(loc) for f in fs)


def list_stores(loc: str | os.PathLike) -> list[Location]:
    """The ``*.zarr`` entries directly under a folder or URL prefix, sorted; none if it is absent."""
    loc = as_location(loc)
    if not is_remote(loc):
        return sorted(loc.glob("*.zarr")) if loc.is_dir() else []
    fs, path = filesystem(loc)
    fs.invalidate_cache(path)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(loc / e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/").endswith(".zarr"))
