"""Band normalization shared by training and classification (so both see identical inputs)."""

from __future__ import annotations

import numpy as np


def has_data(data: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Where a window of ``(bands, H, W)`` pixels has data, as classify and training read it.

    GDAL's rule: a pixel is missing only where every band is masked (``masks`` 0 or False:
    a mask band, alpha or the nodata value) and, for floating-point data, where no band is
    finite. ``masks`` None means no band is masked. The result is what :func:`normalize` gets
    as ``valid``: export writes it as the chips' mask, so training sees what classify sees.
    """
    valid = np.ones(data.shape[1:], dtype=bool) if masks is None else (masks > 0).any(axis=0)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).any(axis=0)
    return valid


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
