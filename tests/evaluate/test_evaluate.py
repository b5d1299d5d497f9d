"""Accuracy assessment: metrics against hand-computed values, references, streaming, output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geopsp.core.class_raster import describe_class_band
from geopsp.core.classes import from_dicts
from geopsp.evaluate.run import EvaluateOptions, evaluate, plot_confusion

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 4000000.0, 10.0, 10.0)
TABLE = [
    {"value": 0, "name": "background", "color": [0, 0, 0]},
    {"value": 1, "name": "water", "color": [0, 0, 255]},
    {"value": 2, "name": "forest", "color": [0, 128, 0]},
    {"value": 3, "name": "urban", "color": [200, 0, 0]},
]


def write_raster(path, data, classes=TABLE, nodata=255, crs=CRS, transform=TRANSFORM):
    """A one-band uint8 class raster; ``classes`` goes into the GEOPSP_CLASSES tag."""
    data = np.asarray(data, dtype=np.uint8)
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
        dtype="uint8", crs=crs, transform=transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data, 1)
        if classes is not None:  # as geopsp classify writes it: tag, color table, description
            describe_class_band(dst, from_dicts(classes))
    return str(path)


# Class 3 (urban) is in the table and the reference but never predicted; 255 marks nodata in
# the prediction (row 2, last column) and ignore in the reference (row 2, first column).
PRED = [
    [0, 0, 1, 1, 2, 2],
    [0, 0, 1, 1, 2, 2],
    [0, 0, 1, 1, 2, 255],
    [1, 1, 1, 1, 2, 2],
]
REF = [
    [0, 0, 1, 1, 2, 2],
    [0, 1, 1, 1, 3, 2],
    [255, 0, 1, 2, 3, 3],
    [1, 1, 1, 1, 2, 2],
]
# Counted by hand from the two grids above (rows: reference, columns: prediction).
EXPECTED = [
    [4, 0, 0, 0],
    [1, 9, 0, 0],
    [0, 1, 5, 0],
    [0, 0, 2, 0],
]


@pytest.fixture
def small_case(tmp_path):
    return write_raster(tmp_path / "pred.tif", PRED), write_raster(tmp_path / "ref.tif", REF, None)


def test_metrics_match_hand_computed_matrix(small_case):
    pred, ref = small_case
    r = evaluate(pred, ref)
    assert r.labels == [0, 1, 2, 3]
    assert r.names == ["background", "water", "forest", "urban"]
    assert r.matrix.tolist() == EXPECTED
    assert r.pixels == 22  # 24 pixels minus one nodata in each map
    assert r.overall_accuracy == pytest.approx(18 / 22)
    # kappa = (po - pe) / (1 - pe), pe = sum(ref_n * pred_n) / n^2 = (4*5 + 10*10 + 6*7 + 2*0) / 22^2
    pe = 162 / 484
    assert r.kappa == pytest.approx((18 / 22 - pe) / (1 - pe))
    assert r.kappa == pytest.approx(234 / 322)
    iou = [4 / 5, 9 / 11, 5 / 8, 0.0]
    np.testing.assert_allclose(r.iou, iou)
    assert r.miou == pytest.approx(sum(iou) / 4)
    assert r.fwiou == pytest.approx((4 * iou[0] + 10 * iou[1] + 6 * iou[2]) / 22)
    np.testing.assert_allclose(r.precision[:3], [4 / 5, 9 / 10, 5 / 7])
    assert np.isnan(r.precision[3])  # urban is never predicted
    np.testing.assert_allclose(r.recall, [1.0, 9 / 10, 5 / 6, 0.0])
    np.testing.assert_allclose(r.f1, [8 / 9, 18 / 20, 10 / 13, 0.0])
    assert r.support.tolist() == [4, 10, 6, 2]
    d = r.to_dict()
    urban = d["per_class"][3]
    assert urban == {"value": 3, "name": "urban", "precision": None, "recall": 0.0, "f1": 0.0,
                     "iou": 0.0, "support": 2}  # fmt: skip
    json.dumps(d, allow_nan=False)  # strict JSON: no NaN anywhere


def test_unlabeled_ignore_drops_reference_zero(small_case):
    pred, ref = small_case
    r = evaluate(pred, ref, EvaluateOptions(unlabeled="ignore"))
    # A label raster's 0 means "unlabeled": with ignore, the background row disappears.
    expected = np.array(EXPECTED)
    expected[0] = 0
    assert r.matrix.tolist() == expected.tolist()


def test_boundary_f1_by_hand(tmp_path):
    # Prediction edge between columns 4|5; reference edge between columns 6|7. Row 0 is
    # nodata in the prediction: it must neither count nor create boundaries.
    pred = np.where(np.arange(10) < 5, 1, 2)[None, :].repeat(5, axis=0)
    ref = np.where(np.arange(10) < 7, 1, 2)[None, :].repeat(5, axis=0)
    pred[0] = 255
    p = write_raster(tmp_path / "p.tif", pred)
    q = write_raster(tmp_path / "r.tif", ref, None)
    # Boundary pixels: prediction columns 4 and 5, reference columns 6 and 7 (4 rows each).
    # Tolerance 2: every one is within 2 px of the other map's boundary.
    b = evaluate(p, q, EvaluateOptions(boundary_tolerance=2)).boundary
    assert (b.pred, b.pred_matched, b.ref, b.ref_matched) == (8, 8, 8, 8)
    assert b.f1 == 1.0
    # Tolerance 1: only column 5 (1 px from 6) and column 6 (1 px from 5) match.
    r1 = evaluate(p, q, EvaluateOptions(boundary_tolerance=1))
    assert (r1.boundary.pred_matched, r1.boundary.ref_matched) == (4, 4)
    assert r1.boundary_f1 == pytest.approx(0.5)
    assert evaluate(p, q, EvaluateOptions(boundary_tolerance=0)).boundary_f1 == 0.0
    # Identical maps: perfect boundaries; no boundary at all: undefined (null in JSON).
    assert evaluate(q, q).boundary_f1 == 1.0
    flat = write_raster(tmp_path / "flat.tif", np.ones((5, 10)))
    res = evaluate(flat, flat)
    assert np.isnan(res.boundary_f1) and res.to_dict()["boundary_f1"] is None


def test_streaming_blocks_equal_one_block(tmp_path):
    rng = np.random.default_rng(3)
    # Blocky maps (8x8 cells) with noise and nodata, so blocks cut through many boundaries.
    cells = rng.integers(0, 4, size=(40, 34))
    ref = np.kron(cells, np.ones((8, 8), dtype=int))[:301, :263]
    pred = ref.copy()
    flip = rng.random(pred.shape) < 0.1
    pred[flip] = rng.integers(0, 4, size=flip.sum())
    pred[rng.random(pred.shape) < 0.02] = 255
    ref[rng.random(ref.shape) < 0.02] = 255
    p = write_raster(tmp_path / "p.tif", pred)
    q = write_raster(tmp_path / "r.tif", ref, None)
    for tol in (2, 3.5):
        whole = evaluate(p, q, EvaluateOptions(boundary_tolerance=tol, block_size=4096))
        small = evaluate(p, q, EvaluateOptions(boundary_tolerance=tol, block_size=37))
        assert small.matrix.tolist() == whole.matrix.tolist()
        assert small.boundary == whole.boundary
        assert 0 < whole.boundary_f1 < 1
    assert whole.matrix.sum() == ((pred != 255) & (ref != 255)).sum()


def test_vector_and_raster_references_agree(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    # Polygons on pixel edges (10 m pixels, origin 500000/4000000) and the same labels as a
    # raster; the prediction is a shifted copy so the scores are not trivially perfect.
    x0, y0 = 500000.0, 4000000.0

    def cell_box(c0, r0, c1, r1):
        return box(x0 + 10 * c0, y0 - 10 * r1, x0 + 10 * c1, y0 - 10 * r0)

    polys = [(cell_box(2, 2, 12, 10), "water"), (cell_box(14, 4, 28, 18), "forest"),
             (cell_box(5, 20, 25, 28), "urban")]  # fmt: skip
    gdf = gpd.GeoDataFrame(
        {"landcover": [n for _, n in polys]}, geometry=[g for g, _ in polys], crs=CRS
    )
    gdf.to_file(tmp_path / "ref.gpkg", layer="labels", driver="GPKG")
    labels = np.zeros((30, 32), dtype=np.uint8)
    labels[2:10, 2:12] = 1
    labels[4:18, 14:28] = 2
    labels[20:28, 5:25] = 3
    write_raster(tmp_path / "ref.tif", labels, None, nodata=None)
    pred = np.roll(labels, 1, axis=1)
    pred[0:3, :] = 255
    p = write_raster(tmp_path / "pred.tif", pred)

    vec = evaluate(p, str(tmp_path / "ref.gpkg"), EvaluateOptions(class_field="landcover"))
    ras = evaluate(p, str(tmp_path / "ref.tif"))
    assert vec.matrix.tolist() == ras.matrix.tolist()
    assert vec.boundary == ras.boundary
    assert vec.to_dict() == ras.to_dict()
    assert vec.matrix.sum() == 27 * 32
    assert 0.8 < vec.overall_accuracy < 1.0


GLACIER_TABLE = [{"value": 0, "name": "background", "color": [0, 0, 0]},
                 {"value": 1, "name": "glacier", "color": [255, 255, 255]}]  # fmt: skip


def glacier_prediction(everest) -> tuple[np.ndarray, dict]:
    """The Everest glacier outlines (EPSG:4326) burnt on the UTM image's grid: a perfect
    prediction, and the grid as ``write_raster`` keywords."""
    import geopandas as gpd
    from rasterio.features import rasterize

    with rasterio.open(everest["image"]) as img:
        crs, transform, shape = img.crs, img.transform, (img.height, img.width)
    outlines = gpd.read_file(everest["labels"]).to_crs(crs)
    pred = rasterize(((g, 1) for g in outlines.geometry), out_shape=shape, transform=transform,
                     dtype="uint8")  # fmt: skip
    return pred, {"crs": crs, "transform": transform}


def test_reference_in_another_crs(tmp_path, everest):
    """Glacier outlines in EPSG:4326 scored against a UTM prediction built from them."""
    pred, grid = glacier_prediction(everest)
    shape = pred.shape
    p = write_raster(tmp_path / "glacier.tif", pred, GLACIER_TABLE, **grid)
    crs, transform = grid["crs"], grid["transform"]
    r = evaluate(p, str(everest["labels"]), EvaluateOptions(block_size=256))
    assert r.labels == [0, 1] and r.names == ["background", "glacier"]
    assert r.pixels == shape[0] * shape[1]
    assert r.support[1] > 10000  # the glaciers really are there
    assert r.overall_accuracy > 0.995
    assert r.iou[1] > 0.98 and r.kappa > 0.98 and r.boundary_f1 > 0.95
    # --all-touched grows the reference glaciers: every predicted glacier pixel stays correct
    # (precision 1) while some reference pixels are now missed (recall < 1).
    t = evaluate(p, str(everest["labels"]), EvaluateOptions(all_touched=True))
    assert t.precision[1] == 1.0 and 0.9 < t.recall[1] < 1.0
    # The same labels as a raster in EPSG:4326 at another resolution: resampled nearest onto
    # the UTM grid, so only the pixels along the glacier edges may disagree.
    from rasterio.warp import calculate_default_transform, reproject

    dst_t, w, h = calculate_default_transform(crs, "EPSG:4326", shape[1], shape[0],
                                              *rasterio.transform.array_bounds(*shape, transform))  # fmt: skip
    geo = np.full((h, w), 255, dtype=np.uint8)
    reproject(pred, geo, src_transform=transform, src_crs=crs, dst_transform=dst_t,
              dst_crs="EPSG:4326", dst_nodata=255)  # fmt: skip
    q = write_raster(tmp_path / "ref4326.tif", geo, None, crs="EPSG:4326", transform=dst_t)
    g = evaluate(p, q)
    assert g.pixels > 0.999 * shape[0] * shape[1]
    assert g.overall_accuracy > 0.99 and g.iou[1] > 0.99 and g.boundary_f1 > 0.95


def test_prediction_without_class_table_warns_only_where_values_are_guessed(
    tmp_path, everest, caplog
):
    """A binary map without its class table (e.g. clipped by another tool) scored against
    polygons: every polygon is 1, nothing to warn about; text classes numbered 1..N by name
    could differ from the map's values, so that warns."""
    import geopandas as gpd

    pred, grid = glacier_prediction(everest)
    p = write_raster(tmp_path / "plain.tif", pred, None, **grid)
    with caplog.at_level("WARNING", logger="geopsp.evaluate.run"):
        r = evaluate(p, str(everest["labels"]))
    assert r.iou[1] > 0.98 and not caplog.records
    outlines = gpd.read_file(everest["labels"])
    outlines["kind"] = np.where(outlines["Area"] > outlines["Area"].median(), "large", "small")
    outlines.to_file(tmp_path / "kinds.gpkg", driver="GPKG")
    with caplog.at_level("WARNING", logger="geopsp.evaluate.run"):
        evaluate(p, str(tmp_path / "kinds.gpkg"), EvaluateOptions(class_field="kind"))
    assert any("has no class table" in m for m in caplog.messages)


