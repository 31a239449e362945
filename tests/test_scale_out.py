"""Past one node: two torchrun launchers (``--nnodes 2``) with a c10d rendezvous on the loopback address
train the same run as one launcher with two processes; Slurm jobs through submitit's local executor (the
same code path as on a cluster, as processes on this machine): a training job, a preempted training job
that requeues itself and resumes to the same weights, and precompute shards as a job array."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import SMALL_CLIPS, free_port, small_oracle_store

SETS = ["--set", "model.img_size=56", "--set", "model.kwargs={depth: 2, embed_dim: 48, num_heads: 3}",
        "--set", "model.train_blocks=1", "--set", "model.head_hidden=[32]", "--set", "model.head_dim=16",
        "--set", "model.num_prototypes=8", "--set", "optim.warmup_steps=0", "--set", "grid=2",
        "--set", "validate.every=0", "--set", "checkpoint_every=1",
        *[x for k, v in SMALL_CLIPS.items() for x in ("--set", f"{k}={v}")]]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_oracle_store(tmp_path_factory.mktemp("scale"))


def train_args(path, out, steps=3):
    return ["-m", "mosic.train", "--pipeline", "synthetic-oracle", "--store", str(path), "--max-steps", str(steps),
            "--workers", "0", "--no-progress", "--batch-size", "4", "--device", "cpu", *SETS, "--out", str(out)]


def max_weight_difference(a, b) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_nodes_of_one_process_train_the_same_weights_as_one_node_of_two(store, tmp_path):
    """Two launchers, node ranks 0 and 1, meet at a c10d rendezvous on 127.0.0.1 (world size 2, one
    process each, gloo) and reach the weights of ``torchrun --nproc_per_node 2`` after 3 steps. Each node's
    process takes its device from LOCAL_RANK (0 on both nodes) and its rank from RANK (0 and 1)."""
    cfg, path = store
    one = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), *train_args(path, tmp_path / "one")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
                               "1", "--node_rank", str(r), "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
                               "--rdzv_id", "scale-test", *train_args(path, tmp_path / "two")],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], [e[-3000:] for _, e in outs]
    conf = json.loads((tmp_path / "two/config.json").read_text())
    assert conf["world_size"] == 2 and conf["backend"] == "gloo"
    a = torch.load(tmp_path / "one/checkpoints/latest.pt", weights_only=False)
    b = torch.load(tmp_path / "two/checkpoints/latest.pt", weights_only=False)
    assert a["step"] == b["step"] == 3 and len(b["rng"]) == 2
    diff = max_weight_difference(a["student"], b["student"])
    print(f"max abs difference of the student's weights, 2 nodes x 1 vs 1 node x 2: {diff:.3g}")
    assert diff <= 1e-5
    init = torch.load(tmp_path / "one/backbone_init.pth")
    key = "blocks.1.attn.qkv.weight"  # the trained block moved, so the comparison means something
    assert (b["student"]["backbone." + key] - init[key]).abs().max() > 1e-4


TINY = {
    "train.model.img_size": 56,
    "train.model.kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 3},
    "train.model.train_blocks": 1,
    "train.model.head_hidden": [32],
    "train.model.head_dim": 16,
    "train.model.num_prototypes": 8,
    "train.num_workers": 0,
    "train.checkpoint_every": 1,
    "train.optim.warmup_steps": 0,
    "train.grid": 2,
    "train.validate.every": 0,
    "train.device": "cpu",
    "slurm.cluster": "local",
}


def local_settings(cfg, path, **over):
    from mosic.config import load_pipeline

    c = load_pipeline("synthetic-oracle", overrides={"dataset.root": cfg.dataset.root, "stores": cfg.stores,
                                                     "train.store": str(path), **SMALL_CLIPS, **TINY, **over})
    return c, c.train


def test_a_slurm_training_job_of_two_processes_equals_torchrun_on_one_node(store, tmp_path, monkeypatch):
    """mosic-train --slurm's job on submitit's local executor (2 tasks, their rank, world size, local rank
    and master address from submitit's JobEnvironment) trains the weights of torchrun --nproc_per_node 2."""
    from mosic.train.slurm import submit_training

    cfg, path = store
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    c, ts = local_settings(cfg, path, **{"train.batch_size": 4, "train.max_steps": 3, "slurm.gpus_per_node": 2})
    job = submit_training(c, ts, tmp_path / "slurm-run")
    res = job.results()  # one per task; rank 0 exported the backbone
    assert [r["steps"] for r in res] == [3, 3] and "backbone" in res[0] and (tmp_path / "slurm-run/slurm").is_dir()
    ref = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), *train_args(path, tmp_path / "torchrun")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert json.loads((tmp_path / "slurm-run/config.json").read_text())["world_size"] == 2
    a = torch.load(tmp_path / "torchrun/checkpoints/latest.pt", weights_only=False)
    b = torch.load(tmp_path / "slurm-run/checkpoints/latest.pt", weights_only=False)
    assert a["step"] == b["step"] == 3
    assert max_weight_difference(a["student"], b["student"]) <= 1e-5


