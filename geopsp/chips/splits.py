"""Spatial train/validation split of chips.

Random per-chip splits leak: chips cut with a stride smaller than the chip size share pixels,
so a "validation" chip would be half training data. Instead whole spatial blocks (squares of
``block`` chip widths on each source raster) go to validation, and any training chip that
still overlaps a validation chip is marked ``"gap"`` and used by neither side. No pixel is
ever in both sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def spatial_split(
    bounds: np.ndarray,
    groups: Sequence[str],
    val_fraction: float,
    seed: int = 0,
    block: int = 2,
) -> np.ndarray:
    """Assign each chip to ``"train"``, ``"val"`` or ``"gap"``.

    Parameters
    ----------
    bounds : ndarray, shape (N, 4)
        Chip footprints ``(col_off, row_off, col_off + width, row_off + height)`` in pixels of
        their source raster (or map coordinates: any consistent units per group).
    groups : sequence of str
        Source raster of each chip; chips of different sources never overlap.
    val_fraction : float
        Target share of chips in validation (0 gives no validation chips).
    seed : int
        Seed of the block shuffle (same inputs + seed give the same split).
    block : int
        Block edge in chip widths.

    Returns
    -------
    ndarray of str, shape (N,)
    """
    bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    n = len(bounds)
    split = np.full(n, "train", dtype=object)
    if n == 0 or val_fraction <= 0:
        return split.astype(str)
    groups = np.asarray(list(groups), dtype=object)
    size = np.median(np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]))
    edge = max(size * block, 1e-9)
    cx = (bounds[:, 0] + bounds[:, 2]) / 2
    cy = (bounds[:, 1] + bounds[:, 3]) / 2
    keys = [
        (g, int(np.floor(x / edge)), int(np.floor(y / edge)))
        for g, x, y in zip(groups, cx, cy, strict=True)
    ]
    uniq = sorted(set(keys), key=lambda k: (str(k[0]), k[1], k[2]))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    target = max(1, int(round(val_fraction * n))) if n > 1 else 0
    chosen: set = set()
    count = 0
    counts = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    for i in order:
        if count >= target:
            break
        chosen.add(uniq[i])
        count += counts[uniq[i]]
    is_val = np.array([k in chosen for k in keys])
    split[is_val] = "val"
    # Training chips that overlap any validation chip of the same source become gap chips.
    for g in set(groups[is_val]):
        vb = bounds[is_val & (groups == g)]
        tr = np.flatnonzero(~is_val & (groups == g))
        if len(tr) == 0:
            continue
        tb = bounds[tr]
        ov = (
            (tb[:, None, 0] < vb[None, :, 2])
            & (vb[None, :, 0] < tb[:, None, 2])
            & (tb[:, None, 1] < vb[None, :, 3])
            & (vb[None, :, 1] < tb[:, None, 3])
        ).any(axis=1)
        split[tr[ov]] = "gap"
    if not (split == "train").any():  # tiny inputs: never leave training empty
        split[~is_val] = "train"
    return split.astype(str)
