"""Which backbone blocks train: the last N (``ytvos``) or the official substring rule
(``ytvos-official``: names containing blocks.10 / blocks.11, i.e. blocks 10-11 of ViT-L's 24), with
gradients through the frozen blocks that follow a trainable one and none kept for the frozen prefix."""

import pytest
import torch

from mosic import MosicError
from mosic.backbones import create_backbone
from mosic.config import load_pipeline
from mosic.train.model import MoSiCModel, trainable_blocks

TINY = dict(depth=4, embed_dim=48, num_heads=3, init_values=0.1)


def tiny(train_blocks):
    torch.manual_seed(0)
    bb = create_backbone("vit_small_patch14_dinov2", pretrained=False, img_size=56, **TINY)
    return MoSiCModel(bb, num_prototypes=8, head_hidden=(32,), head_dim=16, train_blocks=train_blocks)


def grad_modes(m: MoSiCModel) -> list[bool]:
    """Whether autograd was on in each block during one forward and backward."""
    seen = [None] * len(m.backbone.blocks)
    for i, blk in enumerate(m.backbone.blocks):
        blk.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, torch.is_grad_enabled()))
    m(torch.randn(2, 3, 56, 56), torch.rand(2, 5, 2) * 56).sum().backward()
    return seen


def block_has_grad(m: MoSiCModel, i: int) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.blocks[i].parameters())


def test_the_official_substring_rule_picks_blocks_ten_and_eleven_whatever_the_depth():
    assert trainable_blocks(12, rule="official_names") == (10, 11)  # ViT-S/B: the last two
    assert trainable_blocks(24, rule="official_names") == (10, 11)  # ViT-L: middle blocks
    assert trainable_blocks(24, 2, "last") == (22, 23)
    with pytest.raises(MosicError, match="has 4 blocks: use train_blocks_rule=last"):
        trainable_blocks(4, rule="official_names")
    with pytest.raises(MosicError, match="train_blocks_rule must be one of last, official_names"):
        trainable_blocks(12, rule="names")


def test_middle_blocks_get_gradients_through_the_frozen_blocks_after_them():
    m = tiny([1, 2])  # as blocks 10-11 of 24: frozen blocks on both sides
    modes = grad_modes(m)
    assert modes == [False, True, True, True]  # block 3 is frozen but carries the gradient down
    assert [block_has_grad(m, i) for i in range(4)] == [False, True, True, False]
    assert all(p.grad is None for p in m.backbone.blocks[3].parameters())


def test_the_last_n_path_runs_the_frozen_prefix_without_autograd():
    m = tiny(2)
    assert m.trainable == (2, 3)
    assert grad_modes(m) == [False, False, True, True]
    assert [block_has_grad(m, i) for i in range(4)] == [False, False, True, True]


def test_ytvos_official_trains_by_the_official_names_and_ytvos_by_the_last_blocks():
    assert load_pipeline("ytvos-official").train.model.train_blocks_rule == "official_names"
    ytvos = load_pipeline("ytvos").train.model
    assert ytvos.train_blocks_rule == "last" and ytvos.train_blocks == 2
