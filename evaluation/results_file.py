"""A results table on disk (``OUT.json`` with ``OUT.md`` beside it), shared safely by several
``mosic-eval run`` processes, on one machine or on the nodes of a cluster:

- :func:`check_results_place` runs before any work: OUT can be written, and OUT.json / OUT.md are
  a results table mosic wrote (a hand-written ``notes.md`` without ``notes.json`` is never replaced);
- :func:`add_row` reads the table, adds a row's figures (:func:`mosic.evaluation.results.add_to_table`)
  and writes both files, all under a lock on OUT (``OUT.json.lock``, a :class:`filelock.SoftFileLock`:
  a file created exclusively, which works on the network file systems clusters share), each file
  written under a unique temporary name and renamed over the old one (atomic), so concurrent runs
  keep every figure and every row and a reader never sees half a file.
"""

from __future__ import annotations

from pathlib import Path

from mosic import MosicError
from mosic.evaluation.results import TABLE_HEAD, add_to_table, load_or_empty, save_results, stem_of
from mosic.files import check_output_place

#: seconds to wait for another run's lock on OUT (each holds it for a read-merge-write: milliseconds)
LOCK_TIMEOUT_S = 120.0


def results_paths(out: str | Path) -> tuple[Path, Path]:
    """``OUT.json`` and ``OUT.md``."""
    stem = stem_of(out)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")


def check_results_place(out: str | Path, what: str = "--out") -> list[dict]:
    """Before any work: OUT can be written and holds no file mosic did not write (one line
    otherwise); returns the table's rows as they are now (none for a new table)."""
    js, md = results_paths(out)
    check_output_place(js, what)
    if md.exists():
        if not js.exists():
            raise MosicError(f"{what} {out}: {md} is there without {js.name}, so it is not a results table "
                             "mosic-eval wrote; choose another --out or move that file away")
        try:
            head = md.read_text(errors="replace")[:len(TABLE_HEAD)]
        except OSError as e:
            raise MosicError(f"{what} {out}: cannot read {md} ({e.strerror or e})") from None
        if head != TABLE_HEAD:
            raise MosicError(f"{what} {out}: {md} does not start with a mosic results table; choose another "
                             "--out or move that file away")
    if js.exists() and not js.is_file():
        raise MosicError(f"{what} {out}: {js} is not a file; choose another --out")
    return load_or_empty(js)


def _lock(js: Path):
    from filelock import SoftFileLock

    return SoftFileLock(js.with_name(js.name + ".lock"), timeout=LOCK_TIMEOUT_S)


def add_row(out: str | Path, row: dict, replace: bool = False) -> list[dict]:
    """Add ``row`` to the table OUT under its lock (read, merge, write) and return the table's rows;
    the lock waits :data:`LOCK_TIMEOUT_S` seconds for another run, then says what to do."""
    from filelock import Timeout

    js, _ = results_paths(out)
    lock = _lock(js)
    try:
        with lock:
            rows, _ = add_to_table(load_or_empty(js), row, replace=replace)
            save_results(rows, out)
            return rows
    except Timeout:
        raise MosicError(f"{js}: another mosic-eval has held its lock {lock.lock_file} for {LOCK_TIMEOUT_S:.0f}s; "
                         "if no other run is writing this table, delete that file and run again") from None

