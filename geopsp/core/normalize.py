"""Band normalization shared by training and classification (so both see identical inputs)."""

from __future__ import annotations

import numpy as np


def normalize(
    image: np.ndarray, mean: list[float], std: list[float], valid: np.ndarray | None = None
) -> np.ndarray:
    """Return ``(image - mean) / std`` as float32, with invalid pixels set to 0 (the band mean).

    Parameters
    ----------
    image : ndarray, shape (bands, H, W)
        Raw band values in the source dtype.
    mean, std : list of float
        Per-band statistics from the chips' ``stats.json`` / the model file.
    valid : ndarray of bool, shape (H, W), optional
        False where the input is nodata/masked; those pixels become 0 after normalization
        so that fill values (0, -9999, NaN...) never reach the network.
    """
    x = image.astype(np.float32, copy=True)
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    s = np.where(s > 0, s, 1.0).astype(np.float32)
    x -= m
    x /= s
    if valid is not None:
        x[:, ~valid] = 0.0
    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return x
