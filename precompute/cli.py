"""``mosic-precompute``: track a data set's clips and write them to a trajectory store."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mosic import MosicError
from mosic.cli_common import (CONFIG_HELP, LIST_HELP, PIPELINE_HELP, PRINT_CONFIG_HELP, SET_HELP,
                               friendly_errors, lines_when_piped, parse_pipeline_sets, parse_size,
                               resolved_config, setup_logging)
from mosic.config import describe_pipelines, load_pipeline
from mosic.devices import DEVICE_HELP, resolve_device

app = typer.Typer(add_completion=False, no_args_is_help=False, rich_markup_mode=None)


@app.command(
    name="precompute",
    help="Track a G x G grid of points from each clip's first frame with a frozen tracker and "
    "write tracks + visibility to a Zarr trajectory store. Settings come from pipelines.yaml "
    "(--pipeline); the options below and --set KEY=VALUE (any pipelines.yaml key, e.g. --set "
    "tracker.grid=8) override them. Re-running with the same settings "
    "resumes: finished clips are skipped, failed ones are retried.\n\n"
    "Example: mosic-precompute --pipeline ytvos --root /data/youtube-vos --tracker cotracker3 "
    "--checkpoint scaled_offline.pth --grid 16"
)
@friendly_errors
def run(
    pipeline: str = typer.Option("synthetic", help=PIPELINE_HELP),
    config: Optional[Path] = typer.Option(None, help=CONFIG_HELP),
    dataset: Optional[str] = typer.Option(None, help="frame source: ytvos | davis | videos | synthetic"),
    root: Optional[Path] = typer.Option(None, help="the data set's folder"),
    split: Optional[str] = typer.Option(None, help="split (ytvos/synthetic: train|valid; davis: 480p)"),
    tracker: Optional[str] = typer.Option(None, help="cotracker3 | lk | oracle (tracker.name)"),
    grid: Optional[int] = typer.Option(None, help="G: track a G x G grid of query points"),
    checkpoint: Optional[Path] = typer.Option(None, help="tracker weights (cotracker3: scaled_offline.pth)"),
    batch_size: Optional[int] = typer.Option(
        None, "--tracker-batch-size", help="clips per tracker call (tracker.batch_size)"),
    batch_alias: Optional[int] = typer.Option(None, "--batch-size", hidden=True,
                                              help="the same as --tracker-batch-size (kept for old scripts)"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    precision: Optional[str] = typer.Option(None, help="auto | fp32 | bf16 | fp16"),
    length: Optional[int] = typer.Option(None, "--length", "-T", help="frames per clip"),
    step: Optional[int] = typer.Option(None, help="take every step-th raw frame"),
    clips_per_video: Optional[int] = typer.Option(
        None, help="clips per video, starts spread evenly (without --stride: drops the pipeline's stride)"),
    stride: Optional[int] = typer.Option(
        None, help="raw frames between clip starts (overrides --clips-per-video)"),
    track_size: Optional[str] = typer.Option(None, help="resize frames to WxH for tracking (e.g. 512x384)"),
    stores: Optional[str] = typer.Option(
        None, help="stores folder or URL prefix (s3://bucket/stores); the store's name is derived from its spec"),
    store: Optional[str] = typer.Option(
        None, help="write to this store path or URL (s3://bucket/x.zarr) instead of a derived name"),
    clips_per_chunk: Optional[int] = typer.Option(None, help="clips per Zarr chunk"),
    retry_failed: bool = typer.Option(True, help="retry clips that failed in an earlier run"),
    shard: Optional[str] = typer.Option(
        None, help="i/N: write only this process's share (chunks k with k % N == i), e.g. "
        "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; the last shard to finish completes the store"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    print_config: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
    list_pipelines: bool = typer.Option(False, "--list-pipelines", "--list", help=LIST_HELP),
    slurm: bool = typer.Option(
        False, "--slurm", help="submit the store's shards as one Slurm job array through submitit (pip install "
        "'mosic[slurm]'), task i running --shard i/N of --shards N; a preempted shard requeues and continues. "
        "Job output: STORES/slurm/. --set slurm.cluster=local runs the same tasks here and waits for them"),
    shards: int = typer.Option(1, help="--slurm: array tasks (shards) to split the store over"),
    partition: Optional[str] = typer.Option(None, help="--slurm: Slurm partition (slurm.partition)"),
    account: Optional[str] = typer.Option(None, help="--slurm: Slurm account (slurm.account)"),
    time_min: Optional[int] = typer.Option(None, "--time", help="--slurm: time limit per shard in minutes (slurm.time_min)"),
) -> None:
    from mosic.precompute.runner import Interrupted, precompute

    setup_logging(verbose)
    if list_pipelines:
        typer.echo(describe_pipelines(config))
        return
    cfg = load_pipeline(
        pipeline,
        config,
        {
            "dataset.kind": dataset,
            "dataset.root": str(root) if root else None,
            "dataset.split": split,
            "tracker.name": tracker,
            "tracker.grid": grid,
            "tracker.checkpoint": str(checkpoint) if checkpoint else None,
            "tracker.batch_size": batch_size if batch_size is not None else batch_alias,
            "tracker.device": device,
            "tracker.precision": precision,
            "clips.length": length,
            "clips.step": step,
            "clips.clips_per_video": clips_per_video,
            "clips.stride": stride,
            "clips.track_size": parse_size(track_size) if track_size else None,
            "stores": stores or None,
            "store.clips_per_chunk": clips_per_chunk,
            "slurm.partition": partition,
            "slurm.account": account,
            "slurm.time_min": time_min,
            **parse_pipeline_sets(set_),
        },
    )
    resolve_device(cfg.tracker.device)  # one line when the device is absent
    if clips_per_video is not None and stride is None and cfg.clips.stride is not None:
        cfg = cfg.model_copy(update={"clips": cfg.clips.model_copy(update={"stride": None})})
    if print_config:
        typer.echo(resolved_config(cfg, config))
        return
    if slurm:
        _submit(cfg, shards, shard, store, retry_failed)
        return
    from mosic.files import check_output_place
    from mosic.stopping import stop_signals
    from mosic.store_schema.location import is_remote

    where = store or cfg.stores
    if not is_remote(where):  # before any work: one line when the store cannot be written there
        check_output_place(where, "--store" if store else "--stores")
    with stop_signals() as stop:  # Ctrl-C and SIGTERM alike: the chunks written are kept
        try:
            res = precompute(cfg, store=store, retry_failed=retry_failed, progress=progress,
                             shard=_parse_shard(shard))
        except Interrupted as e:
            typer.secho(str(e), err=True, fg=typer.colors.YELLOW)
            raise typer.Exit(stop.exit_code) from None
    fps = res.frames_tracked / res.seconds if res.seconds > 0 else 0.0
    typer.echo(
        f"store: {res.store}\n"
        f"clips: {res.done} done, {res.failed} failed of {res.clips} "
        f"({res.written_now} written now, {fps:.1f} frames/s); "
        f"{'complete' if res.complete else 'INCOMPLETE'}"
        + ("" if res.complete or shard is None else " (other shards still running or failed: re-run them, "
           "or `mosic-store finalize` once they are done)")
    )
    if res.failures:
        typer.secho(f"{len(res.failures)} failure(s):", fg=typer.colors.YELLOW, err=True)
        for f in res.failures:
            where = f"clip {f.clip} " if f.clip is not None else ""
            typer.echo(f"  {f.video_id}: {where}{f.reason}", err=True)
        raise typer.Exit(1)


def _submit(cfg, shards: int, shard: str | None, store: str | None, retry_failed: bool) -> None:
    from mosic.slurm import import_submitit, job_ids

    if shard:
        raise MosicError("--slurm splits the store itself: give --shards N instead of --shard")
    import_submitit()  # one line when missing, before the module that needs it is imported
    from mosic.precompute.slurm import jobs_folder, submit_shards

    jobs = submit_shards(cfg, shards, store=store, retry_failed=retry_failed)
    typer.echo(f"submitted {len(jobs)} shard(s) as job {job_ids(jobs)}; output: {jobs_folder(cfg)}")
    if cfg.slurm.cluster == "local":  # the local executor's processes end with this command: wait for them
        results = [j.result() for j in jobs]
        typer.echo(f"store: {results[0].store}; complete: {any(r.complete for r in results)}")


def _parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return (0, 1)
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise MosicError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise MosicError(f"--shard {text}: need 0 <= I < N")
    return i, n


def main() -> None:
    lines_when_piped()  # progress as periodic log lines in pipes and log files
    app()


if __name__ == "__main__":
    main()
