"""Label rasters on another grid: read directly only when the pixel lattices coincide."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geopsp.labels.rasterize import open_labels, rasterize_labels

PIXEL = 1e-5  # degrees, about 1 m: pixel sizes far below any absolute tolerance


def _label_raster(path, width: int) -> None:
    """Columns of class values 1..5 repeating, so a one-pixel shift changes most values."""
    values = np.repeat((1 + np.arange(width) % 5).astype(np.uint8)[None, None, :], 4, axis=1)
    profile = dict(driver="GTiff", width=width, height=4, count=1, dtype="uint8", nodata=255)
    transform = from_origin(10.0, 45.0, PIXEL, PIXEL)
    with rasterio.open(path, "w", crs="EPSG:4326", transform=transform, **profile) as dst:
        dst.write(values)


@pytest.mark.parametrize("ratio", [1.001, 0.999])
def test_slightly_different_degree_pixels_are_resampled(tmp_path, ratio):
    # A 0.1 % resolution difference drifts by one pixel over 1000 pixels: the labels must be
    # resampled (nearest), not read pixel for pixel.
    _label_raster(tmp_path / "labels.tif", 1200)
    src = open_labels(tmp_path / "labels.tif")
    width = 1000
    out = rasterize_labels(
        src, rasterio.crs.CRS.from_epsg(4326), from_origin(10.0, 45.0, PIXEL * ratio, PIXEL),
        width, 1,
    )  # fmt: skip
    centres = (np.arange(width) + 0.5) * ratio  # target pixel centres in source pixels
    expected = 1 + np.floor(centres).astype(int) % 5
    assert (out[0] == expected).mean() > 0.99
    np.testing.assert_array_equal(out[0, -50:], expected[-50:])  # where the drift is a pixel


def test_same_lattice_is_read_exactly(tmp_path):
    _label_raster(tmp_path / "labels.tif", 300)
    src = open_labels(tmp_path / "labels.tif")
    crs = rasterio.crs.CRS.from_epsg(4326)
    out = rasterize_labels(src, crs, from_origin(10.0 + 7 * PIXEL, 45.0, PIXEL, PIXEL), 200, 1)
    np.testing.assert_array_equal(out[0], 1 + (7 + np.arange(200)) % 5)
