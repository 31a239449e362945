"""A simulated GPU node: a Python 3.12 virtual environment holding only the packages a typical GPU
node image has (torch 2.11 / torchvision 0.26 / timm / typer / numpy / OpenCV / Pillow /
scikit-learn / tqdm), and nothing of mosic's other dependencies.

PyPI's Linux torch wheels are CUDA builds (they import and run on the CPU, with their nvidia-*
libraries installed beside them): the first build downloads a few GB and takes minutes, so the
environment is kept in the user's cache folder (``$XDG_CACHE_HOME/mosic``, default ``~/.cache/mosic``)
and reused while its package list is unchanged. It is only ever used read-only (mosic and the wheel
set go to the checkout's ``.gpu-site``), so a reused environment is still a bare node.

    python tests/gpu_node.py            # build (or find) it and print its python
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: what the GPU nodes have (their versions where they matter)
NODE_PACKAGES = ["torch==2.11.0", "torchvision==0.26.0", "timm", "typer", "numpy", "opencv-python-headless",
                 "pillow", "scikit-learn", "tqdm"]
#: what the nodes lack (some arrive as dependencies of the above), and the oldest versions of torch's
#: own dependencies a node may have (torch 2.11 asks typing-extensions >= 4.10; packaging: any)
NODE_ABSENT = ["pydantic", "pydantic-core", "typing-inspection", "zarr", "numcodecs", "donfig", "av", "torch-ema",
               "faiss-cpu", "cotracker"]
NODE_OLDEST = ["typing-extensions==4.10.0", "packaging==21.3"]
PYVER = "3.12"


def find_python(version: str = PYVER) -> str | None:
    """A CPython ``version`` interpreter: $MOSIC_PY312, python3.12 on PATH, or one of pyenv's."""
    cands = [os.environ.get("MOSIC_PY" + version.replace(".", "")), shutil.which(f"python{version}")]
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    cands += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    for c in cands:
        if c and os.access(c, os.X_OK):
            r = subprocess.run([c, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                               text=True)
            if r.returncode == 0 and r.stdout.strip() == version:
                return c
    return None


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mosic"


def node_env(log=print) -> Path:
    """The node's virtual environment (built on first use); returns its python."""
    py = find_python()
    if py is None:
        raise RuntimeError(f"no Python {PYVER} interpreter (python{PYVER} on PATH, pyenv, or $MOSIC_PY312)")
    key = hashlib.sha256(" ".join([py] + NODE_PACKAGES).encode()).hexdigest()[:12]
    env = cache_root() / f"gpu-node-py{PYVER.replace('.', '')}-{key}"
    python = env / "bin" / "python"
    base, done = env / ".base", env / ".complete"
    spec = "\n".join(NODE_PACKAGES + ["-" + p for p in NODE_ABSENT] + NODE_OLDEST) + "\n"
    # the index's packages, not this machine's pip configuration (its constraints cap torch for its own Python)
    pip_env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [str(python), "-m", "pip"]
    if not (base.is_file() and python.exists()):
        shutil.rmtree(env, ignore_errors=True)
        env.parent.mkdir(parents=True, exist_ok=True)
        log(f"building the simulated GPU node's environment in {env} (once; a few minutes)")
        subprocess.run([py, "-m", "venv", str(env)], check=True)
        subprocess.run(pip + ["install", "-q", *NODE_PACKAGES], check=True, env=pip_env)
        base.touch()
    if not (done.is_file() and done.read_text() == spec):
        done.unlink(missing_ok=True)
        subprocess.run(pip + ["uninstall", "-q", "-y", *NODE_ABSENT], check=True, env=pip_env,
                       stderr=subprocess.DEVNULL)
        subprocess.run(pip + ["install", "-q", "--no-deps", *NODE_OLDEST], check=True, env=pip_env)
        done.write_text(spec)
    return python


if __name__ == "__main__":
    print(node_env(log=lambda m: print(m, file=sys.stderr)))
