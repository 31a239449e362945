"""mosic.train.dataset and mosic.train.loader: ClipDataset and its loader on a tiny synthetic set with an oracle store."""

import shutil

import cv2
import numpy as np
import pytest
import torch

from mosic import MosicError
from mosic.config import load_pipeline
from mosic.data.base import FrameReadError
from mosic.data.synthetic import generate
from mosic.precompute.runner import precompute
from mosic.store_schema.reader import StoreError
from mosic.backbones import IMAGENET_MEAN, IMAGENET_STD
from mosic.train.augment import CropBox, apply_crop, map_tracks, normalize_frames, to_tensor
from mosic.train.dataset import ClipDataset, collate_clips
from mosic.train.loader import make_loader
from conftest import oracle_store

S = 64  # output size used here: small and quick
REQUIRE = {"grid": 4, "clips.length": 4, "tracker.name": "oracle"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate(root, videos=3, seed=1, num_frames=24, width=96, height=72)
    return root


@pytest.fixture(scope="module")
def store(synth, tmp_path_factory):
    res = oracle_store(synth, tmp_path_factory.mktemp("stores"), grid=4, length=4, step=2, clips_per_video=2,
                        clips_per_chunk=2)
    assert res.done == 6
    return res.store


@pytest.fixture
def moved(synth, tmp_path):
    """A private copy of the data set, to damage."""
    root = tmp_path / "synthetic"
    shutil.copytree(synth, root)
    return root


def vids(root):
    return sorted(p.name for p in (root / "train/JPEGImages").iterdir())


def bilinear(img, pts):
    """Bilinear values of img [H, W, C] at (x, y) points [N, 2], pixel centres at +0.5."""
    H, W = img.shape[:2]
    map_x = (pts[:, 0] - 0.5).astype(np.float32)[None]
    map_y = (pts[:, 1] - 0.5).astype(np.float32)[None]
    out = cv2.remap(img.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out[0].astype(np.float64)


def test_items_have_the_documented_shapes_and_types(store):
    ds = ClipDataset(store, require=REQUIRE, out_size=S)
    assert len(ds) == 6
    it = ds[0]
    assert set(it) == {"frames", "tracks", "visibility", "index", "video_id", "cache_fallback"}
    # frames travel as uint8 (normalised on the device), channels first, contiguous
    assert it["frames"].shape == (4, 3, S, S) and it["frames"].dtype == torch.uint8 and it["frames"].is_contiguous()
    assert it["tracks"].shape == (4, 16, 2) and it["tracks"].dtype == torch.float32
    assert it["visibility"].shape == (4, 16) and it["visibility"].dtype == torch.bool
    assert isinstance(it["index"], int) and isinstance(it["video_id"], str)
    assert it["video_id"] == ds.reader.clips[it["index"]].video_id
    # the visible tracks are inside the crop
    t, v = it["tracks"][it["visibility"]], it["visibility"]
    assert v.any() and (t >= 0).all() and (t < S).all()
    assert it["cache_fallback"] is False
    batch = next(iter(make_loader(ds, batch_size=4, num_workers=0, shuffle=False, drop_last=True)))
    assert batch["frames"].shape == (4, 4, 3, S, S) and batch["tracks"].shape == (4, 4, 16, 2)
    assert batch["visibility"].shape == (4, 4, 16) and batch["index"].dtype == torch.int64
    assert batch["frames"].dtype == torch.uint8 and batch["cache_fallback"].tolist() == [False] * 4
    assert batch["index"].tolist() == [0, 1, 2, 3] and len(batch["video_id"]) == 4
    assert ClipDataset(store, out_size=S, max_clips=2).indices.tolist() == [0, 1]


def test_mapped_tracks_point_at_the_same_content(store):
    """Oracle tracks are exact: the crop's pixels under the mapped tracks are the source's pixels
    under the stored tracks; a wrong mapping (y/x swapped, flip ignored) is far off."""
    ds = ClipDataset(store, out_size=S, scale=(0.5, 1.0))
    good, wrong = [], []
    flips = set()
    for epoch in range(3):
        for i in range(len(ds)):
            item, frames = ds.read_clip(i)
            box = ds.crop(i, epoch)
            flips.add(box.flip)
            out = ds[(epoch, i)]
            tr, vis = map_tracks(item.tracks, item.visibility, box)
            np.testing.assert_array_equal(out["tracks"].numpy(), tr)
            np.testing.assert_array_equal(out["visibility"].numpy(), vis)
            crop = apply_crop(frames, box)
            torch.testing.assert_close(normalize_frames(out["frames"], IMAGENET_MEAN, IMAGENET_STD), to_tensor(crop))
            unflipped = CropBox(box.x0, box.y0, box.w, box.h, not box.flip, S)
            tr_bad, _ = map_tracks(item.tracks, item.visibility, unflipped)
            for t in range(len(frames)):
                v = vis[t]
                # the same physical blur on both sides (the texture is finer than the resampling)
                src = bilinear(cv2.GaussianBlur(frames[t], (0, 0), 1.5), item.tracks[t][v])
                blurred = cv2.GaussianBlur(crop[t], (0, 0), 1.5 * S / box.w, sigmaY=1.5 * S / box.h)
                dst = bilinear(blurred, tr[t][v])
                bad = bilinear(blurred, tr_bad[t][v])
                good.append(np.abs(src - dst).mean(1))
                wrong.append(np.abs(src - bad).mean(1))
    good, wrong = np.concatenate(good), np.concatenate(wrong)
    assert flips == {True, False} and len(good) > 200
    # grey-level differences (0..255): about 1 when right, about 25 for the flip ignored
    assert np.median(good) < 1.5 and good.mean() < 2.5, (np.median(good), good.mean())
    assert wrong.mean() > 5 * good.mean(), (good.mean(), wrong.mean())


def _collect(loader, epochs):
    out = []
    for e in epochs:
        loader.set_epoch(e)
        ep = {}
        order = []
        for b in loader:
            for k, idx in enumerate(b["index"].tolist()):
                ep[idx] = (b["frames"][k], b["tracks"][k], b["visibility"][k])
                order.append(idx)
        out.append((order, ep))
    return out


def test_same_seed_same_crops_with_0_and_2_workers_and_epochs_differ(store):
    ds = ClipDataset(store, out_size=S, seed=7)
    a = _collect(make_loader(ds, batch_size=2, num_workers=0, shuffle=True, seed=3, drop_last=False), [0, 1])
    loader2 = make_loader(ClipDataset(store, out_size=S, seed=7), batch_size=2, num_workers=2,
                          shuffle=True, seed=3, drop_last=False)
    assert loader2.persistent_workers
    b = _collect(loader2, [0, 1])
    for (oa, ea), (ob, eb) in zip(a, b):
        assert oa == ob and sorted(oa) == list(range(6))
        for idx in ea:
            for x, y in zip(ea[idx], eb[idx]):
                assert torch.equal(x, y)
    # epoch 1 differs from epoch 0 (order and crops), in the persistent workers too
    (o0, e0), (o1, e1) = b
    assert o0 != o1
    assert any(not torch.equal(e0[i][1], e1[i][1]) for i in e0)
    # and what the workers made in epoch 1 is the main process's epoch-1 item
    for i in range(6):
        assert torch.equal(e1[i][1], ds[(1, i)]["tracks"])
    ds.set_epoch(1)
    assert torch.equal(ds[2]["tracks"], e1[2][1])
    # a different seed gives different crops
    other = ClipDataset(store, out_size=S, seed=8)
    assert any(other.crop(i, 0) != ds.crop(i, 0) for i in range(6))


def test_distributed_sampler_shards_and_follows_the_epoch(store):
    ds = ClipDataset(store, out_size=S)
    seen = {}
    for e in (0, 1):
        shards = []
        for rank in (0, 1):
            ld = make_loader(ds, batch_size=1, num_workers=0, shuffle=True, seed=0, drop_last=False,
                             distributed=True, num_replicas=2, rank=rank)
            ld.set_epoch(e)
            assert ds.epoch == e
            shards.append([(ep, i) for ep, i in ld.sampler])
        assert all(ep == e for s in shards for ep, _ in s)
        idx = [i for s in shards for _, i in s]
        assert sorted(idx) == list(range(6)) and not set(shards[0]) & set(shards[1])
        seen[e] = idx
    assert seen[0] != seen[1]


def test_store_that_does_not_fit_is_refused(store):
    with pytest.raises(StoreError, match="grid: store has 4, the experiment asks for 16"):
        ClipDataset(store, require={"grid": 16, "clips.length": 4})
    with pytest.raises(StoreError, match="unknown store spec field"):
        ClipDataset(store, require={"no_such_field": 1})


def test_resized_frames_on_disk_are_refused_before_training(store, moved):
    vid = vids(moved)[1]
    for p in sorted((moved / "train/JPEGImages" / vid).glob("*.jpg")):
        img = cv2.imread(str(p))
        cv2.imwrite(str(p), cv2.resize(img, (80, 60)))
    with pytest.raises(StoreError) as e:
        ClipDataset(store, source_root=moved, out_size=S)
    msg = str(e.value)
    assert "fingerprint" in msg and vid in msg and "80x60 on disk, 96x72 in the store" in msg


@pytest.mark.parametrize("change", ["delete", "add"])
def test_deleted_or_added_frame_is_refused_naming_the_video(store, moved, change):
    """Frames are addressed by index: one file less (or more) shifts them, so it must stop training."""
    vid = vids(moved)[2]
    folder = moved / "train/JPEGImages" / vid
    if change == "delete":
        (folder / "00003.jpg").unlink()
    else:
        last = sorted(folder.glob("*.jpg"))[-1]
        shutil.copy(last, folder / f"{int(last.stem) + 1:05d}.jpg")
    with pytest.raises(StoreError) as e:
        ClipDataset(store, source_root=moved, out_size=S)
    msg = str(e.value)
    assert "fingerprint" in msg and vid in msg
    assert ("the store's clips use frame" if change == "delete" else "frame count changed") in msg
    assert sum(v in msg for v in vids(moved)) == 1  # only that video is named


def test_a_replaced_or_corrupt_frame_fails_its_clip_naming_video_and_frame(store, moved):
    ds = ClipDataset(store, source_root=moved, out_size=S)
    clip_idx = 3
    clip = ds.reader.clips[clip_idx]
    frame = clip.frames[2]
    path = moved / "train/JPEGImages" / clip.video_id / f"{frame:05d}.jpg"
    assert path.is_file()
    good = path.read_bytes()
    # another size: the first frame still matches, so only reading the clip can tell
    cv2.imwrite(str(path), np.zeros((50, 70, 3), np.uint8))
    with pytest.raises(FrameReadError) as e:
        ds[clip_idx]
    assert clip.video_id in str(e.value) and f"frame {frame}" in str(e.value)
    # truncated JPEG
    path.write_bytes(good[:100])
    with pytest.raises(MosicError) as e:
        ds[clip_idx]
    assert clip.video_id in str(e.value) and f"frame {frame}" in str(e.value)
    path.write_bytes(good)
    assert ds[clip_idx]["video_id"] == clip.video_id


def test_collate_and_loader_arguments(store):
    ds = ClipDataset(store, out_size=S)
    batch = collate_clips([ds[0], ds[1]])
    assert batch["index"].tolist() == [0, 1] and batch["video_id"] == [ds[0]["video_id"], ds[1]["video_id"]]
    with pytest.raises(MosicError):
        make_loader(ds, batch_size=0)
    with pytest.raises(MosicError):
        ds.set_epoch(-1)
    with pytest.raises(IndexError):
        ds[6]


def test_epoch_sampler_skip_resumes_the_same_order():
    from mosic.train.loader import EpochSampler

    class Ten:
        def __len__(self):
            return 10

    s = EpochSampler(Ten(), shuffle=True, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, skip=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(3)
    assert list(s) != full and len(s) == 10


def test_pick_clip_is_uniform_reproducible_and_new_every_epoch():
    from mosic.train.ops import pick_clip

    picks = [pick_clip(0, e, 3, 5) for e in range(2000)]
    assert picks == [pick_clip(0, e, 3, 5) for e in range(2000)]
    counts = np.bincount(picks, minlength=5)
    assert counts.min() > 330 and counts.max() < 470  # ~400 each
    assert [pick_clip(0, e, 3, 5) for e in range(20)] != [pick_clip(1, e, 3, 5) for e in range(20)]
    assert [pick_clip(0, 0, v, 5) for v in range(20)] != [pick_clip(0, 1, v, 5) for v in range(20)]
    assert all(pick_clip(0, e, 0, 1) == 0 for e in range(5))
    with pytest.raises(ValueError):
        pick_clip(0, 0, 0, 0)


def test_one_clip_per_video_per_epoch(store):
    """clips='per_video': an item is a video, each epoch reads one of its stored clips (drawn from
    seed, epoch and video), the same with 0 and 2 workers and on DDP shards; 'all' keeps every
    clip in every epoch."""
    ds = ClipDataset(store, out_size=S, seed=5, clips="per_video")
    assert len(ds) == 3 and len(ClipDataset(store, out_size=S)) == 6
    assert ds.reader.spec.frame_numbering == "raw"  # what precompute writes now
    videos = [ds.reader.clips[int(g[0])].video_id for g in ds.groups]
    assert len(set(videos)) == 3
    seen = {v: set() for v in range(3)}
    for e in range(12):
        for v in range(3):
            c = ds.clip_index(v, e)
            assert ds.reader.clips[c].video_id == videos[v] and c in ds.groups[v]
            seen[v].add(c)
            item = ds[(e, v)]
            assert item["index"] == c and item["video_id"] == videos[v]
    assert all(len(s) == 2 for s in seen.values())  # both stored clips come up over the epochs
    a = _collect(make_loader(ds, batch_size=2, num_workers=0, shuffle=True, seed=3, drop_last=False), [0, 1, 2])
    b = _collect(make_loader(ClipDataset(store, out_size=S, seed=5, clips="per_video"), batch_size=2,
                             num_workers=2, shuffle=True, seed=3, drop_last=False), [0, 1, 2])
    for (oa, ea), (ob, eb) in zip(a, b):
        assert oa == ob and len(oa) == 3  # one clip per video
        assert {ds.reader.clips[i].video_id for i in oa} == set(videos)
        for idx in ea:
            assert all(torch.equal(x, y) for x, y in zip(ea[idx], eb[idx]))
    assert len({tuple(sorted(o)) for o, _ in a}) > 1  # other clips in other epochs
    # DDP shards split the videos and read the same clips as one process
    for e in (0, 1):
        got = []
        for rank in (0, 1):
            ld = make_loader(ds, batch_size=1, num_workers=0, shuffle=True, seed=0, drop_last=False,
                             distributed=True, num_replicas=2, rank=rank)
            ld.set_epoch(e)
            got += [(v, ds[(ep, v)]["index"]) for ep, v in ld.sampler]
        assert {v for v, _ in got} == {0, 1, 2}
        assert all(c == ds.clip_index(v, e) for v, c in got)
    with pytest.raises(MosicError, match="per_video' or 'all"):
        ClipDataset(store, out_size=S, clips="each")


def test_store_whose_steps_counted_files_is_refused_where_that_differs():
    """Stores made before steps counted raw frames lack spec.frame_numbering ('index'): refused
    on data whose frames are not every raw frame (YouTube-VOS 'train'), accepted elsewhere."""
    from types import SimpleNamespace

    from mosic.data.base import VideoInfo
    from mosic.train.dataset import check_frame_numbering

    def reader(numbering):
        from mosic.config import ClipSettings

        return SimpleNamespace(path="old.zarr", spec=SimpleNamespace(frame_numbering=numbering,
                                                                   clips=ClipSettings(step=6)))

    def source(numbers):
        return SimpleNamespace(kind="ytvos", split="train", videos=lambda: [
            VideoInfo("a", 4, 8, 8, tuple(range(4))), VideoInfo("b", 4, 8, 8, numbers)])

    check_frame_numbering(reader("index"), source(None))
    check_frame_numbering(reader("index"), source((0, 1, 2, 3)))
    check_frame_numbering(reader("raw"), source((0, 5, 10, 15)))
    with pytest.raises(StoreError, match=r"counted stored frames.*'b': 0, 5, 10, \.\.\.\).*Rebuild"):
        check_frame_numbering(reader("index"), source((0, 5, 10, 15)))


@pytest.fixture(scope="module")
def dense_store(synth, tmp_path_factory):
    over = {"dataset.root": str(synth), "stores": str(tmp_path_factory.mktemp("dense")),
            "tracker.name": "oracle", "tracker.grid": 8, "clips.length": 4, "clips.step": 2,
            "clips.clips_per_video": 2}
    return precompute(load_pipeline("synthetic", overrides=over), progress=False).store


def test_a_full_grid_in_every_crop_from_a_dense_store(dense_store, store, caplog):
    """A store grid of min_store_grid(G) or more: every crop gets G x G trajectories of its own,
    all inside the crop on the first frame, near its grid cells. A sparser store: every stored
    point, those outside the crop invisible, and one warning that says so."""
    from mosic.train.ops import crop_grid, min_store_grid

    G = 4
    assert min_store_grid(G, out_size=S) == 8
    ds = ClipDataset(dense_store, out_size=S, grid=G, seed=2, grid_layout="cells")
    assert ds.select_grid
    spacing_max = S / (0.54 * 8)  # the stored grid's spacing in the narrowest crop, crop pixels
    for e in range(4):
        for i in range(len(ds)):
            it = ds[(e, i)]
            tr, vis = it["tracks"].numpy(), it["visibility"].numpy()
            assert tr.shape == (4, G * G, 2) and vis.shape == (4, G * G)
            assert vis[0].all() and ((tr[0] >= 0) & (tr[0] < S)).all()  # all inside, first frame
            assert len({tuple(p) for p in tr[0].round(3)}) == G * G  # distinct trajectories
            assert np.abs(tr[0] - crop_grid(S, G)).max() <= spacing_max / 2 + 1e-3
            # and they are the stored trajectories, mapped as the crop maps them
            item, _ = ds.read_clip(i, e)
            full, _ = map_tracks(item.tracks, item.visibility, ds.crop(i, e))
            assert all(any(np.array_equal(full[:, k], tr[:, j]) for k in range(64)) for j in range(G * G))
    # CoTracker's own grid on the crop (the default): the same trajectories' count, nearest to its points
    ct = ClipDataset(dense_store, out_size=S, grid=G, seed=2)
    assert ct.grid_layout == "cotracker"
    for i in range(len(ct)):
        tr = ct[(0, i)]["tracks"].numpy()
        assert len({tuple(p) for p in tr[0].round(3)}) == G * G and ((tr[0] >= 0) & (tr[0] < S)).all()
        assert np.abs(tr[0] - crop_grid(S, G, "cotracker")).max() <= spacing_max + 1e-3
    with caplog.at_level("WARNING", logger="mosic.train"):
        sparse = ClipDataset(store, out_size=S, grid=G, seed=2)
    assert not sparse.select_grid and "too sparse" in caplog.text and "needs 8 x 8" in caplog.text
    vis0 = np.array([sparse[(0, i)]["visibility"][0].numpy() for i in range(len(sparse))])
    assert vis0.shape[1] == 16 and vis0.mean() < 1  # points outside the crop are lost
    with pytest.raises(MosicError, match="grid must be a positive integer"):
        ClipDataset(dense_store, out_size=S, grid=0)


def test_default_pipelines_track_a_grid_dense_enough_for_their_crops():
    """points_per_clip >= 0.95 x grid^2 needs every training pipeline's store grid to be at least
    min_store_grid(train.grid) for its crops."""
    from mosic.config import pipeline_names
    from mosic.backbones import crop_grid_size, model_patch_size
    from mosic.train.ops import min_store_grid

    for name in pipeline_names():
        cfg = load_pipeline(name)
        ts = cfg.train
        patch = model_patch_size(ts.model.name, **ts.model.kwargs)
        grid = crop_grid_size(ts.grid, ts.model.img_size, patch)
        need = min_store_grid(grid, ts.crop_scale, (3 / 4, 4 / 3), ts.model.img_size)
        assert cfg.tracker.grid >= need, (name, cfg.tracker.grid, need)


def test_small_shared_memory_switches_to_file_system_sharing(tmp_path, store, caplog):
    """Workers hand batches over through /dev/shm; when it cannot hold those in flight (a container's
    64 MB default), torch shares tensors through files instead, and says so."""
    import torch.multiprocessing as tmp

    from mosic.train.loader import batch_bytes, shared_memory_check

    ds = ClipDataset(store, out_size=S)
    assert batch_bytes(ds, 4) == 4 * 4 * 3 * S * S  # uint8 frames of a batch of 4 clips of 4 frames
    before = tmp.get_sharing_strategy()
    try:
        assert shared_memory_check(1, str(tmp_path)) == before  # plenty of room: unchanged
        with caplog.at_level("WARNING", logger="mosic.train"):
            assert shared_memory_check(2 ** 62, str(tmp_path)) == "file_system"
        assert "file" in caplog.text and "MB free" in caplog.text
    finally:
        tmp.set_sharing_strategy(before)


def test_holdout_leaves_the_held_out_videos_out_of_training(store):
    from mosic.data.holdout import heldout_rank

    full = ClipDataset(store, require=REQUIRE, out_size=S)
    vids = sorted({c.video_id for c in full.reader.clips})
    ranks = sorted(heldout_rank(v) for v in vids)
    frac = (ranks[0] + ranks[1]) / 2  # exactly one video is held out at this fraction
    out = min(vids, key=heldout_rank)
    ds = ClipDataset(store, require=REQUIRE, out_size=S, holdout=frac)
    kept = {full.reader.clips[int(c)].video_id for c in ds.indices}
    assert kept == set(vids) - {out} and len(ds) == len(full) - 2  # 2 clips per video
    ds = ClipDataset(store, require=REQUIRE, out_size=S, holdout=frac, clips="per_video")
    assert len(ds) == len(vids) - 1


def test_std_setting_normalises_the_frames():
    from mosic.config import TrainSettings

    f = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert TrainSettings().std is None  # the backbone's own
    a = normalize_frames(f, IMAGENET_MEAN, IMAGENET_STD)
    b = normalize_frames(f, IMAGENET_MEAN, TrainSettings(std=(0.228, 0.224, 0.225)).std)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(b[:, 0] * 0.228 + mean[:, 0], a[:, 0] * 0.229 + mean[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(b[:, 1:], a[:, 1:])
    with pytest.raises(ValueError, match="std"):
        TrainSettings(std=(0.2, 0.0, 0.2))
