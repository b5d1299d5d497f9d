"""Fresh random windows from the whole training area, instead of the same grid every epoch.

A chip folder from ``export-chips`` records where each chip lies in its source raster
(``source``, ``row_off``, ``col_off`` in ``chips.gpkg``). The training and gap chips of a
source are put back together into one mosaic of that area; each epoch, training chip ``i``
becomes a window of the same size shifted by up to half a chip in each direction, so the
network sees every part of the area at every position of its field of view, and the pixels of
gap chips (left out of the grid to keep training chips away from validation chips) are used
too. Validation chips' footprints are masked out of the mosaic (invalid imagery, ignored
labels): no validation pixel is ever trained on. Offsets come from ``(seed, epoch, chip)``, so
an epoch is reproducible across ``--resume``, ``--workers`` and ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from geopsp.core.classes import IGNORE
from geopsp.core.normalize import normalize
from geopsp.train.data import ChipDataset, read_chip_image, read_chip_label

log = logging.getLogger(__name__)


@dataclass
class Mosaic:
    """One source's training area: raw image, validity, channel-index labels, its origin."""

    image: np.ndarray  # (bands, H, W), source dtype
    valid: np.ndarray  # (H, W) bool
    label: np.ndarray  # (H, W) uint8 channel indexes, IGNORE where no training pixel
    row0: int
    col0: int


def mosaic_bytes(chips: Sequence, bands: int, itemsize: int, size: tuple[int, int]) -> int:
    """Memory the mosaics of ``chips`` would take (their bounding boxes, per source)."""
    total = 0
    for group in _by_source(chips).values():
        _, _, height, width = _extent(group, size)
        total += height * width * (bands * itemsize + 2)
    return total


def _by_source(chips: Sequence) -> dict[str, list]:
    groups: dict[str, list] = {}
    for c in chips:
        groups.setdefault(c.origin[0], []).append(c)
    return groups


def _extent(group: Sequence, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(row0, col0, height, width)`` of the bounding box of one source's chips."""
    row0 = min(c.origin[1] for c in group)
    col0 = min(c.origin[2] for c in group)
    height = max(c.origin[1] for c in group) - row0 + size[0]
    width = max(c.origin[2] for c in group) - col0 + size[1]
    return row0, col0, height, width


def build_mosaics(chips: Sequence, lut: np.ndarray, size: tuple[int, int]) -> dict[str, Mosaic]:
    """Mosaics of the training and gap chips per source; validation footprints masked out."""
    mosaics = {}
    h, w = size
    for source, group in _by_source(chips).items():
        row0, col0, height, width = _extent(group, size)
        image = None
        valid = np.zeros((height, width), bool)
        label = np.full((height, width), IGNORE, np.uint8)
        for c in sorted(group, key=lambda c: c.split == "val"):  # validation last: it wins
            r, q = c.origin[1] - row0, c.origin[2] - col0
            if c.split == "val":
                valid[r : r + h, q : q + w] = False
                label[r : r + h, q : q + w] = IGNORE
                continue
            img, ok = read_chip_image(c.image)
            if image is None:
                image = np.zeros((img.shape[0], height, width), img.dtype)
            image[:, r : r + h, q : q + w] = img
            valid[r : r + h, q : q + w] = ok
            label[r : r + h, q : q + w] = lut[read_chip_label(c.label)]
        if image is not None:
            mosaics[source] = Mosaic(image, valid, label, row0, col0)
    return mosaics


class WindowDataset(ChipDataset):
    """Training chips as random windows of their area (see the module docstring).

    ``chips`` are the training chips (one window per chip and epoch); ``area`` holds every
    chip of their sources (training, gap and validation) to build the mosaics from.
    """

    def __init__(self, chips: Sequence, area: Sequence, **kw) -> None:
        super().__init__(chips, **kw)
        self.mosaics = build_mosaics(area, self.lut, self.chip_size)

    def window(self, i: int, epoch: int) -> tuple[str, int, int]:
        """Where training chip ``i`` is cut in ``epoch``: source and mosaic row, column."""
        rng = np.random.default_rng([self.seed, epoch, i, 1])
        source, row, col = self.chips[i].origin
        m = self.mosaics[source]
        h, w = self.chip_size
        height, width = m.valid.shape
        r = int(np.clip(row - m.row0 + rng.integers(-(h // 2), h // 2 + 1), 0, height - h))
        c = int(np.clip(col - m.col0 + rng.integers(-(w // 2), w // 2 + 1), 0, width - w))
        return source, r, c

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        source, r, c = self.window(i, epoch)
        m = self.mosaics[source]
        h, w = self.chip_size
        valid = m.valid[r : r + h, c : c + w]
        x = normalize(m.image[:, r : r + h, c : c + w], self.mean, self.std, valid)
        lab = np.where(valid, m.label[r : r + h, c : c + w], IGNORE).astype(np.uint8)
        return self.augmented(x, lab, valid, i, epoch)
