"""The training loop end to end on a tiny synthetic store with a tiny random ViT."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mosic import MosicError
from mosic.config import load_pipeline
from mosic.stopping import StopFlag
from mosic.train.train import NonFiniteLossError, train

from conftest import SMALL_CLIPS, free_port, small_oracle_store

TINY = {
    "train.model.img_size": 56,
    "train.model.kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 3, "init_values": 0.1},
    "train.model.train_blocks": 1,
    "train.model.head_hidden": [32],
    "train.model.head_dim": 16,
    "train.model.num_prototypes": 8,
    "train.batch_size": 2,
    "train.num_workers": 0,
    "train.max_steps": 4,
    "train.checkpoint_every": 2,
    "train.log_every": 1,
    "train.optim.warmup_steps": 0,
    "train.grid": 2,  # a 4 x 4 store grid holds a 2 x 2 grid in every 56 px crop
    "train.validate.every": 0,  # no held-out split here (tests/test_validate.py covers it)
}
CLIPS = SMALL_CLIPS
CLI_STORE = [x for k, v in CLIPS.items() for x in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_oracle_store(tmp_path_factory.mktemp("train"))


def settings(cfg, **over):
    o = dict(TINY)
    o.update({f"train.{k}": v for k, v in over.items()})
    c = load_pipeline("synthetic-oracle", overrides={"dataset.root": cfg.dataset.root, "stores": cfg.stores,
                                                     **CLIPS, **o})
    return c, c.train


def test_training_runs_logs_checkpoints_and_exports(store, tmp_path):
    cfg, path = store
    c, ts = settings(cfg)
    res = train(c, ts, tmp_path / "run", progress=False)
    assert res["steps"] == 4 and Path(res["store"]) == path
    lines = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    # an epoch is one pass over the 4 videos (one clip each): 2 steps of 2 clips
    assert [x["epoch"] for x in lines] == [0, 0, 1, 1]
    for k in ("loss", "lr_backbone", "lr_head", "usage_teacher", "usage_student", "visible", "clips_per_s",
              "points_per_clip"):
        assert all(isinstance(x[k], float) for x in lines), k
    # a full 2 x 2 grid inside every crop, visible on the first frame
    # (the 16 stored points, of which about 65% fall inside a crop, would give about 10)
    assert all(0.95 * 2 ** 2 <= x["points_per_clip"] <= 2 ** 2 for x in lines), [x["points_per_clip"] for x in lines]
    assert lines[-1]["lr_backbone"] < lines[0]["lr_backbone"]  # cosine decay
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == [
        "latest.pt", "step_0000002.pt", "step_0000004.pt"]
    sd = torch.load(tmp_path / "run/backbone.pth")
    init = torch.load(tmp_path / "run/backbone_init.pth")
    assert "blocks.1.attn.qkv.weight" in sd and sd.keys() == init.keys()
    assert not torch.equal(sd["blocks.1.attn.qkv.weight"], init["blocks.1.attn.qkv.weight"])  # trained
    torch.testing.assert_close(sd["blocks.0.attn.qkv.weight"], init["blocks.0.attn.qkv.weight"])  # frozen
    with pytest.raises(MosicError, match="already holds a run"):
        train(c, ts, tmp_path / "run", progress=False)


def test_resume_continues_exactly(store, tmp_path):
    cfg, _ = store
    c, ts = settings(cfg)
    train(c, ts, tmp_path / "full", progress=False)
    # a run stopped after step 2: its folder holds the step-2 checkpoint as latest
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "full/checkpoints/step_0000002.pt", part / "checkpoints/latest.pt")
    train(c, ts, part, resume=True, progress=False)
    a = torch.load(tmp_path / "full/checkpoints/latest.pt", weights_only=False)
    b = torch.load(part / "checkpoints/latest.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for key in ("student", "teacher"):
        for k in a[key]:
            torch.testing.assert_close(a[key][k], b[key][k], rtol=0, atol=0, msg=f"{key}.{k}")
    with pytest.raises(MosicError, match="no checkpoint"):
        train(c, ts, tmp_path / "nothing", resume=True, progress=False)


def test_nan_loss_stops_with_last_good_checkpoint(store, tmp_path, monkeypatch):
    import mosic.train.step as T

    cfg, _ = store
    c, ts = settings(cfg, checkpoint_every=1)
    real = T.propagation_loss
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(T, "propagation_loss", flaky)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 2") as e:
        train(c, ts, tmp_path / "run", progress=False)
    assert "step_0000002.pt" not in str(e.value) and "latest.pt" in str(e.value)
    ck = torch.load(tmp_path / "run/checkpoints/latest.pt", weights_only=False)
    assert ck["step"] == 2 and all(torch.isfinite(v).all() for v in ck["student"].values() if v.is_floating_point())


def test_store_that_does_not_fit_is_refused_before_training(store, tmp_path):
    cfg, path = store
    c = load_pipeline("synthetic-oracle", overrides={"stores": cfg.stores, **CLIPS, "clips.length": 6, **TINY})
    with pytest.raises(MosicError, match="no complete store .* fits pipeline"):
        train(c, c.train, tmp_path / "run", progress=False)
    c2 = load_pipeline("synthetic-oracle", overrides={**CLIPS, "clips.length": 6, "train.store": str(path), **TINY})
    with pytest.raises(MosicError, match="clips.length: store has 4"):
        train(c2, c2.train, tmp_path / "run2", progress=False)


def test_a_store_tracked_on_another_grid_still_trains(store, tmp_path, caplog):
    """`mosic-precompute --grid G` stays valid: a pipeline asking for a denser stored grid finds the
    store of the same clips on another grid, and training uses the stored points inside each crop."""
    cfg, path = store
    c = load_pipeline("synthetic-oracle", overrides={"dataset.root": cfg.dataset.root, "stores": cfg.stores,
                                                     **CLIPS, "tracker.grid": 30, **TINY, "train.grid": 4})
    with caplog.at_level("WARNING", logger="mosic.train"):
        res = train(c, c.train, tmp_path / "run", progress=False)
    assert Path(res["store"]) == path and res["steps"] == 4
    text = caplog.text
    assert "no store with the pipeline's 30 x 30 grid" in text and "tracked on a 4 x 4 grid" in text
    # a 4 x 4 per-crop grid needs 8 x 8 stored points: the data set says it uses those inside each crop
    assert "too sparse" in text


def test_global_batch_is_the_same_on_two_processes_one_process_and_micro_batches(store, tmp_path):
    """batch_size is the global batch: torchrun --nproc_per_node 2 (gloo) with batch_size 4 (2 clips
    per rank, in micro-batches of 1) == one process with 4 clips == one process with 4 clips in
    micro-batches of 2: same
    global batches, per-clip token masks, one Sinkhorn over all 4 clips, one loss normaliser.
    Tolerance: float reduction order only."""
    cfg, path = store
    env = dict(os.environ, OMP_NUM_THREADS="1")
    sets = ["--set", "model.img_size=56", "--set", "model.kwargs={depth: 2, embed_dim: 48, num_heads: 3}",
            "--set", "model.train_blocks=1", "--set", "model.head_hidden=[32]", "--set", "model.head_dim=16",
            "--set", "model.num_prototypes=8", "--set", "checkpoint_every=3", *CLI_STORE,
            "--set", "optim.warmup_steps=0", "--set", "teacher_chunk=1", "--set", "grid=2", "--set", "validate.every=0",
            "--set", "log_every=1"]
    common = ["-m", "mosic.train", "--pipeline", "synthetic-oracle", "--store", str(path), "--max-steps", "3",
              "--workers", "0", "--no-progress", "--batch-size", "4", *sets]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), *common, "--micro-batch", "1",
                          "--out", str(tmp_path / "ddp")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for name, extra in (("one", []), ("micro", ["--micro-batch", "2"])):
        r = subprocess.run([sys.executable, *common, *extra, "--out", str(tmp_path / name)],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "ddp/config.json").read_text())["world_size"] == 2
    a = torch.load(tmp_path / "ddp/checkpoints/latest.pt", weights_only=False)
    b = torch.load(tmp_path / "one/checkpoints/latest.pt", weights_only=False)
    c = torch.load(tmp_path / "micro/checkpoints/latest.pt", weights_only=False)
    assert a["step"] == b["step"] == c["step"] == 3 and len(a["rng"]) == 2
    for k, v in b["student"].items():
        torch.testing.assert_close(a["student"][k], v, rtol=1e-4, atol=1e-5, msg=k)
        torch.testing.assert_close(c["student"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    init = torch.load(tmp_path / "one/backbone_init.pth")
    key = "blocks.1.attn.qkv.weight"  # the trained block moved, so the comparison means something
    assert (b["student"]["backbone." + key] - init[key]).abs().max() > 1e-4
    logs = [json.loads(x) for x in (tmp_path / "ddp/log.jsonl").read_text().splitlines()]
    one = [json.loads(x) for x in (tmp_path / "one/log.jsonl").read_text().splitlines()]
    assert [x["points_per_clip"] for x in logs] == pytest.approx([x["points_per_clip"] for x in one])
    # the logged loss and monitors are the global batch's, not rank 0's half of it
    for k in ("loss", "usage_teacher", "usage_student", "visible", "valid_first"):
        assert [x[k] for x in logs] == pytest.approx([x[k] for x in one], rel=1e-4, abs=1e-5), k
    # a global batch that does not split over the processes is refused
    bad = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), *common[:-len(sets) - 2], "--batch-size", "3", *sets,
                          "--out", str(tmp_path / "bad")], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "must split evenly over 2 processes" in bad.stderr


def test_killed_training_resumes_to_the_same_state(store, tmp_path):
    """kill -9 a training run after a checkpoint and a logged step past it, --resume it: the final state
    equals an uninterrupted run's, and the log holds each step once."""
    import signal
    import time

    cfg, path = store
    sets = ["--set", "model.img_size=56", "--set", "model.kwargs={depth: 2, embed_dim: 48, num_heads: 3}",
            "--set", "model.train_blocks=1", "--set", "model.head_hidden=[32]", "--set", "model.head_dim=16",
            "--set", "model.num_prototypes=8", "--set", "checkpoint_every=2", "--set", "tracker.grid=4",
            "--set", "clips.length=4", "--set", "clips.step=2", "--set", "clips.clips_per_video=2",
            "--set", "validate.every=0", "--set", "log_every=1"]
    base = [sys.executable, "-m", "mosic.train", "--pipeline", "synthetic-oracle", "--store", str(path),
            "--max-steps", "6", "--batch-size", "2", "--workers", "0", "--no-progress", *sets]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([*base, "--out", str(tmp_path / "ref")], env=env, check=True, capture_output=True, timeout=300)
    run = tmp_path / "killed"
    p = subprocess.Popen([*base, "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.time()
    while len((run / "log.jsonl").read_text().splitlines() if (run / "log.jsonl").exists() else []) < 3:
        assert p.poll() is None and time.time() - t < 120, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    killed_at = torch.load(run / "checkpoints/latest.pt", weights_only=False)["step"]
    subprocess.run([*base, "--out", str(run), "--resume"], env=env, check=True, capture_output=True, timeout=300)
    # the steps after the checkpoint were taken twice, and are logged once
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    a = torch.load(tmp_path / "ref/checkpoints/latest.pt", weights_only=False)
    b = torch.load(run / "checkpoints/latest.pt", weights_only=False)
    # killed after the row of step 3, past the step-2 checkpoint (or a later one)
    assert 2 <= killed_at < 6 and a["step"] == b["step"] == 6
    for key in ("student", "teacher"):
        for k in a[key]:
            torch.testing.assert_close(a[key][k], b[key][k], rtol=0, atol=0, msg=f"{key}.{k}")


@pytest.mark.parametrize("symmetric,normalize", [(False, "visible"), (True, "all")])
def test_micro_batches_and_teacher_chunks_give_the_whole_batch_gradients(symmetric, normalize):
    """The teacher's assignments and the loss normaliser come from the whole batch; the student's
    micro-batches add up to the whole batch's gradients. A per-micro-batch Sinkhorn or normaliser
    would not (checked: it moves the gradients far beyond the tolerance)."""
    from mosic.backbones import create_backbone
    from mosic.train.model import MoSiCModel, make_teacher
    from mosic.train.step import monitors_from_sums, mosic_step

    torch.manual_seed(0)
    bb = create_backbone("vit_small_patch14_dinov2", pretrained=False, img_size=56,
                         depth=2, embed_dim=48, num_heads=3, init_values=0.1)
    student = MoSiCModel(bb, num_prototypes=8, head_hidden=(32,), head_dim=16, train_blocks=1)
    teacher = make_teacher(student)
    with torch.no_grad():  # a teacher unlike the student, so that its labels vary
        for p_ in teacher.parameters():
            p_.add_(0.05 * torch.randn_like(p_))
    B, T, N = 6, 3, 9
    g = torch.Generator().manual_seed(1)
    batch = {"frames": torch.randn(B, T, 3, 56, 56, generator=g), "tracks": torch.rand(B, T, N, 2, generator=g) * 56,
             "visibility": torch.rand(B, T, N, generator=g) > 0.3, "index": torch.arange(B)}
    batch["visibility"][:, 0, :2] = False

    def grads(**over):
        _, ts = settings_for_step(symmetric=symmetric, normalize=normalize, **over)
        student.zero_grad(set_to_none=True)
        loss, sums = mosic_step(student, teacher, batch, ts, step=0, backward=lambda part: part.backward())
        return loss, monitors_from_sums(sums), {n: p_.grad.clone() for n, p_ in student.named_parameters() if p_.grad is not None}

    loss, mon, ref = grads(micro_batch=None, teacher_chunk=None)
    assert mon["points_per_clip"] == pytest.approx(float(batch["visibility"][:, 0].sum()) / B)
    for over in ({"micro_batch": 2, "teacher_chunk": 4}, {"micro_batch": 4, "teacher_chunk": 1}):
        loss2, _, got = grads(**over)
        torch.testing.assert_close(loss2, loss, rtol=1e-5, atol=1e-6)
        assert got.keys() == ref.keys() and len(ref) > 2
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-6, msg=k)


def settings_for_step(symmetric=False, normalize="visible", **over):
    o = {"train.mask_ratio": 0.25, "train.loss.symmetric": symmetric, "train.loss.normalize": normalize,
         **{f"train.{k}": v for k, v in over.items()}}
    c = load_pipeline("synthetic-oracle", overrides=o)
    return c, c.train


def test_the_last_partial_batch_is_kept_as_the_official_loader(store, tmp_path):
    """4 videos, batch 3: the official loader keeps the partial batch (2 steps per epoch, the cosine
    over all of them); drop_last: 1 step per epoch."""
    cfg, _ = store
    for drop, steps in ((False, 4), (True, 2)):
        c, ts = settings(cfg, batch_size=3, epochs=2, drop_last=drop, checkpoint_every=10)
        ts = ts.model_copy(update={"max_steps": None})  # the pipeline's max_steps off: epochs decide
        out = tmp_path / f"run-{drop}"
        res = train(c, ts, out, progress=False)
        lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
        assert res["steps"] == steps and [x["epoch"] for x in lines] == [e for e in (0, 1) for _ in range(steps // 2)]
        from mosic.train.train import lr_factor  # the cosine spans every step, the partial ones included

        assert lines[-1]["lr_head"] == pytest.approx(ts.optim.lr_head * lr_factor(steps - 1, steps, 0, 0.0))


def test_tracker_option_selects_the_store_and_a_too_large_batch_says_what_works(store, tmp_path):
    """`mosic-train --tracker oracle` finds the store `mosic-precompute --tracker oracle` made (the
    pipeline's own tracker is lk), and a batch larger than the epoch names --batch-size /
    train.batch_size and train.clip_sampling=all with numbers that fit (4 videos, 8 clips here)."""
    from typer.testing import CliRunner

    from mosic.train.cli import app

    cfg, _ = store
    tiny = ["--set", "train.model.img_size=56", "--set", "train.grid=2", "--set", "train.validate.every=0",
            "--model-kwargs", '{"depth": 1, "embed_dim": 48, "num_heads": 3}', "--workers", "0", "--no-progress"]
    base = ["--pipeline", "synthetic", "--stores", cfg.stores, "--set", f"dataset.root={cfg.dataset.root}",
            *CLI_STORE, *tiny, "--out", str(tmp_path / "run"), "--batch-size", "6"]
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 2 and "no complete store" in r.output and "`--tracker oracle`" in r.output, r.output
    r = CliRunner().invoke(app, [*base, "--tracker", "oracle"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    err = r.output.strip().splitlines()[-1]
    assert "gives 4 training items per epoch" in err and "(train.batch_size)" in err, err
    assert "--batch-size 4" in err and "--set train.clip_sampling=all" in err and "8 clips" in err, err


def test_a_training_that_raises_midway_closes_its_log_file_tensorboard_writer_and_progress_bar(store, tmp_path,
                                                                                                monkeypatch):
    """A non-finite loss at step 2 stops the run with an exception; the log file (with the rows
    written so far), the TensorBoard writer and the progress bar are closed on the way out."""
    import builtins
    import types

    import mosic.train.run_log as RL
    import mosic.train.step as S
    import mosic.train.train as T

    cfg, _ = store
    c, ts = settings(cfg, tensorboard=True)
    opened, bars, writers = [], [], []

    def recording_open(*a, **k):
        f = builtins.open(*a, **k)
        opened.append(f)
        return f

    class Bar(T.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.closes = 0
            bars.append(self)

        def close(self):
            self.closes += 1
            super().close()

    class Writer:
        def __init__(self, logdir):
            self.closed, self.scalars = False, []
            writers.append(self)

        def add_scalar(self, k, v, step):
            self.scalars.append((k, step))

        def close(self):
            self.closed = True

    real, calls = S.propagation_loss, {"n": 0}

    def nan_at_step_2(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(RL, "open", recording_open, raising=False)
    monkeypatch.setattr(T, "tqdm", Bar)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    monkeypatch.setattr(S, "propagation_loss", nan_at_step_2)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 2"):
        train(c, ts, tmp_path / "run", progress=True)
    logs = [f for f in opened if str(f.name).endswith("log.jsonl")]
    assert len(logs) == 1 and logs[0].closed
    assert [json.loads(x)["step"] for x in (tmp_path / "run/log.jsonl").read_text().splitlines()] == [1, 2]
    assert len(writers) == 1 and writers[0].closed and ("loss", 2) in writers[0].scalars
    assert len(bars) == 1 and bars[0].closes >= 1 and bars[0].n == 2


#: the ways a tensor's value reaches the host: each waits for the device to finish the work queued
#: before it (on the CPU they cost nothing, but they are the same calls)
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "nonzero",
              "masked_select")


def count_host_reads(monkeypatch, host_tensors) -> list:
    """Patch every host read of a tensor (and boolean-mask indexing, whose result's size the host
    must read) to be recorded as (what, shape) in the returned list, except reads of
    ``host_tensors``: tensors that live on the host on any device. ``torch.tensor(..., device=)``
    is recorded too: on a GPU it is a copy that waits for the device's queue as a read does."""
    reads = []
    skip = {id(t) for t in host_tensors}

    def counted(name, fn):
        def read(self, *a, **k):
            if id(self) not in skip:
                reads.append((name, tuple(self.shape)))
            return fn(self, *a, **k)
        return read

    def masked(idx) -> bool:
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (idx if isinstance(idx, tuple) else (idx,)))

    def indexing(name, fn):
        def index(self, idx, *a):
            if masked(idx):
                reads.append((name, tuple(self.shape)))
            return fn(self, idx, *a)
        return index

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    for name in ("nonzero", "masked_select"):
        monkeypatch.setattr(torch, name, counted(name, getattr(torch, name)))
    for name in ("__getitem__", "__setitem__"):
        monkeypatch.setattr(torch.Tensor, name, indexing(name, getattr(torch.Tensor, name)))
    make = torch.tensor

    def made_on_device(data, *a, **k):  # a copy from the host that waits for the device's queue
        if k.get("device") is not None:
            reads.append(("tensor(device=)", ()))
        return make(data, *a, **k)

    monkeypatch.setattr(torch, "tensor", made_on_device)
    return reads


def test_a_step_that_logs_nothing_reads_only_the_loss_back_from_the_device(store, tmp_path, monkeypatch):
    """A training step that writes no log row reads one value from the device: its loss, which the
    guard against a non-finite loss must see before the optimiser step. No monitor, no all-reduce,
    no selection of visible points, no token mask read back, no tensor made on the device from host
    values with a wait. Not counted: the clip index (the
    loader's host tensor, which seeds the token masks) and AdamW's step counters (host tensors).
    Token dropping, micro-batches, teacher chunks and clipping are all on, so their paths count."""
    import mosic.train.train as T
    from mosic.train.distributed import Dist

    cfg, _ = store
    c, ts = settings(cfg, mask_ratio=0.25, micro_batch=1, teacher_chunk=1, **{"optim.clip_grad": 1.0})
    run = T.setup(c, ts, tmp_path / "run", resume=False, ddp=Dist(), device=torch.device("cpu"))
    run.loader.set_epoch(0)
    batches = iter(run.loader)
    run.student.train()
    T.train_step(run, next(batches), monitors=False)  # AdamW's state exists from here on
    run.step += 1
    batch = next(batches)
    host = [batch["index"], *(s["step"] for s in run.optim.state.values())]

    reads = count_host_reads(monkeypatch, host)
    loss, sums = T.train_step(run, batch, monitors=False)
    assert reads == [("item", ())] and sums is None and math.isfinite(loss)

    reads.clear()  # a logging step reads its monitors: the count above is not blind
    loss, sums = T.train_step(run, batch, monitors=True)
    _, monitors, _ = T.exchange(run, loss, sums, StopFlag(at_once=False))
    assert len(reads) > 1 and set(monitors) == {"usage_teacher", "usage_student", "visible", "valid_first",
                                                "points_per_clip"}
