"""Every command answers bad input with one line (no traceback); unreadable videos are recorded
with the decoder's reason; Ctrl-C in precompute says what was kept; progress counts finished
clips and becomes plain log lines in a pipe; training says what it reads."""


import numpy as np
import pytest
from typer.testing import CliRunner

from mosic.config import load_pipeline
from mosic.data.synthetic import generate
from mosic.precompute.runner import precompute

runner = CliRunner()
SMALL = {"tracker.grid": 4, "clips.length": 4, "clips.step": 2, "clips.clips_per_video": 2,
         "store.clips_per_chunk": 2}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    generate(base / "syn", videos=3, seed=0, num_frames=16, width=64, height=48, exact_length=True)
    generate(base / "syn", videos=2, seed=0, split="valid", num_frames=16, width=64, height=48, exact_length=True)
    cfg = load_pipeline("synthetic", overrides={**SMALL, "dataset.root": str(base / "syn"),
                                                "stores": str(base / "stores")})
    res = precompute(cfg, progress=False)
    (base / "empty.pth").write_bytes(b"")
    return {"base": base, "syn": base / "syn", "store": res.store, "stores": base / "stores"}


def _apps():
    from mosic.cli_data import app as data
    from mosic.evaluation.cli import app as evaluation
    from mosic.precompute.cli import app as pre
    from mosic.store_schema.cli import app as store
    from mosic.train.cli import app as train

    return {"mosic-precompute": pre, "mosic-store": store, "mosic-data": data, "mosic-train": train,
            "mosic-eval": evaluation}


EVAL_RUN = ["run", "--model", "vit_small_patch14_dinov2", "--random", "--protocols", "video", "--video-dataset",
            "synthetic", "--video-root", "{syn}", "--out", "{base}/r"]
BAD = [
    ("mosic-precompute", ["--pipeline", "nope"], "unknown pipeline 'nope'"),
    ("mosic-precompute", ["--root", "{base}/none", "--stores", "{base}/s2"], "does not exist"),
    ("mosic-precompute", ["--root", "{syn}", "--device", "tpu"], "--device 'tpu': expected auto | cpu | cuda"),
    ("mosic-precompute", ["--root", "{syn}", "--device", "cuda:99"], "--device cuda:99:"),
    ("mosic-precompute", ["--root", "{syn}", "--shard", "3/2"], "--shard 3/2"),
    ("mosic-precompute", ["--root", "{syn}", "--track-size", "big"], "WIDTHxHEIGHT"),
    ("mosic-precompute", ["--root", "{syn}", "--store", "{store}", "--grid", "6", "--length", "4", "--step", "2",
                          "--clips-per-video", "2", "--no-progress"], "another spec (grid: store has 4, asked for 6)"),
    ("mosic-store", ["inspect", "{base}/none.zarr"], "none.zarr"),
    ("mosic-store", ["show", "{store}", "--clip", "99", "--out", "{base}/x.png"], "--clip 99: store"),
    ("mosic-data", ["voc", "--synthetic", "{base}/none", "--out", "{base}/voc"], "neither a train nor a valid"),
    ("mosic-train", ["--pipeline", "nope"], "unknown pipeline 'nope'"),
    ("mosic-train", ["--device", "tpu"], "--device 'tpu'"),
    ("mosic-train", ["--device", "cuda:99"], "--device cuda:99:"),
    ("mosic-train", ["--weights", "{base}/empty.pth"], "is empty (0 bytes)"),
    ("mosic-train", ["--set", "epochs=many"], "epochs must be a valid integer"),
    ("mosic-train", ["--stores", "{stores}", "--root", "{syn}", "--pipeline", "synthetic-oracle",
                     "--set", "tracker.grid=4", "--set", "clips.length=4", "--set", "clips.step=2",
                     "--set", "clips.clips_per_video=2", "--out", "{base}/t"], "train on it with `--tracker lk`"),
    ("mosic-eval", [*EVAL_RUN, "--device", "auto", "--set", "video.bogus=1"], "unknown setting 'video.bogus'"),
    ("mosic-eval", [*EVAL_RUN, "--device", "cuda:99"], "--device cuda:99:"),
    ("mosic-eval", [*EVAL_RUN, "--device", "gpu"], "--device 'gpu'"),
    ("mosic-eval", [*EVAL_RUN, "--weights", "{base}/empty.pth", "--random"], "only one of"),
    ("mosic-eval", ["run", "--weights", "{base}/empty.pth", "--protocols", "video", "--video-dataset", "synthetic",
                    "--video-root", "{syn}", "--out", "{base}/r"], "--model is missing"),
    ("mosic-eval", ["run", "--run", "{base}/none"], "no such run folder"),
    ("mosic-eval", ["compare", "{base}/a.json", "{base}/b.json"], "results file not found"),
    ("mosic-eval", ["show", "--model", "vit_small_patch14_dinov2", "--random", "--video-dataset", "synthetic",
                    "--video-root", "{syn}", "--clip", "99"], "--clip 99"),
]


