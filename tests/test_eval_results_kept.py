"""``mosic-eval run`` never loses figures: runs add to the table, each protocol's figures are
written when it finishes, a failing protocol is recorded while the others go on; ``--run``
takes the backbone's name and arguments from a mosic-train run folder."""

import json

import pytest
from typer.testing import CliRunner

from mosic.evaluation.cli import app
from mosic.evaluation.results import add_to_table, load_results, make_row, markdown_table

from conftest import tiny_eval_set

TINY = {"depth": 2, "embed_dim": 48, "num_heads": 3, "init_values": 0.1}
runner = CliRunner()


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return tiny_eval_set(tmp_path_factory.mktemp("kept") / "syn")


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _base(syn, out):
    return ["run", "--model", "vit_small_patch14_dinov2", "--random", "--model-kwargs", json.dumps(TINY), "--quick",
            "--img-size", 56, "--name", "tiny", "--out", out]


def test_add_to_table_replaces_only_recomputed_figures():
    old = make_row("a", "m", "w", {"voc/linear": 1.0, "davis/video frame": 2.0})
    old["errors"] = {"voc/in-context": "boom"}
    other = make_row("b", "m", "w", {"voc/linear": 5.0})
    new = make_row("a", "m", "w", {"voc/linear": 3.0, "voc/in-context 1/2": 4.0})
    rows, replaced = add_to_table([old, other], new)
    assert replaced == ["voc/linear"] and [r["name"] for r in rows] == ["a", "b"]
    assert rows[0]["figures"] == {"voc/linear": 3.0, "davis/video frame": 2.0, "voc/in-context 1/2": 4.0}
    assert rows[0]["errors"] == {}  # the in-context figure now exists
    rows, replaced = add_to_table([old, other], new, replace=True)
    assert replaced == [] and rows[0]["figures"] == new["figures"] and rows[1] == other
    fail = {**make_row("c", "m", "w", {}), "errors": {"ade20k/in-context": "reference list ..."}}
    assert "- c, ade20k/in-context: reference list ..." in markdown_table([fail])


def test_second_run_keeps_the_first_runs_figures(syn, tmp_path):
    out = tmp_path / "res"
    r = _run(*_base(syn, out), "--protocols", "video", "--video-dataset", "synthetic", "--video-root", syn)
    assert r.exit_code == 0, r.output
    r = _run(*_base(syn, out), "--protocols", "clustering", "--dataset", "synthetic", "--root", syn, "--ks", 6)
    assert r.exit_code == 0, r.output
    assert "kept 1 figure(s) of row 'tiny' that this run did not compute (--replace to drop them): " \
           "synthetic/video frame" in r.output
    figs = load_results(out.with_suffix(".json"))[0]["figures"]
    assert set(figs) == {"synthetic/video frame", "synthetic/clustering K=6"}
    assert "synthetic/video frame" in out.with_suffix(".md").read_text()


def _voc_with_trainaug(syn, tmp_path):
    """The synthetic VOC export with a 'trainaug' split that the reference in-context lists do not fit."""
    from mosic.evaluation.datasets import export_synthetic_voc

    voc = tmp_path / "voc"
    export_synthetic_voc(syn, voc, splits=["train", "valid"], every=4, progress=False)
    sets = voc / "ImageSets" / "Segmentation"
    (sets / "trainaug.txt").write_text((sets / "train.txt").read_text())
    (voc / "SegmentationClassAug").symlink_to(voc / "SegmentationClass")
    return voc


def test_a_failing_protocol_is_recorded_and_the_others_go_on(syn, tmp_path):
    voc = _voc_with_trainaug(syn, tmp_path)
    out = tmp_path / "res"
    r = _run(*_base(syn, out), "--protocols", "clustering,incontext,video", "--dataset", "voc", "--root", voc,
             "--fractions", "1/128", "--ks", 6, "--video-dataset", "synthetic", "--video-root", syn)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert "error: voc/in-context 1/128: reference list 1_div_128/trainaug_128_42.txt names" in r.output
    assert "--set incontext.subsets=random" in r.output and "going on with the others" in r.output
    row = load_results(out.with_suffix(".json"))[0]
    assert set(row["figures"]) == {"voc/clustering K=6", "synthetic/video frame"}
    assert "--set incontext.subsets=random" in row["errors"]["voc/in-context 1/128"]
    assert "Failed (no figure):\n- tiny, voc/in-context 1/128: reference list" in out.with_suffix(".md").read_text()
    # the way out the error names: the in-context figure is added and its error cleared
    r = _run(*_base(syn, out), "--protocols", "incontext", "--dataset", "voc", "--root", voc, "--fractions", "1/128",
             "--set", "incontext.subsets=random")
    assert r.exit_code == 0, r.output
    row = load_results(out.with_suffix(".json"))[0]
    assert set(row["figures"]) == {"voc/clustering K=6", "synthetic/video frame", "voc/in-context 1/128"}
    assert row["errors"] == {} and "Failed" not in out.with_suffix(".md").read_text()


