"""The protocols' settings are typed models with one default each: the protocol functions take
their keyword defaults from them, the quick preset is data checked against them, --set is read
strictly against them and --print-config shows them resolved."""

import inspect

import pytest
import yaml
from typer.testing import CliRunner

from mosic import MosicError
from mosic.evaluation.cli import app
from mosic.evaluation.runner import protocol_function
from mosic.evaluation.settings import PRESET_CHANGES, PROTOCOLS, SETTINGS, recorded, resolve

runner = CliRunner()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_protocols_model_holds_its_functions_keyword_settings_and_defaults(protocol):
    params = inspect.signature(protocol_function(protocol)).parameters
    keywords = [n for n, p in params.items() if p.default is not inspect.Parameter.empty
                and n not in ("device", "progress")]
    model = SETTINGS[protocol]
    assert list(model.model_fields) == keywords  # the same settings, in the order OUT.json records them
    paper = model()
    for name in keywords:
        assert params[name].default == getattr(paper, name), name


def test_the_quick_preset_changes_only_settings_the_protocols_have():
    for protocol, changes in PRESET_CHANGES["quick"].items():
        s = resolve(protocol, "quick")
        assert all(getattr(s, k) == (tuple(v) if isinstance(v, list) else v) for k, v in changes.items())
    assert recorded(resolve("clustering", "quick"))["seeds"] == [0]  # JSON values: lists
    assert resolve("video", "paper", {"seed": 3, "device": "cpu", "eval_size": None}, {"k": None}).seed == 3
    with pytest.raises(MosicError, match="--preset must be one of paper, quick"):
        resolve("video", "fast")


def test_print_config_shows_the_resolved_settings_without_a_backbone():
    r = runner.invoke(app, ["run", "--quick", "--set", "video.niter=3", "--set", "video.k=null", "--print-config"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("# mosic-eval run: the protocols' settings, preset 'quick' and --set applied.")
    cfg = yaml.safe_load(r.output)
    assert list(cfg) == ["preset", "linear", "clustering", "incontext", "video"]  # the default --protocols
    assert cfg["preset"] == "quick" and cfg["video"]["niter"] == 3 and cfg["video"]["k"] is None
    assert cfg["video"]["img_size"] == 112 and cfg["clustering"]["seeds"] == [0]
    paper = yaml.safe_load(runner.invoke(app, ["run", "--protocols", "consistency,incontext", "--print-config"]).output)
    assert list(paper) == ["preset", "incontext", "consistency"]  # in the order the protocols run
    assert paper["incontext"]["memory_size"] == 10_240_000 and paper["incontext"]["std"] == [0.229, 0.224, 0.255]


@pytest.mark.parametrize("sets, message", [
    (["linear.epoch=3"], "unknown setting 'linear.epoch' (did you mean linear.epochs?)"),
    (["clustering.seeds=3"], "clustering.seeds must be a valid tuple"),
    (["video.device=cpu"], "unknown setting 'video.device'"),  # the device is --device
])
def test_print_config_refuses_a_bad_setting_in_one_line(sets, message):
    r = runner.invoke(app, ["run", *[a for s in sets for a in ("--set", s)], "--print-config"])
    assert r.exit_code == 2 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_the_documented_null_variants_are_settings():
    r = runner.invoke(app, ["run", "--set", "video.k=null", "--set", "clustering.mask_size=null", "--set",
                            "linear.val_mask_size=null", "--set", "clustering.l2_normalize=true", "--print-config"])
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load(r.output)
    assert (cfg["video"]["k"], cfg["clustering"]["mask_size"], cfg["linear"]["val_mask_size"]) == (None, None, None)
