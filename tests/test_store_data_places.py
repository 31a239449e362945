"""``mosic-store`` and ``mosic-data`` check their output places before any work and fail in one
line; ``mosic-store inspect FOLDER`` lists the stores of a folder with their specs and completeness."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from conftest import small_oracle_store

runner = CliRunner()
UNWRITABLE = "/proc/mosic-out"  # no file can be made under /proc, whoever runs the tests


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_oracle_store(tmp_path_factory.mktemp("places"))[1]


def _store(*args):
    from mosic.store_schema.cli import app

    return runner.invoke(app, [str(a) for a in args])


def _data(*args):
    from mosic.cli_data import app

    return runner.invoke(app, [str(a) for a in args])


def test_store_show_to_a_place_that_cannot_be_written_is_one_line(store):
    r = _store("show", store, "--out", f"{UNWRITABLE}/x.png")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"error: --out {UNWRITABLE}/x.png: cannot write in /proc" in r.output


def test_cache_frames_beside_a_store_that_cannot_be_written_is_one_line_before_any_frame(store, monkeypatch):
    import mosic.store_schema.frame_cache as fc

    monkeypatch.setattr(fc, "cache_dir_for", lambda path, side: fc.Path(UNWRITABLE) / f"x.frames{side}")
    monkeypatch.setattr(fc, "build_frame_cache", lambda *a, **k: pytest.fail("work started"))
    r = _store("cache-frames", store)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"error: the frame cache {UNWRITABLE}/x.frames410: cannot write in /proc" in r.output
    assert "the cache is written beside the store, so copy the store" in r.output


def test_synthetic_data_to_a_place_that_cannot_be_written_is_one_line(tmp_path):
    r = _data("synthetic", "--out", f"{UNWRITABLE}/syn", "--videos", 1, "-q")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"--out {UNWRITABLE}/syn/train: cannot write in /proc" in r.output


def test_inspect_a_folder_lists_its_stores_with_spec_and_completeness(store, tmp_path):
    folder = tmp_path / "stores"
    folder.mkdir()
    shutil.copytree(store, folder / store.name)
    (folder / "broken.zarr").mkdir()
    r = _store("inspect", folder)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("broken.zarr  UNREADABLE: ")
    assert lines[1].startswith(f"{store.name}  complete: 8 done, 0 failed of 8 clips, 4 videos; synthetic "
                               "split='train'; T=4 step=2; tracker oracle; grid 4")
    assert lines[2] == "2 store(s); `mosic-store inspect STORE` for one store's details"
    r = _store("inspect", folder, "--json")
    infos = json.loads(r.output)
    assert [i["name"] for i in infos] == ["broken.zarr", store.name] and infos[1]["spec"]["grid"] == 4
    r = _store("inspect", folder / store.name)  # one store: its details, as before
    assert r.exit_code == 0 and r.output.startswith("store      ") and "state      complete" in r.output
