import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


#: clips of the small oracle stores that the training tests share: 4 frames, every 2nd, 2 per video, 4 x 4 grid
SMALL_CLIPS = {"tracker.grid": 4, "clips.length": 4, "clips.step": 2, "clips.clips_per_video": 2}


def small_oracle_store(base, valid_videos: int = 0):
    """Four small synthetic videos (96 x 72, 24 frames; ``valid_videos`` more in a ``valid`` split)
    in ``base/synthetic`` and their oracle store in ``base/stores``: (pipeline config, store path)."""
    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute

    root = base / "synthetic"
    generate(root, videos=4, seed=1, num_frames=24, width=96, height=72)
    if valid_videos:
        generate(root, videos=valid_videos, seed=1, num_frames=24, width=96, height=72, split="valid")
    cfg = load_pipeline("synthetic-oracle", overrides={"dataset.root": str(root), "stores": str(base / "stores"),
                                                       **SMALL_CLIPS})
    return cfg, precompute(cfg, progress=False).store


def oracle_store(root, stores, grid: int, length: int, step: int, clips_per_video: int, clips_per_chunk: int):
    """The complete oracle store of the synthetic set at ``root`` (written into ``stores``) with these clip and
    grid settings: precompute's result (``.store``, ``.done``)."""
    from mosic.config import load_pipeline
    from mosic.precompute.runner import precompute

    over = {"dataset.root": str(root), "stores": str(stores), "tracker.name": "oracle", "tracker.grid": grid,
            "clips.length": length, "clips.step": step, "clips.clips_per_video": clips_per_video,
            "store.clips_per_chunk": clips_per_chunk}
    res = precompute(load_pipeline("synthetic", overrides=over), progress=False)
    assert res.complete and not res.failures
    return res


def tiny_eval_set(root):
    """A two-video synthetic set with train and valid splits (64 x 48, 20 frames) for evaluation tests."""
    from mosic.data.synthetic import generate

    for split in ("train", "valid"):
        generate(root, videos=2, seed=0, split=split, num_frames=20, width=64, height=48, exact_length=True)
    return root


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Three small synthetic videos (96 x 72, 30 frames) for the precompute tests; a test file may define its own."""
    from mosic.data.synthetic import generate

    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate(root, videos=3, seed=0, num_frames=30, width=96, height=72)
    return root
