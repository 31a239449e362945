"""Training under interruption, concurrency and bad output places: a stop signal saves and says how to go
on, a resumed run logs each step once, a second run into a running run's folder is refused, a checkpoint
made with other settings is refused, old step checkpoints are pruned, an unwritable --out is one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from mosic import MosicError
from mosic.train.run_log import cut_log, read_log
from mosic.train.train import train

from conftest import free_port, small_oracle_store
from test_train import CLI_STORE, settings

SETS = ["--set", "model.img_size=56", "--set", "model.kwargs={depth: 2, embed_dim: 48, num_heads: 3}",
        "--set", "model.train_blocks=1", "--set", "model.head_hidden=[32]", "--set", "model.head_dim=16",
        "--set", "model.num_prototypes=8", "--set", "grid=2", "--set", "validate.every=0", *CLI_STORE]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_oracle_store(tmp_path_factory.mktemp("stop"))


def command(path, out, steps, *extra):
    return [sys.executable, "-m", "mosic.train", "--pipeline", "synthetic-oracle", "--store", str(path),
            "--max-steps", str(steps), "--batch-size", "2", "--workers", "0", "--no-progress", *SETS,
            *extra, "--out", str(out)]


def wait_for_rows(out: Path, n: int, procs) -> None:
    t = time.time()
    while len(read_log(out, "train")) < n:
        assert all(p.poll() is None for p in procs), "the run ended before it could be stopped"
        assert time.time() - t < 240, "no log rows"
        time.sleep(0.05)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_the_step_reached_says_how_to_go_on_and_a_resume_logs_each_step_once(
        store, tmp_path, sig, code):
    cfg, path = store
    run = tmp_path / "run"
    base = command(path, run, 30, "--set", "checkpoint_every=1000", "--set", "log_every=1")
    p = subprocess.Popen(base, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(run, 3, [p])
    p.send_signal(sig)
    _, err = p.communicate(timeout=240)
    assert p.returncode == code, err[-2000:]
    ck = torch.load(run / "checkpoints/latest.pt", weights_only=False)
    stopped = ck["step"]
    assert f"stopped by {signal.Signals(sig).name} after step {stopped} of 30" in err
    assert f"holds step {stopped}, nothing is lost" in err and "--resume" in err and "Traceback" not in err
    assert [r["step"] for r in read_log(run, "train")] == list(range(1, stopped + 1))
    # the run goes on from there, to the end this time
    done = subprocess.run([*base, "--resume"], env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31)) and (run / "loss.png").is_file()


def test_a_resumed_run_cuts_the_log_rows_past_its_checkpoint_and_every_reader_keeps_one_row_per_step(tmp_path):
    rows = [{"step": s, "loss": 1.0} for s in (1, 2, 3, 4, 5)] + [{"kind": "validation", "step": 4, "val_x": 1.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cut_log(tmp_path, 3) == 3
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3]
    with open(tmp_path / "log.jsonl", "a") as f:  # a log written before the cut rule: steps 2 and 3 twice
        f.write(json.dumps({"step": 2, "loss": 7.0}) + "\n" + json.dumps({"step": 3, "loss": 8.0}) + "\n")
    assert [(r["step"], r["loss"]) for r in read_log(tmp_path, "train")] == [(1, 1.0), (2, 7.0), (3, 8.0)]


def test_under_ddp_a_sigterm_to_one_rank_stops_both_at_the_same_logging_step_with_a_whole_checkpoint(
        store, tmp_path):
    """Two gloo processes (the variables torchrun sets, so each pid is known); only rank 1 gets SIGTERM.
    The ranks exchange the flag on logging steps (every 2nd), so both stop at the same even step."""
    cfg, path = store
    run = tmp_path / "ddp"
    port = str(free_port())
    cmd = command(path, run, 200, "--batch-size", "4", "--set", "checkpoint_every=1000", "--set", "log_every=2")
    procs = [subprocess.Popen(cmd, env=dict(ENV, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                            MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    wait_for_rows(run, 2, procs)
    procs[1].send_signal(signal.SIGTERM)
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], errs[0][-2000:] + errs[1][-2000:]
    ck = torch.load(run / "checkpoints/latest.pt", weights_only=False)
    s = ck["step"]
    assert s % 2 == 0 and len(ck["rng"]) == 2 and set(ck) >= {"student", "teacher", "optimizer", "ema"}
    assert f"holds step {s}, nothing is lost" in errs[0]
    assert f"rank 1: stopped by SIGTERM after step {s} of 200" in errs[1]
    assert read_log(run, "train")[-1]["step"] == s


def test_a_second_run_into_the_folder_of_a_running_run_is_refused(store, tmp_path):
    cfg, _ = store
    c, ts = settings(cfg)
    (tmp_path / "run").mkdir()
    with FileLock(tmp_path / "run/train.lock"):  # a run in progress holds it
        with pytest.raises(MosicError, match=r"another mosic-train is running in .*run .*choose another --out"):
            train(c, ts, tmp_path / "run", progress=False)
    assert not (tmp_path / "run/checkpoints").exists()
    assert train(c, ts, tmp_path / "run", progress=False)["steps"] == 4  # the lock is free again


def test_resume_refuses_other_settings_naming_them_unless_told_and_old_step_checkpoints_are_pruned(store, tmp_path):
    cfg, _ = store
    c, ts = settings(cfg, checkpoint_every=1, keep_checkpoints=2)
    train(c, ts, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == [
        "latest.pt", "step_0000003.pt", "step_0000004.pt"]
    c2, ts2 = settings(cfg, checkpoint_every=1, keep_checkpoints=2, max_steps=6, mask_ratio=0.2,
                        **{"optim.lr_head": 2e-3})
    with pytest.raises(MosicError, match=r"other training settings \(mask_ratio: 0.1 there, 0.2 now; "
                                         r"optim.lr_head: 0.001 there, 0.002 now\).*--changed-settings-ok"):
        train(c2, ts2, tmp_path / "run", resume=True, progress=False)
    assert train(c2, ts2, tmp_path / "run", resume=True, progress=False, changed_settings_ok=True)["steps"] == 6
    # a longer run and another checkpoint interval change no step taken: no option needed
    c3, ts3 = settings(cfg, checkpoint_every=3, keep_checkpoints=2, max_steps=8, mask_ratio=0.2,
                       **{"optim.lr_head": 2e-3})
    assert train(c3, ts3, tmp_path / "run", resume=True, progress=False)["steps"] == 8


def test_an_out_that_cannot_be_written_is_one_line_before_any_work(store, tmp_path):
    cfg, path = store
    (tmp_path / "a_file").write_text("x")
    r = subprocess.run(command(path, tmp_path / "a_file" / "run", 2), env=ENV, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: --out {tmp_path}/a_file/run: {tmp_path}/a_file is a file, "
                                             "not a folder; choose another place"]


def test_piped_training_prints_periodic_progress_lines_not_one_per_step_and_draws_the_loss(store, tmp_path):
    cfg, path = store
    cmd = [c for c in command(path, tmp_path / "run", 24, "--set", "log_every=1") if c != "--no-progress"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    bar = [x for x in r.stderr.splitlines() if x.startswith("train:")]
    assert 1 <= len(bar) <= 4, bar  # the first, one every 30 s, the last: not 24
    assert (tmp_path / "run/loss.png").stat().st_size > 0
