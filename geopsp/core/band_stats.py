"""Per-band statistics over valid pixels: the one accumulator of export, training and merging.

A :class:`BandStats` holds, per band, the valid-pixel count, mean, sum of squared deviations
(``m2``), min and max. Parts are merged with Chan's parallel formula in float64, weighted by
their valid pixels, so merging chips, sampled chips or whole chip folders gives the statistics
of all their pixels together; it stays accurate for large uint16/float rasters (no sum of
squares of raw values) and gives the same numbers in any grouping of the same order.
"""

from __future__ import annotations

import math

import numpy as np


class BandStats:
    """Mean/std/min/max per band over the valid pixels added so far."""

    def __init__(self, bands: int) -> None:
        self.n = 0
        self.mean = np.zeros(bands, dtype=np.float64)
        self.m2 = np.zeros(bands, dtype=np.float64)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)

    @classmethod
    def from_pixels(cls, values: np.ndarray) -> BandStats:
        """Statistics of ``values`` ``(bands, n)``; pixels with a non-finite band are skipped."""
        x = np.asarray(values, dtype=np.float64)
        x = x[:, np.isfinite(x).all(axis=0)]
        out = cls(x.shape[0])
        if x.shape[1]:
            out.n = int(x.shape[1])
            out.mean = x.mean(axis=1)
            out.m2 = ((x - out.mean[:, None]) ** 2).sum(axis=1)
            out.min, out.max = x.min(axis=1), x.max(axis=1)
        return out

    @classmethod
    def from_summary(
        cls,
        n: int,
        mean: list[float],
        std: list[float],
        vmin: list[float] | None = None,
        vmax: list[float] | None = None,
    ) -> BandStats:
        """Statistics known only by their summary (e.g. a chip folder's ``stats.json``)."""
        out = cls(len(mean))
        if n:
            out.n = int(n)
            out.mean = np.asarray(mean, dtype=np.float64)
            out.m2 = np.asarray(std, dtype=np.float64) ** 2 * n
            if vmin is not None and None not in vmin:
                out.min = np.asarray(vmin, dtype=np.float64)
            if vmax is not None and None not in vmax:
                out.max = np.asarray(vmax, dtype=np.float64)
        return out

    def merge(self, other: BandStats) -> None:
        """Add the pixels summarized by ``other`` (Chan's formula, weighted by pixel counts)."""
        if other.n == 0:
            return
        total = self.n + other.n
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.n / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / total)
        self.n = total
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per band (0 without pixels)."""
        return np.sqrt(self.m2 / self.n) if self.n else np.zeros_like(self.m2)

    def as_dict(self) -> dict:
        """``mean``, ``std`` (population), ``min``, ``max`` as lists of floats (None if no pixel)."""
        if self.n == 0:
            none = [None] * len(self.mean)
            return {"mean": none, "std": none, "min": none, "max": none, "valid_pixels": 0}
        return {
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "min": [_num(v) for v in self.min],
            "max": [_num(v) for v in self.max],
            "valid_pixels": int(self.n),
        }


def _num(v: float) -> float | int:
    """Integral extremes as ints so uint8/uint16 stats read naturally."""
    return int(v) if math.isfinite(v) and float(v).is_integer() else float(v)
