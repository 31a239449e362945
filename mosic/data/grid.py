"""The query grid: where the points that are tracked start on a clip's first frame. Precompute
tracks it, the synthetic probe follows it through the ground truth.

Coordinates are (x, y) in pixels of the frame, x along the width, pixel (col, row) covering
[col, col + 1) x [row, row + 1)."""

from __future__ import annotations

import numpy as np

from mosic import MosicError


def grid_queries(grid: int, width: int, height: int) -> np.ndarray:
    """A ``grid`` x ``grid`` lattice of query points at the centres of equal cells, row-major
    (y outer, x inner): float32 [grid * grid, 2] as (x, y)."""
    if grid < 1:
        raise MosicError(f"grid must be at least 1, got {grid}")
    if grid > width or grid > height:
        raise MosicError(
            f"grid {grid} x {grid} is larger than the image ({width} x {height} pixels): "
            "use a smaller --grid"
        )
    xs = (np.arange(grid, dtype=np.float64) + 0.5) * (width / grid)
    ys = (np.arange(grid, dtype=np.float64) + 0.5) * (height / grid)
    gx, gy = np.meshgrid(xs, ys)  # [grid(y), grid(x)]
    return np.stack([gx.ravel(), gy.ravel()], axis=-1).astype(np.float32)
