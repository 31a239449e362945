"""Results tables (JSON/Markdown round trip, comparison, plots, cluster pictures) and the
``mosic-eval`` command line end to end on a tiny synthetic set with a tiny random ViT."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mosic.evaluation.cli import app
from mosic.evaluation.options import parse_fractions, parse_sets
from mosic.evaluation.pictures import cluster_visualisation
from mosic.evaluation.results import (compare, load_results, make_row, markdown_table, pairs,
                                plot_gains, save_results, upsert)
from mosic import MosicError

from conftest import tiny_eval_set

TINY = '{"depth": 2, "embed_dim": 48, "num_heads": 3, "init_values": 0.1}'
runner = CliRunner()


# ------------------------------------------------------------------------------------------------
# results tables
# ------------------------------------------------------------------------------------------------
LIN = {"protocol": "linear", "img_size": 448, "epochs": 25, "device": "cuda",
       "data": {"dataset": "voc", "val": {"split": "val", "fingerprint": "abc"}}}
VID = {"protocol": "video", "img_size": 224, "niter": 50, "data": {"dataset": "davis", "val": {"fingerprint": "d"}}}


def _rows():
    a = make_row("dinov2", "vit_small_patch14_dinov2", "pretrained",
                 {"voc/linear": 78.9, "voc/clustering K=21": 40.25, "davis/video frame": 57.4},
                 settings={"voc/linear": LIN, "davis/video frame": VID}, preset="paper")
    b = make_row("mosic", "vit_small_patch14_dinov2", "runs/m/backbone.pth",
                 {"voc/linear": 79.7, "davis/video frame": 58.9, "voc/in-context 1/128": float("nan")},
                 settings={"voc/linear": {**LIN, "device": "cpu"}, "davis/video frame": VID}, preset="paper")
    return a, b


def test_results_json_md_round_trip(tmp_path):
    a, b = _rows()
    js, md = save_results([a, b], tmp_path / "sub" / "results")
    assert js.name == "results.json" and md.name == "results.md"
    rows = load_results(js)
    assert [r["name"] for r in rows] == ["dinov2", "mosic"]
    assert rows[0]["figures"] == a["figures"] and rows[0]["settings"]["voc/linear"] == LIN
    assert rows[1]["figures"]["voc/in-context 1/128"] is None  # NaN stored as null
    assert load_results(tmp_path / "sub" / "results.md") == rows  # the .md path finds its .json
    lines = md.read_text().strip().splitlines()
    assert lines[0] == ("| model | backbone | weights | preset | voc/linear | voc/clustering K=21 | davis/video frame | "
                        "voc/in-context 1/128 |")
    assert lines[2] == "| dinov2 | vit_small_patch14_dinov2 | pretrained | paper | 78.9 | 40.2 | 57.4 | – |"
    assert lines[3] == "| mosic | vit_small_patch14_dinov2 | runs/m/backbone.pth | paper | 79.7 | – | 58.9 | – |"
    assert markdown_table(rows) == md.read_text().strip()
    with pytest.raises(MosicError, match="not found"):
        load_results(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(MosicError, match="not a results file"):
        load_results(tmp_path / "bad.json")


def test_upsert_replaces_or_merges_by_name():
    a, b = _rows()
    new = make_row("dinov2", "m", "random", {"voc/linear": 1.0})
    rows = upsert([a, b], new)
    assert [r["name"] for r in rows] == ["dinov2", "mosic"] and rows[0]["figures"] == {"voc/linear": 1.0}
    merged = upsert([a, b], new, merge=True)[0]["figures"]
    assert merged == {"voc/linear": 1.0, "voc/clustering K=21": 40.25, "davis/video frame": 57.4}
    assert [r["name"] for r in upsert([a], b)] == ["dinov2", "mosic"]


def test_compare_gains_side_by_side(tmp_path):
    a, b = _rows()
    save_results([a], tmp_path / "a")
    save_results([b], tmp_path / "b")
    text = compare(tmp_path / "a.json", tmp_path / "b.json")
    assert "| figure | A: dinov2 | B: mosic | B − A | settings |" in text
    assert "| voc/linear | 78.9 | 79.7 | +0.8 | same |" in text  # the device is no setting of the figure
    assert "| davis/video frame | 57.4 | 58.9 | +1.5 | same |" in text
    assert "| voc/clustering K=21 | 40.2 | – | – |  |" in text
    assert "presets: A paper, B paper" in text and "Not comparable" not in text
    # same-name rows pair up; several unnamed rows on both sides need names
    a2 = {**a, "name": "other"}
    assert [(x["name"], y["name"]) for x, y in pairs([a, a2], [{**b, "name": "other"}])] == [("other", "other")]
    with pytest.raises(MosicError, match="--a-row"):
        pairs([a, a2], [b])
    assert pairs([a, a2], [b], a_row="other")[0][0]["name"] == "other"
    with pytest.raises(MosicError, match="no row named"):
        pairs([a], [b], b_row="nope")
    # a figure computed with other settings (or on another image list) is refused, or flagged on request
    for change in ({"epochs": 5}, {"data": {**LIN["data"], "val": {"split": "val", "fingerprint": "xyz"}}}):
        b2 = {**b, "settings": {**b["settings"], "voc/linear": {**LIN, **change}}}
        with pytest.raises(MosicError, match="'voc/linear' of 'dinov2' and 'mosic' was computed with different settings"):
            compare(a, b2)
        text = compare(a, b2, allow_mismatch=True)
        assert "| voc/linear | 78.9 | 79.7 | +0.8 | ≠ |" in text
    assert "- voc/linear: data.val.fingerprint: 'abc' vs 'xyz'" in text
    old = {**b, "settings": {}}  # a row that does not record its settings: flagged
    text = compare(a, old)
    assert "| voc/linear | 78.9 | 79.7 | +0.8 | ? |" in text and "- voc/linear: settings not recorded in B" in text
    png = plot_gains(tmp_path / "a.json", tmp_path / "b.json", tmp_path / "g.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_cluster_visualisation_png_and_gif(tmp_path):
    frames = np.full((3, 20, 30, 3), 100, np.uint8)
    frames[:, 18:] = np.array([100, 120, 140], np.uint8)[:, None, None, None]  # PIL merges identical GIF frames
    maps = np.zeros((3, 10, 15), np.int64)
    maps[:, :, 5:] = 1
    maps[:, :5, :5] = 255  # not coloured
    png = cluster_visualisation(frames, maps, tmp_path / "c.png", alpha=0.5)
    img = np.asarray(Image.open(png))
    assert img.shape == (40, 90, 3)
    np.testing.assert_array_equal(img[:20], np.concatenate(list(frames), 1))  # frames on top
    over = img[20:]
    assert (over[0, 0] == 100).all()  # ignore: frame as it was
    np.testing.assert_array_equal(over[15, 0], [50, 50, 50])  # cluster 0: black at alpha 0.5
    np.testing.assert_array_equal(over[15, 20], [165, 62, 88])  # cluster 1: (230, 25, 75) at alpha 0.5
    gif = cluster_visualisation(frames, maps, tmp_path / "c.gif")
    with Image.open(gif) as im:
        assert im.n_frames == 3 and im.size == (60, 20)
    with pytest.raises(MosicError, match="png or .gif"):
        cluster_visualisation(frames, maps, tmp_path / "c.jpg")
    with pytest.raises(MosicError, match="frames"):
        cluster_visualisation(frames, maps[:2], tmp_path / "c.png")


def test_option_parsers():
    assert parse_fractions("1/128, 1") == [("1/128", 1 / 128), ("1", 1.0)]
    with pytest.raises(MosicError, match="fraction"):
        parse_fractions("2")
    assert parse_sets(["video.nredo=1", "linear.lr=0.1", "video.mode=clip"]) == {
        "video": {"nredo": 1, "mode": "clip"}, "linear": {"lr": 0.1}}
    with pytest.raises(MosicError, match="PROTOCOL.KEY=VALUE"):
        parse_sets(["nredo=1"])


# ------------------------------------------------------------------------------------------------
# the command line, end to end
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return tiny_eval_set(tmp_path_factory.mktemp("eval") / "syn")


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_run_all_protocols_quick(syn, tmp_path):
    from mosic.evaluation.runner import protocol_function
    from mosic.evaluation.settings import PROTOCOLS

    protos = []
    for p in PROTOCOLS:  # every protocol module present in this checkout
        try:
            protocol_function(p)
            protos.append(p)
        except MosicError:
            pass
    assert {"video", "consistency"} <= set(protos)
    out = tmp_path / "res" / "results"
    base = ["run", "--model", "vit_small_patch14_dinov2", "--random", "--model-kwargs", TINY, "--dataset", "synthetic",
            "--root", syn, "--video-dataset", "synthetic", "--video-root", syn, "--quick", "--out", out,
            "--fractions", "1/2,1", "--ks", "6,12", "--img-size", 56]
    r = _run(*base, "--protocols", ",".join(protos), "--video-modes", "frame,clip", "--name", "tiny",
             "--set", "video.eval_size=28")
    assert r.exit_code == 0, r.output
    rows = load_results(out.with_suffix(".json"))
    assert [x["name"] for x in rows] == ["tiny"]
    figs = rows[0]["figures"]
    expected = {"synthetic/video frame", "synthetic/video clip", "synthetic/consistency", "synthetic/correspondence"}
    if "linear" in protos:
        expected.add("synthetic/linear")
    if "clustering" in protos:
        expected |= {"synthetic/clustering K=6", "synthetic/clustering K=12"}
    if "incontext" in protos:
        expected |= {"synthetic/in-context 1/2", "synthetic/in-context 1"}
    assert set(figs) == expected
    assert all(0 <= v <= 100 for v in figs.values()), figs
    st = rows[0]["settings"]["synthetic/video frame"]
    assert st["img_size"] == 56 and st["eval_size"] == 28 and st["niter"] == 10 and st["pca_dim"] == 50
    assert st["protocol"] == "video" and st["data"]["val"]["split"] == "valid" and len(st["data"]["val"]["fingerprint"]) == 16
    assert set(rows[0]["settings"]) == set(figs)  # every figure says how it was made
    assert rows[0]["preset"] == "quick" and rows[0]["provenance"]["weights"] == "random"
    if "incontext" in protos:
        ic = rows[0]["settings"]["synthetic/in-context 1/2"]
        assert ic["protocol"] == "incontext" and ic["memory_size"] == 10_240 and ic["matching"] == "hungarian"
        assert ic["seed"] == [0] and ic["subsets_used"] == ["random (seed 0)"] and ic["data"]["train"]["split"] == "train"
        assert ic["memory_ignore_used"] == "background" and ic["search_used"] == "torch"
    if "clustering" in protos:
        assert rows[0]["settings"]["synthetic/clustering K=12"]["ks"] == [12]
    assert out.with_suffix(".md").read_text().count("| tiny |") == 1

    # a second row, then the first replaced (not duplicated); --merge keeps its other figures
    r = _run(*base, "--protocols", "video", "--name", "other", "--seed", 1)
    assert r.exit_code == 0, r.output
    r = _run(*base, "--protocols", "consistency", "--name", "tiny", "--merge")
    assert r.exit_code == 0, r.output
    rows = load_results(out.with_suffix(".json"))
    assert [x["name"] for x in rows] == ["tiny", "other"]
    assert set(rows[0]["figures"]) == expected

    # compare the two rows of the same file, with a plot: "other" ran with another seed (clip frames,
    # K-means), so its video figure is refused unless flagged
    js = out.with_suffix(".json")
    r = _run("compare", js, js, "--a-row", "tiny", "--b-row", "other")
    assert r.exit_code == 2 and "different settings" in r.output and "seed" in r.output, r.output
    r = _run("compare", js, js, "--a-row", "tiny", "--b-row", "other", "--plot", tmp_path / "g.png",
             "--out", tmp_path / "cmp.md", "--allow-mismatch")
    assert r.exit_code == 0, r.output
    assert "| figure | A: tiny | B: other | B − A | settings |" in r.output and (tmp_path / "g.png").is_file()
    assert "| synthetic/video frame | " in r.output and "| synthetic/consistency | " in r.output
    assert "≠" in r.output and "- synthetic/video frame: " in r.output
    assert (tmp_path / "cmp.md").read_text().startswith("**other** vs **tiny**")

    r = _run(*base, "--protocols", "consistency", "--name", "tiny")  # the default: added, earlier figures kept
    assert r.exit_code == 0, r.output
    assert "replaced 2 earlier figure(s) of row 'tiny': synthetic/consistency, synthetic/correspondence" in r.output
    assert "kept " in r.output and "--replace to drop them" in r.output
    assert set(load_results(out.with_suffix(".json"))[0]["figures"]) == expected
    r = _run(*base, "--protocols", "consistency", "--name", "tiny", "--replace")  # the row afresh
    assert r.exit_code == 0, r.output
    rows = load_results(out.with_suffix(".json"))
    assert [x["name"] for x in rows] == ["tiny", "other"]
    assert set(rows[0]["figures"]) == {"synthetic/consistency", "synthetic/correspondence"}


def test_cli_show_writes_a_gif(syn, tmp_path):
    r = _run("show", "--model", "vit_small_patch14_dinov2", "--random", "--model-kwargs", TINY, "--video-dataset",
             "synthetic", "--video-root", syn, "--quick", "--img-size", 56, "--out", tmp_path / "c.gif")
    assert r.exit_code == 0, r.output
    assert "clip syn00000" in r.output and "mIoU" in r.output
    with Image.open(tmp_path / "c.gif") as im:
        assert im.n_frames == 4 and im.size == (128, 48)  # [frame | overlay], 64 x 48 frames


@pytest.mark.parametrize("args, message", [
    (["--protocols", "linear,bogus"], "unknown protocol 'bogus'"),
    (["--protocols", "video"], "needs --video-dataset and --video-root"),
    (["--protocols", "consistency", "--video-dataset", "davis", "--video-root", "x"], "needs a synthetic set"),
    (["--protocols", "video", "--video-dataset", "synthetic", "--video-root", "{syn}", "--set", "video.bogus=1"],
     "unknown setting 'video.bogus'"),
    (["--protocols", "video", "--video-dataset", "synthetic", "--video-root", "{tmp}/none"], "does not exist"),
    (["--protocols", "video", "--pretrained", "--weights", "w.pth"], "only one of"),
    (["--protocols", "incontext", "--fractions", "1/0"], "not a fraction"),
    (["--protocols", "video", "--preset", "fast"], "--preset must be one of paper, quick"),
    (["--protocols", "video", "--video-dataset", "synthetic", "--video-root", "{syn}", "--model-kwargs", "[1]"],
     "JSON object"),
])
def test_cli_user_errors_are_one_line_exit_2(syn, tmp_path, args, message):
    args = [a.format(syn=syn, tmp=tmp_path) for a in args]
    r = _run("run", "--model", "vit_small_patch14_dinov2", "--random", "--out", tmp_path / "r", *args)
    if "--pretrained" in args:
        r = _run("run", "--model", "vit_small_patch14_dinov2", "--out", tmp_path / "r", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len([ln for ln in r.output.splitlines() if ln.startswith("error:")]) == 1


def test_cli_compare_errors(tmp_path):
    r = _run("compare", tmp_path / "a.json", tmp_path / "b.json")
    assert r.exit_code == 2 and "results file not found" in r.output


def test_compare_defaults_to_the_runs_initial_backbone(tmp_path):
    import torch

    from mosic.evaluation.runner import backbone_provenance

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"w": torch.zeros(2)}, run / "backbone_init.pth")
    torch.save({"w": torch.ones(2)}, run / "backbone.pth")
    kw = dict(pretrained=False, random=False, kwargs={})
    p_init = backbone_provenance("vit_tiny", run / "backbone_init.pth", **kw)
    p_trained = backbone_provenance("vit_tiny", run / "backbone.pth", **kw)
    assert "run_init_sha256" not in p_init and p_trained["run_init_sha256"] == p_init["weights_sha256"]
    hub = backbone_provenance("vit_tiny", None, True, False, {})
    fig = {"voc/linear": 50.0}
    rows_a = [make_row("hub", "m", "pretrained", fig, provenance=hub),
              make_row("initial", "m", str(run / "backbone_init.pth"), fig, provenance=p_init)]
    trained = make_row("trained", "m", str(run / "backbone.pth"), {"voc/linear": 52.0}, provenance=p_trained)
    # no names given: the trained row is compared with the run's own initial backbone, not the hub's
    assert [(a["name"], b["name"]) for a, b in pairs(rows_a, [trained])] == [("initial", "trained")]
    assert [(a["name"], b["name"]) for a, b in pairs(rows_a + [trained], rows_a + [trained])] == [("initial", "trained")]
    text = compare(rows_a, [trained])
    assert "A is this run's initial backbone" in text and "+2.0" in text
    # a hub baseline is allowed when asked for, and the output says what it is
    text = compare(rows_a, [trained], a_row="hub")
    assert "A is the hub backbone, not this run's initial backbone" in text and "backbone_init.pth" in text
    assert "Baseline" not in compare(rows_a, rows_a, a_row="hub", b_row="initial")  # not a trained run's row
