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
