"""Boundary F1: how well class edges in a map line up with the reference's edges.

A pixel is a *boundary pixel* of a class map when one of its 4-neighbours has a different
class; pixels that are ignored (nodata or 255 in either map) neither are boundaries nor
create them, so the edge of a sparsely labelled polygon or of the image footprint is not
counted as a class edge. A predicted boundary pixel is *matched* when a reference boundary
pixel lies within ``tolerance`` pixels (Euclidean distance), and vice versa:

- precision = matched predicted boundary pixels / predicted boundary pixels
- recall = matched reference boundary pixels / reference boundary pixels
- F1 = 2 * precision * recall / (precision + recall)

Everything is pure numpy (binary dilation by a disk), so it needs no scipy, and counts are
additive over blocks: :func:`boundary_counts` works on a block read with a halo of
``tolerance + 1`` pixels and counts only the block's core, which gives exactly the counts of
one pass over the whole raster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def boundaries(classes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Boolean map of pixels whose valid 4-neighbour has a different class.

    Parameters
    ----------
    classes : ndarray (H, W)
        Class values.
    valid : ndarray of bool (H, W)
        Pixels that take part; invalid pixels never are, nor make, boundaries.
    """
    out = np.zeros(classes.shape, dtype=bool)
    # Horizontal pairs (x, x+1) and vertical pairs (y, y+1): an edge between two valid pixels
    # of different classes makes both of them boundary pixels.
    h = (classes[:, 1:] != classes[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    out[:, 1:] |= h
    out[:, :-1] |= h
    v = (classes[1:, :] != classes[:-1, :]) & valid[1:, :] & valid[:-1, :]
    out[1:, :] |= v
    out[:-1, :] |= v
    return out


def _shift_or(dst: np.ndarray, src: np.ndarray, dy: int, dx: int) -> None:
    """``dst |= src`` shifted by (dy, dx), with nothing coming in from outside."""
    h, w = src.shape
    if abs(dy) >= h or abs(dx) >= w:
        return
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    dst[yd, xd] |= src[ys, xs]


def _dilate_rows(mask: np.ndarray, radius: int) -> np.ndarray:
    """1-D dilation along x by ``radius`` pixels (doubling shifts: O(log radius) passes)."""
    out = mask.copy()
    reach = 0
    # After each pass `out` covers [x - reach, x + reach]; grow by at most `reach + 1`.
    while reach < radius:
        step = min(reach + 1, radius - reach)
        prev = out.copy()
        _shift_or(out, prev, 0, step)
        _shift_or(out, prev, 0, -step)
        reach += step
    return out


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation by a disk of ``radius`` pixels (offsets with dy^2 + dx^2 <= r^2)."""
    mask = np.asarray(mask, dtype=bool)
    r = int(math.floor(radius))
    if r <= 0:
        return mask.copy()
    out = np.zeros_like(mask)
    rows: dict[int, np.ndarray] = {}
    for dy in range(-r, r + 1):
        half = int(math.floor(math.sqrt(radius * radius - dy * dy)))
        if half not in rows:
            rows[half] = _dilate_rows(mask, half)
        _shift_or(out, rows[half], dy, 0)
    return out


@dataclass
class BoundaryCounts:
    """Additive boundary-match counts; combine blocks with ``+=``."""

    pred: int = 0
    pred_matched: int = 0
    ref: int = 0
    ref_matched: int = 0

    def __iadd__(self, other: BoundaryCounts) -> BoundaryCounts:
        self.pred += other.pred
        self.pred_matched += other.pred_matched
        self.ref += other.ref
        self.ref_matched += other.ref_matched
        return self

    @property
    def precision(self) -> float:
        return self.pred_matched / self.pred if self.pred else float("nan")

    @property
    def recall(self) -> float:
        return self.ref_matched / self.ref if self.ref else float("nan")

    @property
    def f1(self) -> float:
        """Boundary F1; NaN when neither map has a boundary, 0 when only one has."""
        if not self.pred and not self.ref:
            return float("nan")
        p = self.precision if self.pred else 0.0
        r = self.recall if self.ref else 0.0
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def boundary_counts(
    pred: np.ndarray,
    ref: np.ndarray,
    valid: np.ndarray,
    tolerance: float,
    core: tuple[slice, slice] | None = None,
) -> BoundaryCounts:
    """Count boundary pixels of both maps and those matched within ``tolerance`` pixels.

    Parameters
    ----------
    pred, ref : ndarray (H, W)
        Predicted and reference class values of one block, including its halo.
    valid : ndarray of bool (H, W)
        Pixels valid in both maps.
    tolerance : float
        Match distance in pixels (Euclidean).
    core : (slice, slice), optional
        The part of the block to count (the block without its halo); the halo of
        ``tolerance + 1`` pixels only supplies neighbours. Default: everything.
    """
    bp = boundaries(pred, valid)
    br = boundaries(ref, valid)
    core = core or (slice(None), slice(None))
    near_ref = dilate(br, tolerance)[core]
    near_pred = dilate(bp, tolerance)[core]
    bp, br = bp[core], br[core]
    return BoundaryCounts(
        pred=int(bp.sum()),
        pred_matched=int((bp & near_ref).sum()),
        ref=int(br.sum()),
        ref_matched=int((br & near_pred).sum()),
    )
