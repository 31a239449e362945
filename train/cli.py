"""``mosic-train``: MoSiC post-training on a precomputed trajectory store.

Single process: ``mosic-train --pipeline synthetic``.
DDP: ``torchrun --nproc_per_node 8 -m mosic.train --pipeline ytvos`` (NCCL on GPUs, gloo on CPU).
Slurm: ``mosic-train --pipeline ytvos --slurm --nodes 2 --gpus-per-node 8`` (one job through submitit).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mosic import MosicError
from mosic.cli_common import (CONFIG_HELP, LIST_HELP, PIPELINE_HELP, PRINT_CONFIG_HELP, SET_HELP, WEIGHTS_HELP,
                               friendly_errors, lines_when_piped, parse_model_kwargs,
                               parse_pipeline_sets, resolved_config, setup_logging)
from mosic.config import describe_pipelines, load_pipeline
from mosic.devices import DEVICE_HELP, resolve_device

app = typer.Typer(add_completion=False, rich_markup_mode=None)


SLURM_HELP = ("submit the run as one Slurm job through submitit (pip install 'mosic[slurm]'): nodes x GPUs per "
              "node processes; on preemption or at its time limit the job checkpoints, requeues and resumes. "
              "Job output: RUN/slurm/. --set slurm.cluster=local runs the same job here and waits for it")


def _parse_sets(sets: list[str]) -> dict:
    return parse_pipeline_sets(sets)


@app.command(
    name="train",
    help="Train a ViT with MoSiC on a trajectory store: an EMA teacher clusters tracked points with "
    "Sinkhorn-Knopp in every frame, and the student, from each trajectory's first-frame point, predicts "
    "the teacher's cluster of that trajectory in every later frame. "
    "Settings come from the pipeline's `train:` section in pipelines.yaml; the options below and "
    "--set KEY=VALUE (any pipelines.yaml key, e.g. --set train.loss.symmetric=true or --set tracker.grid=8: "
    "pipeline fields select the store) override them. The run folder "
    "gets config.json, log.jsonl, loss.png, checkpoints/ and backbone.pth (a timm state dict). "
    "Ctrl-C or SIGTERM saves a checkpoint at the step reached and exits 130 or 143; --resume goes on.",
)
@friendly_errors
def run(
    pipeline: str = typer.Option("synthetic", help=PIPELINE_HELP),
    config: Optional[Path] = typer.Option(None, help=CONFIG_HELP),
    store: Optional[str] = typer.Option(
        None, help="store path or URL (s3://bucket/x.zarr) to train on (default: the one in stores/ that fits)"),
    stores: Optional[str] = typer.Option(None, help="stores folder or URL prefix (s3://bucket/stores) to look in"),
    tracker: Optional[str] = typer.Option(
        None, help="cotracker3 | lk | oracle: train on the store made by this tracker (tracker.name)"),
    root: Optional[Path] = typer.Option(None, help="frames folder, if it moved since precompute"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/<pipeline>)"),
    max_steps: Optional[int] = typer.Option(None, help="stop after N steps (default: epochs x steps/epoch)"),
    epochs: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(
        None, help="global batch: clips per optimiser step over all processes (default 64), split evenly over them"),
    micro_batch: Optional[int] = typer.Option(
        None, help="clips per student forward/backward on one process (gradient accumulation; same Sinkhorn batch)"),
    model: Optional[str] = typer.Option(None, help="timm model name"),
    weights: Optional[Path] = typer.Option(None, help=WEIGHTS_HELP + " (model.weights)"),
    model_kwargs: Optional[str] = typer.Option(
        None, "--model-kwargs", help="extra timm create_model arguments as a mapping, e.g. '{depth: 2}' (model.kwargs)"),
    pretrained: Optional[bool] = typer.Option(
        None, "--pretrained/--no-pretrained", help="the hub's weights, or a random initialisation"),
    random_init: bool = typer.Option(False, "--random", hidden=True, help="the same as --no-pretrained"),
    workers: Optional[int] = typer.Option(None, help="DataLoader workers per process"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    precision: Optional[str] = typer.Option(None, help="auto | fp32 | bf16 | fp16"),
    seed: Optional[int] = typer.Option(None),
    resume: bool = typer.Option(False, help="continue the run in --out from its last checkpoint (with the run's settings)"),
    changed_settings_ok: bool = typer.Option(
        False, "--changed-settings-ok", help="with --resume: go on although the training settings differ from the "
        "checkpoint's (it names them)"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    print_config: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
    progress: bool = typer.Option(True, help="show a progress bar"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    list_pipelines: bool = typer.Option(False, "--list-pipelines", "--list", help=LIST_HELP),
    slurm: bool = typer.Option(False, "--slurm", help=SLURM_HELP),
    nodes: Optional[int] = typer.Option(None, help="--slurm: nodes of the job (slurm.nodes)"),
    gpus_per_node: Optional[int] = typer.Option(
        None, help="--slurm: GPUs per node, one process each (slurm.gpus_per_node)"),
    partition: Optional[str] = typer.Option(None, help="--slurm: Slurm partition (slurm.partition)"),
    account: Optional[str] = typer.Option(None, help="--slurm: Slurm account (slurm.account)"),
    time_min: Optional[int] = typer.Option(
        None, "--time", help="--slurm: time limit in minutes; at it the job checkpoints and requeues (slurm.time_min)"),
) -> None:
    from mosic.train.train import TrainingStopped, train

    setup_logging(verbose)
    if list_pipelines:
        typer.echo(describe_pipelines(config))
        return
    if random_init:
        if pretrained:
            raise MosicError("give only one of --pretrained and --no-pretrained (--random)")
        pretrained = False
    over = {
        "stores": stores or None,
        "tracker.name": tracker,
        "train.store": store or None,
        "train.source_root": str(root) if root else None,
        "train.max_steps": max_steps,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.micro_batch": micro_batch,
        "train.model.name": model,
        "train.model.weights": str(weights) if weights else None,
        "train.model.pretrained": pretrained,
        "train.model.kwargs": parse_model_kwargs(model_kwargs, "--model-kwargs") if model_kwargs else None,
        "train.num_workers": workers,
        "train.device": device,
        "train.precision": precision,
        "train.seed": seed,
        "slurm.nodes": nodes,
        "slurm.gpus_per_node": gpus_per_node,
        "slurm.partition": partition,
        "slurm.account": account,
        "slurm.time_min": time_min,
        **_parse_sets(set_),
    }
    cfg = load_pipeline(pipeline, config, over)
    ts = cfg.train
    if print_config:
        typer.echo(resolved_config(cfg, config))
        return
    resolve_device(ts.device)  # one line when the device is absent
    from mosic.backbones import check_weights_file  # torch: not for --help

    check_weights_file(ts.model.weights)  # before any data is read: the file itself (architecture: at loading)
    run_dir = out or Path(ts.out) / pipeline
    if slurm:
        _submit(cfg, ts, run_dir, resume)
        return
    try:
        res = train(cfg, ts, run_dir, resume=resume, progress=progress, changed_settings_ok=changed_settings_ok)
    except TrainingStopped as e:  # Ctrl-C or SIGTERM: the message says what is kept and how to go on
        typer.secho(str(e), err=True, fg=typer.colors.YELLOW)
        raise typer.Exit(e.exit_code) from None
    if res.get("backbone"):
        typer.echo(f"trained {res['steps']} steps on {res['store']}; final loss {res.get('loss', float('nan')):.4f}")
        typer.echo(f"run folder: {run_dir}  (log.jsonl, checkpoints/, backbone.pth)")


def _submit(cfg, ts, run_dir: Path, resume: bool) -> None:
    from mosic.slurm import import_submitit

    import_submitit()  # one line when missing, before the module that needs it is imported
    from mosic.train.slurm import submit_training

    job = submit_training(cfg, ts, run_dir, resume=resume)
    typer.echo(f"submitted training job {job.job_id} ({cfg.slurm.nodes} node(s) x {max(1, cfg.slurm.gpus_per_node)} "
               f"process(es)); output: {job.paths.stdout.parent}")
    if cfg.slurm.cluster == "local":  # the local executor's processes end with this command: wait for them
        res = job.results()[0]  # one per process; rank 0's holds the exported backbone
        typer.echo(f"trained {res['steps']} steps on {res['store']}; run folder: {run_dir}")


def main() -> None:
    lines_when_piped()  # progress as periodic log lines in pipes and log files
    app()


if __name__ == "__main__":
    main()
