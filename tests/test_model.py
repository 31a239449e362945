import timm
import torch
import pytest

from mosic import MosicError
from mosic.config import OptimSettings
from mosic.backbones import create_backbone
from mosic.train.model import MoSiCModel, make_teacher, random_keep_mask
from mosic.train.checkpoint import export_backbone
from mosic.train.step import student_valid
from mosic.train.train import lr_factor, param_groups

TINY = dict(depth=3, embed_dim=48, num_heads=3, init_values=0.1)
NAME = "vit_small_patch14_dinov2"


def tiny_model(train_blocks=2, K=8):
    torch.manual_seed(0)
    bb = create_backbone(NAME, pretrained=False, img_size=56, **TINY)
    return MoSiCModel(bb, num_prototypes=K, head_hidden=(32,), head_dim=16, train_blocks=train_blocks)


def test_last_blocks_train_by_index_and_norm_stays_frozen():
    m = tiny_model(train_blocks=2)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.blocks.2.") for n in trainable)
    assert any(n.startswith("backbone.blocks.1.") for n in trainable)
    assert not any(n.startswith("backbone.blocks.0.") for n in trainable)
    assert not any(n.startswith(("backbone.norm.", "backbone.patch_embed", "backbone.pos_embed")) for n in trainable)
    assert "prototypes" in trainable and any(n.startswith("head.") for n in trainable)
    with pytest.raises(MosicError, match="has 3 blocks"):
        tiny_model(train_blocks=4)


def test_patch_features_shape_masking_and_gradients():
    m = tiny_model()
    x = torch.randn(2, 3, 56, 56)
    f = m.patch_features(x)
    assert f.shape == (2, 48, 4, 4)
    # the same as timm's forward_features patch tokens
    ref = m.backbone.forward_features(x)[:, m.backbone.num_prefix_tokens:]
    torch.testing.assert_close(f.flatten(2).transpose(1, 2), ref)
    keep_all = torch.ones(2, 16, dtype=torch.bool)
    torch.testing.assert_close(m.patch_features(x, keep_all), f)
    keep = random_keep_mask(2, 16, 0.25, generator=torch.Generator().manual_seed(0))
    assert keep.sum(1).tolist() == [12, 12]
    fm = m.patch_features(x, keep)
    dropped = ~keep.view(2, 4, 4)
    assert (fm.permute(0, 2, 3, 1)[dropped] == 0).all() and (fm.permute(0, 2, 3, 1)[~dropped] != 0).any()
    # gradient reaches the trainable blocks only
    m(x, torch.rand(2, 5, 2) * 56, keep).sum().backward()
    assert m.backbone.blocks[2].attn.qkv.weight.grad is not None
    assert m.backbone.blocks[0].attn.qkv.weight.grad is None
    assert random_keep_mask(2, 16, 0.0) is None


def test_teacher_is_a_frozen_copy():
    m = tiny_model()
    t = make_teacher(m)
    assert all(not p.requires_grad for p in t.parameters())
    x = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(t.patch_features(x), m.patch_features(x))


def test_student_valid_drops_points_on_masked_patches():
    keep = torch.ones(1, 16, dtype=torch.bool)
    keep[0, 5] = False  # row 1, col 1 of a 4 x 4 grid of 14 px patches
    tracks0 = torch.tensor([[[14 * 1.5, 14 * 1.5], [14 * 2.5, 14 * 1.5], [1.0, 1.0]]])
    vis0 = torch.tensor([[True, True, False]])
    assert student_valid(tracks0, vis0, keep, 56, 14).tolist() == [[False, True, False]]


