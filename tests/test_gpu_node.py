"""`make gpu-check` on a simulated GPU node, first try: a Python 3.12 environment with only what GPU
nodes have (tests/gpu_node.py: torch 2.11, torchvision 0.26, timm, typer, numpy, OpenCV, Pillow,
scikit-learn, tqdm; no zarr, numcodecs, pydantic, av, torch-ema, faiss; old typing-extensions and
packaging), a copy of the repository as it travels (tracked and untracked files, nothing ignored),
the wheel set made by `make gpu-wheels GPU_PYVER=3.12` and installed with no package index.

Slow (the node's environment is built once into the user's cache folder, a few GB and minutes; then
about two minutes a run); `make test-gpu-node` runs it, and CI after `make test`. MOSIC_NO_GPU_NODE_TEST=1 skips it where no Python 3.12
can be had."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_node  # noqa: E402

pytestmark = pytest.mark.slow
WHEEL_SET_LIMIT = 40 * 2 ** 20


def _copy_checkout(dst: Path) -> Path:
    """The files that travel with a working tree: tracked, and untracked but not ignored."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree, not yet committed
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst / f)
        else:
            shutil.copy2(src, dst / f)
    return dst


def _wheel_tags(name: str) -> tuple[str, str, str, str]:
    """(distribution, python tag, abi tag, platform tag) of a wheel file name."""
    parts = name[:-4].split("-")
    return parts[0].lower().replace("_", "-"), parts[-3], parts[-2], parts[-1]


def _no_index_env() -> dict:
    """The node: no package index, nothing of this machine's pip configuration or environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_INDEX_URL="http://127.0.0.1:9/simple")
    return env


@pytest.fixture(scope="module")
def node_python():
    if os.environ.get("MOSIC_NO_GPU_NODE_TEST") == "1":
        pytest.skip("MOSIC_NO_GPU_NODE_TEST=1")
    try:
        return str(gpu_node.node_env(log=lambda m: print(m, file=sys.stderr)))
    except RuntimeError as e:
        pytest.fail(f"{e}; install one (e.g. pyenv install 3.12) or set MOSIC_NO_GPU_NODE_TEST=1")


def test_gpu_check_passes_on_a_fresh_node_at_the_first_try(tmp_path, node_python):
    repo = _copy_checkout(tmp_path / "checkout")
    # the node really lacks what the wheel set carries
    r = subprocess.run([node_python, "-c", "import torch, torchvision, timm, typer, cv2, sklearn, tqdm\n"
                        "for m in ('zarr', 'pydantic', 'av', 'torch_ema', 'faiss', 'mosic'):\n"
                        "    try:\n        __import__(m)\n    except ImportError:\n        continue\n"
                        "    raise SystemExit(m + ' is installed')\n"
                        "print(torch.__version__)"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("2.11.0"), (r.stdout, r.stderr)

    # the wheel set, made where the index is reachable
    r = subprocess.run(["make", "gpu-wheels", "GPU_PYVER=3.12"], cwd=repo, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    wheels = sorted((repo / ".gpu-wheels").iterdir())
    assert wheels and all(w.suffix == ".whl" for w in wheels), wheels
    names = [_wheel_tags(w.name) for w in wheels]
    dists = [n[0] for n in names]
    assert len(dists) == len(set(dists)), f"more than one version of a distribution: {dists}"
    for (dist, py, abi, plat), w in zip(names, wheels):
        binary_ok = abi in ("cp312", "abi3") and re.fullmatch(r"cp3\d+", py) and int(py[3:]) <= 12
        pure_ok = abi == "none" and py in ("py3", "py2.py3") and plat == "any"
        plat_ok = plat == "any" or all(re.fullmatch(r"manylinux[\d_]*_x86_64", p) for p in plat.split("."))
        assert (binary_ok or pure_ok) and plat_ok, f"{w.name}: not for CPython 3.12 on x86-64 Linux"
    assert {"zarr", "pydantic", "typing-extensions", "packaging", "setuptools", "torch-ema", "faiss-cpu"} <= set(dists)
    assert "av" not in dists  # PyAV is only for video files: left out unless asked for
    size = sum(w.stat().st_size for w in wheels)
    assert size < WHEEL_SET_LIMIT, f"wheel set {size / 2 ** 20:.1f} MiB"
    print(f"wheel set: {len(wheels)} wheels, {size / 2 ** 20:.1f} MiB")

    # the node: the first `make gpu-check` from the repository root passes
    env = _no_index_env()
    out = tmp_path / "gpu_check.json"
    r = subprocess.run(["make", "gpu-check", f"GPU_PY={node_python}", f"GPU_CHECK_ARGS=--cpu --out {out}"],
                       cwd=repo, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-4000:])
    res = json.loads(out.read_text())
    assert res["machine"]["python"].startswith("3.12") and res["machine"]["torch"].startswith("2.11.0")
    for part in ("train", "loader", "torchrun", "eval"):
        assert res[part]["status"] == "ok", (part, res[part])
    has_cotracker = any(w.name.startswith("cotracker-") for w in wheels)
    assert res["cotracker"]["status"] == ("ok" if has_cotracker else "skipped"), res["cotracker"]
    assert "imports ok" in r.stdout

    # the install is idempotent: kept while nothing changed, redone when it did not finish
    r = subprocess.run(["bash", "bench/gpu_wheels.sh", "install"], cwd=repo, capture_output=True, text=True,
                       env={**env, "PYTHON": node_python})
    assert r.returncode == 0 and "up to date" in r.stdout, (r.stdout, r.stderr)
    (repo / ".gpu-site" / ".complete").write_text("interrupted\n")
    shutil.rmtree(repo / ".gpu-site" / "zarr")
    r = subprocess.run(["bash", "bench/gpu_wheels.sh", "install"], cwd=repo, capture_output=True, text=True,
                       env={**env, "PYTHON": node_python})
    assert r.returncode == 0 and "imports ok" in r.stdout and (repo / ".gpu-site" / "zarr").is_dir(), r.stderr