def test_no_class_table_uses_values_seen(tmp_path):
    p = write_raster(tmp_path / "p.tif", [[1, 1, 5], [5, 5, 1]], None)
    q = write_raster(tmp_path / "q.tif", [[1, 5, 5], [5, 9, 1]], None)
    r = evaluate(p, q, EvaluateOptions(unlabeled="ignore"))
    assert r.labels == [1, 5, 9]
    assert r.matrix.tolist() == [[2, 0, 0], [1, 2, 0], [0, 1, 0]]


def test_plot_writes_png(small_case, tmp_path):
    import matplotlib.image as mpimg

    r = evaluate(*small_case)
    out = tmp_path / "cm.png"
    plot_confusion(r, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    assert img.shape[0] > 200 and img.shape[1] > 200
    from geopsp.core.errors import OutputError

    with pytest.raises(OutputError, match="already exists"):
        plot_confusion(r, out)
    plot_confusion(r, out, overwrite=True)
    assert [p.name for p in tmp_path.iterdir() if "cm" in p.name] == ["cm.png"]


def test_uint8_fast_path_matches_general_confusion_matrix():
    from geopsp.evaluate.metrics import confusion_matrix

    rng = np.random.default_rng(1)
    p = rng.integers(0, 256, (40, 50)).astype(np.uint8)
    r = rng.integers(0, 9, (40, 50)).astype(np.uint8)
    for k, ignore in ((1, 255), (7, 255), (7, 3), (256, 255)):
        fast = confusion_matrix(p, r, k, ignore)
        slow = confusion_matrix(p.astype(np.int32), r.astype(np.int32), k, ignore)
        assert fast.shape == (k, k) and fast.tolist() == slow.tolist()


def test_prediction_nodata_value_and_bad_inputs(tmp_path):
    from geopsp.core.errors import InputError

    # nodata 9 (not 255): those pixels never count, and 9 never becomes a class.
    p = write_raster(tmp_path / "p.tif", [[1, 9, 2], [2, 9, 1]], None, nodata=9)
    q = write_raster(tmp_path / "q.tif", [[1, 1, 2], [2, 2, 2]], None)
    r = evaluate(p, q)
    assert r.labels == [1, 2] and r.matrix.tolist() == [[1, 0], [1, 2]]
    # Labels only where the prediction is nodata: the maps overlap but share no valid pixel.
    holes = write_raster(tmp_path / "h.tif", [[255, 1, 255], [255, 2, 255]], None)
    with pytest.raises(InputError, match="no pixel is valid"):
        evaluate(p, holes)
    with rasterio.open(
        tmp_path / "f.tif", "w", driver="GTiff", width=3, height=2, count=1, dtype="float32",
        crs=CRS, transform=TRANSFORM,
    ) as dst:  # fmt: skip
        dst.write(np.ones((1, 2, 3), dtype="float32"))
    with pytest.raises(InputError, match="integer class values"):
        evaluate(str(tmp_path / "f.tif"), q)


def test_buffer_widens_lines_but_not_polygons(tmp_path):
    import geopandas as gpd
    from shapely.geometry import LineString, box

    x0, y0 = 500000.0, 4000000.0
    water = box(x0 + 20, y0 - 100, x0 + 120, y0 - 20)  # pixel edges: rows 2..9, columns 2..11
    road = LineString([(x0 + 55, y0 - 205), (x0 + 245, y0 - 205)])  # centres of row 20, cols 5..24
    gdf = gpd.GeoDataFrame({"landcover": ["water", "forest"]}, geometry=[water, road], crs=CRS)
    gdf.to_file(tmp_path / "ref.gpkg", layer="labels", driver="GPKG")
    truth = np.zeros((30, 32), dtype=np.uint8)
    truth[2:10, 2:12] = 1
    truth[20, 5:25] = 2  # the road buffered by 8 m: one row of 10 m pixels
    pred = write_raster(tmp_path / "pred.tif", truth)

    r = evaluate(
        pred, str(tmp_path / "ref.gpkg"), EvaluateOptions(class_field="landcover", buffer=8.0)
    )
    assert r.matrix.sum() == 30 * 32
    assert r.overall_accuracy == 1.0  # a buffered polygon would add a ring of water pixels
