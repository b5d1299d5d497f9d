"""Streaming per-band statistics over the valid pixels of written chips.

Each chip contributes its pixel count, mean and sum of squared deviations per band; they are
merged in chip order with Chan's parallel formula in float64, which stays accurate for
large uint16/float rasters (no sum of squares of raw values) and gives the same numbers for
any worker count.
"""

from __future__ import annotations

import math

import numpy as np


class BandStats:
    """Accumulates mean/std/min/max per band, one chip at a time."""

    def __init__(self, bands: int) -> None:
        self.n = 0
        self.mean = np.zeros(bands, dtype=np.float64)
        self.m2 = np.zeros(bands, dtype=np.float64)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)

    def add(
        self, n: int, mean: np.ndarray, m2: np.ndarray, vmin: np.ndarray, vmax: np.ndarray
    ) -> None:
        """Merge one chip's partial statistics (``n`` valid pixels)."""
        if n == 0:
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total
        self.min = np.minimum(self.min, vmin)
        self.max = np.maximum(self.max, vmax)

    def as_dict(self) -> dict:
        """``mean``, ``std`` (population), ``min``, ``max`` as lists of floats (None if no pixel)."""
        if self.n == 0:
            none = [None] * len(self.mean)
            return {"mean": none, "std": none, "min": none, "max": none, "valid_pixels": 0}
        std = np.sqrt(self.m2 / self.n)
        return {
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in std],
            "min": [_num(v) for v in self.min],
            "max": [_num(v) for v in self.max],
            "valid_pixels": int(self.n),
        }


def _num(v: float) -> float | int:
    """Integral extremes as ints so uint8/uint16 stats read naturally."""
    return int(v) if math.isfinite(v) and float(v).is_integer() else float(v)
