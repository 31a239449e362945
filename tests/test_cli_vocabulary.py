"""One vocabulary across the commands: the pipeline options on every command that reads a pipeline,
--set with the keys of pipelines.yaml, --print-config, the same shortcuts meaning the same, one
spelling for a random initialisation, plain help everywhere."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from mosic import MosicError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
PIPELINE_COMMANDS = {"mosic-precompute": "mosic.precompute.cli", "mosic-train": "mosic.train.cli"}
SHARED = {"--pipeline", "--config", "--list-pipelines", "--print-config", "--set", "--tracker", "--stores", "--store",
          "--root", "--device", "--precision", "--verbose", "--progress"}


def scripts() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: target.split(":")[0] for name, target in meta["project"]["scripts"].items()}


def options(cmd) -> dict[str, object]:
    return {o: p for p in cmd.params for o in (*p.opts, *p.secondary_opts)}


def command(module: str):
    cmd = typer.main.get_command(importlib.import_module(module).app)
    return cmd


@pytest.mark.parametrize("name", sorted(PIPELINE_COMMANDS))
def test_every_pipeline_command_takes_the_shared_options(name):
    missing = SHARED - set(options(command(PIPELINE_COMMANDS[name])))
    assert not missing, f"{name} lacks {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(PIPELINE_COMMANDS))
def test_tracker_and_set_mean_the_same_and_print_config_shows_them(name):
    app = importlib.import_module(PIPELINE_COMMANDS[name]).app
    a = runner.invoke(app, ["--pipeline", "synthetic", "--tracker", "oracle", "--print-config"])
    b = runner.invoke(app, ["--pipeline", "synthetic", "--set", "tracker.name=oracle", "--print-config"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert a.output == b.output
    cfg = yaml.safe_load(a.output)["pipelines"]["synthetic"]
    assert cfg["tracker"]["name"] == "oracle"
    assert cfg["train"]["loss"]["temperature"] == 0.1  # every train setting, resolved with its default


def test_both_commands_resolve_the_same_settings():
    outs = []
    for module in PIPELINE_COMMANDS.values():
        app = importlib.import_module(module).app
        r = runner.invoke(app, ["--pipeline", "synthetic", "--set", "clips.length=8", "--set", "tracker.grid=8",
                                "--set", "train.model.kwargs.depth=2", "--print-config"])
        assert r.exit_code == 0, r.output
        outs.append(yaml.safe_load(r.output))
    assert outs[0] == outs[1]
    cfg = outs[0]["pipelines"]["synthetic"]
    assert cfg["clips"]["length"] == 8 and cfg["tracker"]["grid"] == 8 and cfg["train"]["model"]["kwargs"]["depth"] == 2


def test_printed_config_is_a_pipelines_file_that_gives_the_same_settings(tmp_path):
    from mosic.train.cli import app

    r = runner.invoke(app, ["--pipeline", "synthetic", "--tracker", "oracle", "--batch-size", "4", "--print-config"])
    assert r.exit_code == 0, r.output
    (tmp_path / "p.yaml").write_text(r.output)
    again = runner.invoke(app, ["--config", str(tmp_path / "p.yaml"), "--pipeline", "synthetic", "--print-config"])
    assert again.exit_code == 0, again.output
    assert yaml.safe_load(again.output) == yaml.safe_load(r.output)
    assert yaml.safe_load(r.output)["pipelines"]["synthetic"]["train"]["batch_size"] == 4


@pytest.mark.parametrize("name", sorted(PIPELINE_COMMANDS))
def test_a_mistyped_set_key_is_one_line_naming_the_nearest(name):
    app = importlib.import_module(PIPELINE_COMMANDS[name]).app
    r = runner.invoke(app, ["--pipeline", "synthetic", "--set", "tracker.gird=8", "--print-config"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "unknown setting 'tracker.gird' (did you mean tracker.grid?)" in r.output


def test_model_kwargs_shortcut_equals_the_set_key_on_train():
    from mosic.train.cli import app

    a = runner.invoke(app, ["--model-kwargs", '{"depth": 1, "embed_dim": 48}', "--print-config"])
    b = runner.invoke(app, ["--set", "train.model.kwargs={depth: 1, embed_dim: 48}", "--print-config"])
    assert a.exit_code == 0 and b.output == a.output, a.output + b.output
    assert yaml.safe_load(a.output)["pipelines"]["synthetic"]["train"]["model"]["kwargs"] == {"depth": 1, "embed_dim": 48}


def test_model_kwargs_on_eval_by_the_same_keys():
    from mosic.evaluation.options import model_kwargs_with_sets, parse_sets

    sets = parse_sets(["model.kwargs.depth=2", "train.model.kwargs.embed_dim=48", "linear.epochs=1"])
    assert model_kwargs_with_sets({"depth": 12, "num_heads": 3}, sets["model"]) == \
        {"depth": 2, "num_heads": 3, "embed_dim": 48}
    assert sets["linear"] == {"epochs": 1}
    assert model_kwargs_with_sets({"depth": 12}, parse_sets(["model.kwargs={depth: 1}"])["model"]) == {"depth": 1}
    with pytest.raises(MosicError, match="only model.kwargs"):
        parse_sets(["model.name=x"])
    with pytest.raises(MosicError, match="must be a mapping"):
        parse_sets(["model.kwargs=3"])


def test_model_kwargs_read_as_json_or_yaml():
    from mosic.cli_common import parse_model_kwargs

    assert parse_model_kwargs('{"depth": 2}') == parse_model_kwargs("{depth: 2}") == {"depth": 2}
    with pytest.raises(MosicError, match="JSON object"):
        parse_model_kwargs("[1]")
    with pytest.raises(MosicError, match="space after each colon"):
        parse_model_kwargs("{depth:2}")


@pytest.mark.parametrize("module, sub", [("mosic.train.cli", None), ("mosic.evaluation.cli", "run"),
                                         ("mosic.evaluation.cli", "show")])
def test_random_init_has_one_spelling_and_a_hidden_alias(module, sub):
    cmd = command(module)
    cmd = cmd.commands[sub] if sub else cmd
    opts = options(cmd)
    assert "--no-pretrained" in opts and not getattr(opts["--no-pretrained"], "hidden", False)
    assert "--random" in opts and opts["--random"].hidden
    app = importlib.import_module(module).app
    help_text = runner.invoke(app, [*([sub] if sub else []), "--help"]).output
    assert "--no-pretrained" in help_text and "--random" not in help_text


def test_random_alias_means_no_pretrained_on_train():
    from mosic.train.cli import app

    r = runner.invoke(app, ["--pipeline", "ytvos", "--random", "--print-config"])
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.output)["pipelines"]["ytvos"]["train"]["model"]["pretrained"] is False
    r = runner.invoke(app, ["--pipeline", "ytvos", "--random", "--pretrained", "--print-config"])
    assert r.exit_code == 2 and "only one of" in r.output


@pytest.mark.parametrize("name", sorted(scripts()))
def test_every_command_has_plain_help(name):
    module = scripts()[name]
    app = importlib.import_module(module).app
    out = runner.invoke(app, ["--help"], terminal_width=100).output
    assert out.lstrip().startswith("Usage:"), out[:200]
    assert not set(out) & set("╭╮╰╯│─"), f"{name} --help draws boxes:\n{out[:400]}"


def test_the_batch_error_names_both_settings_and_numbers_that_work():
    from mosic.train.stores import check_batch_fits

    check_batch_fits(8, 8, 8, 1, "per_video")  # fits: nothing to say
    with pytest.raises(MosicError) as e:
        check_batch_fits(3, 12, 8, 1, "per_video")
    msg = str(e.value)
    assert "3 training items per epoch" in msg and "global batch of 8 clips (train.batch_size)" in msg
    assert "--batch-size 3" in msg and "--set train.clip_sampling=all" in msg and "12 clips" in msg
    with pytest.raises(MosicError) as e:  # two processes: an even batch; too few clips for `all`
        check_batch_fits(3, 5, 8, 2, "per_video")
    assert "--batch-size 2" in str(e.value) and "multiple of the 2 processes" in str(e.value)
    assert "clip_sampling=all" not in str(e.value)
    with pytest.raises(MosicError, match="a store with more clips"):
        check_batch_fits(1, 1, 8, 2, "all")


def test_batch_size_means_the_training_batch_only():
    """--batch-size is train.batch_size; the tracker's clips per call is --tracker-batch-size (the
    old --batch-size of mosic-precompute is a hidden alias of it)."""
    from mosic.precompute.cli import app

    outs = [runner.invoke(app, [*a, "--print-config"]) for a in
            (["--tracker-batch-size", "3"], ["--set", "tracker.batch_size=3"], ["--batch-size", "3"])]
    assert all(r.exit_code == 0 for r in outs) and len({r.output for r in outs}) == 1, [r.output for r in outs]
    assert yaml.safe_load(outs[0].output)["pipelines"]["synthetic"]["tracker"]["batch_size"] == 3
    opts = options(command("mosic.precompute.cli"))
    assert opts["--batch-size"].hidden and not opts["--tracker-batch-size"].hidden
    assert not options(command("mosic.train.cli"))["--batch-size"].hidden
