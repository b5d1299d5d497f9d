"""Reading chips into normalized tensors, with augmentation that is reproducible per epoch.

Every random choice for a chip (its D4 transform, flips, color jitter) comes from a generator
seeded with ``(seed, epoch, chip index)``, and the chip order from ``(seed, epoch)``: an epoch
is the same whether it runs straight through, after ``--resume``, with any number of
``--workers`` or on any number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from geopsp.chips.folder import Chip
from geopsp.core.band_stats import BandStats
from geopsp.core.classes import IGNORE, ClassInfo
from geopsp.core.errors import InputError
from geopsp.core.normalize import normalize

AUGMENT_CHOICES = ("d4", "flips", "none")
STATS_SAMPLE = 256  # chips read to compute band statistics when stats.json is absent


def read_chip_image(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an image chip: ``(bands, H, W)`` in its source dtype and a validity mask ``(H, W)``."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            img = src.read()
            # The dataset mask folds nodata values, alpha bands and internal masks together,
            # the same source of truth classify uses for the pixels it must not trust.
            valid = src.dataset_mask() > 0
    except RasterioIOError as exc:
        raise InputError(f"{path}: cannot read this image chip") from exc
    if img.dtype.kind == "f":
        valid &= np.isfinite(img).any(axis=0)  # as classify: nodata only where every band is
    return img, valid


def read_chip_label(path: Path) -> np.ndarray:
    """Read a label chip as uint8 class values (255 = ignore)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            lab = src.read(1)
    except RasterioIOError as exc:
        raise InputError(f"{path}: cannot read this label chip") from exc
    if lab.dtype != np.uint8:
        bad = (lab < 0) | (lab > IGNORE)
        lab = np.where(bad, IGNORE, lab).astype(np.uint8)
    return lab


