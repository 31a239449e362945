# mosic — the two commands a newcomer needs are `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ARCH    := $(shell uname -m)
# torch wheels that install from the local disk on the project machines (see docs/gpu.md)
ifeq ($(ARCH),aarch64)
TORCH_PIN ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
endif

DATASET ?= synthetic
ROOT    ?=
STORES  ?= stores
DATA    ?= data/synthetic
VIDEOS  ?= 24
PYTEST_ARGS ?=

.PHONY: setup test test-gpu-node demo data tracks train eval bench bench-frames gpu-check gpu-wheels clean help

help:
	@echo "make setup      create $(VENV) and install mosic with its test tools"
	@echo "make demo       synthetic data -> tracks (lk, oracle) -> inspect and score, end to end"
	@echo "make test       install, then run the test suite (no downloads beyond the install)"
	@echo "make test-gpu-node   the simulated GPU node test: builds a Python 3.12 node once (~5 GB of CUDA wheels, minutes)"
	@echo "make tracks DATASET=ytvos ROOT=/data/ytvos   precompute tracks for a data set"
	@echo "make train      train on the default pipeline (synthetic, small random ViT on CPU)"
	@echo "make eval MODEL=... WEIGHTS=... DATASET=voc ROOT=...   evaluate a backbone (paper settings)"
	@echo "make bench      print throughput and size figures"
	@echo "make gpu-check  check and measure every CUDA path on this machine's GPU (docs/gpu.md)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# the tests marked slow: `make gpu-check` on a simulated GPU node (its environment is built once into
# ~/.cache/mosic: ~5 GB of PyPI's CUDA wheels, minutes); CI runs it after `make test`
test-gpu-node: setup
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

data: setup
	$(BIN)/mosic-data synthetic --out $(DATA) --videos $(VIDEOS) --seed 0

# e.g. make tracks DATASET=ytvos ROOT=/data/youtube-vos TRACKER=cotracker3 CHECKPOINT=scaled_offline.pth
TRACKER ?=
CHECKPOINT ?=
tracks: setup
	$(BIN)/mosic-precompute --pipeline $(DATASET) --stores $(STORES) \
		$(if $(ROOT),--root $(ROOT)) $(if $(TRACKER),--tracker $(TRACKER)) \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

# make train: the default pipeline. On a GPU machine with data: make train PIPELINE=ytvos
PIPELINE ?= synthetic
RUN      ?= runs/$(PIPELINE)-$(shell date +%Y%m%d-%H%M%S)
TRAIN_ARGS ?=
train: setup
ifeq ($(PIPELINE),synthetic)
	$(BIN)/mosic-data synthetic --out $(DATA) --videos $(VIDEOS) --seed 0 -q
	$(BIN)/mosic-data synthetic --out $(DATA) --videos 8 --seed 0 --split valid -q  # the validation's held-out split
	$(BIN)/mosic-precompute --pipeline synthetic --root $(DATA) --stores $(STORES)
endif
	$(BIN)/mosic-train --pipeline $(PIPELINE) --stores $(STORES) --out $(RUN) $(TRAIN_ARGS)

# make eval MODEL=vit_small_patch14_dinov2.lvd142m WEIGHTS=runs/x/backbone.pth DATASET=voc ROOT=/data/VOCdevkit/VOC2012
MODEL    ?= vit_small_patch14_dinov2.lvd142m
WEIGHTS  ?=
PROTOCOLS ?= linear,clustering,incontext
EVAL_OUT ?= results
EVAL_ARGS ?=
eval: setup
	$(BIN)/mosic-eval run --model $(MODEL) $(if $(WEIGHTS),--weights $(WEIGHTS),--pretrained) \
		--dataset $(DATASET) --root $(ROOT) --protocols $(PROTOCOLS) --out $(EVAL_OUT) $(EVAL_ARGS)

demo: setup
	$(BIN)/python -m mosic.demo --data $(DATA) --stores $(STORES) --videos $(VIDEOS)

bench: setup
	$(BIN)/python bench/bench_store.py
	$(BIN)/python bench/bench_precompute.py
	$(BIN)/python bench/bench_clips.py
	$(BIN)/python bench/bench_grid.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_frames.py
	$(BIN)/python bench/bench_learning.py
	$(BIN)/python bench/bench_validation.py
	$(BIN)/python bench/bench_eval.py
	$(BIN)/python bench/bench_remote.py
	$(BIN)/python bench/bench_synthetic.py

bench-frames: setup
	$(BIN)/python bench/bench_frames.py

# on a GPU machine (torch and timm there; other wheels carried by bench/gpu_wheels.sh, see docs/gpu.md)
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_CHECK_ARGS ?=
gpu-check:
	@if [ -d .gpu-wheels ]; then PYTHON=$(GPU_PY) bash bench/gpu_wheels.sh install; fi
	PYTHONPATH=$(CURDIR)/.gpu-site$(if $(PYTHONPATH),:$(PYTHONPATH)) $(GPU_PY) bench/gpu_check.py $(GPU_CHECK_ARGS)

# on a machine with a package index: wheels for the GPU machine's Python into .gpu-wheels/
GPU_PYVER ?= 3.12
gpu-wheels:
	bash bench/gpu_wheels.sh download $(GPU_PYVER)

clean:
	rm -rf $(STORES) data runs .pytest_cache
