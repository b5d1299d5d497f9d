"""Object-level scores: one-to-one IoU matching checked by hand and against brute force."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geopsp.evaluate.objects import match, score_objects


def boxes(*items):
    return np.array([shapely.box(*b) for b in items], dtype=object)


def test_hand_computed_case():
    # ref 0 matched exactly (IoU 1); ref 1 overlapped by a shifted box: IoU 50/150 = 1/3,
    # below 0.5, so it is a miss AND a false alarm; ref 2 matched at IoU 80/100 = 0.8.
    ref = boxes((0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10))
    pred = boxes((0, 0, 10, 10), (25, 0, 35, 10), (40, 0, 50, 8), (60, 0, 61, 1))
    r = score_objects(pred, np.ones(4), ref, np.ones(3), {1: "building"}, 0.5)
    s = r.per_class[0]
    assert (s.tp, s.fp, s.fn) == (2, 2, 1)
    assert s.precision == 0.5 and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * 2 / 7)
    assert s.mean_iou == pytest.approx((1.0 + 0.8) / 2)
    low = score_objects(pred, np.ones(4), ref, np.ones(3), {}, 0.3).per_class[0]
    assert low.tp == 3 and low.mean_iou == pytest.approx((1 + 0.8 + 1 / 3) / 3)


def test_one_to_one_takes_the_best_pair_first():
    # One prediction over two overlapping references: only the better one is matched.
    ref = boxes((0, 0, 6, 1), (3, 0, 10, 1))
    pred = boxes((0, 0, 8, 1))
    m = match(pred, ref, 0.5)
    assert m == [(0, 0, pytest.approx(6 / 8))]


def test_classes_are_matched_separately():
    g = boxes((0, 0, 1, 1), (0, 0, 1, 1))
    r = score_objects(g, np.array([1, 2]), g[::-1].copy(), np.array([1, 2]), {}, 0.5)
    assert [(s.value, s.tp) for s in r.per_class] == [(1, 1), (2, 1)]
    assert r.overall.tp == 2 and r.overall.f1 == 1.0
    nothing = score_objects(g[:1], np.array([1]), g[:0], np.array([]), {}, 0.5).per_class[0]
    assert nothing.fp == 1 and math.isnan(nothing.recall)


def brute_force_max_matching(pred, ref, threshold) -> int:
    """Largest one-to-one set of pairs with IoU >= threshold, by trying every assignment."""

    def iou(a, b):
        u = a.union(b).area
        return a.intersection(b).area / u if u else 0.0

    ok = [[iou(p, r) >= threshold for r in ref] for p in pred]
    if len(pred) > len(ref):  # assign each reference a distinct prediction instead
        ok = [list(col) for col in zip(*ok, strict=True)] if ref.size else []
    n, m = len(ok), len(ok[0]) if ok else 0
    best = 0
    for perm in itertools.permutations(range(m), n):
        best = max(best, sum(ok[i][j] for i, j in enumerate(perm)))
    return best


cell = st.tuples(st.integers(0, 3), st.floats(0, 0.6), st.floats(0, 0.6), st.floats(0.3, 1))


def layout(cells):
    """Boxes in distinct cells of a 2x2 grid (so one set never overlaps itself)."""
    seen, out = set(), []
    for k, dx, dy, s in cells:
        if k not in seen:
            seen.add(k)
            x, y = 2 * (k % 2) + dx, 2 * (k // 2) + dy
            out.append(shapely.box(x, y, x + s, y + s))
    return np.array(out, dtype=object)


@settings(max_examples=80, deadline=None)
@given(p=st.lists(cell, max_size=5), r=st.lists(cell, max_size=5),
       threshold=st.sampled_from([0.5, 0.6, 0.75]))  # fmt: skip
def test_greedy_equals_brute_force_optimum(p, r, threshold):
    pred, ref = layout(p), layout(r)
    m = match(pred, ref, threshold)
    assert len({i for i, _, _ in m}) == len({j for _, j, _ in m}) == len(m)  # one-to-one
    assert all(iou >= threshold for _, _, iou in m)
    assert len(m) == brute_force_max_matching(pred, ref, threshold)


def test_evaluate_objects_cli_on_spacenet_buildings(atlanta, tmp_path):
    """Rasterized reference footprints, vectorized again, match the footprints one to one."""
    import rasterio
    from robustness.conftest import invoke
    from vectorize.conftest import write_classes

    from geopsp.labels.rasterize import open_labels, rasterize_labels

    with rasterio.open(atlanta["image"]) as src:
        source = open_labels(str(atlanta["labels"]))
        arr = rasterize_labels(source, src.crs, src.transform, src.width, src.height)
        crs, tr = src.crs, src.transform
    classes = [{"value": 0, "name": "background"}, {"value": 1, "name": "building"}]
    pred = write_classes(tmp_path / "b.tif", arr, crs=crs.to_wkt(), classes=classes,
                         res=tr.a, origin=(tr.c, tr.f))  # fmt: skip
    res = invoke("evaluate", pred, "-r", atlanta["labels"], "--objects", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["overall_accuracy"] == pytest.approx(1.0, abs=0.01)  # pixel scores too
    obj = data["objects"]["per_class"][0]
    assert obj["name"] == "building" and obj["reference"] == source.feature_count
    assert obj["precision"] > 0.9 and obj["recall"] > 0.9 and obj["mean_iou"] > 0.8
    # The same polygons as a vector prediction: only the object scores.
    poly = tmp_path / "b.gpkg"
    assert invoke("vectorize", pred, "-o", poly, "--classes", "building").exit_code == 0
    res = invoke("evaluate", poly, "-r", atlanta["labels"], "--objects", "--iou", "0.5")
    assert res.exit_code == 0, res.output
    assert "Objects (one-to-one matches at IoU >= 0.5)" in res.output
    assert "Overall accuracy" not in res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("building"))
    assert line.split()[2:5] == [str(obj["predicted"]), str(obj["reference"]), str(obj["tp"])]


def test_reference_objects_outside_a_raster_prediction_are_left_out(tmp_path):
    from robustness.conftest import write_vector
    from vectorize.conftest import write_classes

    from geopsp.evaluate.objects import evaluate_objects

    arr = np.zeros((20, 20), dtype=np.uint8)
    arr[4:10, 4:10] = 1  # 3 x 3 m at 0.5 m pixels
    x0, y0 = 500000.0, 4000000.0
    table = [{"value": 0, "name": "background"}, {"value": 1, "name": "building"}]
    pred = write_classes(tmp_path / "p.tif", arr, origin=(x0, y0), classes=table)
    inside = shapely.box(x0 + 2, y0 - 5, x0 + 5, y0 - 2)  # the predicted square exactly
    outside = shapely.box(x0 + 50, y0 - 5, x0 + 53, y0 - 2)  # beyond the raster's 10 m
    ref = write_vector(tmp_path / "r.gpkg", [inside, outside], crs="EPSG:32616")
    s = evaluate_objects(str(pred), str(ref)).per_class[0]
    assert (s.predicted, s.reference, s.tp) == (1, 1, 1) and s.mean_iou == pytest.approx(1.0)
    vec = tmp_path / "p.gpkg"
    write_vector(vec, [inside], crs="EPSG:32616")
    s = evaluate_objects(str(vec), str(ref)).per_class[0]  # polygons: no extent to clip to
    assert (s.predicted, s.reference, s.tp) == (1, 2, 1)


def test_buffer_widens_line_references_but_not_polygons(tmp_path):
    """Object scores, like pixel scores, buffer only line and point references."""
    import geopandas as gpd
    from shapely.geometry import LineString, box

    from geopsp.evaluate.objects import evaluate_objects

    crs = "EPSG:32633"
    building = box(500000, 4000000, 500100, 4000100)
    road = LineString([(500300, 4000050), (500500, 4000050)])
    ref = gpd.GeoDataFrame({"cls": [1, 2]}, geometry=[building, road], crs=crs)
    ref.to_file(tmp_path / "ref.gpkg")
    pred = gpd.GeoDataFrame({"class": [1, 2]}, geometry=[building, road.buffer(10)], crs=crs)
    pred.to_file(tmp_path / "pred.gpkg")
    res = evaluate_objects(str(tmp_path / "pred.gpkg"), str(tmp_path / "ref.gpkg"),
                           class_field="cls", buffer=10.0, iou=0.95)  # fmt: skip
    # A buffered building (IoU 0.70 with itself) would not match at 0.95.
    assert res.overall.to_dict()["tp"] == 2
