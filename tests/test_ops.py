"""Hand-made cases for train/ops.py: sampling at tracks, Sinkhorn, the MoSiC losses, usage entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mosic.train.ops import cluster_usage_entropy, propagation_loss, sample_at_tracks, sinkhorn, symmetric_loss

# ---------------------------------------------------------------------------------------------
# sample_at_tracks: a NON-SQUARE grid h=3 rows x w=5 columns of p=4 px patches -> W=20, H=12 px

h, w, p = 3, 5, 4
W, H = w * p, h * p


def index_feats(B=2, T=3):
    """feats[b, t] = (row i, col j, 10 b + t) at patch (i, j): [B, T, 3, h, w]."""
    i, j = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    f = torch.zeros(B, T, 3, h, w)
    f[:, :, 0] = i
    f[:, :, 1] = j
    f[:, :, 2] = (10 * torch.arange(B)[:, None] + torch.arange(T)[None, :]).float()[..., None, None]
    return f


def test_nearest_in_a_patch_interior_returns_that_patch():
    B, T = 2, 3
    g = torch.Generator().manual_seed(0)
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ii, jj = ii.reshape(-1), jj.reshape(-1)  # all 15 patches
    # a random interior point of each patch (away from its boundaries), different per (b, t)
    frac = 0.05 + 0.9 * torch.rand(B, T, h * w, 2, generator=g)
    tracks = torch.stack([jj, ii], dim=-1).float() * p + frac * p  # (x, y) = (col, row) * p + ...
    out = sample_at_tracks(index_feats(B, T), tracks, (W, H), mode="nearest")
    assert out.shape == (B, T, h * w, 3)
    assert torch.equal(out[..., 0], ii.float().expand(B, T, -1))  # row from y
    assert torch.equal(out[..., 1], jj.float().expand(B, T, -1))  # col from x
    bt = (10 * torch.arange(B)[:, None] + torch.arange(T)[None, :]).float()
    assert torch.equal(out[..., 2], bt[..., None].expand(B, T, h * w))  # each frame its own map


def test_bilinear_at_patch_centres_gives_that_patch_and_x_is_the_column():
    # the centre of patch (i=2, j=4) is (x, y) = (4.5 p, 2.5 p) = (18, 10); of (i=0, j=3) is (14, 2)
    tracks = torch.tensor([[[[18.0, 10.0], [14.0, 2.0], [2.0, 6.0]]]])
    out = sample_at_tracks(index_feats(1, 1), tracks, (W, H))
    assert torch.allclose(out[0, 0, :, :2], torch.tensor([[2.0, 4.0], [0.0, 3.0], [1.0, 0.0]]), atol=1e-5)


def test_bilinear_midpoint_of_two_centres_is_their_mean():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(1, 1, 6, h, w, generator=g)
    # horizontal: centres of (1, 2) and (1, 3) are x = 10, 14 at y = 6 -> midpoint (12, 6)
    # vertical: centres of (0, 4) and (1, 4) are y = 2, 6 at x = 18 -> midpoint (18, 4)
    tracks = torch.tensor([[[[12.0, 6.0], [18.0, 4.0]]]])
    out = sample_at_tracks(f, tracks, (W, H))[0, 0]
    assert torch.allclose(out[0], (f[0, 0, :, 1, 2] + f[0, 0, :, 1, 3]) / 2, atol=1e-6)
    assert torch.allclose(out[1], (f[0, 0, :, 0, 4] + f[0, 0, :, 1, 4]) / 2, atol=1e-6)
    # a quarter of the way from (1, 2)'s centre towards (1, 3)'s
    out = sample_at_tracks(f, torch.tensor([[[[11.0, 6.0]]]]), (W, H))[0, 0, 0]
    assert torch.allclose(out, 0.75 * f[0, 0, :, 1, 2] + 0.25 * f[0, 0, :, 1, 3], atol=1e-6)


def test_bilinear_on_an_x_ramp_is_x_over_p_minus_half_clamped():
    # feature = column index j: bilinear gives u = x / p - 1/2 between the first and last centres,
    # clamped to the edge patches outside them (border, never blended with zeros)
    f = torch.arange(w).float().expand(1, 1, 1, h, w).clone()
    xs = torch.linspace(-7.0, W + 7.0, 97)
    ys = torch.full_like(xs, 5.3)
    out = sample_at_tracks(f, torch.stack([xs, ys], -1)[None, None], (W, H))[0, 0, :, 0]
    assert torch.allclose(out, (xs / p - 0.5).clamp(0, w - 1), atol=1e-5)
    # same along y on a row ramp with a different extent: v = y / p - 1/2 in [0, h - 1]
    f = torch.arange(h).float()[:, None].expand(1, 1, 1, h, w).clone()
    ys = torch.linspace(-3.0, H + 3.0, 61)
    out = sample_at_tracks(f, torch.stack([torch.full_like(ys, 9.1), ys], -1)[None, None], (W, H))[0, 0, :, 0]
    assert torch.allclose(out, (ys / p - 0.5).clamp(0, h - 1), atol=1e-5)


def test_points_outside_the_image_clamp_to_the_border_patch():
    f = index_feats(1, 1)
    tracks = torch.tensor([[[[-50.0, 100.0], [1e4, -3.0], [0.5, 0.5], [W - 0.5, H - 0.5]]]])
    for mode in ("bilinear", "nearest"):
        out = sample_at_tracks(f, tracks, (W, H), mode=mode)[0, 0, :, :2]
        assert torch.allclose(out, torch.tensor([[2.0, 0.0], [0.0, 4.0], [0.0, 0.0], [2.0, 4.0]])), mode


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_matches_the_official_upsample_then_index_at_pixel_centres(mode):
    """Official: F.interpolate every map to H x W (align_corners=False), index pixel (floor y, floor x)."""
    B, T, D = 2, 2, 4
    f = torch.randn(B, T, D, h, w, generator=torch.Generator().manual_seed(2))
    up = F.interpolate(f.reshape(B * T, D, h, w), size=(H, W), mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    up = up.reshape(B, T, D, H, W)
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)  # every pixel of the frame
    tracks = torch.stack([cols + 0.5, rows + 0.5], -1).float().expand(B, T, -1, 2)  # its centre
    ours = sample_at_tracks(f, tracks, (W, H), mode=mode)  # [B, T, H*W, D]
    official = up[:, :, :, rows, cols].permute(0, 1, 3, 2)  # index (row = floor y, col = floor x)
    assert torch.allclose(ours, official, atol=1e-6)
    # indexing x as the row (the official default path's bug) samples other positions
    if mode == "nearest":
        sq = torch.arange(min(H, W))
        assert not torch.allclose(
            up[:, :, :, sq[:, None], sq[None, :]], up[:, :, :, sq[None, :], sq[:, None]]
        )


def test_sampling_gradient_flows_into_feats_and_dtype_is_kept():
    f = torch.randn(1, 2, 3, h, w, requires_grad=True)
    tr = torch.tensor([[[[12.0, 6.0]], [[1.0, 1.0]]]])
    out = sample_at_tracks(f, tr, (W, H))
    out.sum().backward()
    # frame 0: half to each of (1,2),(1,3); frame 1: all to (0,0) (x, y < first centre)
    g = f.grad[:, :, 0]
    assert torch.allclose(g[0, 0, 1, 2:4], torch.tensor([0.5, 0.5])) and g[0, 0].sum() == 1
    assert g[0, 1, 0, 0] == 1 and g[0, 1].sum() == 1
    out16 = sample_at_tracks(f.detach().bfloat16(), tr, (W, H))
    assert out16.dtype == torch.bfloat16 and out16.shape == (1, 2, 1, 3)
    with pytest.raises(ValueError):
        sample_at_tracks(f, tr, (W, H), mode="bicubic")


# ---------------------------------------------------------------------------------------------
# sinkhorn


def cosine_scores(M, K, seed=0, dim=16):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(M, dim, generator=g), dim=1)
    c = F.normalize(torch.randn(K, dim, generator=g), dim=1)
    return x @ c.T


def swav_numpy(scores, eps, iters):
    """The standard (SwAV) alternating normalisation, plain numpy float64."""
    Q = np.exp(np.asarray(scores, np.float64) / eps).T  # [K, M]
    Q /= Q.sum()
    K, M = Q.shape
    for _ in range(iters):
        Q /= Q.sum(axis=1, keepdims=True) * K  # each prototype total 1/K
        Q /= Q.sum(axis=0, keepdims=True) * M  # each point total 1/M
    return (Q / Q.sum(axis=0, keepdims=True)).T  # each point sums to 1 (= Q * M when iters > 0)


@pytest.mark.parametrize("iters", [0, 1, 3, 10])
def test_sinkhorn_few_iterations_equals_swav_normalisation(iters):
    s = cosine_scores(50, 7)
    q = sinkhorn(s, eps=0.06, iters=iters)
    assert q.dtype == torch.float32 and q.shape == (50, 7)
    np.testing.assert_allclose(q.numpy(), swav_numpy(s.numpy(), 0.06, iters), rtol=1e-4, atol=1e-6)
    assert torch.allclose(q.sum(1), torch.ones(50), atol=1e-5)
    if iters == 0:
        assert torch.allclose(q, torch.softmax(s / 0.06, dim=1), atol=1e-6)


def test_sinkhorn_converged_equals_pot():
    ot = pytest.importorskip("ot")
    M, K, eps = 60, 6, 0.06
    s = cosine_scores(M, K, seed=3)
    q = sinkhorn(s, eps=eps, iters=200)
    a, b = np.full(M, 1 / M), np.full(K, 1 / K)
    P = ot.sinkhorn(a, b, -s.double().numpy(), eps, numItermax=100000, stopThr=1e-10)
    np.testing.assert_allclose(q.numpy(), P / a[:, None], atol=2e-5)
    assert torch.allclose(q.sum(0), torch.full((K,), M / K), atol=1e-3)  # prototypes used equally


def test_sinkhorn_weights_equal_pot_with_those_point_marginals():
    ot = pytest.importorskip("ot")
    M, K, eps = 40, 5, 0.1
    s = cosine_scores(M, K, seed=4)
    wts = torch.rand(M, generator=torch.Generator().manual_seed(5)) * 2
    wts[::4] = 0  # invisible points
    q = sinkhorn(s, eps=eps, iters=300, weights=wts)
    keep = wts > 0
    a = wts[keep].double().numpy()
    a /= a.sum()  # in float64: POT needs balanced marginals to converge
    P = ot.sinkhorn(a, np.full(K, 1 / K), -s[keep].double().numpy(), eps, numItermax=100000, stopThr=1e-10)
    np.testing.assert_allclose(q[keep].numpy(), P / a[:, None], atol=2e-5)
    assert torch.equal(q[~keep], torch.zeros(int((~keep).sum()), K))
    assert torch.allclose(q[keep].sum(1), torch.ones(int(keep.sum())), atol=1e-5)


def test_sinkhorn_zero_weight_points_take_no_part():
    s = cosine_scores(30, 4, seed=6)
    vis = torch.rand(30, generator=torch.Generator().manual_seed(7)) > 0.3
    q = sinkhorn(s, weights=vis)
    assert torch.allclose(q[vis], sinkhorn(s[vis]), atol=1e-6)  # as if they were not there
    assert torch.equal(q[~vis], torch.zeros(int((~vis).sum()), 4))
    # ... and their scores do not matter at all
    s2 = s.clone()
    s2[~vis] = 1.0
    assert torch.allclose(sinkhorn(s2, weights=vis), q, atol=1e-6)
    # uniform weights = no weights
    assert torch.allclose(sinkhorn(s, weights=torch.full((30,), 3.0)), sinkhorn(s), atol=1e-6)
    # nobody visible: zeros, no NaN
    assert torch.equal(sinkhorn(s, weights=torch.zeros(30)), torch.zeros(30, 4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sinkhorn_low_precision_input_runs_in_float32(dtype):
    s = cosine_scores(64, 8, seed=8)
    q = sinkhorn(s.to(dtype))
    assert q.dtype == torch.float32 and torch.isfinite(q).all()
    assert torch.allclose(q, sinkhorn(s.to(dtype).float()), atol=1e-6)  # same as upcast first
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-5)


def test_sinkhorn_large_scores_over_eps_no_overflow():
    ot = pytest.importorskip("ot")
    M, K, eps = 48, 6, 1e-3  # scores / eps up to 1e3: exp overflows float32 (and float64)
    s = cosine_scores(M, K, seed=9)
    assert not torch.isfinite(torch.exp(s / eps)).all()  # the naive exp-domain version breaks
    q = sinkhorn(s, eps=eps, iters=3)
    assert torch.isfinite(q).all() and torch.allclose(q.sum(1), torch.ones(M), atol=1e-5)
    # POT's log-domain solver does the same updates (columns then rows, from zero potentials)
    P = ot.sinkhorn(np.full(M, 1 / M), np.full(K, 1 / K), -s.double().numpy(), eps,
                    method="sinkhorn_log", numItermax=3, stopThr=0.0, warn=False)
    np.testing.assert_allclose(q.numpy(), P * M, atol=1e-4)
    q = sinkhorn(s * 100, eps=eps, iters=3)  # 1e5
    assert torch.isfinite(q).all()


SPLITS = [(7, 13), (0, 20)]  # rows per rank: uneven, and one rank with no points


def _ddp_worker(rank, world, init, path):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        out = []
        for sizes in SPLITS:
            s = cosine_scores(sum(sizes), 5, seed=10)
            vis = torch.arange(sum(sizes)) % 3 != 0
            lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
            out.append({
                "plain": sinkhorn(s[lo:hi], iters=3, group="world"),
                "weights": sinkhorn(s[lo:hi], iters=3, weights=vis[lo:hi].float(), group=dist.group.WORLD),
                "local": sinkhorn(s[lo:hi], iters=3, group=None),  # no group: this rank alone
            })
        torch.save(out, f"{path}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sinkhorn_ddp_ranks_equal_slices_of_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2, join=True)
    outs = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    for case, sizes in enumerate(SPLITS):
        s = cosine_scores(sum(sizes), 5, seed=10)
        vis = torch.arange(sum(sizes)) % 3 != 0
        full = sinkhorn(s, iters=3)
        full_w = sinkhorn(s, iters=3, weights=vis.float())
        lo = 0
        for rank, m in enumerate(sizes):
            out = outs[rank][case]
            assert out["plain"].shape == (m, 5)
            assert torch.allclose(out["plain"], full[lo : lo + m], atol=1e-6)
            assert torch.allclose(out["weights"], full_w[lo : lo + m], atol=1e-6)
            assert torch.allclose(out["local"], sinkhorn(s[lo : lo + m], iters=3), atol=1e-6)
            lo += m
    # the global marginals matter: a rank alone gives something else
    assert not torch.allclose(outs[1][0]["plain"], outs[1][0]["local"], atol=1e-3)


def test_sinkhorn_world_group_without_distributed_is_single_process():
    s = cosine_scores(20, 4, seed=11)
    assert torch.equal(sinkhorn(s, group="world"), sinkhorn(s))


# ---------------------------------------------------------------------------------------------
# propagation_loss / symmetric_loss

L0 = math.log1p(math.exp(-1.0))  # CE of logits [1, 0] against class 0;  against class 1: 1 + L0


def one_point_case():
    """B=1, N=1, K=2, T=3. Student scores [0.1, 0] at tau 0.1 -> logits [1, 0], p = [s(1), s(-1)].
    Teacher: t=0 [0.8, 0.2] -> class 0; t=1 [0.3, 0.7] -> class 1; t=2 [0.6, 0.4] -> class 0."""
    student = torch.tensor([[[0.1, 0.0]]])
    q = torch.tensor([[[[0.8, 0.2]], [[0.3, 0.7]], [[0.6, 0.4]]]])
    return student, q


def test_propagation_loss_by_hand():
    student, q = one_point_case()
    vis = torch.tensor([[[True], [True], [True]]])
    assert propagation_loss(student, q, vis).item() == pytest.approx((L0 + (1 + L0) + L0) / 3, abs=1e-6)
    # soft: CE against q itself: 0.8 L0 + 0.2 (1 + L0) = L0 + 0.2, etc.
    soft = ((L0 + 0.2) + (L0 + 0.7) + (L0 + 0.4)) / 3
    assert propagation_loss(student, q, vis, hard=False).item() == pytest.approx(soft, abs=1e-6)
    # frame 1 invisible: only t = 0, 2 count
    vis = torch.tensor([[[True], [False], [True]]])
    assert propagation_loss(student, q, vis).item() == pytest.approx(L0, abs=1e-6)
    assert propagation_loss(student, q, vis, normalize="all").item() == pytest.approx(2 * L0 / 3, abs=1e-6)
    # temperature 1: logits [0.1, 0]
    l01 = math.log1p(math.exp(-0.1))
    assert propagation_loss(student, q, vis, temperature=1.0).item() == pytest.approx(l01, abs=1e-6)


def test_propagation_loss_gradient_by_hand_and_only_into_the_student():
    student, q = one_point_case()
    student.requires_grad_(True)
    q.requires_grad_(True)
    vis = torch.tensor([[[True], [True], [False]]])
    propagation_loss(student, q, vis).backward()
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    # dL/ds = sum_t w_t (p - y_t) / (tau Z),  y_0 = [1, 0], y_1 = [0, 1], Z = 2
    expected = ((p - torch.tensor([1.0, 0.0])) + (p - torch.tensor([0.0, 1.0]))) / (0.1 * 2)
    assert torch.allclose(student.grad[0, 0], expected, atol=1e-6)
    assert q.grad is None  # the teacher side is detached
    # soft targets: still no gradient into the teacher
    student.grad = None
    propagation_loss(student, q, vis, hard=False).backward()
    assert q.grad is None and student.grad is not None


def random_case(B=2, T=4, N=6, K=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(B, N, K, generator=g)
    q = torch.softmax(torch.randn(B, T, N, K, generator=g) * 3, dim=-1)
    vis = torch.rand(B, T, N, generator=g) > 0.3
    valid = torch.rand(B, N, generator=g) > 0.2
    return student, q, vis, valid


def test_invisible_and_invalid_points_contribute_nothing():
    student, q, vis, valid = random_case()
    ref = propagation_loss(student, q, vis, valid)
    w = vis & valid[:, None]
    q2 = q.clone()
    q2[~w] = torch.softmax(torch.randn(int((~w).sum()), q.shape[-1]), -1)  # other teacher labels there
    student2 = student.clone()
    gone = ~w.any(dim=1)  # points with no counted frame: their student scores do not matter
    student2[gone] = 123.0
    for hard in (True, False):
        assert torch.allclose(propagation_loss(student2, q2, vis, valid, hard=hard), propagation_loss(student, q, vis, valid, hard=hard))
    # valid[b, n] = False is the same as that point invisible in every frame
    assert torch.allclose(ref, propagation_loss(student, q, w))
    # nothing visible: 0, with a zero (not NaN) gradient
    s = student.clone().requires_grad_(True)
    loss = propagation_loss(s, q, torch.zeros_like(vis))
    loss.backward()
    assert loss.item() == 0 and torch.equal(s.grad, torch.zeros_like(s))


def test_normalize_options_differ_by_the_count_of_terms():
    student, q, vis, valid = random_case(seed=1)
    B, T, N, _ = q.shape
    w = vis & valid[:, None]
    for hard in (True, False):
        a = propagation_loss(student, q, vis, valid, hard=hard, normalize="visible")
        b = propagation_loss(student, q, vis, valid, hard=hard, normalize="all")
        assert torch.allclose(a * w.sum(), b * (B * T * N), atol=1e-5)
    # everything visible: the two agree
    ones = torch.ones_like(vis)
    assert torch.allclose(propagation_loss(student, q, ones, normalize="all"), propagation_loss(student, q, ones))
    with pytest.raises(ValueError):
        propagation_loss(student, q, vis, normalize="mean")


def test_soft_equals_hard_for_one_hot_teacher():
    student, q, vis, valid = random_case(seed=2)
    onehot = F.one_hot(q.argmax(-1), q.shape[-1]).float()
    hard = propagation_loss(student, q, vis, valid, hard=True)
    assert torch.allclose(propagation_loss(student, onehot, vis, valid, hard=False), hard, atol=1e-6)
    assert torch.allclose(propagation_loss(student, onehot, vis, valid, hard=True), hard)


def test_propagation_loss_matches_a_plain_loop():
    student, q, vis, valid = random_case(seed=3)
    B, T, N, K = q.shape
    tot, cnt = 0.0, 0
    for b in range(B):
        for t in range(T):
            for n in range(N):
                if vis[b, t, n] and valid[b, n]:
                    tot += F.cross_entropy(student[b, n] / 0.1, q[b, t, n].argmax()).item()
                    cnt += 1
    assert propagation_loss(student, q, vis, valid).item() == pytest.approx(tot / cnt, rel=1e-5)
    out = propagation_loss(student.bfloat16(), q.bfloat16(), vis, valid)  # low-precision inputs
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_symmetric_loss_by_hand():
    # T=2, N=1, K=2; teacher's first-frame assignment says class 1 (soft [0.3, 0.7])
    student_t = torch.tensor([[[[0.1, 0.0]], [[0.0, 0.1]]]], requires_grad=True)  # logits [1,0], [0,1]
    q_first = torch.tensor([[[0.3, 0.7]]], requires_grad=True)
    vis = torch.tensor([[[True], [True]]])
    loss = symmetric_loss(student_t, q_first, vis)
    assert loss.item() == pytest.approx(((1 + L0) + L0) / 2, abs=1e-6)
    loss.backward()
    assert q_first.grad is None and student_t.grad.abs().sum() > 0
    soft = symmetric_loss(student_t, q_first, vis, hard=False).item()
    assert soft == pytest.approx(((L0 + 0.7) + (L0 + 0.3)) / 2, abs=1e-6)
    # frame 0 invisible; valid may be per frame [B, T, N] (masked patch at frame t)
    assert symmetric_loss(student_t, q_first, torch.tensor([[[False], [True]]])).item() == pytest.approx(L0, abs=1e-6)
    valid_t = torch.tensor([[[True], [False]]])
    assert symmetric_loss(student_t, q_first, vis, valid_t).item() == pytest.approx(1 + L0, abs=1e-6)
    assert symmetric_loss(student_t, q_first, vis, valid_t, normalize="all").item() == pytest.approx((1 + L0) / 2, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# cluster_usage_entropy


def test_cluster_usage_entropy():
    K = 4
    assert cluster_usage_entropy(torch.full((10, K), 1 / K)) == pytest.approx(1.0)
    collapsed = F.one_hot(torch.zeros(10, dtype=torch.long), K).float()
    assert cluster_usage_entropy(collapsed) == pytest.approx(0.0, abs=1e-6)
    two = F.one_hot(torch.tensor([0, 2] * 5), K).float()  # two of four prototypes, equally
    assert cluster_usage_entropy(two) == pytest.approx(math.log(2) / math.log(4))
    # zero rows (left out of Sinkhorn) and masked rows are ignored, also with hard=True
    with_zeros = torch.cat([two, torch.zeros(7, K)])
    assert cluster_usage_entropy(with_zeros, hard=True) == pytest.approx(0.5)
    mask = torch.tensor([True] * 10 + [False] * 7)
    assert cluster_usage_entropy(torch.cat([two, collapsed[:7]]), mask=mask) == pytest.approx(0.5)
    # soft vs hard: every point 60/40 on prototypes 0/1 -> soft uses two, hard only one
    q = torch.tensor([[0.6, 0.4, 0.0, 0.0]]).repeat(5, 1)
    assert cluster_usage_entropy(q, hard=True) == pytest.approx(0.0, abs=1e-6)
    assert cluster_usage_entropy(q) == pytest.approx(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)) / math.log(4))
    # extra leading dims are points too
    assert cluster_usage_entropy(two.reshape(2, 5, K)) == pytest.approx(0.5)
    assert math.isnan(cluster_usage_entropy(torch.zeros(3, K)))


# ---------------------------------------------------------------------------------------------
# grid selection


def test_crop_grid_and_select_grid_points_hand_made():
    import numpy as np

    from mosic.train.ops import crop_grid, select_grid_points

    np.testing.assert_allclose(crop_grid(8, 2), [[2, 2], [6, 2], [2, 6], [6, 6]])
    # stored points exactly on the ideal grid (shuffled) plus some outside: found, distance 0
    ideal = crop_grid(56, 4)
    perm = np.random.default_rng(0).permutation(16)
    stored = np.concatenate([ideal[perm], [[-3.0, 5.0], [60.0, 7.0], [5.0, 56.0]]])
    idx, d = select_grid_points(stored, 56, 4)
    np.testing.assert_array_equal(perm[idx], np.arange(16))
    np.testing.assert_array_equal(d, 0)
    # a point outside the crop is never chosen, even when it is the nearest
    idx, _ = select_grid_points(np.array([[-0.5, 7.0], [20.0, 20.0]]), 56, 1)
    assert idx.tolist() == [1]
    # a denser regular grid, shifted: distinct points, each within half a spacing per axis
    sp = 56 / 7.3
    xs = np.arange(-2, 10) * sp + 1.0
    gx, gy = np.meshgrid(xs, xs)
    dense = np.stack([gx.ravel(), gy.ravel()], -1)
    idx, d = select_grid_points(dense, 56, 4)
    assert len(set(idx.tolist())) == 16
    assert np.all(np.abs(dense[idx] - crop_grid(56, 4)) <= sp / 2 + 1e-9)
    assert np.all(d <= sp / 2 * np.sqrt(2) + 1e-9)
    with pytest.raises(ValueError, match="no stored point"):
        select_grid_points(np.array([[-1.0, -1.0]]), 56, 4)


def test_min_store_grid_is_the_densest_needed_for_the_narrowest_crop():
    """RandomResizedCrop(224, scale 0.4-1, ratio 3/4-4/3) in the squashed frame: the narrowest crop
    side is round(sqrt(0.4 * 0.75) * 224) = 123 px. A full-frame grid of 30 puts >= 16 cell centres
    across it wherever it lies; 29 does not (15 at some offsets)."""
    import numpy as np

    from mosic.train.ops import min_store_grid

    assert min_store_grid(16) == 30 and min_store_grid(8, out_size=112) == 15

    def fewest(G, w, S=224):
        centres = (np.arange(G) + 0.5) * S / G
        return min(int(((centres >= j) & (centres < j + w)).sum()) for j in range(S - w + 1))

    assert fewest(30, 123) >= 16 and fewest(29, 123) < 16
    # and no crop torchvision draws is narrower than 123 px
    from mosic.train.augment import _rrc_params

    rng = np.random.default_rng(0)
    sides = [min(_rrc_params(rng, 224, 224, (0.4, 1.0), (3 / 4, 4 / 3))[2:]) for _ in range(20000)]
    assert min(sides) >= 123


def test_cotracker_grid_layout_keeps_its_margin():
    """CoTracker's grid on a 224 px crop (get_points_on_a_grid on its 384 x 512 input, a margin of
    512/64 px, scaled back by (224 - 1) / (input - 1)): x from 3.5 to 219.9, y from 4.7 to 218.9."""
    from mosic.train.ops import crop_grid, select_grid_points

    g = crop_grid(224, 16, "cotracker")
    xs, ys = np.unique(g[:, 0]), np.unique(g[:, 1])
    assert len(xs) == len(ys) == 16
    assert xs[0] == pytest.approx(3.49, abs=0.01) and xs[-1] == pytest.approx(219.9, abs=0.05)
    assert ys[0] == pytest.approx(4.66, abs=0.01) and ys[-1] == pytest.approx(218.9, abs=0.05)
    assert np.diff(xs).mean() == pytest.approx(14.43, abs=0.01) and np.diff(ys).mean() == pytest.approx(14.28, abs=0.01)
    np.testing.assert_allclose(g[:2], [[xs[0], ys[0]], [xs[1], ys[0]]])  # row-major, (x, y)
    np.testing.assert_allclose(crop_grid(224, 1, "cotracker"), [[256 * 223 / 511, 192 * 223 / 383]])
    # patch centres differ from it by up to 3.5 px at the borders
    assert np.abs(crop_grid(224, 16, "cells") - g).max() == pytest.approx(3.51, abs=0.02)
    dense = np.stack(np.meshgrid(np.arange(0, 224, 2.0), np.arange(0, 224, 2.0)), -1).reshape(-1, 2)
    idx, d = select_grid_points(dense, 224, 16, "cotracker")
    assert d.max() <= np.sqrt(2) + 1e-9 and len(set(idx.tolist())) == 256
    with pytest.raises(ValueError, match="layout"):
        crop_grid(224, 16, "margin")
