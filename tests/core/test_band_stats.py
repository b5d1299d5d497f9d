"""One band-statistics accumulator: any grouping of pixels gives the statistics of all of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geopsp.chips.folder import ChipSet, merge_chip_sets
from geopsp.core.band_stats import BandStats


def _pixels(seed: int, n: int, bands: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(1000 + 50 * seed, 10 + seed, size=(bands, n))  # a different spread each


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=6))
def test_merged_parts_equal_all_pixels(sizes):
    parts = [_pixels(i, n) for i, n in enumerate(sizes)]
    merged = BandStats(3)
    for p in parts:
        merged.merge(BandStats.from_pixels(p))
    allpx = np.concatenate(parts, axis=1)
    assert merged.n == allpx.shape[1]
    if merged.n:
        np.testing.assert_allclose(merged.mean, allpx.mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(merged.std, allpx.std(axis=1), rtol=1e-9)
        np.testing.assert_array_equal(merged.min, allpx.min(axis=1))


def test_non_finite_pixels_are_skipped():
    x = np.array([[1.0, np.nan, 3.0], [2.0, 5.0, np.inf]])
    s = BandStats.from_pixels(x)
    assert s.n == 1 and s.mean.tolist() == [1.0, 2.0]


def _folder(name: str, pixels: np.ndarray, chips: int) -> ChipSet:
    summary = BandStats.from_pixels(pixels).as_dict()
    return ChipSet(
        folders=[Path(name)], layouts=["geopsp"], chips=[None] * chips, classes=[], band_count=3,
        bands=[1, 2, 3], chip_size=(32, 32), mean=summary["mean"], std=summary["std"],
        valid_pixels=summary["valid_pixels"],
    )  # fmt: skip


@pytest.mark.parametrize("chips", [(10, 10, 10), (1, 40, 3)])
def test_pooled_folders_equal_all_their_pixels(chips):
    # Same chip counts but very different valid-pixel counts (nodata), or the reverse: the
    # pooled statistics are those of every valid pixel of the folders together.
    parts = [_pixels(1, 5000), _pixels(2, 300), _pixels(3, 40)]
    merged = merge_chip_sets(
        [_folder(f"f{i}", p, c) for i, (p, c) in enumerate(zip(parts, chips, strict=True))]
    )
    allpx = np.concatenate(parts, axis=1)
    np.testing.assert_allclose(merged.mean, allpx.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(merged.std, allpx.std(axis=1), rtol=1e-9)
    assert merged.valid_pixels == allpx.shape[1]


def test_folders_without_pixel_counts_are_not_pooled():
    a, b = _folder("a", _pixels(1, 50), 2), _folder("b", _pixels(2, 50), 2)
    b.valid_pixels = None  # statistics of unknown weight: training measures the chips instead
    merged = merge_chip_sets([a, b])
    assert merged.mean is None and merged.std is None
