"""geopsp vectorize end to end: formats, attributes, georeferencing, errors, interruptions."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from rasterio.features import shapes
from robustness.conftest import assert_clean_error, invoke, leftovers

from .conftest import blobs, write_classes


def read(path):
    return gpd.read_parquet(path) if str(path).endswith(".parquet") else gpd.read_file(path)


@pytest.mark.parametrize("ext", ["gpkg", "fgb", "parquet", "shp", "geojson"])
def test_formats_attributes_and_crs(class_raster, tmp_path, ext):
    src = class_raster()
    out = tmp_path / f"polys.{ext}"
    res = invoke("vectorize", src, "-o", out, "--block-size", 32)
    assert res.exit_code == 0, res.output
    gdf = read(out)
    assert gdf.crs.to_epsg() == 32616
    assert {"class", "class_name", "area", "perimeter"} <= set(gdf.columns)
    names = dict(zip(gdf["class"], gdf["class_name"], strict=True))
    assert names == {0: "background", 1: "building", 2: "water"}
    # 0.5 m pixels: areas are pixel counts / 4, and they add up to the whole raster.
    assert gdf["area"].sum() == pytest.approx(blobs().size * 0.25)
    assert np.allclose(gdf["area"], gdf.geometry.area)
    assert np.allclose(gdf["perimeter"], gdf.geometry.length)
    assert "polygons" in res.output and "square metres" in res.output
    assert not leftovers(tmp_path)


def test_equals_whole_raster_in_map_coordinates(class_raster, tmp_path):
    arr = blobs(seed=3)
    src = class_raster(arr)
    out = tmp_path / "p.gpkg"
    assert invoke("vectorize", src, "-o", out, "--block-size", 16).exit_code == 0
    import rasterio

    with rasterio.open(src) as ds:
        tr = ds.transform
    expected = sorted(
        (int(v), shapely.normalize(shapely.make_valid(shapely.geometry.shape(g))).wkb)
        for g, v in shapes(arr, transform=tr)
    )
    gdf = read(out)
    got = sorted(
        (int(v), shapely.normalize(shapely.get_geometry(g, 0) if len(g.geoms) == 1 else g).wkb)
        for v, g in zip(gdf["class"], gdf.geometry, strict=True)
    )
    assert got == expected


def test_classes_min_area_nodata_and_confidence(tmp_path):
    arr = np.zeros((40, 40), dtype=np.uint8)
    arr[2:6, 2:6] = 1  # 16 px = 4 m²
    arr[10:30, 10:30] = 1  # 400 px = 100 m²
    arr[32:38, 2:38] = 2
    arr[0, :] = 255
    src = write_classes(tmp_path / "c.tif", arr)
    conf = np.full((40, 40), 200, dtype=np.uint8)
    conf[10:30, 10:20] = 100
    cpath = write_classes(tmp_path / "conf.tif", conf, nodata=0, classes=None)
    out = tmp_path / "b.gpkg"
    res = invoke("vectorize", src, "-o", out, "--classes", "building", "--min-area", "10",
                 "--confidence", cpath, "--block-size", 16)  # fmt: skip
    assert res.exit_code == 0, res.output
    gdf = read(out)
    assert list(gdf["class"]) == [1] and gdf["area"].iloc[0] == pytest.approx(100.0)
    assert gdf["confidence"].iloc[0] == pytest.approx(150 / 255)


def test_dst_crs_and_layer_name(class_raster, tmp_path):
    import pyogrio

    out = tmp_path / "ll.gpkg"
    res = invoke("vectorize", class_raster(), "-o", out, "--dst-crs", "EPSG:4326",
                 "--layer", "landcover")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert pyogrio.list_layers(out)[0][0] == "landcover"
    gdf = read(out)
    assert gdf.crs.to_epsg() == 4326
    assert -88 < gdf.total_bounds[0] < -86 and 36 < gdf.total_bounds[1] < 37
    assert "square degrees" in res.output


def test_empty_selection_writes_an_empty_layer(class_raster, tmp_path):
    out = tmp_path / "none.fgb"
    res = invoke("vectorize", class_raster(np.zeros((20, 20), np.uint8)), "-o", out,
                 "--classes", "water")  # fmt: skip
    assert res.exit_code == 0, res.output
    gdf = read(out)
    assert len(gdf) == 0 and "class" in gdf.columns


def test_errors(class_raster, tmp_path):
    good = class_raster()
    out = tmp_path / "o.gpkg"
    bad_float = write_classes(tmp_path / "f.tif", blobs().astype("float32"), nodata=None)
    assert_clean_error(invoke("vectorize", bad_float, "-o", out), 1, "not a class raster")
    rgb = write_classes(tmp_path / "rgb.tif", np.stack([blobs()] * 3))
    assert_clean_error(invoke("vectorize", rgb, "-o", out), 1, "3 bands")
    nocrs = write_classes(tmp_path / "nocrs.tif", blobs(), crs=None)
    assert_clean_error(invoke("vectorize", nocrs, "-o", out), 1, "no CRS")
    geo = write_classes(tmp_path / "geo.tif", blobs(), crs="EPSG:4326", res=1e-5,
                        origin=(-87.0, 36.0))  # fmt: skip
    assert_clean_error(
        invoke("vectorize", geo, "-o", out, "--min-area", "10"), 2, "geographic", "--dst-crs"
    )
    assert_clean_error(invoke("vectorize", good, "-o", tmp_path / "o.xyz"), 2, "format")
    assert_clean_error(invoke("vectorize", good, "-o", out, "--classes", "roads"), 2, "roads")
    assert_clean_error(invoke("vectorize", good, "-o", out, "--simplify", "-1"), 2, "simplify")
    small = write_classes(tmp_path / "small.tif", np.zeros((5, 5), np.uint8))
    assert_clean_error(
        invoke("vectorize", good, "-o", out, "--confidence", small), 1, "not on the grid"
    )
    assert_clean_error(invoke("vectorize", tmp_path / "missing.tif", "-o", out), 1, "no such")
    assert not out.exists() and not leftovers(tmp_path)


def test_existing_output_needs_overwrite(class_raster, tmp_path):
    out = tmp_path / "o.shp"
    assert invoke("vectorize", class_raster(), "-o", out).exit_code == 0
    before = out.read_bytes()
    assert_clean_error(invoke("vectorize", class_raster(), "-o", out), 1, "--overwrite")
    assert out.read_bytes() == before
    res = invoke("vectorize", class_raster(), "-o", out, "--overwrite", "--classes", "1")
    assert res.exit_code == 0 and set(read(out)["class"]) == {1}


@pytest.mark.parametrize("ext", ["gpkg", "shp", "parquet"])
def test_interrupted_run_leaves_nothing(class_raster, tmp_path, monkeypatch, ext):
    from geopsp.vectorize import run

    calls = []
    real = run.BlockPolygonizer.feed

    def feed(self, idx, block):
        calls.append(idx)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, idx, block)

    monkeypatch.setattr(run, "BATCH", 1)  # batches were written before the interruption
    monkeypatch.setattr(run.BlockPolygonizer, "feed", feed)
    out = tmp_path / f"o.{ext}"
    res = invoke("vectorize", class_raster(), "-o", out, "--block-size", 16)
    assert res.exit_code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif"]


def test_killed_run_leaves_nothing_at_out(tmp_path):
    """SIGKILL in the middle of a run: no OUT (the parts were still in a hidden folder)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = write_classes(tmp_path / "big.tif", np.tile(blobs(seed=1), (12, 8)))
    out = tmp_path / "o.shp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "geopsp", "-q", "vectorize", str(src), "-o", str(out),
           "--block-size", "64"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not any(out.with_suffix(s).exists() for s in (".shp", ".shx", ".dbf", ".prj"))


def test_truncated_raster_is_one_line_and_no_output(tmp_path):
    big = np.tile(blobs(seed=2), (4, 4))
    # Striped and uncompressed, without tags (so GDAL writes the header first): half the
    # file is half the pixels.
    src = write_classes(tmp_path / "t.tif", big, classes=None)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o.gpkg"
    res = invoke("vectorize", src, "-o", out, "--block-size", 64)
    assert_clean_error(res, 1, "truncated or corrupt")
    assert not out.exists() and not leftovers(tmp_path)
