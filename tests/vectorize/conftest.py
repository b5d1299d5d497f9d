"""Class rasters for the vectorize tests, written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

CLASSES = [
    {"value": 0, "name": "background", "color": [0, 0, 0]},
    {"value": 1, "name": "building", "color": [255, 0, 0]},
    {"value": 2, "name": "water", "color": [0, 0, 255]},
]


def write_classes(path, arr, *, crs="EPSG:32616", nodata=255, classes=CLASSES, res=0.5,
                  origin=(500000.0, 4000000.0), dtype=None) -> Path:  # fmt: skip
    """A class raster like geopsp classify writes (tag GEOPSP_CLASSES, nodata 255)."""
    import rasterio
    from rasterio.transform import from_origin

    arr = np.asarray(arr)
    arr = arr[None] if arr.ndim == 2 else arr
    prof = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                dtype=dtype or arr.dtype.name, transform=from_origin(*origin, res, res))  # fmt: skip
    if crs:
        prof["crs"] = crs
    if nodata is not None:
        prof["nodata"] = nodata
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr.astype(prof["dtype"]))
        if classes:
            dst.update_tags(GEOPSP_CLASSES=json.dumps(classes))
    return Path(path)


def blobs(shape=(120, 160), n=25, seed=0, classes=(1, 2)) -> np.ndarray:
    """Rectangles and L-shapes of random classes on background 0 (some touch, some nest)."""
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, dtype=np.uint8)
    for _ in range(n):
        r, c = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(3, 30), rng.integers(3, 30)
        a[r : r + h, c : c + w] = rng.choice(classes)
        if rng.random() < 0.3:
            a[r : r + h // 2, c : c + w // 2] = 0  # an L-shape or a notch
    return a


@pytest.fixture
def class_raster(tmp_path):
    """Factory: ``class_raster(arr=None, name="classes.tif", **kw)`` writes a class raster."""

    def make(arr=None, name: str = "classes.tif", **kw) -> Path:
        return write_classes(tmp_path / name, blobs() if arr is None else arr, **kw)

    return make
