"""Official checkpoint files load with ``--weights PATH``: for each layout a state dict is written in
the official key names (the names are facts read from the official repositories: DINOv3's
``DinoVisionTransformer``, DINOv2's, DINO's ``VisionTransformer``, EVA-02's MIM model and EVA-CLIP's
visual tower) from a tiny random timm model, and loading it back gives that model's weights and
outputs exactly."""

import pytest
import timm
import torch

from mosic import MosicError
from mosic.backbones import detect_layout, read_weights
from mosic.backbones import create_backbone


def _timm(name, size, **kw):
    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False, num_classes=0, img_size=size, **kw).eval()
    with torch.no_grad():  # no parameter left at a constant init: every key must really load
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def _rename(sd, pairs):
    out = {}
    for k, v in sd.items():
        for a, b in pairs:
            k = k.replace(a, b)
        out[k] = v
    return out


def official_dinov3(m):
    """facebookresearch/dinov3 DinoVisionTransformer: storage_tokens, mask_token [1, D],
    rope_embed.periods, blocks.N.ls1.gamma / ls2.gamma, attn.qkv.bias with its bias_mask."""
    sd = _rename(m.state_dict(), [("reg_token", "storage_tokens"), ("gamma_1", "ls1.gamma"), ("gamma_2", "ls2.gamma")])
    D = m.embed_dim
    sd["mask_token"] = torch.zeros(1, D)
    sd["rope_embed.periods"] = torch.arange(1, D // m.blocks[0].attn.num_heads // 4 + 1).float()
    for i in range(len(m.blocks)):
        sd[f"blocks.{i}.attn.qkv.bias"] = torch.zeros(3 * D)  # S/16: all-zero biases (timm: qkv_bias=False)
        sd[f"blocks.{i}.attn.qkv.bias_mask"] = torch.ones(3 * D)
    return sd


def official_dinov2(m):
    """facebookresearch/dinov2: register_tokens, mask_token [1, D], pos_embed with the class
    token's slot (timm's registers model keeps the class position in cls_token)."""
    sd = dict(m.state_dict())
    out = {}
    if "reg_token" in sd:
        pos_cls = torch.randn(1, 1, m.embed_dim) * 0.02
        out = {"cls_token": sd.pop("cls_token") - pos_cls, "pos_embed": torch.cat([pos_cls, sd.pop("pos_embed")], 1),
               "register_tokens": sd.pop("reg_token")}
    out["mask_token"] = torch.zeros(1, m.embed_dim)
    out.update(sd)
    return out


def official_eva02_mim(m):
    """baaivision/EVA EVA-02 Ti/S MIM: {'model': ...} with attn.qkv + q_bias / v_bias, xformers
    SwiGLU mlp.w12 / mlp.w3, the final norm as norm, mask_token, lm_head, rope.freqs_*."""
    sd = _rename(m.state_dict(), [("mlp.fc1.", "mlp.w12."), ("mlp.fc2.", "mlp.w3."), ("fc_norm.", "norm.")])
    D = m.embed_dim
    sd.update({"mask_token": torch.zeros(1, 1, D), "lm_head.weight": torch.zeros(8, D), "lm_head.bias": torch.zeros(8),
               "rope.freqs_cos": torch.ones(16, 8), "rope.freqs_sin": torch.zeros(16, 8)})
    return {"model": sd}


def official_eva_clip(m):
    """baaivision/EVA EVA-CLIP (EVA-02 B/16): the visual tower under visual., sub-LN attention with
    q_proj / k_proj / v_proj, q_bias / v_bias, inner_attn_ln; SwiGLU w1 / w2 / ffn_ln / w3; a text
    tower and logit_scale beside it."""
    sd = _rename(m.state_dict(), [("q_proj.bias", "q_bias"), ("v_proj.bias", "v_bias"), ("attn.norm.", "attn.inner_attn_ln."),
                                  ("mlp.fc1_g.", "mlp.w1."), ("mlp.fc1_x.", "mlp.w2."), ("mlp.norm.", "mlp.ffn_ln."),
                                  ("mlp.fc2.", "mlp.w3.")])
    out = {f"visual.{k}": v for k, v in sd.items()}
    out.update({"visual.rope.freqs_cos": torch.ones(4, 4), "visual.head.weight": torch.zeros(8, m.embed_dim),
                "text.token_embedding.weight": torch.zeros(10, 8), "logit_scale": torch.tensor(1.0)})
    return out


CASES = {
    # layout: (timm name, tiny kwargs, size, converter, expected layout)
    "dinov3": ("vit_small_patch16_dinov3", dict(depth=2, embed_dim=48, num_heads=3, init_values=0.1), 64,
               official_dinov3, "dinov3"),
    "dinov2": ("vit_small_patch14_dinov2", dict(depth=2, embed_dim=48, num_heads=3, init_values=0.1), 518,
               official_dinov2, "dinov2"),
    "dinov2-r": ("vit_small_patch14_reg4_dinov2", dict(depth=2, embed_dim=48, num_heads=3, init_values=0.1), 518,
                 official_dinov2, "dinov2"),
    # DINO's own key names are timm's VisionTransformer's: the file loads as it is
    "dino": ("vit_small_patch16_224", dict(depth=2, embed_dim=48, num_heads=3), 224, lambda m: dict(m.state_dict()),
             "timm"),
    "eva02": ("eva02_tiny_patch14_224", dict(depth=2), 56, official_eva02_mim, "eva"),
    "eva-clip": ("eva02_base_patch16_clip_224", dict(depth=2, embed_dim=48, num_heads=3), 64, official_eva_clip,
                 "eva-clip"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_official_checkpoint_loads_exactly(case, tmp_path):
    name, kw, size, convert, layout = CASES[case]
    src = _timm(name, size, **kw)
    path = tmp_path / f"{case}.pth"
    torch.save(convert(src), path)
    sd = read_weights(path)
    assert detect_layout(sd, src if layout == "timm" else None) == layout
    m = create_backbone(name, pretrained=False, weights=path, img_size=size, **kw).eval()
    for k, v in src.state_dict().items():
        # (exact but for DINOv2-R's class token, whose position is added back in float32)
        torch.testing.assert_close(m.state_dict()[k], v, rtol=0, atol=1e-6, msg=f"{case}: {k}")
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(m.forward_features(x), src.forward_features(x), rtol=0, atol=1e-5)
    # at another input size the position embeddings are resampled by timm's filter
    small = 112 if "patch16" in name else 56
    create_backbone(name, pretrained=False, weights=path, img_size=small, **kw)


def test_unknown_and_mismatched_files_get_clear_errors(tmp_path):
    kw = dict(depth=1, embed_dim=48, num_heads=3)
    bad = tmp_path / "bad.pth"
    torch.save({"encoder.layer.0.weight": torch.zeros(2)}, bad)
    with pytest.raises(MosicError, match="fit no known layout.*encoder.layer.0.weight"):
        create_backbone("vit_small_patch14_dinov2", pretrained=False, weights=bad, img_size=56, **kw)
    v3 = tmp_path / "v3.pth"
    torch.save(official_dinov3(_timm("vit_small_patch16_dinov3", 64, **kw)), v3)
    with pytest.raises(MosicError, match="official DINOv3 checkpoint.*vit_small_patch16_dinov3"):
        create_backbone("vit_small_patch14_dinov2", pretrained=False, weights=v3, img_size=56, **kw)
    with pytest.raises(MosicError, match="do not fit"):  # right family, wrong width
        create_backbone("vit_small_patch16_dinov3", pretrained=False, weights=v3, img_size=64, depth=1, embed_dim=96,
                        num_heads=3)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MosicError, match="not a PyTorch checkpoint"):  # the pre-flight check names it
        create_backbone("vit_small_patch14_dinov2", pretrained=False, weights=junk, img_size=56, **kw)


def test_dinov3_biases_need_the_qkvb_variant(tmp_path):
    kw = dict(depth=1, embed_dim=48, num_heads=3)
    sd = official_dinov3(_timm("vit_small_patch16_dinov3", 64, **kw))
    sd["blocks.0.attn.qkv.bias"] = torch.ones(3 * 48)
    path = tmp_path / "v3b.pth"
    torch.save(sd, path)
    with pytest.raises(MosicError, match="non-zero q/k/v biases.*_qkvb"):
        create_backbone("vit_small_patch16_dinov3", pretrained=False, weights=path, img_size=64, **kw)
    m = create_backbone("vit_small_patch16_dinov3_qkvb", pretrained=False, weights=path, img_size=64, **kw)
    torch.testing.assert_close(m.blocks[0].attn.q_bias, torch.ones(48))  # the q part, k's is fixed at 0
