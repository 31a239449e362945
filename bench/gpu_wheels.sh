#!/usr/bin/env bash
# Wheels for `make gpu-check` on a GPU machine that has torch, torchvision and timm but lacks some of
# mosic's other dependencies and has no package index.
#
#   bash bench/gpu_wheels.sh download [PYTHON_VERSION]   # here, with a package index (default 3.12)
#   bash bench/gpu_wheels.sh install                     # there, in the repository (no network)
#
# download: puts the wheels of the packages named below, for CPython PYTHON_VERSION on x86-64 Linux,
#           into .gpu-wheels/ (ignored by git), plus a wheel of CoTracker built from its repository.
# install:  installs .gpu-wheels/*.whl and mosic itself (no dependencies resolved, nothing fetched)
#           into .gpu-site/, which `make gpu-check` puts on PYTHONPATH; the machine's own torch stays.
#
# Only what a GPU image typically lacks is fetched; versions are the ones mosic is tested with.
# GPU_WHEELS_EXTRA="name==version ..." adds more (e.g. a missing typer or scipy).
set -euo pipefail

cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
SITE=.gpu-site
PKGS=(
  "zarr==3.1.6" "numcodecs==0.16.6" "donfig==0.8.1.post1" "google-crc32c==1.9.0"
  "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types==0.8.0" "typing-inspection==0.4.5"
  "av==18.1.0" "torch-ema==0.3" "faiss-cpu==1.15.1"
)
COTRACKER="cotracker @ git+https://github.com/facebookresearch/co-tracker.git"

mode=${1:-}
case "$mode" in
download)
  pyver=${2:-3.12}
  pyv=${pyver/./}
  mkdir -p "$WHEELS"
  # binary wheels for the target interpreter; manylinux tags are matched exactly, so offer several
  plats=()
  for t in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
           manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
    plats+=(--platform "$t")
  done
  # shellcheck disable=SC2086
  python3 -m pip download --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --abi "cp$pyv" --abi abi3 --abi none "${plats[@]}" -d "$WHEELS" "${PKGS[@]}" ${GPU_WHEELS_EXTRA:-}
  # CoTracker is not on PyPI: a pure-Python wheel built from its repository
  python3 -m pip wheel --no-deps -w "$WHEELS" "$COTRACKER" \
    || echo "gpu_wheels: could not build the CoTracker wheel (no access to github.com?); the check will skip that part" >&2
  echo "wheels in $WHEELS/ ($(du -sh "$WHEELS" | cut -f1)):"
  ls -1 "$WHEELS"
  echo "copy the repository with $WHEELS/ to the GPU machine, then there: make gpu-check"
  ;;
install)
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_wheels: no wheels in $WHEELS/; run 'bash bench/gpu_wheels.sh download' where a package index is reachable" >&2
    exit 2
  fi
  py=${PYTHON:-python3}
  mkdir -p "$SITE"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  # mosic itself, without its dependencies (the machine's torch, torchvision, timm stay in use)
  "$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$SITE" .
  echo "installed into $SITE/: $(ls "$SITE" | grep -c -i 'dist-info$') distributions"
  PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}" "$py" -c \
    "import mosic.train.data, mosic.store_schema, mosic.evaluation, zarr, numcodecs, av, pydantic, torch_ema, faiss; print('imports ok')"
  ;;
*)
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
