"""Shaping: shared edges survive simplification, holes, regularized building outlines."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geopsp.vectorize.run import VectorizeOptions, vectorize
from geopsp.vectorize.shape import dominant_angle, fill_holes, inside_filled, regularize_polygon

from .conftest import write_classes


def landcover(shape=(96, 128), seed=0) -> np.ndarray:
    """Irregular patches of 3 classes covering every pixel (a coverage with shared edges)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 3, (shape[0] // 8, shape[1] // 8)).astype(np.uint8)
    a = np.kron(small, np.ones((8, 8), dtype=np.uint8))
    for _ in range(60):  # staircase edges for the simplification to remove
        r, c = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
        a[r : r + rng.integers(1, 4), c : c + rng.integers(1, 4)] = rng.integers(0, 3)
    return a


def test_simplify_keeps_shared_edges(tmp_path):
    src = write_classes(tmp_path / "lc.tif", landcover(), nodata=None)
    plain, simple = tmp_path / "plain.gpkg", tmp_path / "simple.gpkg"
    vectorize(str(src), str(plain), VectorizeOptions(block_size=32))
    vectorize(str(src), str(simple), VectorizeOptions(block_size=32, simplify=1.0))
    a, b = gpd.read_file(plain), gpd.read_file(simple)
    assert len(a) == len(b)
    vertices = lambda g: shapely.get_num_coordinates(g.geometry.values).sum()  # noqa: E731
    assert vertices(b) < vertices(a)
    total = 96 * 128 * 0.25
    union = shapely.union_all(b.geometry.values)
    assert b.area.sum() == pytest.approx(total, rel=1e-9)  # no overlap ...
    assert union.area == pytest.approx(total, rel=1e-9)  # ... and no gap
    assert b.geometry.is_valid.all()


def test_fill_holes_drops_what_they_covered():
    outer = shapely.Polygon(
        [(0, 0), (10, 0), (10, 10), (0, 10)],
        [[(1, 1), (2, 1), (2, 2), (1, 2)], [(4, 4), (8, 4), (8, 8), (4, 8)]],
    )
    island = shapely.box(1, 1, 2, 2)
    lake = shapely.box(4, 4, 8, 8)
    geoms = np.array([outer, island, lake], dtype=object)
    filled = fill_holes(geoms, 5.0)
    assert len(filled[0].interiors) == 1 and filled[0].area == 100 - 16
    assert list(inside_filled(geoms, filled)) == [False, True, False]


def rotated_building(angle_deg: float, size=(60, 60)) -> np.ndarray:
    """An L-shaped building rotated by ``angle_deg``, rasterized (staircase edges)."""
    from rasterio.features import rasterize
    from shapely import affinity

    L = shapely.Polygon([(15, 15), (45, 15), (45, 30), (30, 30), (30, 45), (15, 45)])
    poly = affinity.rotate(L, angle_deg, origin=(30, 30))
    return rasterize([(poly, 1)], out_shape=size, dtype="uint8"), poly


@pytest.mark.parametrize("angle", [0.0, 17.0, 33.0])
def test_regularize_gives_right_angles_along_the_building(angle):
    from geopsp.vectorize.polygonize import polygonize_array

    arr, truth = rotated_building(angle)
    feat = next(f for f in polygonize_array(arr) if f.value == 1)
    reg = regularize_polygon(feat.geometry, tolerance=1.5)
    xy = np.asarray(reg.exterior.coords)
    d = np.diff(xy, axis=0)
    cos = [abs(np.dot(u, v)) / np.linalg.norm(u) / np.linalg.norm(v)
           for u, v in zip(d, np.roll(d, -1, axis=0), strict=True)]  # fmt: skip
    assert max(cos) < 1e-6  # every corner is a right angle
    assert len(xy) - 1 == 6  # the L keeps its six corners
    assert math.degrees(dominant_angle(reg)) == pytest.approx(angle % 90, abs=2.5)
    iou = reg.intersection(truth).area / reg.union(truth).area
    assert iou > 0.9


def test_regularize_option_end_to_end(tmp_path):
    arr, _ = rotated_building(25.0)
    src = write_classes(tmp_path / "b.tif", arr)
    out = tmp_path / "b.geojson"
    vectorize(str(src), str(out), VectorizeOptions(classes="building", regularize=True))
    gdf = gpd.read_file(out)
    assert len(gdf) == 1 and gdf.geometry.is_valid.all()
    assert gdf["area"].iloc[0] == pytest.approx(gdf.geometry.area.iloc[0])
