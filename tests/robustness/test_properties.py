"""Property tests: label rasterization of random pixel-aligned boxes and of random polygons
with arbitrary vertices, and the accuracy metrics. (Window grids and blend weights have
theirs in tests/test_tiling.py.)"""

from __future__ import annotations

import numpy as np
from affine import Affine
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shapely.geometry import Polygon, box

from geopsp.core.classes import ClassInfo
from geopsp.evaluate.metrics import ConfusionMatrix, confusion_matrix, scores
from geopsp.labels.rasterize import LabelSource, rasterize_labels

from .conftest import CRS, RES, X0, Y0

N = 24  # grid edge in pixels
NORTH_UP = Affine(RES, 0, X0, 0, -RES, Y0)
# The same pixels with rows and columns swapped (a mirrored grid, as some GIS exports write).
TRANSPOSED = Affine(0, RES, X0, -RES, 0, Y0)

# (col0, row0, col1, row1, value): a box on pixel edges, possibly beyond the grid.
boxes = st.lists(
    st.tuples(st.integers(-4, N), st.integers(-4, N), st.integers(1, 12), st.integers(1, 12),
              st.integers(1, 5)).map(lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3], t[4])),
    min_size=1, max_size=6,
)  # fmt: skip
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def source(features) -> LabelSource:
    """A vector label source in the drawing order :func:`geopsp.labels.rasterize.open_labels` uses."""
    geoms = np.array([box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)
                      for c0, r0, c1, r1, _ in features], dtype=object)  # fmt: skip
    values = np.array([f[4] for f in features], dtype=np.uint8)
    area = np.array([g.area for g in geoms])
    order = np.lexsort((np.arange(len(geoms)), values, -area))  # big first: smaller on top
    classes = [ClassInfo(v, f"c{v}", (v, v, v)) for v in range(6)]
    return LabelSource("vector", "memory", classes, crs=CRS, geometries=geoms[order],
                       values=values[order])  # fmt: skip


