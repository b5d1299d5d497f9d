"""Label sources: class rules, vector/raster reading errors, the overlap rule, resampling."""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geopsp.core.classes import ClassInfo
from geopsp.core.errors import InputError, UsageError
from geopsp.labels.class_rules import classes_from_field
from geopsp.labels.rasterize import open_labels, rasterize_labels

CRS = "EPSG:32616"
T = from_origin(1000.0, 2000.0, 1.0, 1.0)  # 1 m pixels, top-left at (1000, 2000)


def _vector(tmp_path, geoms, name="labels.gpkg", crs=CRS, **fields):
    gdf = gpd.GeoDataFrame(fields, geometry=list(geoms), crs=crs)
    path = tmp_path / name
    gdf.to_file(path, engine="pyogrio")
    return path


def _from_field(values: np.ndarray, field: str, unlabeled: str, given=None):
    """Classes and feature values of a class field (``x`` names the layer)."""
    return classes_from_field(
        values, count=len(values), field=field, given=given, unlabeled=unlabeled, default_name="x"
    )


def _names(classes):
    return [(c.value, c.name) for c in classes]


def test_integer_field_values_are_class_values():
    table, values = _from_field(np.array([3, 7, 3]), "code", "background")
    assert _names(table) == [(0, "background"), (3, "3"), (7, "7")]
    assert values.tolist() == [3, 7, 3]


def test_integer_field_outside_range_is_renumbered_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        table, values = _from_field(np.array([0, 500, 42]), "code", "ignore")
    assert _names(table) == [(1, "0"), (2, "42"), (3, "500")]
    assert values.tolist() == [1, 3, 2]
    assert "renumbering" in caplog.text


def test_string_field_sorted_and_single_class_without_field():
    table, values = _from_field(
        np.array(["water", "forest", "water"], dtype=object), "label", "ignore"
    )
    assert _names(table) == [(1, "forest"), (2, "water")]
    assert values.tolist() == [2, 1, 2]
    table, values = classes_from_field(
        None, count=2, field=None, given=None, unlabeled="background", default_name="glaciers"
    )
    assert _names(table) == [(0, "background"), (1, "glaciers")]
    assert values.tolist() == [1, 1]


def test_given_table_matches_names_case_insensitively_and_rejects_unknown():
    given = [ClassInfo(5, "Forest", (0, 128, 0)), ClassInfo(9, "Water", (0, 0, 255))]
    table, values = _from_field(
        np.array(["water", "FOREST"], dtype=object), "label", "ignore", given=given
    )
    assert values.tolist() == [9, 5]
    assert [c.value for c in table] == [5, 9]
    with pytest.raises(InputError, match="not in the class table: rock, sand"):
        _from_field(
            np.array(["sand", "water", "rock"], dtype=object), "label", "ignore", given=given
        )


def test_more_than_254_classes_is_usage_error():
    with pytest.raises(UsageError, match="300 distinct"):
        _from_field(np.array([f"c{i}" for i in range(300)], dtype=object), "name", "ignore")


def test_overlap_rule_smaller_feature_wins_whatever_the_file_order(tmp_path):
    big = shapely.box(1000, 1980, 1020, 2000)  # 20 x 20 m, class 1
    small = shapely.box(1005, 1985, 1010, 1990)  # 5 x 5 m inside it, class 2
    for order in ((big, small), (small, big)):
        codes = [1 if g is big else 2 for g in order]
        path = _vector(tmp_path, order, name=f"o{codes[0]}.gpkg", code=codes)
        src = open_labels(path, class_field="code")
        lab = rasterize_labels(src, CRS, T, 30, 30)
        assert lab[12, 7] == 2  # inside the small box
        assert lab[2, 2] == 1
        assert lab[25, 25] == 0  # outside both: background
        assert (lab == 2).sum() == 25


def test_unlabeled_ignore_and_all_touched(tmp_path):
    path = _vector(tmp_path, [shapely.box(1000.5, 1989.5, 1009.5, 1999.5)])
    src = open_labels(path, unlabeled="ignore")
    assert [c.value for c in src.classes] == [1]
    lab = rasterize_labels(src, CRS, T, 12, 12, unlabeled="ignore")
    assert set(np.unique(lab)) == {1, 255}
    touched = rasterize_labels(src, CRS, T, 12, 12, unlabeled="ignore", all_touched=True)
    assert (touched == 1).sum() > (lab == 1).sum()