def test_export_loads_back_with_timm(tmp_path):
    m = tiny_model()
    with torch.no_grad():
        m.backbone.blocks[2].mlp.fc1.weight.add_(1.0)  # differ from any fresh init
    path = export_backbone(m, tmp_path / "backbone.pth")
    loaded = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                               img_size=56, num_classes=0, **TINY)
    for (k, a), (_, b) in zip(m.backbone.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


def test_weights_errors(tmp_path, monkeypatch):
    with pytest.raises(MosicError, match="not found"):
        create_backbone(NAME, weights=tmp_path / "nope.pth", img_size=56, **TINY)
    other = create_backbone(NAME, pretrained=False, img_size=56, depth=2, embed_dim=24, num_heads=2)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(MosicError, match="another architecture"):
        create_backbone(NAME, weights=tmp_path / "other.pth", img_size=56, **TINY)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, no retries
    with pytest.raises(MosicError, match="--weights PATH, or --no-pretrained"):
        create_backbone("vit_small_patch14_dinov2.lvd142m", pretrained=True, img_size=56, **TINY)
    with pytest.raises(MosicError, match="no model named"):
        create_backbone("vit_nonexistent_model", pretrained=False)


def test_param_groups_and_schedule():
    m = tiny_model()
    groups = {g["name"]: g for g in param_groups(m, OptimSettings(lr_backbone=1e-5, lr_head=1e-4, weight_decay=0.01))}
    assert groups["bb_decay"]["lr"] == 1e-5 and groups["head_decay"]["lr"] == 1e-4
    assert groups["bb_no"]["weight_decay"] == 0 and groups["head_no"]["weight_decay"] == 0
    assert all(p.ndim > 1 for p in groups["bb_decay"]["params"])
    assert any(p is m.prototypes for p in groups["head_decay"]["params"])
    assert lr_factor(0, 100, 0, 0.0) == 1.0 and lr_factor(100, 100, 0, 0.0) == pytest.approx(0.0)
    assert lr_factor(50, 100, 0, 0.0) == pytest.approx(0.5)
    assert lr_factor(0, 100, 10, 0.0) == pytest.approx(0.1) and lr_factor(9, 100, 10, 0.0) == 1.0


def test_official_dinov2_style_checkpoint_loads(tmp_path):
    """Official DINOv2 files carry a mask_token (and no head); timm's filter converts them."""
    src = tiny_model().backbone
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd["mask_token"] = torch.zeros(1, 48)
    torch.save(sd, tmp_path / "dinov2_official.pth")
    bb = create_backbone(NAME, weights=tmp_path / "dinov2_official.pth", img_size=56, **TINY)
    torch.testing.assert_close(bb.blocks[1].attn.qkv.weight, src.blocks[1].attn.qkv.weight)


def test_head_and_scores_are_fp32_under_bf16_autocast():
    """The backbone may run in bf16; the head, its normalisation and the prototype scores do not:
    with the same features, scores under autocast equal the fp32 scores."""
    m = tiny_model(K=32)
    feats = torch.randn(500, 48)
    ref = m.scores(m.head(feats))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m.scores(m.head(feats))
        got_bf16_in = m.scores(m.head(feats.bfloat16()))
    assert got.dtype == torch.float32 and got_bf16_in.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_bf16_in, m.scores(m.head(feats.bfloat16().float())), rtol=0, atol=1e-5)
    # what a bf16 head gives, for scale: far outside that tolerance
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = torch.nn.functional.normalize(m.head.mlp(feats), dim=-1)
        bf = z @ torch.nn.functional.normalize(m.prototypes, dim=-1).t()
    assert (bf.float() - ref).abs().max() > 1e-3


def test_prototype_gradient_raw_keeps_the_radial_part_normalized_removes_it():
    """Same forward on unit prototypes; the official ('raw') gradient is z^T dL/ds, the
    'normalized' one its projection onto the tangent of the unit sphere at each prototype."""
    torch.manual_seed(1)
    z = torch.nn.functional.normalize(torch.randn(64, 16), dim=-1)
    target = torch.randint(0, 8, (64,))
    grads, scores = {}, {}
    for mode in ("raw", "normalized"):
        m = tiny_model()
        m.prototype_grad = mode
        m.normalize_prototypes()
        s = m.scores(z)
        torch.nn.functional.cross_entropy(s / 0.1, target).backward()
        grads[mode], scores[mode] = m.prototypes.grad.clone(), s.detach()
        protos = m.prototypes.detach()
    torch.testing.assert_close(scores["raw"], scores["normalized"])
    g_raw, g_norm = grads["raw"], grads["normalized"]
    radial = (g_raw * protos).sum(-1, keepdim=True) * protos
    torch.testing.assert_close(g_norm, g_raw - radial, rtol=1e-4, atol=1e-6)
    assert (g_norm * protos).sum(-1).abs().max() < 1e-5  # no radial part left
    assert radial.norm() > 0.1 * g_raw.norm()  # the raw gradient has one
    with pytest.raises(MosicError, match="prototype_grad"):
        MoSiCModel(create_backbone(NAME, pretrained=False, img_size=56, **TINY), 8, (32,), 16, 1, prototype_grad="x")


def test_teacher_prototypes_renormalised_then_averaged_as_the_official_rule():
    from mosic.train.model import TeacherEMA

    s = tiny_model()
    s.normalize_prototypes()
    t = make_teacher(s)
    ema = TeacherEMA(s, t, 0.9)
    ref = t.prototypes.detach().clone()
    head_ref = t.head.mlp[0].weight.detach().clone()
    for i in range(4):
        with torch.no_grad():  # an optimiser step moves the student's prototypes off the sphere
            s.prototypes.mul_(1.3).add_(0.5 * torch.randn_like(s.prototypes))
            s.head.mlp[0].weight.add_(0.1)
        ema.update()
        # official: t <- d * normalise(t) + (1 - d) * s; the teacher uses it renormalised
        ref = 0.9 * torch.nn.functional.normalize(ref, dim=-1) + 0.1 * s.prototypes.detach()
        head_ref = 0.9 * head_ref + 0.1 * s.head.mlp[0].weight.detach()  # other parameters: plain EMA
        torch.testing.assert_close(t.prototypes.detach(), torch.nn.functional.normalize(ref, dim=-1))
        torch.testing.assert_close(t.head.mlp[0].weight.detach(), head_ref)
        with torch.no_grad():
            s.normalize_prototypes()  # the start of the next step