def _one_failed(r, out, kept: set, failed: set) -> dict:
    """The run exited 1 without a traceback, and its row keeps the figures ``kept`` and records ``failed``."""
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    row = load_results(out.with_suffix(".json"))[0]
    assert set(row["figures"]) == kept and set(row["errors"]) == failed
    return row


def test_an_in_context_fraction_that_fails_keeps_the_other_fractions_figures(syn, tmp_path):
    voc = _voc_with_trainaug(syn, tmp_path)
    out = tmp_path / "res"
    r = _run(*_base(syn, out), "--protocols", "incontext", "--dataset", "voc", "--root", voc,
             "--fractions", "1/128,1")
    row = _one_failed(r, out, kept={"voc/in-context 1"}, failed={"voc/in-context 1/128"})
    assert "reference list" in row["errors"]["voc/in-context 1/128"]


def test_a_video_mode_that_fails_keeps_the_other_modes_figures(syn, tmp_path, monkeypatch):
    import mosic.evaluation.protocols.video as video

    real = video.video_segmentation

    def no_clip_mode(*args, mode="frame", **kwargs):
        if mode == "clip":
            raise RuntimeError("out of memory")
        return real(*args, mode=mode, **kwargs)

    monkeypatch.setattr(video, "video_segmentation", no_clip_mode)
    out = tmp_path / "res"
    r = _run(*_base(syn, out), "--protocols", "video", "--video-dataset", "synthetic", "--video-root", syn,
             "--video-modes", "clip,frame")
    row = _one_failed(r, out, kept={"synthetic/video frame"}, failed={"synthetic/video clip"})
    assert row["errors"] == {"synthetic/video clip": "RuntimeError: out of memory"}


def test_figures_are_on_disk_as_soon_as_their_protocol_finishes(syn, tmp_path, monkeypatch):
    import mosic.evaluation.protocols.video as video

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(video, "video_segmentation", interrupted)
    out = tmp_path / "res"
    r = _run(*_base(syn, out), "--protocols", "clustering,video", "--dataset", "synthetic", "--root", syn, "--ks", 6,
             "--video-dataset", "synthetic", "--video-root", syn)
    assert r.exit_code == 130 and "stopped by SIGINT during synthetic/video: the figures that finished are in " \
        in r.output and "(synthetic/clustering K=6); to go on, run the same command with --protocols video" \
        in r.output, r.output
    assert set(load_results(out.with_suffix(".json"))[0]["figures"]) == {"synthetic/clustering K=6"}


def test_voc_export_names_the_train_split(syn, tmp_path):
    from mosic.evaluation.datasets import export_synthetic_voc

    export_synthetic_voc(syn, tmp_path / "voc", splits=["train", "valid"], every=4, progress=False)
    r = _run(*_base(syn, tmp_path / "res"), "--protocols", "incontext", "--fractions", "1", "--dataset", "voc",
             "--root", tmp_path / "voc")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "this folder has the splits train, trainval, val: pass --train-split train" in r.output


def _fake_run(tmp_path, kwargs=TINY, name="vit_small_patch14_dinov2"):
    """A run folder as mosic-train leaves it: backbone.pth (a timm state dict) and config.json."""
    import timm
    import torch

    run = tmp_path / "run"
    run.mkdir()
    net = timm.create_model(name, pretrained=False, num_classes=0, img_size=112, **kwargs)
    torch.save(net.state_dict(), run / "backbone.pth")
    (run / "config.json").write_text(json.dumps({"train": {"model": {"name": name, "kwargs": kwargs,
                                                                     "img_size": 112}}}))
    return run


def test_run_folder_gives_model_name_and_arguments(syn, tmp_path):
    run = _fake_run(tmp_path)
    vid = ["--protocols", "video", "--video-dataset", "synthetic", "--video-root", syn, "--quick", "--img-size", 56]
    r = _run("run", "--run", run, *vid, "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert f"from {run / 'config.json'}: model name and model arguments: vit_small_patch14_dinov2" in r.output
    row = load_results(tmp_path / "a.json")[0]
    assert row["provenance"]["model_kwargs"] == TINY and row["provenance"]["run_img_size"] == 112
    r = _run("run", "--weights", run / "backbone.pth", *vid, "--out", tmp_path / "b")  # the same, from the file
    assert r.exit_code == 0, r.output
    assert load_results(tmp_path / "b.json")[0]["figures"] == row["figures"]
    r = _run("run", "--model", "vit_small_patch14_dinov2.lvd142m", "--weights", run / "backbone.pth", *vid,
             "--out", tmp_path / "b2")  # `make eval`'s model name: the same architecture, the run's arguments
    assert r.exit_code == 0 and "from " in r.output and "model arguments" in r.output, r.output
    # the same file away from its config.json, without the arguments: the shapes are named
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "b.pth").write_bytes((run / "backbone.pth").read_bytes())
    r = _run("run", "--model", "vit_small_patch14_dinov2", "--weights", tmp_path / "copy" / "b.pth", *vid,
             "--out", tmp_path / "c")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "is for another architecture than 'vit_small_patch14_dinov2'" in r.output
    assert "the file is a ViT with depth 2, embed_dim 48, the model a ViT with depth 12, embed_dim 384" in r.output
    assert "--model-kwargs" in r.output
