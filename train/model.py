"""The MoSiC model: a timm ViT backbone (last blocks trainable), an MLP head and L2-normalised
prototypes. The teacher is an EMA copy of all three.

Which blocks train (``train_blocks_rule``): ``"last"``: the last ``train_blocks`` blocks, by index
from the end, so ViT-S/B/L all train their top blocks (``ytvos``); ``"official_names"``: the blocks
whose parameter names contain ``blocks.10`` or ``blocks.11``, the official ``exp_mosic.py`` rule:
the last two blocks of ViT-S/B, blocks 10-11 of 24 for ViT-L, as the paper's ViT-L figures were
trained (``ytvos-official``). The blocks before the first trainable one run under
``torch.no_grad`` (no activations kept); frozen blocks after a trainable one run with autograd,
so gradients flow through them to the trainable blocks below.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_ema import ExponentialMovingAverage

from mosic import MosicError
from mosic.backbones import check_backbone, embed, keep_tokens, mean_std, run_blocks
from mosic.train.ops import sample_at_tracks


class Head(nn.Module):
    """MLP D -> 1024 -> 1024 -> 512 -> 256 with GELU between; output L2-normalised.

    Runs in float32 whatever autocast is in force: under bf16 autocast only the backbone computes
    in bf16, while the head, its output normalisation and the prototype scores stay fp32 (a bf16
    cosine score carries only ~3 significant digits, and the scores feed Sinkhorn / eps = 0.06 and
    the loss / temperature 0.1). The head sees only the tracked points, so this costs little."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (1024, 1024, 512), out_dim: int = 256):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.normalize(self.mlp(x.float()), dim=-1)


PROTOTYPE_GRADS = ("raw", "normalized")
TRAIN_BLOCK_RULES = ("last", "official_names")
#: the substrings of the parameter names the official code trains (``exp_mosic.py``)
OFFICIAL_TRAIN_NAMES = ("blocks.10", "blocks.11")


def trainable_blocks(depth: int, train_blocks: int = 2, rule: str = "last") -> tuple[int, ...]:
    """Indices of the blocks that train in a backbone of ``depth`` blocks (see the module's text)."""
    if rule == "last":
        if not 0 <= train_blocks <= depth:
            raise MosicError(f"train_blocks={train_blocks}, but the backbone has {depth} blocks")
        return tuple(range(depth - train_blocks, depth))
    if rule == "official_names":
        picked = tuple(i for i in range(depth) if any(s in f"blocks.{i}." for s in OFFICIAL_TRAIN_NAMES))
        if not picked:
            raise MosicError(f"model.train_blocks_rule=official_names trains blocks 10 and 11, but the backbone has "
                             f"{depth} blocks: use train_blocks_rule=last")
        return picked
    raise MosicError(f"model.train_blocks_rule must be one of {', '.join(TRAIN_BLOCK_RULES)}, got {rule!r}")


class MoSiCModel(nn.Module):
    """Backbone + head + prototypes. ``scores(z)`` are cosine similarities to the prototypes.

    ``prototype_grad``: how the scores reach the prototype parameter, which is renormalised at the
    start of every step (:meth:`normalize_prototypes`), so the forward is the same either way.
    ``"raw"`` (official): scores multiply by the parameter itself, so its gradient keeps its radial
    part; ``"normalized"``: scores go through ``F.normalize(prototypes)``, whose backward removes
    the radial part before the optimiser sees it."""

    def __init__(self, backbone: nn.Module, num_prototypes: int = 100,
                 head_hidden: Sequence[int] = (1024, 1024, 512), head_dim: int = 256,
                 train_blocks: int | Sequence[int] = 2, prototype_grad: str = "raw", train_blocks_rule: str = "last"):
        super().__init__()
        if prototype_grad not in PROTOTYPE_GRADS:
            raise MosicError(f"prototype_grad must be one of {', '.join(PROTOTYPE_GRADS)}, got {prototype_grad!r}")
        self.prototype_grad = prototype_grad
        check_backbone(backbone)
        self.backbone = backbone
        self.head = Head(backbone.embed_dim, head_hidden, head_dim)
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, head_dim))
        n = len(backbone.blocks)
        if isinstance(train_blocks, int):  # a count, picked by the rule; a sequence: the block indices
            self.trainable = trainable_blocks(n, train_blocks, train_blocks_rule)
        else:
            self.trainable = tuple(sorted(set(int(i) for i in train_blocks)))
            if any(not 0 <= i < n for i in self.trainable):
                raise MosicError(f"train_blocks={list(train_blocks)}, but the backbone has blocks 0..{n - 1}")
        self.first_trainable = self.trainable[0] if self.trainable else n
        for p in backbone.parameters():
            p.requires_grad_(False)
        for i in self.trainable:
            for p in backbone.blocks[i].parameters():
                p.requires_grad_(True)
        # the final norm stays frozen, as in the published recipe

    @property
    def patch_size(self) -> int:
        return int(self.backbone.patch_embed.patch_size[0])

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.copy_(F.normalize(self.prototypes, dim=-1))

    def patch_features(self, x: torch.Tensor, keep: torch.Tensor | None = None,
                       n_keep: int | None = None) -> torch.Tensor:
        """x [B, 3, H, W] -> patch tokens [B, D, h, w] after the final norm, as the backbone's
        ``forward_features`` computes them (VisionTransformer and Eva families, see
        :mod:`mosic.backbones`).

        ``keep`` [B, L] bool (L = h * w): tokens to keep; dropped tokens never enter the
        transformer (MAE-style, no mask token) and come back as zeros. Kept tokens keep their own
        positions: absolute embeddings are added before the drop, rotary ones follow the kept
        indices. ``n_keep``: the tokens every sample keeps, where the caller knows it
        (:func:`kept_tokens`); then nothing is read back from the device (:func:`keep_indices`)."""
        bb = self.backbone
        B, _, H, W = x.shape
        p = self.patch_size
        h, w = H // p, W // p
        npre = bb.num_prefix_tokens
        frozen = self.first_trainable
        with torch.no_grad():  # patch and position embeddings are frozen
            t, rope = embed(bb, x)
        if keep is not None:
            idx = keep_indices(keep, n_keep)
            t, rope = keep_tokens(bb, t, rope, idx)
        with torch.no_grad():
            t = run_blocks(bb, t, rope, 0, frozen)
        t = run_blocks(bb, t, rope, frozen, len(bb.blocks))
        t = bb.norm(t)[:, npre:]
        D = t.shape[-1]
        if keep is not None:
            full = t.new_zeros(B, h * w, D)
            full = full.scatter(1, idx[..., None].expand(-1, -1, D), t)
            t = full
        return t.transpose(1, 2).reshape(B, D, h, w)

    def mean_std(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(mean, std) of the input normalisation the backbone's weights expect (its pretrained_cfg)."""
        return mean_std(self.backbone)

    def forward(self, x: torch.Tensor, tracks: torch.Tensor, keep: torch.Tensor | None = None,
                mode: str = "nearest", n_keep: int | None = None) -> torch.Tensor:
        """Scores of the points ``tracks`` [B, N, 2] ((x, y) pixels of ``x`` [B, 3, H, W]) against
        the prototypes: [B, N, K]. Points on dropped tokens get the scores of a zero feature
        (``keep``, ``n_keep``: see :meth:`patch_features`)."""
        f = self.patch_features(x, keep, n_keep)
        z = self.head(sample_at_tracks(f[:, None], tracks[:, None], (x.shape[-1], x.shape[-2]), mode=mode)[:, 0])
        return self.scores(z)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., head_dim] L2-normalised -> float32 cosine scores [..., K] against the prototypes,
        unit vectors at the start of each step (autocast off, see :class:`Head`; the gradient as
        ``prototype_grad`` says)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            protos = self.prototypes.float()
            if self.prototype_grad == "normalized":
                protos = F.normalize(protos, dim=-1)
            return z.float() @ protos.t()


