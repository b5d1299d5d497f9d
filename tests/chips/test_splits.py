"""The spatial split never lets training and validation chips share a pixel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geopsp.chips import splits
from geopsp.chips.splits import spatial_split


def _row(n: int, size: int, stride: int) -> np.ndarray:
    return np.array([(k * stride, 0, k * stride + size, size) for k in range(n)], dtype=float)


def shared_pixels(bounds: np.ndarray, split) -> bool:
    """Whether a training chip and a validation chip (footprints ``bounds``) share a pixel."""
    tr, va = bounds[split == "train"], bounds[split == "val"]
    return bool(
        (
            (tr[:, None, 0] < va[None, :, 2])
            & (va[None, :, 0] < tr[:, None, 2])
            & (tr[:, None, 1] < va[None, :, 3])
            & (va[None, :, 1] < tr[:, None, 3])
        ).any()
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("n", "val_fraction"), [(4, 0.1), (5, 0.3), (6, 0.5), (3, 0.4)])
def test_tiny_rows_shrink_validation_instead_of_sharing_pixels(n, val_fraction, seed):
    # 64 px chips at stride 32: whole blocks of validation leave no training chip, the case
    # the fallback handles.
    b = _row(n, 64, 32)
    split = spatial_split(b, ["a"] * n, val_fraction, seed=seed)
    assert not shared_pixels(b, split)
    assert (split == "train").any()
    assert (split == "val").any()


def test_no_split_possible_gives_training_only():
    # Two chips that overlap each other: any validation chip would share pixels.
    b = _row(2, 64, 32)
    split = spatial_split(b, ["a", "a"], 0.5, seed=0)
    assert list(split) == ["train", "train"]


def test_spatial_split_has_no_overlap_between_sides():
    # A 10 x 10 grid of 256 px chips with stride 128 (overlapping neighbours).
    offs = [(c * 128, r * 128) for r in range(10) for c in range(10)]
    b = np.array([(c, r, c + 256, r + 256) for c, r in offs], dtype=float)
    split = spatial_split(b, ["a"] * len(b), 0.2, seed=3)
    assert (split == "val").sum() >= 10
    assert not shared_pixels(b, split)
    np.testing.assert_array_equal(split, spatial_split(b, ["a"] * len(b), 0.2, seed=3))


@settings(max_examples=40, deadline=None)
# Whole blocks leave no training chip on this grid in the first order, which then falls back
# to single validation chips; the other orders must not be preferred over that.
@example(cols=3, rows=4, val_fraction=0.1, seed=0)
@given(
    st.integers(3, 12), st.integers(3, 12), st.sampled_from([0.1, 0.15, 0.3]),
    st.integers(0, 10**6),
)  # fmt: skip
def test_the_kept_block_order_keeps_the_most_training_chips(cols, rows, val_fraction, seed):
    # 128 px chips at stride 64 on a cols x rows grid, as export-chips cuts them.
    offs = [(c * 64, r * 64) for r in range(rows) for c in range(cols)]
    b = np.array([(c, r, c + 128, r + 128) for c, r in offs], dtype=float)
    groups = ["a"] * len(b)
    best = spatial_split(b, groups, val_fraction, seed=seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(splits, "BLOCK_ORDERS", 1)  # only the seed's first block order
        first = spatial_split(b, groups, val_fraction, seed=seed)
    assert (best == "train").sum() >= (first == "train").sum()
    assert not shared_pixels(b, best)
    # As much validation as the first order gives, up to the target.
    target = max(1, round(val_fraction * len(b)))
    assert (best == "val").sum() >= min(target, (first == "val").sum())
    np.testing.assert_array_equal(best, spatial_split(b, groups, val_fraction, seed=seed))


def test_a_small_export_loses_fewer_chips_than_the_first_block_order():
    # 128 px chips at stride 64 on a 9 x 9 grid: the seed's first block order validates 16
    # chips and turns 20 into gaps (45 train); the best of the orders keeps 60 for training.
    offs = [(c * 64, r * 64) for r in range(9) for c in range(9)]
    b = np.array([(c, r, c + 128, r + 128) for c, r in offs], dtype=float)
    counts = {}
    for orders in (1, splits.BLOCK_ORDERS):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(splits, "BLOCK_ORDERS", orders)
            split = spatial_split(b, ["a"] * len(b), 0.15, seed=0)
        counts[orders] = int((split == "train").sum())
    assert counts == {1: 45, splits.BLOCK_ORDERS: 60}
