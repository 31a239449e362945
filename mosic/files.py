"""Small file helpers used by several layers: a file's hash, and whether an output place can be written."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from mosic import MosicError

_BLOCK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hex, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_BLOCK):
            h.update(chunk)
    return h.hexdigest()


def check_output_place(path: str | os.PathLike, what: str, need_bytes: int = 0) -> None:
    """Before any work: ``path`` (a file or folder to be written, which may not exist yet) can be written
    and its file system has ``need_bytes`` free; otherwise one line naming ``what`` (the option, e.g.
    ``--out``), the place and the cause. Tried by writing a file in the nearest existing folder, which
    tells the truth where permission bits do not (read-only mounts, network file systems, root)."""
    p = Path(path).absolute()
    here = p
    while not here.exists():
        if here.parent == here:
            break
        here = here.parent
    if here.exists() and not here.is_dir():
        if here == p and p.is_file():
            here = p.parent  # a file to be replaced: its folder is written
        else:
            raise MosicError(f"{what} {path}: {here} is a file, not a folder; choose another place")
    try:
        with tempfile.NamedTemporaryFile(dir=here, prefix=".mosic-write-check-"):
            pass
    except OSError as e:
        raise MosicError(f"{what} {path}: cannot write in {here} ({e.strerror or type(e).__name__}); "
                         "choose a writable place") from None
    if need_bytes:
        free = shutil.disk_usage(here).free
        if free < need_bytes:
            raise MosicError(f"{what} {path}: {free / 2**30:.1f} GiB free in {here}, {need_bytes / 2**30:.1f} GiB "
                             "needed; free some space or choose another place")