def test_lines_need_a_buffer(tmp_path):
    path = _vector(tmp_path, [shapely.LineString([(1000, 1995), (1020, 1995)])])
    with pytest.raises(UsageError, match="--buffer"):
        open_labels(path)
    src = open_labels(path, buffer=2.0)
    lab = rasterize_labels(src, CRS, T, 20, 20)
    assert (lab[3:7, :] == 1).all() and (lab[8:, :] == 0).all()


def test_invalid_geometry_is_repaired_and_counted(tmp_path):
    bowtie = shapely.Polygon([(1000, 2000), (1010, 1990), (1010, 2000), (1000, 1990)])
    assert not bowtie.is_valid
    path = _vector(tmp_path, [bowtie, shapely.box(1012, 1990, 1015, 2000)])
    src = open_labels(path)
    assert (src.invalid_repaired, src.invalid_skipped) == (1, 0)
    lab = rasterize_labels(src, CRS, T, 16, 10)
    assert (lab[:, :10] == 1).sum() > 40  # both triangles of the bow-tie are burnt


def test_vector_errors(tmp_path):
    path = _vector(tmp_path, [shapely.box(1000, 1990, 1010, 2000)], crs=None)
    with pytest.raises(InputError, match="no CRS"):
        open_labels(path)
    multi = tmp_path / "multi.gpkg"
    for layer in ("roads", "fields"):
        gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs=CRS).to_file(multi, layer=layer)
    with pytest.raises(UsageError, match=r"2 layers \(roads, fields\)"):
        open_labels(multi)
    assert open_labels(multi, layer="fields").layer == "fields"
    good = _vector(tmp_path, [shapely.box(1000, 1990, 1010, 2000)], name="g.gpkg", code=[1])
    with pytest.raises(UsageError, match="fields: code"):
        open_labels(good, class_field="kind")
    with pytest.raises(InputError, match="no such file"):
        open_labels(tmp_path / "missing.gpkg")


def test_reprojected_vector_matches_direct_rasterization(everest):
    from rasterio.features import rasterize

    src = open_labels(everest["labels"])
    with rasterio.open(everest["image"]) as ds:
        full = rasterize_labels(src, ds.crs, ds.transform, ds.width, ds.height)
        gdf = gpd.read_file(everest["labels"]).to_crs(ds.crs)
        direct = rasterize(
            ((g, 1) for g in gdf.geometry), (ds.height, ds.width), transform=ds.transform
        )
        win = Window(300, 200, 100, 80)
        part = rasterize_labels(src, ds.crs, window_transform(win, ds.transform), 100, 80)
    assert (full == direct).mean() > 0.999
    assert 0.2 < full.mean() < 0.8
    assert np.array_equal(part, full[200:280, 300:400])


def test_label_raster_is_resampled_nearest_with_nodata_255(nc_landsat):
    src = open_labels(nc_landsat["label_raster"], unlabeled="ignore")
    assert src.kind == "raster" and [c.value for c in src.classes] == list(range(1, 8))
    with rasterio.open(nc_landsat["label_raster"]) as ds:
        raw = ds.read(1)
        # Same lattice, window hanging over the top-left corner: outside -> 255.
        t = window_transform(Window(-10, -5, 50, 40), ds.transform)
        lab = rasterize_labels(src, ds.crs, t, 50, 40, unlabeled="ignore")
        assert (lab[:5] == 255).all() and (lab[:, :10] == 255).all()
        assert np.array_equal(lab[5:, 10:], raw[:35, :40])
        # A coarser grid in another CRS goes through the warper (nearest).
        with rasterio.open(nc_landsat["image"]) as img:
            # Coarse pixel centers fall on the centers of every other fine pixel.
            coarse = from_origin(img.bounds.left - 14.25, img.bounds.top + 14.25, 57.0, 57.0)
            lab2 = rasterize_labels(src, img.crs, coarse, 260, 200, unlabeled="ignore")
    assert set(np.unique(lab2)) <= set(range(1, 8)) | {255}
    assert (lab2[:200, :240] == raw[::2, ::2][:200, :240]).mean() > 0.99
    assert (lab2[:, 246:] == 255).all()  # beyond the label raster's extent
