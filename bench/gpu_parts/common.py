"""What several parts of the GPU check use: the settings of a GPU run and of the CPU dry run, the
context a run's parts share (scratch folder, the synthetic sets and their stores), subprocesses
bounded by the running part's time limit, and timing that waits for the device."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

#: the most seconds one subprocess may take, whatever the part's limit leaves
SUBPROCESS_LIMIT_S = 180


class Deadline:
    """The time left to the running part: subprocesses get at most that (and SUBPROCESS_LIMIT_S)."""

    def __init__(self):
        self.end = math.inf

    def left(self) -> float:
        return max(1.0, min(SUBPROCESS_LIMIT_S, self.end - time.monotonic()))


#: set by the harness (bench/gpu_check.py, run_part) while a part runs
DEADLINE = Deadline()


def run_sub(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """A subprocess in its own process group, killed with all its children when the part's time is
    up (torchrun's workers included)."""
    limit = DEADLINE.left()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = p.communicate(timeout=limit)
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def settings(cpu: bool) -> dict:
    """The sizes and settings of every part: a GPU run, or the CPU dry run (``cpu``)."""
    if cpu:  # tiny: exercises every code path in well under a minute on 2 CPU cores
        return dict(device="cpu", precision="fp32", model="vit_small_patch14_dinov2",
                    kwargs={"depth": 2, "embed_dim": 48, "num_heads": 2}, img=56, head_hidden=[64], head_dim=32,
                    prototypes=8, batch=4, T=3, step=2, grid=4, sizes=[(64, 48), (160, 96)], videos=[4, 4], cpv=4,
                    frames=12, steps=2, warmup=1, workers=[1], cot_clips=2, cot_batches=[2], cot_grids=[4, 6],
                    cot_sizes=1,
                    eval_imgs=(4, 2), eval_size=56)
    return dict(device="cuda", precision="bf16", model="vit_small_patch14_dinov2", kwargs={}, img=224,
                head_hidden=[1024, 1024, 512], head_dim=256, prototypes=100, batch=64, T=12, step=3, grid=16,
                # videos per size: 288 clips at 320 x 240 (one training batch of distinct clips), 72
                # at 1280 x 720 (making the set is single-threaded CPU work: keep it short)
                sizes=[(320, 240), (1280, 720)], videos=[24, 6], cpv=12, frames=48, steps=10, warmup=3,
                workers=sorted({min(8, os.cpu_count() or 1), min(16, os.cpu_count() or 1)}),
                cot_clips=32, cot_batches=[8, 32], cot_grids=[16, 30], cot_sizes=2, eval_imgs=(40, 20), eval_size=None)


def pipelines_yaml(cfg: dict, root: Path, stores: Path) -> str:
    """A pipelines file with one pipeline, ``check``, over ``root`` (oracle tracks: no tracker cost)."""
    train = {"model": {"name": cfg["model"], "pretrained": False, "img_size": cfg["img"], "kwargs": cfg["kwargs"],
                       "train_blocks": 2, "head_hidden": cfg["head_hidden"], "head_dim": cfg["head_dim"],
                       "num_prototypes": cfg["prototypes"]},
             "batch_size": cfg["batch"], "epochs": 1000, "num_workers": cfg["workers"][0],
             "precision": cfg["precision"], "device": cfg["device"], "checkpoint_every": 2, "log_every": 1,
             "validate": {"every": 0}}
    pipe = {"dataset": {"kind": "synthetic", "root": str(root), "split": "train"},
            "clips": {"length": cfg["T"], "step": cfg["step"], "clips_per_video": cfg["cpv"], "stride": None},
            "tracker": {"name": "oracle", "grid": cfg["grid"], "batch_size": 16}, "stores": str(stores),
            "train": train}
    return json.dumps({"defaults": {}, "pipelines": {"check": pipe}}, indent=2)  # JSON is YAML


class Ctx:
    """What a run's parts share: the settings, the scratch folder, the synthetic sets and their
    stores (made once, by whichever part first asks), and the step time the train part measured."""

    def __init__(self, cfg: dict, work: Path):
        self.cfg, self.work = cfg, work
        self._stores: dict = {}
        self.data_s: dict = {}  # seconds to make each synthetic set and its store
        self.needed_sizes = list(cfg["sizes"])
        self.step_s: float | None = None  # seconds per training step (the train part), for the loader

    def data(self, size: tuple[int, int]) -> tuple[Path, Path, Path]:
        """(root, pipelines file, store) of a synthetic set at ``size``, made once."""
        if size in self._stores:
            return self._stores[size]
        from mosic.config import load_pipeline
        from mosic.data.synthetic import generate
        from mosic.precompute.runner import precompute

        w, h = size
        t = time.perf_counter()
        root = self.work / f"syn{w}x{h}"
        generate(root, videos=self.cfg["videos"][self.cfg["sizes"].index(size)], seed=11,
                 num_frames=self.cfg["frames"], width=w, height=h, exact_length=True)
        pfile = self.work / f"pipelines{w}.yaml"
        pfile.write_text(pipelines_yaml(self.cfg, root, self.work / f"stores{w}"))
        res = precompute(load_pipeline("check", pfile), progress=False)
        self._stores[size] = (root, pfile, Path(res.store))
        self.data_s[f"{w}x{h}"] = time.perf_counter() - t
        return self._stores[size]


def sync(device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps: int, warmup: int, device) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn`` after ``warmup`` calls, the device's work included."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out
