"""Putting a label raster onto another grid (nearest neighbour, 255 outside and on nodata)."""

from __future__ import annotations

import numpy as np

from geopsp.core.classes import IGNORE

MAX_DRIFT = 0.01  # pixels: largest offset a direct read may accumulate over a window


def resample_label_raster(src, crs, transform, width: int, height: int, fill: int) -> np.ndarray:
    """A label raster on another grid: nearest neighbour, nodata and outside -> 255.

    Raw value 0 becomes ``fill`` (0 background or 255 ignore); values outside the class table
    become 255. Grids on the same pixel lattice are read directly, others warped.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    ds = src._dataset()
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for c in src.classes:
        lut[c.value] = c.value
    lut[0] = fill  # 0 in a label raster means "unlabeled"
    raw = _aligned_read(ds, crs, transform, width, height)
    if raw is None:
        raw = np.full((height, width), -1, dtype=np.int32)
        reproject(
            source=rasterio.band(ds, 1),
            destination=raw,
            src_nodata=ds.nodata,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=-1,
            resampling=Resampling.nearest,
        )
    out = np.full((height, width), IGNORE, dtype=np.uint8)
    inside = raw >= 0
    if ds.nodata is not None:
        inside &= raw != ds.nodata
    vals = raw[inside]
    out[inside] = np.where(vals <= 255, lut[np.clip(vals, 0, 255)], IGNORE)
    return out


def _aligned_read(ds, crs, transform, width, height) -> np.ndarray | None:
    """Direct windowed read when the grids coincide (same CRS and pixel lattice), else None."""
    from rasterio.windows import Window

    if ds.crs != crs or not ds.transform.is_rectilinear or not transform.is_rectilinear:
        return None
    t = ds.transform
    # Pixel sizes agree when the drift they make over the window stays below a small fraction
    # of a pixel: relative, so degrees (1e-5) and metres (10) are judged alike.
    drift_x = abs(t.a - transform.a) * width / abs(t.a)
    drift_y = abs(t.e - transform.e) * height / abs(t.e)
    if max(drift_x, drift_y) > MAX_DRIFT:
        return None
    col = (transform.c - t.c) / t.a
    row = (transform.f - t.f) / t.e
    if not (np.isclose(col, round(col), atol=1e-6) and np.isclose(row, round(row), atol=1e-6)):
        return None
    col, row = int(round(col)), int(round(row))
    out = np.full((height, width), -1, dtype=np.int32)
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + width, ds.width), min(row + height, ds.height)
    if c1 > c0 and r1 > r0:
        block = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
        out[r0 - row : r1 - row, c0 - col : c1 - col] = block
    return out
