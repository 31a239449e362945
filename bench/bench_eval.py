"""Evaluation benchmark: patch features extracted per second on the CPU, and K-means and k-NN on
100k patch features with the implementations mosic-eval uses (faiss K-means; exact torch top-k for
the in-context k-NN) timed in one run against scikit-learn's KMeans and NearestNeighbors; then the
in-context memory of the paper preset (10,240,000 patches of ViT-S/14 at 504 px, float16) built
and searched by Pascal VOC val (1,449 images x 1,296 patches), at fractions of that scale: time and
peak memory at each, with the measured scaling exponent and the extrapolation to full scale.

    python bench/bench_eval.py [--n 100000] [--dim 50] [--k 100] [--queries 10000]
    python bench/bench_eval.py --incontext-only [--scales 1/400,1/200,1/100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


# the paper's in-context setting on Pascal VOC (ViT-S/14, 504 px)
FULL_MEMORY, TRAINAUG, VAL, PASSES, GRID, DIM, VOC_CLASSES = 10_240_000, 10_582, 1_449, 2, 36, 384, 21


class RandomTokens(torch.nn.Module):
    """Stand-in backbone for the memory benchmark: random unit tokens at the ViT-S/14 grid, so the
    build is timed without the backbone (whose cost is the features/s figure above)."""

    num_prefix_tokens = 0

    def __init__(self):
        super().__init__()
        import types

        self.patch_embed = types.SimpleNamespace(patch_size=(14, 14))
        self.gen = torch.Generator().manual_seed(0)

    def forward_features(self, x):
        return torch.randn(len(x), (x.shape[-1] // 14) ** 2, DIM, generator=self.gen)


def incontext_scale(scale: float, device: str = "cpu") -> dict:
    """Build and search the paper preset's memory at ``scale`` of Pascal VOC's sizes (memory size,
    training images and val queries all scaled); run in a fresh process. Peak memory: the process's
    peak resident set (VmHWM), reset (Linux clear_refs) after the imports, minus the resident set
    then."""
    from mosic.evaluation.datasets import SegDataset, SegSample
    from mosic.evaluation.protocols.incontext import build_memory, knn_labels

    def status(key: str) -> float:  # MB
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current resident set
    except OSError:
        pass
    base = status("VmRSS")
    memory = int(FULL_MEMORY * scale)
    images = max(1, round(TRAINAUG * scale))
    queries = int(VAL * GRID * GRID * scale)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)  # a VOC-sized image
    lab = np.repeat(rng.integers(0, VOC_CLASSES, 15).astype(np.uint8), 25)[:, None].repeat(500, 1)
    lab[::37] = 255
    ds = SegDataset("voc", ["background"] + [f"c{i}" for i in range(1, VOC_CLASSES)],
                    [SegSample(img, lab, f"im{i}") for i in range(images)], lambda s: s)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    feats, labels, budget = build_memory(RandomTokens(), ds, GRID * 14, memory, PASSES, seed=0, batch_size=16,
                                         device=device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t_build = time.perf_counter() - t
    after_build = status("VmHWM")
    gpu_build = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None
    q = torch.nn.functional.normalize(torch.randn(queries, DIM, generator=torch.Generator().manual_seed(1)), dim=1)
    t = time.perf_counter()
    for chunk in q.split(16 * GRID * GRID):  # as the protocol: one val batch of 16 images at a time
        knn_labels(chunk, feats, labels, 30, 0.02)
    if cuda:
        torch.cuda.synchronize()
    t_search = time.perf_counter() - t
    peak = status("VmHWM")
    return {"scale": scale, "memory": len(feats), "per_image_budget": budget, "train_images": images,
            "queries": queries, "build_s": t_build, "search_s": t_search,
            "bank_mb": (feats.numel() * feats.element_size() + labels.numel() * labels.element_size()) / 2 ** 20,
            "peak_build_mb": after_build - base, "peak_mb": peak - base, "device": device,
            "gpu_peak_build_mb": gpu_build, "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None}


def incontext_bench(scales: list[float], device: str = "cpu") -> dict:
    import subprocess
    import sys

    print(f"\n-- in-context memory, paper preset: {FULL_MEMORY:,} patches x {DIM} (float16) from {TRAINAUG:,} "
          f"VOC trainaug images x {PASSES} passes, searched by {VAL:,} val images x {GRID * GRID} patches, k = 30; "
          f"{device}, {torch.get_num_threads()} CPU threads, backbone excluded --")
    rows = []
    for sc in scales:
        out = subprocess.run([sys.executable, __file__, "--one-scale", str(sc), "--device", device],
                             capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"scale {sc:.4g}: memory {r['memory']:>9,} ({r['bank_mb']:.0f} MB), {r['train_images']} images, "
              f"{r['queries']:,} queries: build {r['build_s']:6.2f} s, search {r['search_s']:6.2f} s, "
              f"peak memory +{r['peak_build_mb']:.0f} MB in the build, +{r['peak_mb']:.0f} MB with the search"
              + (f"; GPU peak {r['gpu_peak_build_mb']:.0f} / {r['gpu_peak_mb']:.0f} MB" if r.get("gpu_peak_mb") else ""))
    fit = {}
    if len(rows) > 1:
        x = np.log([r["scale"] for r in rows])
        for key in ("build_s", "search_s", "peak_mb"):
            y = np.log([max(r[key], 1e-6) for r in rows])
            a, b = np.polyfit(x, y, 1)
            fit[key] = {"exponent": float(a), "full_scale": float(np.exp(b))}
        print(f"measured scaling exponents (time or memory ~ scale^a): build {fit['build_s']['exponent']:.2f}, "
              f"search {fit['search_s']['exponent']:.2f} (expected 1 and 2: images, queries x memory), "
              f"peak memory {fit['peak_mb']['exponent']:.2f}")
    full_bank = (FULL_MEMORY * DIM + FULL_MEMORY * VOC_CLASSES) * 2 / 2 ** 30
    last = rows[-1]
    build_full = last["build_s"] / last["scale"]
    search_full = last["search_s"] / last["scale"] ** 2
    flops = 2 * VAL * GRID * GRID * FULL_MEMORY * DIM
    print(f"full scale on this {device}, from the largest scale with the expected exponents: build {build_full / 60:.0f} min "
          f"(without the backbone), search {search_full / 3600:.0f} h ({flops:.2e} FLOP at "
          f"{2 * last['queries'] * last['memory'] * DIM / last['search_s'] / 1e9:.0f} GFLOP/s); the bank itself is "
          f"{full_bank:.1f} GiB (features + labels, float16)")
    return {"scales": rows, "fit": fit, "full_bank_gib": full_bank, "full_build_s_cpu": build_full,
            "full_search_s_cpu": search_full, "full_search_flop": flops}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="patch features")
    p.add_argument("--dim", type=int, default=50, help="dimension (the protocols' PCA size)")
    p.add_argument("--k", type=int, default=100, help="K-means clusters")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--queries", type=int, default=10_000, help="k-NN queries against the n features")
    p.add_argument("--knn", type=int, default=30)
    p.add_argument("--incontext-only", action="store_true", help="only the in-context memory benchmark")
    p.add_argument("--scales", default="1/400,1/200,1/100", help="fractions of the full in-context scale")
    p.add_argument("--one-scale", type=float, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="in-context memory benchmark device (default: cuda when available)")
    a = p.parse_args()
    torch.set_num_threads(2)
    if a.one_scale:
        print(json.dumps(incontext_scale(a.one_scale, a.device)))
        return
    from fractions import Fraction

    scales = [float(Fraction(x)) for x in a.scales.split(",")]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    if a.incontext_only:
        (out / "eval_incontext.json").write_text(json.dumps(incontext_bench(scales, a.device), indent=2))
        return

    from sklearn.cluster import KMeans
    from sklearn.neighbors import NearestNeighbors

    from mosic.evaluation.dense import kmeans, patch_features
    from mosic.evaluation.protocols.incontext import knn_labels
    from mosic.backbones import create_backbone

    torch.set_num_threads(2)
    results = {}
    print("-- patch features (random weights, fp32, 2 threads) --")
    frames = np.random.default_rng(0).integers(0, 255, (32, 240, 320, 3), dtype=np.uint8)
    for name, img in (("vit_small_patch14_dinov2", 224), ("vit_small_patch14_dinov2", 448)):
        torch.manual_seed(0)
        bb = create_backbone(name, pretrained=False, img_size=img)
        patch_features(bb, frames[:4], img)  # warm-up
        _, dt = timed(lambda: patch_features(bb, frames, img, batch=16))
        n_patches = len(frames) * (img // 14) ** 2
        print(f"{name} @ {img}px: {len(frames) / dt:6.1f} images/s = {n_patches / dt:8.0f} patch features/s")
        results[f"features_{img}"] = {"images_per_s": len(frames) / dt, "patches_per_s": n_patches / dt}

    # clustered data like patch features: a mixture of Gaussians, float32
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, a.dim)).astype(np.float32)
    x = (centres[rng.integers(0, 200, a.n)] + 0.5 * rng.normal(size=(a.n, a.dim))).astype(np.float32)
    print(f"\n-- K-means, {a.n} x {a.dim}, K = {a.k}, {a.iters} iterations, one start --")
    lab_f, t_f = timed(lambda: kmeans(x, a.k, seed=0, niter=a.iters, nredo=1))
    km = KMeans(a.k, init="random", n_init=1, max_iter=a.iters, tol=0, random_state=0)
    lab_s, t_s = timed(lambda: km.fit_predict(x))

    def inertia(lab):
        c = np.stack([x[lab == j].mean(0) if (lab == j).any() else np.zeros(a.dim, np.float32) for j in range(a.k)])
        return float(((x - c[lab]) ** 2).sum())

    print(f"faiss (mosic-eval):  {t_f:6.2f} s  inertia {inertia(lab_f):.4g}")
    print(f"scikit-learn:        {t_s:6.2f} s  inertia {inertia(lab_s):.4g}")
    print(f"speed-up: {t_s / t_f:.1f}x")
    results["kmeans"] = {"faiss_s": t_f, "sklearn_s": t_s, "speedup": t_s / t_f,
                         "faiss_inertia": inertia(lab_f), "sklearn_inertia": inertia(lab_s)}

    print(f"\n-- k-NN, {a.queries} queries x {a.n} memory, k = {a.knn}, dot product on L2-normalised rows --")
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = xn[rng.integers(0, a.n, a.queries)] + 0.05 * rng.normal(size=(a.queries, a.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    mem, qt = torch.from_numpy(xn), torch.from_numpy(q)
    labels = torch.nn.functional.one_hot(torch.from_numpy(rng.integers(0, 21, a.n)), 21).float()
    _, t_t = timed(lambda: knn_labels(qt, mem, labels, a.knn, 0.02))
    idx_t = torch.cat([(c @ mem.T).topk(a.knn, dim=1).indices for c in qt.split(2048)]).numpy()
    nn = NearestNeighbors(n_neighbors=a.knn, algorithm="brute", metric="cosine").fit(xn)
    (_, idx_s), t_s2 = timed(lambda: nn.kneighbors(q))
    same = np.mean([len(set(i) & set(j)) / a.knn for i, j in zip(idx_t[:1000], idx_s[:1000])])
    print(f"torch top-k (mosic-eval, incl. label vote): {t_t:6.2f} s")
    print(f"scikit-learn NearestNeighbors (brute):      {t_s2:6.2f} s   same neighbours: {100 * same:.1f}%")
    print(f"speed-up: {t_s2 / t_t:.1f}x")
    results["knn"] = {"torch_s": t_t, "sklearn_s": t_s2, "speedup": t_s2 / t_t, "same_neighbours": same}
    results["incontext"] = incontext_bench(scales, a.device)
    (out / "eval.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
