"""Backbone families: the piecewise forward with token dropping equals timm's own forward, and a
kept token's features equal those of a forward on the kept tokens alone at their own positions
(absolute and rotary), for a tiny random instance of each family."""

import pytest
import timm
import torch

from mosic import MosicError
from mosic.backbones import family, mean_std
from mosic.backbones import create_backbone
from mosic.train.model import MoSiCModel, random_keep_mask

# name, family, tiny kwargs, image size (4 x 4 patches); one tiny random instance per family
FAMILIES = {
    "dinov2": ("vit_small_patch14_dinov2", "vit", dict(depth=2, embed_dim=48, num_heads=3, init_values=0.1), 56),
    "dinov2-r": ("vit_small_patch14_reg4_dinov2", "vit", dict(depth=2, embed_dim=48, num_heads=3, init_values=0.1), 56),
    "dino": ("vit_small_patch16_224", "vit", dict(depth=2, embed_dim=48, num_heads=3), 64),
    "dinov3": ("vit_small_patch16_dinov3", "eva", dict(depth=2, embed_dim=48, num_heads=3, init_values=0.1), 64),
    "eva02": ("eva02_tiny_patch14_224", "eva", dict(depth=2, embed_dim=48, num_heads=3), 56),
}


def tiny(fam: str, train_blocks: int = 1) -> MoSiCModel:
    name, _, kw, size = FAMILIES[fam]
    torch.manual_seed(0)
    bb = create_backbone(name, pretrained=False, img_size=size, **kw)
    return MoSiCModel(bb, num_prototypes=8, head_hidden=(32,), head_dim=16, train_blocks=train_blocks).eval()


def _kept_alone(bb, x, idx):
    """Reference: the kept patch tokens alone (prefix tokens first) through the blocks, each at its
    own position. Absolute: the full grid's position embedding rows of the kept patches; rotary:
    the full grid's rotary rows of the kept patches, given to each block as a [n, d] table."""
    npre = bb.num_prefix_tokens
    out = bb._pos_embed(bb.patch_embed(x))
    t, rope = out if isinstance(out, tuple) else (out, None)
    t = bb.norm_pre(t)
    res = []
    for b in range(x.shape[0]):
        tb = torch.cat([t[b:b + 1, :npre], t[b:b + 1, npre + idx[b]]], dim=1)
        rb = None if rope is None else rope[idx[b]]  # [n, d] rows of the kept patches
        for blk in bb.blocks:
            tb = blk(tb) if rb is None else blk(tb, rope=rb)
        res.append(bb.norm(tb)[0, npre:])
    return torch.stack(res)


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_masked_forward_keeps_positions(fam):
    m = tiny(fam)
    name, fam_kind, _, size = FAMILIES[fam]
    bb = m.backbone
    assert family(bb) == fam_kind
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        f = m.patch_features(x)
        # no token dropped: timm's forward_features
        ref = bb.forward_features(x)[:, bb.num_prefix_tokens:]
        torch.testing.assert_close(f.flatten(2).transpose(1, 2), ref)
        torch.testing.assert_close(m.patch_features(x, torch.ones(2, 16, dtype=torch.bool)), f)
        keep = random_keep_mask(2, 16, 0.5, generator=torch.Generator().manual_seed(1))
        fm = m.patch_features(x, keep).flatten(2).transpose(1, 2)  # [B, 16, D]
        idx = keep.nonzero()[:, 1].view(2, -1)
        alone = _kept_alone(bb, x, idx)
        torch.testing.assert_close(torch.stack([fm[b, idx[b]] for b in range(2)]), alone)
        assert (fm[~keep] == 0).all()
        # and the kept tokens' features really depend on which tokens were dropped
        assert not torch.allclose(torch.stack([f.flatten(2).transpose(1, 2)[b, idx[b]] for b in range(2)]), alone,
                                  atol=1e-4)


def test_rope_moves_with_the_kept_tokens():
    """With RoPE, a forward where the kept tokens are given wrong positions differs: the rotary
    embedding really follows the kept indices."""
    m = tiny("dinov3")
    bb = m.backbone
    x = torch.randn(1, 3, 64, 64)
    keep = torch.zeros(1, 16, dtype=torch.bool)
    keep[0, [0, 5, 10, 15]] = True
    with torch.no_grad():
        fm = m.patch_features(x, keep).flatten(2).transpose(1, 2)[0, keep[0]]
        wrong = _kept_alone(bb, x, torch.tensor([[0, 1, 2, 3]]))[0]  # rows of other patches' positions
        out = bb._pos_embed(bb.patch_embed(x))
    assert isinstance(out, tuple) and out[1] is not None
    assert not torch.allclose(fm, wrong, atol=1e-4)


