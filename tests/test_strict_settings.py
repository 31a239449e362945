"""--set values and settings files are read strictly: a value that parses wrong, has the wrong type
or names an unknown key is refused in one line showing how it was read and what works."""

import pytest
from typer.testing import CliRunner

from mosic import MosicError
from mosic.config import check_setting, parse_set_value
from mosic.config import TrainSettings, train_settings

runner = CliRunner()


def test_flow_mapping_without_spaces_is_refused_with_the_right_spelling():
    with pytest.raises(MosicError) as e:
        parse_set_value("model.kwargs", "{depth:2,embed_dim:96}")
    msg = str(e.value)
    assert "read as {'depth:2': None, 'embed_dim:96': None}" in msg and "key 'depth:2' holds a ':'" in msg
    assert "--set 'model.kwargs={depth: 2, embed_dim: 96}'" in msg
    assert parse_set_value("model.kwargs", "{depth: 2, embed_dim: 96}") == {"depth": 2, "embed_dim": 96}
    with pytest.raises(MosicError, match="key 'depth' has no value"):
        parse_set_value("model.kwargs", "{depth: }")
    assert parse_set_value("model.weights", "null") is None  # a plain null is a value (None)


@pytest.mark.parametrize("key, text, message", [
    ("loss.temprature", "0.2", "unknown setting 'loss.temprature' (did you mean loss.temperature?)"),
    ("epochs", "2.5", "read as 2.5 (float), but epochs must be a valid integer; e.g. --set epochs=8"),
    ("loss.temperature", "abc", "read as 'abc' (str), but loss.temperature must be a valid number"),
    ("epochs", "0", "epochs must be greater than or equal to 1"),
    ("loss.normalize", "some", "loss.normalize must be 'visible' or 'all'"),
])
def test_train_settings_type_and_key_checks(key, text, message):
    with pytest.raises(MosicError) as e:
        check_setting(TrainSettings, key, parse_set_value(key, text), shown=f"{key}={text}")
    assert message in str(e.value)


def test_free_mappings_and_good_values_pass_and_reach_the_settings_as_written():
    for key, text, want in [("model.kwargs.depth", "3", 3), ("optim.betas", "[0.9, 0.99]", (0.9, 0.99)),
                            ("grid", "null", None), ("loss.temperature", "1", 1.0), ("model.weights", "w.pth", "w.pth")]:
        value = parse_set_value(key, text)
        check_setting(TrainSettings, key, value)
        *parents, last = key.split(".")
        raw: dict = {}
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        got = TrainSettings.model_validate(raw)
        for part in key.split("."):
            got = got[part] if isinstance(got, dict) else getattr(got, part)
        assert got == want, key


def test_settings_file_errors_are_one_line_with_the_nearest_key():
    with pytest.raises(MosicError) as e:
        train_settings({"los": {"temperature": 0.2}})
    assert str(e.value) == "invalid train settings: unknown setting 'los' (did you mean loss?)"
    with pytest.raises(MosicError) as e:
        train_settings({"loss": {"temperature": "x"}})
    assert "\n" not in str(e.value) and "loss.temperature = 'x'" in str(e.value)


@pytest.mark.parametrize("args, message", [
    (["--set", "model.kwargs={depth:2,embed_dim:96}"], "--set 'model.kwargs={depth: 2, embed_dim: 96}'"),
    (["--set", "loss.temprature=0.2"], "did you mean loss.temperature?"),
    (["--set", "tracker.gird=8"], "did you mean tracker.grid?"),
    (["--set", "clips.length=long"], "clips.length must be a valid integer"),
])
def test_mosic_train_refuses_bad_settings_in_one_line(args, message, tmp_path):
    from mosic.train.cli import app

    r = runner.invoke(app, ["--out", str(tmp_path / "run"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("sets, message", [
    (["video.nred=1"], "unknown setting 'video.nred' (did you mean video.nredo?)"),
    (["video.nredo=1.5"], "read as 1.5 (float), but video.nredo must be a valid integer; e.g. --set video.nredo=5"),
    (["video.mode=[1"], "not a valid YAML value"),
])
def test_mosic_eval_refuses_bad_settings_in_one_line(sets, message, tmp_path):
    from mosic.evaluation.cli import app

    args = ["run", "--model", "vit_small_patch14_dinov2", "--random", "--protocols", "video", "--video-dataset",
            "synthetic", "--video-root", str(tmp_path), "--out", str(tmp_path / "r")]
    for s in sets:
        args += ["--set", s]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_a_number_with_an_exponent_and_no_dot_reads_as_a_float_in_set_and_in_pipelines_files(tmp_path):
    from mosic.cli_common import parse_pipeline_sets
    from mosic.config import load_pipeline

    assert parse_set_value("optim.lr_head", "1e-3") == 0.001 and parse_set_value("optim.lr_head", "5E-4") == 0.0005
    assert parse_pipeline_sets(["train.optim.lr_head=1e-3"]) == {"train.optim.lr_head": 0.001}
    (tmp_path / "p.yaml").write_text("pipelines:\n  mine:\n    train: {optim: {lr_backbone: 2e-5, lr_head: 1E-3}}\n")
    optim = load_pipeline("mine", tmp_path / "p.yaml").train.optim
    assert (optim.lr_backbone, optim.lr_head) == (2e-5, 1e-3)
    # the rest of YAML reads as before: integers, words, dotted floats
    assert [parse_set_value("k", t) for t in ("12", "1e", "e5", "0.5", "true")] == [12, "1e", "e5", 0.5, True]
