#!/usr/bin/env bash
# Wheels for `make gpu-check` on a GPU machine that has torch, torchvision and timm but lacks some of
# mosic's other dependencies and has no package index.
#
#   bash bench/gpu_wheels.sh download [PYTHON_VERSION]   # here, with a package index (default 3.12)
#   bash bench/gpu_wheels.sh install                     # there, in the repository (no network)
#
# download: puts the wheels of the packages named below, for CPython PYTHON_VERSION on x86-64 Linux,
#           into .gpu-wheels/ (ignored by git; small enough to travel with the repository), plus a
#           wheel of CoTracker built from its repository (COTRACKER_SRC=path: from a local clone).
# install:  installs .gpu-wheels/*.whl and mosic itself (no dependencies resolved, nothing fetched)
#           into .gpu-site/, which `make gpu-check` puts on PYTHONPATH; the machine's own torch stays.
#           Idempotent: a finished install is kept while the wheels and mosic's sources are unchanged;
#           an interrupted or stale one is redone (it is built beside and swapped in when complete).
#
# Only what a GPU image typically lacks is fetched; versions are the ones mosic is tested with.
# GPU_WHEELS_EXTRA="name==version ..." adds more (e.g. "av==18.1.0" to read video files, or a
# missing typer or scipy).
set -euo pipefail

cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
SITE=.gpu-site
PKGS=(
  "zarr==3.1.6" "numcodecs==0.16.6" "donfig==0.8.1.post1" "google-crc32c==1.9.0" "packaging==25.0"
  "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types==0.8.0" "typing-inspection==0.4.5"
  "typing-extensions==4.16.0" "torch-ema==0.3" "faiss-cpu==1.15.1"
  # builds mosic itself on the GPU machine (pip install --no-build-isolation)
  "setuptools==80.9.0"
)
COTRACKER="cotracker @ git+https://github.com/facebookresearch/co-tracker.git"
# every installed module gpu-check imports, checked from outside the checkout after the install (its
# own parts, bench/gpu_parts/, are found beside the script and never installed)
IMPORTS="mosic.train.train, mosic.train.dataset, mosic.train.loader, mosic.train.device_crop, \
mosic.precompute.runner, mosic.store_schema.reader, mosic.evaluation.cli, mosic.data.synthetic, \
mosic.store_schema.frame_cache, zarr, numcodecs, pydantic, torch_ema, faiss, yaml, typer, timm, torchvision, cv2, \
sklearn, tqdm"

mode=${1:-}
case "$mode" in
download)
  pyver=${2:-3.12}
  pyv=${pyver/./}
  rm -rf "$WHEELS"
  mkdir -p "$WHEELS"
  # binary wheels for the target interpreter; manylinux tags are matched exactly, so offer several
  plats=()
  for t in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
           manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
    plats+=(--platform "$t")
  done
  # shellcheck disable=SC2086
  "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp --abi "cp$pyv" --abi abi3 --abi none "${plats[@]}" -d "$WHEELS" "${PKGS[@]}" \
    ${GPU_WHEELS_EXTRA:-}
  # CoTracker is not on PyPI: a pure-Python wheel built from its repository (or a local clone)
  src=${COTRACKER_SRC:-$COTRACKER}
  "${PYTHON:-python3}" -m pip wheel -q --no-deps -w "$WHEELS" "$src" \
    || echo "gpu_wheels: could not build the CoTracker wheel from $src (no access to github.com? clone it" \
            "elsewhere and pass COTRACKER_SRC=path); the check will skip that part" >&2
  echo "wheels in $WHEELS/ ($(du -sh "$WHEELS" | cut -f1)):"
  ls -1 "$WHEELS"
  echo "copy the repository with $WHEELS/ to the GPU machine, then there: make gpu-check"
  ;;
install)
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_wheels: no wheels in $WHEELS/; run 'make gpu-wheels' where a package index is reachable" >&2
    exit 2
  fi
  py=${PYTHON:-python3}
  # what the install is made of: the wheels, mosic's sources and the interpreter
  key=$( { ls -l "$WHEELS"/*.whl; "$py" -c 'import sys; print(sys.version)';
           find mosic precompute train store_schema evaluation pyproject.toml -type f \
             \( -name '*.py' -o -name '*.toml' -o -name '*.yaml' -o -name '*.txt' -o -name '*.md' \) \
             -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 cat; } | sha256sum | cut -c1-16)
  if [ -f "$SITE/.complete" ] && [ "$(cat "$SITE/.complete")" = "$key" ]; then
    echo "gpu_wheels: $SITE/ is up to date"
    exit 0
  fi
  new="$SITE.new"
  rm -rf "$new"
  mkdir -p "$new"
  pipi=("$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$new")
  "${pipi[@]}" "$WHEELS"/*.whl
  # mosic itself, without its dependencies (the machine's torch, torchvision, timm stay in use),
  # built with the setuptools of the wheel set (a fresh Python 3.12 environment has none)
  rm -rf build  # setuptools' scratch folder in the checkout: files left there would enter the wheel
  PYTHONPATH="$PWD/$new" PIP_NO_INDEX=1 "${pipi[@]}" --no-build-isolation .
  # the import check runs outside the checkout (-P, and another folder), so that the repository's
  # own mosic/ folder cannot stand in for the installed package
  (cd "${TMPDIR:-/tmp}" && PYTHONPATH="$OLDPWD/$new${PYTHONPATH:+:$PYTHONPATH}" "$py" -P -c \
    "import $IMPORTS; import mosic; assert '$OLDPWD/$new' in mosic.__file__, mosic.__file__; print('imports ok')")
  echo "$key" > "$new/.complete"
  rm -rf "$SITE"
  mv "$new" "$SITE"
  echo "installed into $SITE/: $(ls "$SITE" | grep -c -i 'dist-info$') distributions"
  ;;
*)
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