def expected(features, fill: int) -> np.ndarray:
    """Paint the boxes in numpy by the overlap rule: bigger first, then class value, then
    file order, so the smallest box ends on top."""
    out = np.full((N, N), fill, dtype=np.uint8)
    order = sorted(range(len(features)), key=lambda i: (
        -(features[i][2] - features[i][0]) * (features[i][3] - features[i][1]),
        features[i][4], i))  # fmt: skip
    for i in order:
        c0, r0, c1, r1, v = features[i]
        out[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = v
    return out


@SETTINGS
@given(features=boxes, unlabeled=st.sampled_from(["background", "ignore"]))
def test_pixel_aligned_boxes_burn_exactly(features, unlabeled):
    fill = 0 if unlabeled == "background" else 255
    got = rasterize_labels(source(features), CRS, NORTH_UP, N, N, unlabeled=unlabeled)
    assert np.array_equal(got, expected(features, fill))


@SETTINGS
@given(features=boxes, split=st.tuples(st.integers(1, N - 1), st.integers(1, N - 1)))
def test_chips_conserve_pixel_counts(features, split):
    """Four windows of any split give exactly the pixels (and counts) of the whole grid."""
    src = source(features)
    whole = rasterize_labels(src, CRS, NORTH_UP, N, N)
    c, r = split
    parts = np.zeros_like(whole)
    for c0, c1 in ((0, c), (c, N)):
        for r0, r1 in ((0, r), (r, N)):
            tr = NORTH_UP * Affine.translation(c0, r0)
            parts[r0:r1, c0:c1] = rasterize_labels(src, CRS, tr, c1 - c0, r1 - r0)
    assert np.array_equal(parts, whole)
    assert np.array_equal(np.bincount(parts.ravel(), minlength=256),
                          np.bincount(whole.ravel(), minlength=256))  # fmt: skip


@SETTINGS
@given(features=boxes)
def test_transposed_grid_gives_transposed_labels(features):
    """Burning on a non-north-up grid follows its geotransform, not the array layout."""
    src = source(features)
    north = rasterize_labels(src, CRS, NORTH_UP, N, N)
    assert np.array_equal(rasterize_labels(src, CRS, TRANSPOSED, N, N), north.T)


# A star-shaped polygon: vertices at increasing angles around a centre, at random radii
# (in pixels), so it is simple; its edges cross pixels at arbitrary places.
stars = st.tuples(
    st.floats(-2, N + 2), st.floats(-2, N + 2), st.floats(0, 6.28),
    st.lists(st.floats(0.5, 12), min_size=3, max_size=12),
)  # fmt: skip


def star(cx, cy, turn, radii) -> Polygon:
    angles = turn + 2 * np.pi * np.arange(len(radii)) / len(radii)
    xs = X0 + (cx + np.array(radii) * np.cos(angles)) * RES
    ys = Y0 - (cy + np.array(radii) * np.sin(angles)) * RES
    return Polygon(zip(xs, ys, strict=True))


def pixel_centres():
    cols, rows = np.meshgrid(np.arange(N) + 0.5, np.arange(N) + 0.5)
    return X0 + cols * RES, Y0 - rows * RES


@SETTINGS
@given(shape=stars)
def test_random_polygon_burns_exactly_the_pixel_centres_it_contains(shape):
    """The centre rule, checked against shapely's point-in-polygon for every pixel; with
    --all-touched every burnt pixel touches the polygon and the centre pixels are kept."""
    import shapely

    poly = star(*shape)
    assume(poly.is_valid and poly.area > RES * RES)
    classes = [ClassInfo(0, "c0", (0, 0, 0)), ClassInfo(1, "c1", (1, 1, 1))]
    src = LabelSource("vector", "memory", classes, crs=CRS, geometries=np.array([poly]),
                      values=np.array([1], dtype=np.uint8))  # fmt: skip
    x, y = pixel_centres()
    inside = shapely.contains_xy(poly, x, y)
    on_edge = shapely.distance(poly.boundary, shapely.points(x, y)) < 1e-6 * RES
    got = rasterize_labels(src, CRS, NORTH_UP, N, N)
    assert np.array_equal(got[~on_edge] == 1, inside[~on_edge])
    touched = rasterize_labels(src, CRS, NORTH_UP, N, N, all_touched=True) == 1
    assert (touched | on_edge)[inside].all()
    cells = shapely.box(x - RES / 2, y - RES / 2, x + RES / 2, y + RES / 2)
    assert (shapely.distance(poly, cells)[touched] < 1e-6 * RES).all()


maps = st.integers(1, 40).flatmap(
    lambda n: st.tuples(arrays(np.uint8, n, elements=st.integers(0, 4)),
                        arrays(np.uint8, n, elements=st.sampled_from([0, 1, 2, 3, 4, 255])))
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(m=maps)
def test_identical_maps_score_one(m):
    a, _ = m
    s = scores(confusion_matrix(a, a, 5))
    present = np.bincount(a, minlength=5) > 0
    assert np.all(s["iou"][present] == 1.0) and np.all(np.isnan(s["iou"][~present]))
    assert s["pixel_accuracy"] == 1.0 and s["miou"] == 1.0 and s["kappa"] == 1.0
    assert np.all(s["f1"][present] == 1.0)


@settings(max_examples=200, deadline=None)
@given(m=maps, k=st.integers(1, 6))
def test_confusion_total_is_the_counted_pixels(m, k):
    pred, ref = m
    cm = confusion_matrix(pred, ref, k)
    counted = (pred < k) & (ref < k)  # 255 (ignore) and values beyond the table never count
    assert cm.sum() == counted.sum()
    # The uint8 fast path equals the general path, and the matrix is the transposed one
    # when prediction and reference swap.
    assert np.array_equal(cm, confusion_matrix(pred.astype(np.int64), ref.astype(np.int64), k))
    assert np.array_equal(confusion_matrix(ref, pred, k), cm.T)


@settings(max_examples=100, deadline=None)
@given(m=maps, cut=st.integers(0, 40))
def test_accumulated_matrix_equals_one_pass(m, cut):
    pred, ref = m
    acc = ConfusionMatrix(5)
    acc.update(pred[:cut], ref[:cut])
    acc.update(pred[cut:], ref[cut:])
    assert np.array_equal(acc.matrix, confusion_matrix(pred, ref, 5))
    s, t = scores(acc.matrix), scores(acc.matrix.T)  # symmetric scores do not care which is which
    for key in ("pixel_accuracy", "kappa", "miou"):
        assert np.isclose(s[key], t[key], equal_nan=True)
