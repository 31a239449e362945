"""Packaging: the wheel installs one import name, `mosic`, ships its default pipelines, and works
from a folder that holds its own `train.py` and `evaluation.py` (as every research folder does).

The wheel is built from a copy of the source tree and installed into a fresh virtual environment
outside the checkout; that environment borrows only the third-party dependencies of the test's
own environment (through a path file), never mosic itself.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_SKIP = {".git", ".venv", "data", "stores", "runs", "build", "dist", ".pytest_cache", ".hypothesis"}


def _ignore(folder, names):
    top = Path(folder) == ROOT
    return [n for n in names if (top and n in TOP_SKIP) or n == "__pycache__" or n.endswith(".egg-info")]


def run(cmd, cwd, env, timeout=300):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_ignore)
    dist = base / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src],
        cwd=base, env=os.environ.copy())
    (wheel,) = dist.glob("mosic-*.whl")

    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base, env=os.environ.copy())
    py = venv / "bin" / "python"
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=base, env=os.environ.copy()).strip())
    # third-party dependencies only: plain path entries for this interpreter's site folders (not the
    # checkout), so mosic comes from the wheel and the editable install's import hook is not run
    deps = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    (site / "_deps.pth").write_text("\n".join(deps) + "\n")
    run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel],
        cwd=base, env=os.environ.copy())

    work = base / "research"
    work.mkdir()
    for name in ("train.py", "evaluation.py", "precompute.py", "store_schema.py"):
        (work / name).write_text("raise SystemExit('the user\\'s own module ran instead of mosic')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOSIC_PIPELINES")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return wheel, venv, work, env


def test_wheel_has_one_top_level_name_and_the_pipelines(installed):
    wheel, *_ = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        tops = {n.split("/")[0] for n in names}
        assert {t for t in tops if not t.endswith(".dist-info")} == {"mosic"}
        for sub in ("precompute", "train", "store_schema", "evaluation", "data"):
            assert f"mosic/{sub}/__init__.py" in names
        assert "mosic/train/__main__.py" in names
        assert z.read("mosic/pipelines.yaml") == (ROOT / "pipelines.yaml").read_bytes()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert z.read(top_level).decode().split() == ["mosic"]


def test_installed_commands_run_from_a_folder_with_its_own_train_py(installed):
    _, venv, work, env = installed
    where = run(["python", "-c", "import mosic, mosic.train; print(mosic.__file__); print(mosic.train.__file__)"],
                cwd=work, env=env)
    assert all(line.startswith(str(venv)) for line in where.split()), where
    assert "Track a G x G grid" in run(["mosic-precompute", "--help"], cwd=work, env=env)
    assert "Train a ViT with MoSiC" in run(["python", "-m", "mosic.train", "--help"], cwd=work, env=env)
    for cmd in ("mosic-store", "mosic-data", "mosic-eval"):
        run([cmd, "--help"], cwd=work, env=env)
    listed = run(["mosic-precompute", "--list-pipelines"], cwd=work, env=env)
    assert f"pipelines file: {venv}" in listed and "synthetic-oracle" in listed  # the packaged defaults
    (work / "pipelines.yaml").write_text("pipelines:\n  mine: {dataset: {kind: synthetic, root: data}}\n")
    try:
        listed = run(["mosic-train", "--list-pipelines"], cwd=work, env=env)
        assert f"pipelines file: {work / 'pipelines.yaml'}" in listed and "mine" in listed
    finally:
        (work / "pipelines.yaml").unlink()


def test_installed_end_to_end_on_synthetic_data(installed):
    _, venv, work, env = installed
    run(["mosic-data", "synthetic", "--out", "data/synthetic", "--videos", "3", "--frames", "24",
         "--size", "96x72", "-q"], cwd=work, env=env)
    run(["mosic-precompute", "--pipeline", "synthetic", "--grid", "4", "--length", "4", "--step", "2",
         "--no-progress"], cwd=work, env=env)
    tiny = ["model.img_size=56", "model.kwargs={depth: 2, embed_dim: 48, num_heads: 3, init_values: 0.1}",
            "model.train_blocks=1", "model.head_hidden=[32]", "model.head_dim=16", "model.num_prototypes=8",
            "validate.every=0",
            "tracker.grid=4", "clips.length=4", "clips.step=2"]
    sets = [a for s in tiny for a in ("--set", s)]
    out = run(["mosic-train", "--pipeline", "synthetic", "--max-steps", "2", "--batch-size", "2",
               "--workers", "0", "--out", "runs/tiny", "--no-progress", *sets], cwd=work, env=env)
    assert "trained 2 steps" in out
    assert (work / "runs" / "tiny" / "backbone.pth").is_file()


def _lint_imports(venv: Path, work: Path, env: dict) -> subprocess.CompletedProcess:
    """import-linter's contracts of pyproject.toml, checked on the installed package (with the editable
    install the package-dir subpackages are invisible to its import graph)."""
    script = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert script, "import-linter is a test dependency: pip install -e '.[test]'"
    return subprocess.run([venv / "bin" / "python", script, "--config", ROOT / "pyproject.toml", "--no-cache"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)


def test_the_layers_point_down_and_no_module_imports_in_a_circle_in_the_installed_package(installed):
    _, venv, work, env = installed
    res = _lint_imports(venv, work, env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "3 kept, 0 broken" in res.stdout
    # the contracts can fail: a core module that imports training (which imports the core: a circle) and one
    # that imports a command line
    site = Path(run(["python", "-c", "import mosic, os; print(os.path.dirname(mosic.__file__))"],
                    cwd=work, env=env).strip())
    planted = site / "config" / "_upward.py"
    planted.write_text("import mosic.train.model  # noqa: F401\n")
    (site / "config" / "_cli_user.py").write_text("import mosic.evaluation.cli  # noqa: F401\n")
    try:
        res = _lint_imports(venv, work, env)
    finally:
        for p in (planted, site / "config" / "_cli_user.py"):
            p.unlink()
    assert res.returncode != 0 and "0 kept, 3 broken" in res.stdout, res.stdout[-4000:]
    assert "mosic.config._upward -> mosic.train.model" in res.stdout