def make_teacher(student: MoSiCModel) -> MoSiCModel:
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


class TeacherEMA:
    """The teacher as a constant-momentum exponential moving average of the student's trainable
    parameters (torch-ema with ``use_num_updates=False``: no warm-up of the decay). :meth:`update`,
    after every optimiser step, moves the average, copies it into the teacher's matching
    parameters and renormalises the teacher's prototypes. The prototypes' average is renormalised
    before it moves, as the official code renormalises the teacher's prototypes before averaging:
    t <- d * normalise(t) + (1 - d) * s. Its state dict is torch-ema's."""

    def __init__(self, student: MoSiCModel, teacher: MoSiCModel, decay: float):
        named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
        t_params = dict(teacher.named_parameters())
        self.teacher = teacher
        self.targets = [t_params[n] for n, _ in named]
        self.ema = ExponentialMovingAverage([p for _, p in named], decay=decay, use_num_updates=False)
        self._proto = [i for i, (n, _) in enumerate(named) if n == "prototypes"]

    def update(self) -> None:
        with torch.no_grad():
            for i in self._proto:
                t = self.ema.shadow_params[i]
                t.copy_(F.normalize(t, dim=-1))
        self.ema.update()
        self.ema.copy_to(self.targets)
        self.teacher.normalize_prototypes()

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)


def kept_tokens(num_tokens: int, ratio: float) -> int:
    """How many of ``num_tokens`` tokens a sample keeps when a fraction ``ratio`` is dropped: all but
    round(ratio * num_tokens)."""
    return num_tokens - max(0, int(round(ratio * num_tokens)))


def keep_indices(keep: torch.Tensor, n_keep: int | None = None) -> torch.Tensor:
    """[B, n_keep] int64: the indices of the kept tokens of ``keep`` [B, L] bool, ascending per row
    (``keep.nonzero()``'s order). Every row must keep the same number of tokens. Given ``n_keep``
    (where the mask was drawn, :func:`kept_tokens`), that is trusted and nothing is read back from
    the device; without it, the count is read and checked. A stable descending sort puts the kept
    tokens first in their own order, so no data-dependent shape is made."""
    if n_keep is None:
        n_keep = int(keep[0].sum())
        if not bool((keep.sum(1) == n_keep).all()):
            raise ValueError("every sample must keep the same number of tokens")
    return torch.sort(keep.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :n_keep]


def random_keep_mask(batch: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor | None:
    """[B, L] bool keeping round((1 - ratio) * L) random tokens per sample (:func:`kept_tokens`);
    None when that is every token."""
    n_drop = num_tokens - kept_tokens(num_tokens, ratio)
    if n_drop <= 0:
        return None
    noise = torch.rand(batch, num_tokens, generator=generator).to(device, non_blocking=True)  # no wait for the device
    drop = noise.argsort(dim=1)[:, :n_drop]
    keep = torch.ones(batch, num_tokens, dtype=torch.bool, device=device)
    keep.scatter_(1, drop, False)
    return keep
