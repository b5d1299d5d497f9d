"""classify --polygons: the class raster of a real scene vectorized in the same run."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from model_files import write_model_file
from rasterio.windows import Window
from robustness.conftest import assert_clean_error, invoke, leftovers

CLASSES = [{"value": 0, "name": "background", "color": [0, 0, 0]},
           {"value": 1, "name": "building", "color": [255, 0, 0]}]  # fmt: skip


@pytest.fixture(scope="module")
def scene(atlanta, tmp_path_factory):
    """A 256 x 256 crop of the SpaceNet Atlanta image and a 1-band untrained model for it."""
    d = tmp_path_factory.mktemp("atlanta")
    with rasterio.open(atlanta["image"]) as src:
        win = Window(300, 300, 256, 256)
        prof = src.profile | {"width": 256, "height": 256,
                              "transform": src.window_transform(win)}  # fmt: skip
        with rasterio.open(d / "crop.tif", "w", **prof) as dst:
            dst.write(src.read(window=win))
        crs, res = src.crs.to_string(), src.res
    model = write_model_file(d / "m.safetensors", CLASSES, bands=1, chip_size=64,
                             resolution=res, crs=crs)  # fmt: skip
    return d / "crop.tif", model


def test_classify_writes_polygons_of_its_class_raster(scene, tmp_path):
    image, model = scene
    out, polys, conf = tmp_path / "c.tif", tmp_path / "c.gpkg", tmp_path / "conf.tif"
    res = invoke("classify", image, "-m", model, "-o", out, "--confidence", conf,
                 "--polygons", polys, "--polygon-simplify", "0.5", "--tile-size", "128")  # fmt: skip
    assert res.exit_code == 0, res.output
    gdf = gpd.read_file(polys)
    with rasterio.open(out) as src:
        arr = src.read(1)
        assert gdf.crs == src.crs
        area = src.res[0] * src.res[1]
    counts = {v: int((arr == v).sum()) * area for v in (0, 1)}
    for v, total in counts.items():  # simplification keeps each class's area close
        got = gdf.loc[gdf["class"] == v, "area"].sum()
        assert got == pytest.approx(total, rel=0.05, abs=2.0)
    assert gdf["confidence"].between(0, 1).all()
    assert set(gdf["class_name"]) <= {"background", "building"}
    assert "polygons" in res.output


def test_polygons_refused_before_classifying(scene, tmp_path):
    image, model = scene
    polys = tmp_path / "p.gpkg"
    polys.write_bytes(b"keep")
    res = invoke("classify", image, "-m", model, "-o", tmp_path / "c.tif", "--polygons", polys)
    assert_clean_error(res, 1, "--overwrite")
    assert not (tmp_path / "c.tif").exists() and polys.read_bytes() == b"keep"
    res = invoke("classify", image, image, "-m", model, "-o", tmp_path / "d",
                 "--polygons", tmp_path / "q.gpkg")  # fmt: skip
    assert_clean_error(res, 2, "one INPUT")
    res = invoke("classify", image, "-m", model, "-o", tmp_path / "c.tif",
                 "--polygons", tmp_path / "q.gpkg", "--polygon-min-area", "0")  # fmt: skip
    assert_clean_error(res, 2, "--polygon-min-area")
    assert not leftovers(tmp_path) and np.all([p.name == "p.gpkg" for p in tmp_path.iterdir()])
