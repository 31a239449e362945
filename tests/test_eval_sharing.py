"""``mosic-eval run`` shares its results table safely: concurrent runs into one ``--out`` keep every
figure and row, a place that cannot be written or a file mosic did not write is refused before any
work, figures of different presets or settings never replace each other silently, one weights file
is one row however its path is typed; settings are checked when read; a stop signal says what is
kept; data sets are found as people lay them out."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mosic.evaluation.cli import app
from mosic.evaluation.results import load_results, make_row, save_results
from mosic.evaluation.results_file import add_row

from conftest import tiny_eval_set

TINY = {"depth": 2, "embed_dim": 48, "num_heads": 3, "init_values": 0.1}
runner = CliRunner()
UNWRITABLE = "/proc/mosic-results"  # no file can be made under /proc, whoever runs the tests


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return tiny_eval_set(tmp_path_factory.mktemp("sharing") / "syn")


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _base(out, name="tiny"):
    return ["run", "--model", "vit_small_patch14_dinov2", "--random", "--model-kwargs", json.dumps(TINY), "--quick",
            "--img-size", 56, "--name", name, "--out", out]


def _clustering(syn):
    return ["--protocols", "clustering", "--dataset", "synthetic", "--root", syn, "--ks", 6]


def _video(syn):
    return ["--protocols", "video", "--video-dataset", "synthetic", "--video-root", syn]


# ------------------------------------------------------------------------------------------------
# 1. concurrent runs into one --out
# ------------------------------------------------------------------------------------------------
def _add_figures(out, name, prefix, n):
    for i in range(n):
        add_row(out, make_row(name, "m", "w", {f"{prefix} {i}": float(i)}, preset="paper"))


def test_processes_adding_rows_and_figures_to_one_table_at_once_keep_them_all(tmp_path):
    out = tmp_path / "res"
    jobs = [("rowA", "linear"), ("rowA", "clustering"), ("rowB", "linear"), ("rowB", "in-context")]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_figures, args=(out, name, prefix, 15)) for name, prefix in jobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    rows = {r["name"]: r for r in load_results(out.with_suffix(".json"))}
    assert set(rows) == {"rowA", "rowB"}
    assert set(rows["rowA"]["figures"]) == {f"{p} {i}" for p in ("linear", "clustering") for i in range(15)}
    assert set(rows["rowB"]["figures"]) == {f"{p} {i}" for p in ("linear", "in-context") for i in range(15)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.json", "res.md"]  # no temporary or lock file left


def test_concurrent_eval_commands_into_one_out_keep_every_protocols_figures_and_rows(syn, tmp_path):
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "mosic.evaluation.cli"]
    procs = [subprocess.Popen([*cmd, *map(str, _base(out, "rowA") + _clustering(syn))], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True),
             subprocess.Popen([*cmd, *map(str, _base(out, "rowA") + _video(syn))], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True),
             subprocess.Popen([*cmd, *map(str, _base(out, "rowB") + _video(syn))], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    rows = {r["name"]: r for r in load_results(out.with_suffix(".json"))}
    assert set(rows) == {"rowA", "rowB"}
    assert set(rows["rowA"]["figures"]) == {"synthetic/clustering K=6", "synthetic/video frame"}
    assert set(rows["rowB"]["figures"]) == {"synthetic/video frame"}


def test_a_table_locked_by_another_writer_for_too_long_is_one_line_naming_the_lock(tmp_path, monkeypatch):
    import mosic.evaluation.results_file as rf
    from mosic import MosicError

    monkeypatch.setattr(rf, "LOCK_TIMEOUT_S", 0.2)
    (tmp_path / "res.json.lock").write_text("")  # left by a killed run
    with pytest.raises(MosicError, match=r"another mosic-eval has held its lock .*res.json.lock .*delete that file"):
        add_row(tmp_path / "res", make_row("a", "m", "w", {"x": 1.0}))


# ------------------------------------------------------------------------------------------------
# 2. output places that cannot be written, 3. files mosic did not write
# ------------------------------------------------------------------------------------------------
def test_an_out_that_cannot_be_written_is_refused_in_one_line_before_any_protocol_runs(syn):
    r = _run(*_base(f"{UNWRITABLE}/res"), *_clustering(syn))
    assert r.exit_code == 2, r.output
    assert f"error: --out {UNWRITABLE}/res.json: cannot write in /proc" in r.output
    assert "Traceback" not in r.output and "[1/" not in r.output  # no protocol started


def test_compare_plot_and_out_that_cannot_be_written_are_refused_in_one_line(tmp_path):
    save_results([make_row("a", "m", "w", {"x": 1.0})], tmp_path / "a")
    for opt in ("--plot", "--out"):
        r = _run("compare", tmp_path / "a.json", tmp_path / "a.json", opt, f"{UNWRITABLE}/g.png")
        assert r.exit_code == 2 and f"error: {opt} {UNWRITABLE}/g.png: cannot write" in r.output, r.output
        assert "Traceback" not in r.output and "| figure |" not in r.output


def test_show_out_that_cannot_be_written_is_refused_before_the_backbone_is_built(syn):
    r = _run("show", "--model", "vit_small_patch14_dinov2", "--random", "--model-kwargs", json.dumps(TINY),
             "--video-dataset", "synthetic", "--video-root", syn, "--quick", "--out", f"{UNWRITABLE}/c.gif")
    assert r.exit_code == 2 and f"error: --out {UNWRITABLE}/c.gif: cannot write" in r.output, r.output


@pytest.mark.parametrize("out_name", ["notes", "results"])
def test_a_markdown_file_mosic_did_not_write_is_never_replaced(syn, tmp_path, out_name):
    out = tmp_path / "res" / out_name
    out.parent.mkdir()
    md = out.with_suffix(".md")
    md.write_text("# my notes\n")
    r = _run(*_base(out), *_clustering(syn))
    assert r.exit_code == 2 and "Traceback" not in r.output and "[1/" not in r.output, r.output
    assert f"is there without {out_name}.json, so it is not a results table mosic-eval wrote" in r.output
    assert md.read_text() == "# my notes\n" and not out.with_suffix(".json").exists()
    # a results table beside a hand-written .md is refused too
    save_results([make_row("a", "m", "w", {"x": 1.0})], tmp_path / "other")
    (tmp_path / "other.md").write_text("# mine\n")
    r = _run(*_base(tmp_path / "other"), *_clustering(syn))
    assert r.exit_code == 2 and "does not start with a mosic results table" in r.output, r.output
    assert (tmp_path / "other.md").read_text() == "# mine\n"


# ------------------------------------------------------------------------------------------------
# 4. presets, settings and paths
# ------------------------------------------------------------------------------------------------
def test_a_quick_run_never_replaces_a_paper_figure_of_the_same_row(syn, tmp_path):
    out = tmp_path / "res"
    paper = make_row("rowA", "vit_small_patch14_dinov2", "random", {"synthetic/clustering K=6": 10.8},
                     settings={"synthetic/clustering K=6": {"protocol": "clustering", "img_size": 448}},
                     preset="paper")
    save_results([paper], out)
    r = _run(*_base(out, "rowA"), *_clustering(syn))
    assert r.exit_code == 0, r.output
    assert "row 'rowA' holds figures of preset paper; this quick run writes row 'rowA (quick)'" in r.output
    assert "replaced" not in r.output
    rows = {x["name"]: x for x in load_results(out.with_suffix(".json"))}
    assert rows["rowA"]["figures"] == {"synthetic/clustering K=6": 10.8} and rows["rowA"]["preset"] == "paper"
    assert rows["rowA (quick)"]["preset"] == "quick" and set(rows["rowA (quick)"]["figures"]) == {
        "synthetic/clustering K=6"}
    r = _run(*_base(out, "rowA"), *_video(syn))  # the next quick run adds to the quick row
    assert r.exit_code == 0, r.output
    rows = {x["name"]: x for x in load_results(out.with_suffix(".json"))}
    assert set(rows) == {"rowA", "rowA (quick)"} and len(rows["rowA (quick)"]["figures"]) == 2
    r = _run(*_base(out, "rowA"), *_video(syn), "--replace")  # --replace: the row itself, afresh
    assert r.exit_code == 0, r.output
    rows = {x["name"]: x for x in load_results(out.with_suffix(".json"))}
    assert rows["rowA"]["preset"] == "quick" and set(rows["rowA"]["figures"]) == {"synthetic/video frame"}


def test_a_figure_recomputed_with_other_settings_keeps_the_earlier_one_and_says_so(syn, tmp_path):
    out = tmp_path / "res"
    assert _run(*_base(out), *_clustering(syn)).exit_code == 0
    first = load_results(out.with_suffix(".json"))[0]["figures"]["synthetic/clustering K=6"]
    r = _run(*_base(out), *_clustering(syn), "--set", "clustering.niter=3")
    assert r.exit_code == 0, r.output
    assert "replaced 1 earlier figure(s) of row 'tiny': synthetic/clustering K=6" in r.output
    assert "1 of them were computed with other settings (synthetic/clustering K=6: niter: 10 vs 3" in r.output
    row = load_results(out.with_suffix(".json"))[0]
    assert row["superseded"][0]["figure"] == "synthetic/clustering K=6" and row["superseded"][0]["value"] == first
    assert row["superseded"][0]["settings"]["niter"] == 10 and row["settings"]["synthetic/clustering K=6"]["niter"] == 3
    r = _run(*_base(out), *_clustering(syn), "--set", "clustering.niter=3")  # the same settings: plainly replaced
    assert r.exit_code == 0 and "other settings" not in r.output, r.output
    assert len(load_results(out.with_suffix(".json"))[0]["superseded"]) == 1


def _weights(tmp_path):
    import timm
    import torch

    net = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=56, **TINY)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    return tmp_path / "w.pth"


def test_one_weights_file_is_one_row_however_its_path_is_typed(syn, tmp_path, monkeypatch):
    w = _weights(tmp_path)
    out = tmp_path / "res"
    base = ["run", "--model", "vit_small_patch14_dinov2", "--model-kwargs", json.dumps(TINY), "--quick",
            "--img-size", 56, "--out", out, *_video(syn)]
    monkeypatch.chdir(tmp_path)
    assert _run(*base, "--weights", "w.pth").exit_code == 0
    assert _run(*base, "--weights", w).exit_code == 0
    assert _run(*base, "--weights", f"../{tmp_path.name}/./w.pth").exit_code == 0
    rows = load_results(out.with_suffix(".json"))
    assert [r["name"] for r in rows] == [f"vit_small_patch14_dinov2 ({w.resolve()})"]


# ------------------------------------------------------------------------------------------------
# 9. settings read as people write them
# ------------------------------------------------------------------------------------------------
def test_a_model_argument_of_the_wrong_type_is_refused_at_once_naming_its_key(syn, tmp_path):
    r = _run("run", "--model", "vit_small_patch14_dinov2", "--random", "--quick", "--out", tmp_path / "r",
             *_video(syn), "--set", "model.kwargs.depth=two", "--model-kwargs", json.dumps(TINY))
    assert r.exit_code == 2 and "Traceback" not in r.output and "[1/" not in r.output, r.output
    assert "error: --set model.kwargs.depth='two': timm cannot build vit_small_patch14_dinov2 with it" in r.output
    r = _run("run", "--model", "vit_small_patch14_dinov2", "--random", "--quick", "--out", tmp_path / "r",
             *_video(syn), "--model-kwargs", '{"depth": 2, "embed_dim": "wide"}')
    assert r.exit_code == 2 and "error: --model-kwargs: embed_dim='wide': timm cannot build" in r.output, r.output
    assert not (tmp_path / "r.json").exists()


def test_a_setting_of_a_protocol_not_run_is_still_checked_and_named(syn, tmp_path):
    r = _run(*_base(tmp_path / "r"), *_clustering(syn), "--set", "linear.epoch=3")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "linear.epoch" in r.output and "linear.epochs" in r.output


# ------------------------------------------------------------------------------------------------
# 10. data sets and commands as people use them; stop signals
# ------------------------------------------------------------------------------------------------
def test_a_vocdevkit_holding_voc2011_is_found(syn, tmp_path):
    from mosic.evaluation.datasets import export_synthetic_voc, open_seg_dataset

    export_synthetic_voc(syn, tmp_path / "VOCdevkit" / "VOC2011", splits=["train", "valid"], every=4, progress=False)
    for root in (tmp_path, tmp_path / "VOCdevkit"):
        ds = open_seg_dataset("voc", root, "val")
        assert ds.root == tmp_path / "VOCdevkit" / "VOC2011" and len(ds) > 0


def test_clustering_k_values_larger_than_the_patches_are_refused_before_any_work_naming_ks(syn, tmp_path):
    r = _run(*_base(tmp_path / "r"), "--protocols", "clustering", "--dataset", "synthetic", "--root", syn,
             "--ks", "6,100000")
    assert r.exit_code == 2 and "Traceback" not in r.output and "[1/" not in r.output, r.output
    assert "clustering: K = 100000 needs as many patches, but synthetic valid gives" in r.output
    assert "x 4 x 4 at 56 px); give K values that fit with --ks, e.g. --ks 6" in r.output


def test_show_takes_a_run_folder_as_run_does(syn, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    w = _weights(tmp_path)
    w.rename(run / "backbone.pth")
    (run / "config.json").write_text(json.dumps({"train": {"model": {"name": "vit_small_patch14_dinov2",
                                                                     "kwargs": TINY, "img_size": 56}}}))
    r = _run("show", "--run", run, "--video-dataset", "synthetic", "--video-root", syn, "--quick", "--img-size", 56,
             "--out", tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    assert "model name and model arguments" in r.output and (tmp_path / "c.png").is_file()


def test_sigterm_during_a_run_keeps_the_finished_figures_and_says_how_to_go_on(syn, tmp_path, monkeypatch):
    import mosic.evaluation.protocols.video as video

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # what Slurm sends before it kills a job
        raise AssertionError("the signal stops the run before this line")

    monkeypatch.setattr(video, "video_segmentation", terminated)
    out = tmp_path / "res"
    r = _run(*_base(out), "--protocols", "clustering,video", "--dataset", "synthetic", "--root", syn, "--ks", 6,
             "--video-dataset", "synthetic", "--video-root", syn)
    assert r.exit_code == 143, r.output
    assert "stopped by SIGTERM during synthetic/video: the figures that finished are in" in r.output
    assert "(synthetic/clustering K=6); to go on, run the same command with --protocols video" in r.output
    assert set(load_results(out.with_suffix(".json"))[0]["figures"]) == {"synthetic/clustering K=6"}
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was put back
