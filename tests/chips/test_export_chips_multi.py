"""export-chips with several rasters in different CRSs sharing one label file."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import shapely.geometry
from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_geom
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geopsp.chips.export import ExportOptions, export_chips


def _warp(src_path, dst_path, crs):
    with rasterio.open(src_path) as src:
        tr, w, h = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds)
        prof = src.profile | {"crs": crs, "transform": tr, "width": w, "height": h}
        with rasterio.open(dst_path, "w", **prof) as dst:
            for b in range(1, src.count + 1):
                reproject(
                    rasterio.band(src, b),
                    rasterio.band(dst, b),
                    dst_nodata=src.nodata,
                    resampling=Resampling.nearest,
                )


def test_rasters_in_two_crss_share_one_folder(nc_landsat, tmp_path):
    utm = tmp_path / "nc_utm17.tif"
    _warp(nc_landsat["image"], utm, "EPSG:32617")
    images = [str(nc_landsat["image"]), str(utm)]
    out = tmp_path / "chips"
    s = export_chips(
        images,
        str(nc_landsat["labels"]),
        str(out),
        ExportOptions(class_field="id", chip_size=96, unlabeled="ignore"),
    )
    idx = gpd.read_file(out / "chips.gpkg", layer="chips")
    assert set(idx.source) == set(images)
    per_source = {}
    for src_path in images:
        with rasterio.open(src_path) as ds:
            sub = idx[idx.source == src_path]
            assert len(sub) > 3
            for row in sub.itertuples():
                with rasterio.open(out / row.label) as lab:
                    win = Window(row.col_off, row.row_off, 96, 96)
                    assert lab.crs == ds.crs
                    assert lab.transform.almost_equals(window_transform(win, ds.transform))
                    outline = shapely.box(*lab.bounds)
                # The footprint in the index is the chip's outline in EPSG:4326.
                fp = shapely.geometry.shape(transform_geom(ds.crs, "EPSG:4326", outline))
                assert row.geometry.symmetric_difference(fp).area / fp.area < 0.001
            per_source[src_path] = sub[[f"count_{v}" for v in range(1, 8)]].sum().to_numpy()
    assert s.chips_written == len(idx)
    a, b = (per_source[p] / per_source[p].sum() for p in images)
    assert np.abs(a - b).max() < 0.1  # both grids see the same polygons in the same proportions
