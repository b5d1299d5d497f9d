"""Chips carry the source's validity, so training sees the values classify sees.

For every pixel of every chip, the normalized tensor training reads equals the one classify
builds from the source raster over the same window: masked, nodata and padded pixels are 0
in both, valid pixels the same normalized values.
"""

from __future__ import annotations

from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from geopsp.chips.export import ExportOptions, export_chips
from geopsp.chips.folder import open_chip_folder
from geopsp.classify.reader import TileReader
from geopsp.core.classes import value_lut
from geopsp.train.data import ChipDataset

CHIP = 32
W, H = 80, 26  # shorter than a chip: every chip is padded below the raster
T = from_origin(600000.0, 5000000.0, 10.0, 10.0)
CRS = "EPSG:32632"


def _source(path, kind: str) -> list[int]:
    """A 3-band raster with an invalid block (none for ``plain``); returns the bands to export."""
    rng = np.random.default_rng(1)
    data = rng.integers(20, 250, size=(3, H, W)).astype(np.uint8)
    valid = np.ones((H, W), dtype=bool)
    valid[5:20, 20:50] = kind == "plain"
    count, nodata = 3, None
    if kind == "nodata":
        nodata = 0
        data[:, ~valid] = 0
        data[0, 20:26, 0:30] = 0  # nodata in one band only: still data (as GDAL reads it)
    elif kind == "alpha":
        count = 4
        data = np.concatenate([data, np.where(valid, 255, 0)[None].astype(np.uint8)])
    profile = dict(driver="GTiff", width=W, height=H, count=count, dtype="uint8", crs=CRS,
                   transform=T, nodata=nodata)  # fmt: skip
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if kind == "alpha":
            dst.colorinterp = [*dst.colorinterp[:3], rasterio.enums.ColorInterp.alpha]
        if kind == "mask":
            dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    return [1, 2, 3]


@pytest.mark.parametrize("kind", ["mask", "alpha", "nodata", "plain"])
def test_training_reads_chips_as_classify_reads_the_source(tmp_path, kind):
    image = tmp_path / "image.tif"
    bands = _source(image, kind)
    everywhere = box(T.c, T.f - 10 * H, T.c + 10 * W, T.f)
    gpd.GeoDataFrame({"c": [1]}, geometry=[everywhere], crs=CRS).to_file(tmp_path / "l.gpkg")
    out = tmp_path / "chips"
    export_chips(
        [str(image)],
        str(tmp_path / "l.gpkg"),
        str(out),
        ExportOptions(chip_size=CHIP, stride=CHIP, bands=bands, max_nodata=1.0, val_fraction=0.0),
    )
    chips = open_chip_folder(out)
    assert chips.mean is not None
    data = ChipDataset(chips.chips, value_lut(chips.classes), chips.mean, chips.std, (CHIP, CHIP))
    model = SimpleNamespace(mean=chips.mean, std=chips.std)
    reader = TileReader(str(image), bands, model, CHIP)
    index = gpd.read_file(out / "chips.gpkg", layer="chips").sort_values("chip_id")
    invalid_seen = 0
    try:
        for k, row in enumerate(index.itertuples()):
            x, label = data[k]
            expected, valid = reader(SimpleNamespace(col=row.col_off, row=row.row_off))
            np.testing.assert_allclose(x.numpy(), expected, atol=1e-6, err_msg=row.image)
            assert (label.numpy()[~valid] == 255).all()  # invalid pixels never train
            invalid_seen += int((~valid).sum())
    finally:
        reader.close()
    assert len(index) == 3 and invalid_seen >= 3 * (CHIP - H) * CHIP  # the padding at least
