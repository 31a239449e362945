"""Evaluation benchmark: patch features extracted per second on the CPU, and K-means and k-NN on
100k patch features with the implementations mosic-eval uses (faiss K-means; exact torch top-k for
the in-context k-NN) timed in one run against scikit-learn's KMeans and NearestNeighbors.

    python bench/bench_eval.py [--n 100000] [--dim 50] [--k 100] [--queries 10000]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="patch features")
    p.add_argument("--dim", type=int, default=50, help="dimension (the protocols' PCA size)")
    p.add_argument("--k", type=int, default=100, help="K-means clusters")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--queries", type=int, default=10_000, help="k-NN queries against the n features")
    p.add_argument("--knn", type=int, default=30)
    a = p.parse_args()

    from sklearn.cluster import KMeans
    from sklearn.neighbors import NearestNeighbors

    from mosic.evaluation.dense import kmeans, patch_features
    from mosic.evaluation.protocols.incontext import knn_labels
    from mosic.train.model import create_backbone

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
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