@pytest.mark.parametrize("fam", ["dinov3", "eva02"])
def test_gradients_reach_trainable_blocks_only(fam):
    m = tiny(fam, train_blocks=1).train()
    size = FAMILIES[fam][3]
    x = torch.randn(2, 3, size, size)
    keep = random_keep_mask(2, 16, 0.25, generator=torch.Generator().manual_seed(0))
    m(x, torch.rand(2, 5, 2) * size, keep).sum().backward()
    grads = {n for n, p in m.named_parameters() if p.grad is not None}
    assert any(n.startswith("backbone.blocks.1.") for n in grads)
    assert not any(n.startswith("backbone.blocks.0.") for n in grads)


def test_mean_std_from_pretrained_cfg():
    m = tiny("eva02")
    mean, std = m.mean_std()
    assert mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # OpenAI CLIP's, as EVA-02 was trained
    assert mean_std(tiny("dinov3").backbone)[0] == pytest.approx((0.485, 0.456, 0.406))
    bb = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0, depth=1)
    assert mean_std(bb) == (pytest.approx((0.485, 0.456, 0.406)), pytest.approx((0.229, 0.224, 0.225)))


def test_other_models_get_a_clear_error():
    bb = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with pytest.raises(MosicError, match="not a timm VisionTransformer or Eva"):
        MoSiCModel(bb, num_prototypes=4, head_hidden=(8,), head_dim=4, train_blocks=0)
    with pytest.raises(MosicError, match="patch_drop_rate"):
        create_backbone("vit_small_patch14_dinov2", pretrained=False, img_size=56, depth=1, embed_dim=48,
                        num_heads=3, patch_drop_rate=0.5)


def test_track_grid_follows_the_patch():
    from mosic.backbones import crop_grid_size
    from mosic.config import TrainSettings
    from mosic.train.ops import min_store_grid

    assert TrainSettings().grid == "patch"
    assert crop_grid_size("patch", 224, 14) == 16 and crop_grid_size("patch", 256, 16) == 16
    assert crop_grid_size("patch", 224, 16) == 14 and crop_grid_size(5, 224, 16) == 5
    assert crop_grid_size(None, 224, 16) is None
    with pytest.raises(MosicError, match="not a multiple of the backbone's patch size 16: use 224 or 240"):
        crop_grid_size("patch", 230, 16)
    # the store's density rule follows: 30 x 30 for the 16 x 16 grid at 224 px and at 256 px, 26 for DINO's 14
    assert min_store_grid(16, out_size=224) == 30 and min_store_grid(16, out_size=256) == 30
    assert min_store_grid(crop_grid_size("patch", 224, 16), out_size=224) == 26


def test_evaluation_sizes_round_to_the_patch():
    from mosic.backbones import round_to_patch

    # the paper preset's sizes: 448 fits both patches; in-context's 504 (36 x 14) is 512 for patch 16
    assert [round_to_patch(s, 14) for s in (448, 504, 224, 112)] == [448, 504, 224, 112]
    assert [round_to_patch(s, 16) for s in (448, 504, 224, 112, 56)] == [448, 512, 224, 112, 64]
    assert round_to_patch(5, 16) == 16


def test_evaluation_normalises_with_the_models_mean_and_std():
    """Evaluation normalises with the backbone's pretrained_cfg (EVA-02: CLIP's); training: see
    test_families.test_training_normalises_with_the_backbones_statistics."""
    import numpy as np

    from mosic.evaluation.dense import patch_features

    bb = tiny("eva02").backbone
    mean, std = mean_std(bb)
    frames = np.random.default_rng(0).integers(0, 256, (2, 56, 56, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = bb.forward_features(x)[:, bb.num_prefix_tokens:]
    got = patch_features(bb, frames, 56, normalize=False)
    torch.testing.assert_close(got.flatten(1, 2), ref, rtol=1e-4, atol=1e-4)
    imagenet = patch_features(bb, frames, 56, normalize=False, std=(0.229, 0.224, 0.225))
    assert not torch.allclose(imagenet, got, atol=1e-3)  # an explicit std (in-context's setting) wins


def test_dinov3_pipeline_shares_the_ytvos_store_with_one_trajectory_per_patch():
    from mosic.config import load_pipeline
    from mosic.backbones import crop_grid_size, model_patch_size
    from mosic.train.ops import min_store_grid
    from mosic.train.stores import store_requirements

    yt, v3 = load_pipeline("ytvos"), load_pipeline("ytvos-dinov3")
    ts = v3.train
    assert ts.model.name == "vit_small_patch16_dinov3.lvd1689m" and ts.model.img_size == 256
    grid = crop_grid_size(ts.grid, ts.model.img_size, model_patch_size(ts.model.name))
    assert grid == 16 and min_store_grid(grid, out_size=256) <= v3.tracker.grid
    assert store_requirements(v3) == store_requirements(yt)  # the same store trains both
    # the rest of the recipe is the paper's
    assert yt.train.model_dump(exclude={"model"}) == ts.model_dump(exclude={"model"})
