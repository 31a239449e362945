"""``mosic-store``: look into trajectory stores (inspect, show, score), finish, convert and cache them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from mosic import MosicError
from mosic.cli_common import friendly_errors, lines_when_piped

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Look into mosic trajectory stores.")


def _disk_bytes(path) -> int:
    from mosic.store_schema.location import size_bytes

    return size_bytes(path)


_STORE_HELP = "the store (a .zarr folder, or a URL such as s3://bucket/stores/x.zarr)"


def _list_stores(stores: list, as_json: bool) -> None:
    """One line per store of a folder: name, completeness, data, clips, tracker, grid (JSON: a list)."""
    from mosic.store_schema.reader import StoreReader

    infos = []
    for loc in stores:
        try:
            r = StoreReader(loc, allow_incomplete=True)
        except MosicError as e:
            infos.append({"path": str(loc), "name": loc.name, "error": str(e)})
            continue
        infos.append({**r.summary(), "spec": r.spec.model_dump(mode="json")})
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    for i in infos:
        if "error" in i:
            typer.echo(f"{i['name']}  UNREADABLE: {i['error']}")
            continue
        sp, c = i["spec"], i["spec"]["clips"]
        state = "complete" if i["complete"] else f"INCOMPLETE ({i['pending']} pending)"
        typer.echo(f"{i['name']}  {state}: {i['done']} done, {i['failed']} failed of {i['clips']} clips, "
                   f"{i['videos']} videos; {sp['dataset']['kind']} split={sp['dataset']['split']!r}; "
                   f"T={c['length']} step={c['step']}; tracker {sp['tracker']['name']}; grid {sp['grid']}")
    typer.echo(f"{len(infos)} store(s); `mosic-store inspect STORE` for one store's details")


@app.command(help="Print a store's spec, clip counts, visibility rate, size and failures; given a folder of "
                  "stores, list them with their specs and completeness.")
@friendly_errors
def inspect(
    path: str = typer.Argument(..., help=_STORE_HELP + ", or a folder of stores"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    from mosic.store_schema.location import is_remote, list_stores
    from mosic.store_schema.reader import StoreReader
    from mosic.store_schema.spec import SCHEMA_VERSION

    stores = [] if str(path).rstrip("/").endswith(".zarr") else list_stores(path)
    if stores:
        _list_stores(stores, as_json)
        return
    r = StoreReader(path, allow_incomplete=True)
    info = r.summary()
    info["visibility_rate"] = r.visibility_rate()
    info["bytes_on_disk"] = _disk_bytes(path)
    T, N = r.spec.clips.length, r.spec.num_points
    info["raw_float32_bytes"] = info["clips"] * T * N * (2 * 4 + 1)
    info["spec"] = r.spec.model_dump(mode="json")
    info["codec"] = r.meta.codec
    info["made_with"] = r.meta.made_with
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    s = r.spec
    c = s.clips
    typer.echo(f"store      {path}")
    typer.echo(f"state      {'complete' if info['complete'] else 'INCOMPLETE'}: {info['done']} done, "
               f"{info['failed']} failed, {info['pending']} pending of {info['clips']} clips "
               f"from {info['videos']} videos")
    typer.echo(f"data       {s.dataset.kind} split={s.dataset.split!r} videos={s.dataset.num_videos} "
               f"fingerprint={s.dataset.fingerprint} root={r.meta.made_with.get('root')}")
    typer.echo(f"clips      T={c.length} step={c.step} clips/video={c.clips_per_video} stride={c.stride} "
               f"short_videos={c.short_videos} track_size={c.track_size}")
    typer.echo(f"tracker    {s.tracker.name} {s.tracker.version} weights={s.tracker.checkpoint_sha256} "
               f"params={json.dumps(s.tracker.params, sort_keys=True)}")
    typer.echo(f"grid       {s.grid} x {s.grid} = {s.num_points} points; coordinates to 1/{s.coord_scale} px")
    typer.echo(f"visible    {100 * info['visibility_rate']:.1f}% of tracked points")
    typer.echo(f"size       {info['bytes_on_disk'] / 2**20:.2f} MiB {'stored' if is_remote(r.path) else 'on disk'} "
               f"({info['bytes_on_disk'] / max(1, info['raw_float32_bytes']):.3f}x raw float32 + bool), "
               f"codec {r.meta.codec}, {r.meta.clips_per_chunk} clips per chunk, store schema {s.schema_version}")
    if s.schema_version < SCHEMA_VERSION:
        typer.echo(f"layout     older: only zarr-python reads it; `mosic-store convert {path}` rewrites it for any "
                   "Zarr v3 reader")
    fails = info["failures"]
    typer.echo(f"failures   {len(fails)}")
    for f in fails:
        where = f"clip {f['clip']} " if f["clip"] is not None else ""
        typer.echo(f"  {f['video_id']}: {where}{f['reason']}")


@app.command(help="Draw one clip's tracks over its frames: --out FILE.png (montage), .gif or .mp4.")
@friendly_errors
def show(
    path: str = typer.Argument(..., help=_STORE_HELP),
    clip: int = typer.Option(0, help="clip index"),
    out: Path = typer.Option(..., help="output file: .png, .gif or .mp4"),
    root: Optional[Path] = typer.Option(None, help="the data set's folder, if it moved"),
    fps: int = typer.Option(4, help="frames per second for .gif/.mp4"),
) -> None:
    from mosic.files import check_output_place
    from mosic.precompute.visualize import draw_tracks, save_frames
    from mosic.store_schema.reader import StoreReader, open_frame_source

    check_output_place(out, "--out")
    r = StoreReader(path, allow_incomplete=True)
    if not 0 <= clip < len(r):
        raise MosicError(f"--clip {clip}: store {path} has {len(r)} clips (0..{len(r) - 1})")
    item = r[clip]
    source = open_frame_source(r, root, verify=False)
    frames = source.read_clip(item.clip)
    save_frames(draw_tracks(frames, item.tracks, item.visibility), out, fps=fps)
    typer.echo(f"wrote {out} (clip {clip}: {item.clip.video_id} frames {item.clip.frames[0]}..{item.clip.frames[-1]})")


@app.command(help="TAP-Vid metrics (delta_avg, OA, AJ in percent) against the synthetic set's ground truth.")
@friendly_errors
def score(
    path: str = typer.Argument(..., help="a store made from the synthetic data set (path or URL)"),
    root: Optional[Path] = typer.Option(None, help="the synthetic set's folder, if it moved"),
    max_clips: Optional[int] = typer.Option(None, help="score only the first N written clips"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    from mosic.precompute.scoring import score_store
    from mosic.store_schema.reader import StoreReader, open_frame_source

    r = StoreReader(path, allow_incomplete=True)
    res = score_store(r, open_frame_source(r, root), max_clips)
    res["tracker"] = r.spec.tracker.name
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    typer.echo(f"{r.spec.tracker.name}: delta_avg {res['delta_avg']:.1f}  OA {res['occlusion_accuracy']:.1f}  "
               f"AJ {res['average_jaccard']:.1f}  ({res['clips']} clips, {res['videos']} videos)")


@app.command(help="Mark a store complete if every clip has been written (after sharded runs).")
@friendly_errors
def finalize(path: str = typer.Argument(..., help=_STORE_HELP)) -> None:
    from mosic.store_schema import layout as L
    from mosic.store_schema.writer import StoreWriter

    w = StoreWriter.open(path)
    if w.finalize():
        st = w.status()
        typer.echo(f"{path}: complete ({int((st == L.DONE).sum())} done, {int((st == L.FAILED).sum())} failed)")
        return
    pending = int((w.status() == L.PENDING).sum())
    typer.secho(f"{path}: {pending} of {w.num_clips} clips are not written yet: run the missing shards "
                "(the same mosic-precompute command) first", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(1)


@app.command(help="Rewrite a complete store of an older layout (store schema 2, numcodecs codecs) in the current "
             "one, which any Zarr v3 reader opens: a new store beside it, named from its spec (never in place). "
             "Spec, clips, outcomes and failures are kept, and every chunk is checked against the old store.")
@friendly_errors
def convert(
    path: str = typer.Argument(..., help=_STORE_HELP),
    out: Optional[str] = typer.Option(None, help="where to write the new store [default: beside PATH, named "
                                      "from its spec]"),
    compression_level: int = typer.Option(5, min=1, max=22, help="zstd level"),
) -> None:
    from mosic.store_schema.convert import convert_store
    from mosic.store_schema.reader import StoreReader

    dst = convert_store(path, out, compression_level)
    r = StoreReader(dst)
    typer.echo(f"{dst}: {len(r)} clips ({len(r.done)} done) in store schema {r.spec.schema_version}, codec "
               f"{r.meta.codec}, {_disk_bytes(dst) / 2**20:.2f} MiB. {path} is unchanged: delete it once you "
               "no longer need it (training refuses to choose between two stores that fit)")


@app.command("cache-frames", help="Write a frame cache beside a local store: each clip's frames resized to "
             "SIDE x SIDE (default: what 224 px training crops need, 410) as JPEG bytes, one file per clip. "
             "Training reads it instead of the full-size JPEGs when it is there. Clips whose frames are no larger "
             "than the cache are left to their source; run it again to rebuild damaged files.")
@friendly_errors
def cache_frames(
    path: str = typer.Argument(..., help="the store (a local .zarr folder)"),
    side: Optional[int] = typer.Option(None, help="cache frame side in pixels [default: from --out-size]"),
    out_size: int = typer.Option(224, help="training crop size the cache is for"),
    quality: int = typer.Option(90, help="JPEG quality"),
    root: Optional[str] = typer.Option(None, help="the data set root, if not where the store was made from"),
    workers: int = typer.Option(0, help="threads (0: one per core)"),
) -> None:
    from mosic.files import check_output_place
    from mosic.store_schema.frame_cache import build_frame_cache, cache_dir_for, cache_side
    from mosic.store_schema.location import is_remote

    side = side or cache_side(out_size)
    if not is_remote(path):  # the cache goes beside the store: check that place before any work
        try:
            check_output_place(cache_dir_for(path, side), "the frame cache")
        except MosicError as e:
            raise MosicError(f"{str(e).removesuffix('; choose a writable place')}: the cache is written beside the store, so copy the store (with its frames' "
                             "folder named by --root) to a writable place first; training reads the full-size "
                             "frames without a cache") from None
    folder = build_frame_cache(path, side, quality, root, progress=True,
                               workers=workers or os.cpu_count() or 1)
    meta = json.loads((folder / "cache.json").read_text())
    per = meta["bytes"] / max(1, meta["clips"])
    typer.echo(f"{folder}: {meta['clips']} clips at {meta['side']}x{meta['side']}, "
               f"{meta['bytes'] / 2**20:.1f} MiB ({per / 2**10:.0f} KiB per clip)"
               + (f"; {meta['rebuilt']} damaged files rebuilt" if meta.get("rebuilt") else "")
               + (f"; {meta['source_clips']} clips with frames no larger than the cache stay with their source "
                  "(faster to decode)" if meta.get("source_clips") else ""))


def main() -> None:
    lines_when_piped()  # progress as periodic log lines in pipes and log files
    app()


if __name__ == "__main__":
    main()