@pytest.mark.parametrize("command, args, message", BAD, ids=[f"{c} {' '.join(a[:2])}" for c, a, _ in BAD])
def test_bad_input_is_one_line_without_traceback(made, command, args, message, monkeypatch):
    monkeypatch.chdir(made["base"])  # nothing lands in the repository
    args = [a.format(**{k: str(v) for k, v in made.items()}) for a in args]
    r = runner.invoke(_apps()[command], args)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and message in r.output, r.output
    assert len([ln for ln in r.output.splitlines() if "error:" in ln]) == 1, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_an_unreadable_video_is_recorded_with_the_decoders_reason(tmp_path):
    av = pytest.importorskip("av")
    from mosic.store_schema.cli import app as store_app

    vids = tmp_path / "vids"
    vids.mkdir()
    with av.open(str(vids / "good.mp4"), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            img = np.full((48, 64, 3), 20 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = (vids / "good.mp4").read_bytes()
    (vids / "cut.mp4").write_bytes(data[: len(data) // 3])
    (vids / "text.mp4").write_text("not a video\n" * 20)
    cfg = load_pipeline("synthetic", overrides={**SMALL, "dataset.kind": "videos", "dataset.root": str(vids),
                                                "stores": str(tmp_path / "stores"), "clips.clips_per_video": 1})
    res = precompute(cfg, progress=False)
    reasons = {f.video_id: f.reason for f in res.failures}
    assert sorted(reasons) == ["cut", "text"]
    assert all(r.startswith("unreadable (") and "too short" not in r for r in reasons.values()), reasons
    out = runner.invoke(store_app, ["inspect", str(res.store)]).output
    assert "  text: unreadable (" in out and "  cut: unreadable (" in out


def test_ctrl_c_in_precompute_says_what_was_kept_and_progress_counts_finished_clips(made, tmp_path, monkeypatch,
                                                                                    capsys):
    import tqdm

    import mosic.precompute.runner as runner_mod
    from mosic.cli_common import lines_when_piped
    from mosic.precompute.cli import app as pre

    for mod, name in [(tqdm, "tqdm"), (tqdm, "trange"), (tqdm.std, "tqdm"), (tqdm.std, "trange")]:
        monkeypatch.setattr(mod, name, getattr(mod, name))  # restored after the test
    monkeypatch.setenv("MOSIC_PROGRESS_INTERVAL", "0")
    calls = []
    real = runner_mod._track_batch

    def track_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C while the second chunk is tracked
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_mod, "_track_batch", track_then_stop)
    import io

    fake_err = io.StringIO()
    assert lines_when_piped(fake_err)
    r = runner.invoke(pre, ["--root", str(made["syn"]), "--stores", str(tmp_path / "s"), "--grid", "4",
                            "--length", "4", "--step", "2", "--clips-per-video", "2", "--clips-per-chunk", "2",
                            "--tracker-batch-size", "2"])
    assert r.exit_code == 130, r.output
    assert "interrupted: 2 of 6 clips are saved in " in r.output and "run the same command again" in r.output
    assert "Traceback" not in r.output
    bar = [ln for ln in r.output.splitlines() if ln.startswith("tracking (lk):")]
    assert bar and "\r" not in r.output
    assert bar[-1].split("|")[2].strip().startswith("2/6")  # the count of saved clips, not of tracked ones
    # the same command goes on from there
    monkeypatch.setattr(runner_mod, "_track_batch", real)
    r = runner.invoke(pre, ["--root", str(made["syn"]), "--stores", str(tmp_path / "s"), "--grid", "4",
                            "--length", "4", "--step", "2", "--clips-per-video", "2", "--clips-per-chunk", "2",
                            "--no-progress"])
    assert r.exit_code == 0 and "6 done, 0 failed of 6 (4 written now" in r.output, r.output


def test_training_says_what_it_reads(made):
    from mosic.train.dataset import ClipDataset
    from mosic.train.summary import start_summary

    ds = ClipDataset(made["store"], out_size=56, grid=None)
    line = start_summary(ds)
    assert line.startswith(f"training on {made['store']}: 6 clips from 3 videos, 0 failed clip(s) skipped")
    assert "no frame cache" in line
