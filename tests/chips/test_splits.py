"""The spatial split never lets training and validation chips share a pixel."""

from __future__ import annotations

import numpy as np
import pytest

from geopsp.chips.splits import spatial_split


def _row(n: int, size: int, stride: int) -> np.ndarray:
    return np.array([(k * stride, 0, k * stride + size, size) for k in range(n)], dtype=float)


def _shared_pixels(bounds: np.ndarray, split: np.ndarray) -> bool:
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
    assert not _shared_pixels(b, split)
    assert (split == "train").any()
    assert (split == "val").any()


def test_no_split_possible_gives_training_only():
    # Two chips that overlap each other: any validation chip would share pixels.
    b = _row(2, 64, 32)
    split = spatial_split(b, ["a", "a"], 0.5, seed=0)
    assert list(split) == ["train", "train"]