def d4(image: np.ndarray, label: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply dihedral transform ``k`` (0..7: rotation by ``k % 4`` quarter turns, then a
    left-right flip when ``k >= 4``) to a ``(C, H, W)`` image and its ``(H, W)`` label."""
    image = np.rot90(image, k % 4, axes=(1, 2))
    label = np.rot90(label, k % 4, axes=(0, 1))
    if k >= 4:
        image, label = image[:, :, ::-1], label[:, ::-1]
    return image, label


def rescale(
    image: np.ndarray, label: np.ndarray, factor: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Zoom a normalized ``(C, H, W)`` image (bilinear) and its label (nearest) by ``factor``,
    then cut a random ``H x W`` window from the result, or pad it to that size when it shrank
    (image 0, the band mean; label ignore), as PSPNet's random-scale augmentation does."""
    h, w = label.shape
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    y = torch.from_numpy(np.ascontiguousarray(label))[None, None]
    y = torch.nn.functional.interpolate(y, size=(nh, nw), mode="nearest-exact")
    zoomed, zoomed_label = x[0].numpy(), y[0, 0].numpy()
    r, c = int(rng.integers(abs(nh - h) + 1)), int(rng.integers(abs(nw - w) + 1))
    if factor >= 1:
        return zoomed[:, r : r + h, c : c + w], zoomed_label[r : r + h, c : c + w]
    out = np.zeros_like(image)
    out_label = np.full_like(label, IGNORE)
    out[:, r : r + nh, c : c + nw] = zoomed
    out_label[r : r + nh, c : c + nw] = zoomed_label
    return out, out_label


def augment(
    image: np.ndarray,
    label: np.ndarray,
    valid: np.ndarray,
    mode: str,
    color_jitter: float,
    rng: np.random.Generator,
    scale_jitter: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a normalized image and its label identically.

    ``d4`` picks one of the 8 rotations/reflections of the square (chips are square in
    practice; non-square chips get flips only), ``flips`` flips left-right and up-down with
    probability 1/2 each. ``color_jitter`` ``j`` scales each band by ``1 + U(-j, j)`` and shifts
    it by ``U(-j, j)`` (in normalized units) on valid pixels. ``scale_jitter`` ``s`` zooms
    the chip by a factor drawn log-uniformly from ``[1 / (1 + s), 1 + s]`` (:func:`rescale`).
    """
    if color_jitter > 0:
        c = image.shape[0]
        scale = 1 + rng.uniform(-color_jitter, color_jitter, c).astype(np.float32)
        shift = rng.uniform(-color_jitter, color_jitter, c).astype(np.float32)
        image = image * scale[:, None, None] + shift[:, None, None]
        image[:, ~valid] = 0.0
    square = image.shape[1] == image.shape[2]
    if mode == "d4" and square:
        image, label = d4(image, label, int(rng.integers(8)))
    elif mode in ("d4", "flips"):
        if rng.random() < 0.5:
            image, label = image[:, :, ::-1], label[:, ::-1]
        if rng.random() < 0.5:
            image, label = image[:, ::-1, :], label[::-1, :]
    if scale_jitter > 0:  # drawn last, so the other choices do not depend on it
        factor = float(np.exp(rng.uniform(-1, 1) * np.log1p(scale_jitter)))
        image, label = rescale(image, label, factor, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


class ChipDataset(Dataset):
    """Chips as ``(image float32 (C, H, W), label uint8 (H, W) channel indexes)`` tensors.

    Indexed by ``(chip index, epoch)`` pairs (see :class:`EpochSampler`) so augmentation is
    reproducible; a plain int index means epoch 0. Decoded chips are kept in memory up to
    ``cache_bytes`` per process because reading many small GeoTIFFs costs more than
    augmenting them.
    """

    def __init__(
        self,
        chips: Sequence,
        lut: np.ndarray,
        mean: list[float],
        std: list[float],
        chip_size: tuple[int, int],
        augment: str = "none",
        color_jitter: float = 0.0,
        scale_jitter: float = 0.0,
        seed: int = 0,
        cache_bytes: int = 1 << 30,
    ) -> None:
        self.chips = list(chips)
        self.lut = lut
        self.mean, self.std = mean, std
        self.chip_size = tuple(chip_size)
        self.augment = augment
        self.color_jitter = color_jitter
        self.scale_jitter = scale_jitter
        self.seed = seed
        self.cache_bytes = cache_bytes
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._cached = 0

    def __len__(self) -> int:
        return len(self.chips)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        chip = self.chips[i]
        img, valid = read_chip_image(chip.image)
        lab = self.lut[read_chip_label(chip.label)]
        if img.shape[1:] != self.chip_size or lab.shape != self.chip_size:
            raise InputError(
                f"{chip.image}: chip is {img.shape[2]}x{img.shape[1]} (label "
                f"{lab.shape[1]}x{lab.shape[0]}), expected {self.chip_size[1]}x{self.chip_size[0]}"
            )
        x = normalize(img, self.mean, self.std, valid)
        size = x.nbytes + lab.nbytes + valid.nbytes
        if self._cached + size <= self.cache_bytes:
            self._cache[i] = (x, lab, valid)
            self._cached += size
        return x, lab, valid

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        x, lab, valid = self._load(i)
        return self.augmented(x, lab, valid, i, epoch)

    def augmented(
        self, x: np.ndarray, lab: np.ndarray, valid: np.ndarray, i: int, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Chip ``i`` of ``epoch`` augmented as configured, as tensors."""
        if self.augment != "none" or self.color_jitter > 0 or self.scale_jitter > 0:
            rng = np.random.default_rng([self.seed, epoch, i])
            x, lab = augment(x, lab, valid, self.augment, self.color_jitter, rng, self.scale_jitter)
        return torch.from_numpy(x), torch.from_numpy(lab)


class EpochSampler(Sampler):
    """Shuffled (or ordered) chip indexes of one rank, paired with the epoch number.

    Wraps :class:`torch.utils.data.DistributedSampler` (which also serves one process), so the
    order depends only on ``(seed, epoch)`` and every rank gets the same number of chips.
    ``set_epoch`` must be called before each epoch, as with ``DistributedSampler``.
    """

    def __init__(
        self, n: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1, drop_last=True
    ) -> None:
        self.inner = DistributedSampler(
            range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.inner:
            yield (int(i), self.epoch)

    def __len__(self) -> int:
        return len(self.inner)


def shard(n: int, rank: int, world: int) -> list[int]:
    """Validation indexes of one rank: every chip exactly once over all ranks (no padding, so
    the confusion matrices summed over ranks count each pixel once)."""
    return list(range(rank, n, world))


def band_stats(chips: list[Chip], band_count: int) -> tuple[list[float], list[float]]:
    """Per-band mean and std over the valid pixels of up to ``STATS_SAMPLE`` chips."""
    step = max(1, len(chips) // STATS_SAMPLE)
    stats = BandStats(band_count)
    for c in chips[::step]:
        img, valid = read_chip_image(c.image)
        stats.merge(BandStats.from_pixels(img[:, valid]))
    if stats.n == 0:
        raise InputError("the training chips have no valid image pixels")
    return stats.mean.tolist(), stats.std.tolist()


def class_pixels(chips: list[Chip], classes: list[ClassInfo]) -> np.ndarray:
    """Label pixels per class (table order) over ``chips``: from the index or by reading labels."""
    out = np.zeros(len(classes), dtype=np.int64)
    pos = {c.value: i for i, c in enumerate(classes)}
    if all(c.counts is not None for c in chips):
        for c in chips:
            for v, n in c.counts.items():  # type: ignore[union-attr]
                if v in pos:
                    out[pos[v]] += n
        return out
    for c in chips:
        counts = np.bincount(read_chip_label(c.label).ravel(), minlength=256)
        for v, i in pos.items():
            if v != IGNORE:
                out[i] += counts[v]
    return out
