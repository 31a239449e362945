"""``mosic-data``: make data sets (the built-in synthetic videos)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import typer

from mosic import MosicError

app = typer.Typer(
    help="Make data sets for mosic.",
    add_completion=False,
    rich_markup_mode=None,  # plain help, as every other mosic command
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Make data sets for mosic."""


def _parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise typer.BadParameter(f"expected WIDTHxHEIGHT, e.g. 320x240, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _fail(message: str) -> None:
    typer.echo(f"mosic-data: error: {message}", err=True)
    raise typer.Exit(code=2)


@app.command()
def synthetic(
    out: Path = typer.Option(..., "--out", help="folder to write the set into (YouTube-VOS layout: OUT/SPLIT/JPEGImages/...)"),
    videos: int = typer.Option(..., "--videos", min=1, help="number of videos"),
    seed: int = typer.Option(0, "--seed", help="random seed; the same seed gives byte-identical files"),
    split: str = typer.Option("train", "--split", help="split folder name (train, valid, ...); part of the seed"),
    frames: int = typer.Option(80, "--frames", min=2, help="frames per video (each video varies by up to ±25% unless --exact-length)"),
    size: str = typer.Option("320x240", "--size", help="frame size WIDTHxHEIGHT"),
    exact_length: bool = typer.Option(False, "--exact-length", help="give every video exactly --frames frames"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a different set already in OUT/SPLIT"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Generate the synthetic video set (frames, masks, meta.json, exact ground-truth tracks).

    Textured objects of a few classes (each with its own shape and texture) move, turn and scale
    over a textured background seen by a moving camera; they occlude each other and leave and
    re-enter the frame. Read it back with the "synthetic" frame source."""
    from mosic.data import synthetic as syn
    from mosic.files import check_output_place

    width, height = _parse_size(size)
    try:
        check_output_place(out / split, "--out")
        if not overwrite and syn.is_generated(
            out, videos, seed, split, frames, width, height, exact_length=exact_length
        ):
            typer.echo(f"{out / split}: already holds this set ({videos} videos, seed {seed}); nothing to do")
            return
        t0 = time.perf_counter()
        ids = syn.generate(
            out, videos, seed=seed, split=split, num_frames=frames, width=width, height=height,
            progress=not quiet, exact_length=exact_length, overwrite=overwrite,
        )
    except MosicError as e:
        _fail(str(e))
    dt = time.perf_counter() - t0
    total = sum(len(syn.list_jpegs(out / split / "JPEGImages" / v)) for v in ids)
    typer.echo(
        f"wrote {len(ids)} videos, {total} frames of {width}x{height} to {out / split} "
        f"in {dt:.1f} s ({total / max(dt, 1e-9):.0f} frames/s)"
    )


@app.command()
def voc(
    synthetic_dir: Path = typer.Option(..., "--synthetic", help="a synthetic set made with `mosic-data synthetic` (its --out folder)"),
    out: Path = typer.Option(..., "--out", help="folder to write the VOC-layout set into (new, empty, or an earlier export)"),
    every: int = typer.Option(4, "--every", min=1, help="take every n-th frame of each video"),
    split: list[str] | None = typer.Option(
        None, "--split", help="synthetic split(s) to export (repeatable); default: train and valid, those present"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Export the synthetic set as a Pascal-VOC-layout semantic segmentation set.

    Writes JPEGImages/, SegmentationClass/ (palette PNGs, VOC colour map, value = class),
    ImageSets/Segmentation/{train,val,trainval}.txt (valid -> val) and classes.txt, so that the
    image evaluation protocols read it with the plain "voc" reader."""
    from mosic.evaluation.datasets import export_synthetic_voc
    from mosic.files import check_output_place

    splits = list(split) if split else [s for s in ("train", "valid") if (synthetic_dir / s).is_dir()]
    if not splits:
        _fail(f"{synthetic_dir} has neither a train nor a valid split (make one with: mosic-data synthetic --out {synthetic_dir} --videos N)")
    t0 = time.perf_counter()
    try:
        check_output_place(out, "--out")
        counts = export_synthetic_voc(synthetic_dir, out, splits=splits, every=every, progress=not quiet)
    except MosicError as e:
        _fail(str(e))
    dt = time.perf_counter() - t0
    parts = ", ".join(f"{n} {name}" for name, n in counts.items())
    typer.echo(f"wrote {parts} images (one frame in {every}) to {out} in {dt:.1f} s; read it with the voc reader")


def main() -> None:
    from mosic.cli_common import lines_when_piped

    lines_when_piped()  # progress as periodic log lines in pipes and log files
    try:
        app()
    except MosicError as e:  # raised outside a command body
        print(f"mosic-data: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