def test_a_preempted_slurm_training_job_requeues_itself_and_resumes_to_the_uninterrupted_weights(
        store, tmp_path, monkeypatch):
    """The preemption signal (submitit's, USR2, which Slurm sends before the time limit or a preemption)
    reaches the job's process after its 2nd checkpoint: it requeues itself through submitit's checkpoint protocol, the
    requeued job resumes from the latest checkpoint, and its final student and teacher are bit-identical
    to an uninterrupted job's."""
    from mosic.train.slurm import preemption_signal, submit_training

    cfg, path = store
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    c, ts = local_settings(cfg, path, **{"train.batch_size": 2, "train.max_steps": 12})
    ref = submit_training(c, ts, tmp_path / "ref").result()
    run = tmp_path / "preempted"
    job = submit_training(c, ts, run)
    while not (run / "checkpoints/step_0000002.pt").exists():
        assert job.get_info()["jobState"] == "RUNNING", "the job ended before it could be preempted"
        time.sleep(0.02)
    controller = job._process.pid  # the local executor's controller; Slurm signals the tasks themselves
    task = int(open(f"/proc/{controller}/task/{controller}/children").read().split()[0])
    os.kill(task, preemption_signal())
    res = job.result()
    assert ref["steps"] == res["steps"] == 12
    log = job.stdout() + (job.stderr() or "")
    assert "Requeued job" in log and "resumed from" in log, log[-3000:]
    a = torch.load(tmp_path / "ref/checkpoints/latest.pt", weights_only=False)
    b = torch.load(run / "checkpoints/latest.pt", weights_only=False)
    for key in ("student", "teacher"):
        diff = max_weight_difference(a[key], b[key])
        print(f"max abs difference of the {key}'s weights, preempted and requeued vs uninterrupted: {diff:.3g}")
        assert diff == 0


def test_precompute_shards_as_a_slurm_job_array_fill_the_store_of_one_process(tmp_path):
    """mosic-precompute --slurm --shards 2 (submitit's local executor): two array tasks, --shard 0/2 and 1/2,
    fill one store equal to a one-process run; their output is in STORES/slurm/; a re-run continues (here:
    nothing is left to write)."""
    import numpy as np

    from mosic.data.synthetic import generate
    from mosic.store_schema import StoreReader

    root = tmp_path / "synthetic"
    generate(root, videos=3, seed=2, num_frames=16, width=64, height=48)
    base = [sys.executable, "-m", "mosic.precompute.cli", "--root", str(root), "--grid", "4", "-T", "4", "--step", "2",
            "--clips-per-video", "2", "--clips-per-chunk", "2", "--device", "cpu", "--no-progress"]
    subprocess.run([*base, "--store", str(tmp_path / "one.zarr")], check=True, capture_output=True, timeout=300)
    stores = tmp_path / "stores"
    array = [*base, "--stores", str(stores), "--slurm", "--shards", "2", "--set", "slurm.cluster=local"]
    r = subprocess.run(array, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "submitted 2 shard(s)" in r.stdout and "complete: True" in r.stdout
    logs = sorted((stores / "slurm").rglob("*_log.out"))
    assert len(logs) == 2 and all("Job completed successfully" in p.read_text() for p in logs)
    a = StoreReader(tmp_path / "one.zarr")
    b = StoreReader(next(stores.glob("*.zarr")))
    assert b.meta.complete and a.clips == b.clips and list(a.done) == list(b.done)
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i].tracks, b[i].tracks)
    again = subprocess.run(array, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "complete: True" in again.stdout, again.stderr[-3000:]


def test_slurm_options_say_what_to_do_in_one_line(tmp_path):
    """Without submitit, --slurm names the extra to install; --slurm with --shard is refused (the array
    splits the store itself); a second --slurm run into a run folder needs --resume."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "submitit.py").write_text("raise ImportError('not installed')\n")
    env = dict(ENV, PYTHONPATH=str(block))
    r = subprocess.run([sys.executable, "-m", "mosic.train.cli", "--slurm", "--out", str(tmp_path / "run")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "pip install 'mosic[slurm]'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "mosic.precompute.cli", "--slurm", "--shard", "0/2",
                        "--stores", str(tmp_path / "stores")], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "give --shards N instead of --shard" in r.stderr and "Traceback" not in r.stderr
    run = tmp_path / "held"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints/latest.pt").write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "mosic.train.cli", "--slurm", "--out", str(run), "--set",
                        "slurm.cluster=local"], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "pass --resume to continue it" in r.stderr and "Traceback" not in r.stderr


def test_each_process_takes_the_gpu_of_its_local_rank_and_more_processes_than_gpus_are_refused():
    """On every node LOCAL_RANK (not the global RANK) picks the GPU: the second node's first process
    (RANK 8 of 16) takes GPU 0; a LOCAL_RANK past the node's GPUs is one line naming the fix."""
    from mosic import MosicError
    from mosic.train.distributed import local_rank

    assert local_rank({"RANK": "8", "LOCAL_RANK": "0", "WORLD_SIZE": "16"}, gpus=8) == 0
    assert local_rank({"RANK": "15", "LOCAL_RANK": "7", "WORLD_SIZE": "16"}, gpus=8) == 7
    assert local_rank({"RANK": "1", "WORLD_SIZE": "2"}, gpus=0) == 0  # one process per node on CPUs
    with pytest.raises(MosicError, match="start at most 2 processes per node"):
        local_rank({"RANK": "3", "LOCAL_RANK": "2", "WORLD_SIZE": "4"}, gpus=2)


class Requeues:
    """Stands for submitit's preemption handler: counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, signum, frame):
        self.calls += 1


def test_the_preemption_signal_becomes_the_loops_stop_while_the_loop_handles_stops_and_requeues_at_once_otherwise():
    """While the training loop holds stop_signals (flag mode), the preemption signal sets its flag (the loop
    saves at its step's end) and the requeue waits for requeue_now(); outside the loop it requeues at once."""
    from mosic.stopping import stop_signals
    from mosic.train.slurm import PreemptionRelay, preemption_signal

    requeue = Requeues()
    relay = PreemptionRelay(requeue)
    with stop_signals(at_once=False) as stop:
        relay(preemption_signal(), None)
        assert stop.requested and stop.exit_code == 143 and relay.pending and requeue.calls == 0
    relay.requeue_now()
    assert requeue.calls == 1
    outside = PreemptionRelay(requeue)
    outside(preemption_signal(), None)
    assert requeue.calls == 2 and not outside.pending
