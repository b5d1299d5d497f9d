"""Hostile label vectors against export-chips and evaluate: a correct result (label chips equal
to a direct rasterization of what the features mean) or one clear error line, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from shapely import force_3d, make_valid
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from .conftest import (
    CRS,
    SIZE,
    X0,
    Y0,
    assert_clean_error,
    invoke,
    label_boxes,
    leftovers,
    transform,
    write_vector,
)

(G1, V1), (G2, V2) = label_boxes()
BOWTIE = Polygon([(X0 + 80, Y0 - 80), (X0 + 400, Y0 - 240), (X0 + 400, Y0 - 80), (X0 + 80, Y0 - 240)])  # fmt: skip
HOLED = Polygon(G1.exterior.coords, [box(X0 + 150, Y0 - 200, X0 + 300, Y0 - 120).exterior.coords])
EDGE = box(X0 - 300, Y0 - 300, X0 + 200, Y0 + 200)  # half outside the raster's top-left corner
LINE = LineString([(X0, Y0 - 300), (X0 + 600, Y0 - 300)])
POINT = Point(X0 + 100, Y0 - 500)


def _geojson_mixed_types(path: Path) -> Path:
    """GeoJSON whose class property is an integer in one feature and text in the other."""
    import geopandas as gpd

    geoms = gpd.GeoSeries([G1, G2], crs=CRS).to_crs(4326)
    feats = [{"type": "Feature", "properties": {"cls": v},
              "geometry": json.loads(gpd.GeoSeries([g]).to_json())["features"][0]["geometry"]}
             for g, v in zip(geoms, [1, "forest"], strict=True)]  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def _multilayer(path: Path) -> Path:
    write_vector(path, [G1], [1], layer="roads")
    return write_vector(path, [G2], [2], layer="fields")


# name -> (writer(path) -> path, extra options, expected features [(geometry, value)] or error)
CASES = {
    "empty-layer": (lambda p: write_vector(p, [], []), (), (1, "no features")),
    "all-geometries-empty": (lambda p: write_vector(p, [Polygon(), Polygon()], [1, 2]), (),
                             (1, "no usable geometries")),
    "some-geometries-empty": (lambda p: write_vector(p, [G1, Polygon(), G2], [1, 1, 2]), (),
                              [(G1, 1), (G2, 2)]),
    "self-intersecting": (lambda p: write_vector(p, [BOWTIE, G2], [1, 2]), (),
                          [(make_valid(BOWTIE), 1), (G2, 2)]),
    "multipolygon-with-holes": (lambda p: write_vector(p, [MultiPolygon([HOLED, G2])], [1]), (),
                                [(HOLED, 1), (G2, 1)]),
    "3d-z-coordinates": (lambda p: write_vector(p, [force_3d(G1, 5.0), force_3d(G2, 9.0)], [1, 2]),
                         (), [(G1, 1), (G2, 2)]),
    "mixed-geometry-types": (lambda p: write_vector(p, [G1, LINE, POINT], [1, 2, 2]), (),
                             (2, "LineString, Point", "--buffer")),
    "mixed-geometry-types-buffered": (lambda p: write_vector(p, [G1, LINE, POINT], [1, 2, 2]),
                                      ("--buffer", "15"),
                                      [(G1.buffer(15), 1), (LINE.buffer(15), 2),
                                       (POINT.buffer(15), 2)]),
    "null-class-values": (lambda p: write_vector(p, [G1, G2, box(X0, Y0 - 60, X0 + 60, Y0)],
                                                 [1, 2, None]), (), [(G1, 1), (G2, 2)]),
    "mixed-type-class-values": (_geojson_mixed_types, (), [(G1, 1), (G2, 2)]),
    "field-name-case": (lambda p: write_vector(p, [G1, G2], [1, 2], field="CLS"), (),
                        [(G1, 1), (G2, 2)]),
    "layer-without-crs": (lambda p: write_vector(p, [G1, G2], [1, 2], crs=None), (),
                          (1, "no CRS", "-a_srs")),
    "labels-crossing-raster-edge": (lambda p: write_vector(p, [EDGE, G2], [1, 2]), (),
                                    [(EDGE, 1), (G2, 2)]),
    "other-crs": (lambda p: write_vector(p, [G1, G2], [1, 2]).parent, (), None),
    "multi-layer-without-layer": (_multilayer, (), (2, "2 layers", "--layer")),
    "multi-layer-with-layer": (_multilayer, ("--layer", "fields"), [(G2, 2)]),
}  # fmt: skip
SUFFIX = {"mixed-type-class-values": ".geojson"}
# export-chips buffers every feature; evaluate only lines and points (reference polygons are
# areas already).
EVALUATE_EXPECTED = {
    "mixed-geometry-types-buffered": [(G1, 1), (LINE.buffer(15), 2), (POINT.buffer(15), 2)]
}


def _other_crs(path: Path) -> Path:
    """The two boxes stored in EPSG:4326 (reprojected back when rasterized)."""
    import geopandas as gpd

    gpd.GeoDataFrame({"cls": [1, 2]}, geometry=[G1, G2], crs=CRS).to_crs(4326).to_file(path)
    return path


CASES["other-crs"] = (_other_crs, (), [(G1, 1), (G2, 2)])


def _make(name: str, tmp_path: Path):
    writer, extra, expected = CASES[name]
    path = writer(tmp_path / f"labels{SUFFIX.get(name, '.gpkg')}")
    return path, extra, expected


def _burn(features, tr, shape) -> np.ndarray:
    from rasterio.features import rasterize

    return rasterize(features, out_shape=shape, transform=tr, dtype="uint8")


@pytest.mark.parametrize("name", list(CASES))
def test_export_chips(name, base, tmp_path):
    labels, extra, expected = _make(name, tmp_path)
    out = tmp_path / "chips"
    r = invoke("export-chips", base["image"], "--labels", labels, "--class-field", "cls",
               "-o", out, "--chip-size", "32", "--stride", "32", "--keep-empty", "1", *extra)  # fmt: skip
    assert not leftovers(tmp_path)
    if isinstance(expected, tuple):
        assert_clean_error(r, *expected)
        assert not out.exists()
        return
    assert r.exit_code == 0, r.output
    chips = sorted((out / "labels").glob("*.tif"))
    assert len(chips) == 4  # 64 x 64 pixels in 32-pixel chips
    for chip in chips:
        with rasterio.open(chip) as c:
            got = c.read(1)
            assert np.array_equal(got, _burn(expected, c.transform, got.shape)), chip.name


@pytest.mark.parametrize("name", list(CASES))
def test_evaluate(name, base, tmp_path):
    """Scores equal those of the expected reference computed here, independently."""
    labels, extra, expected = _make(name, tmp_path)
    expected = EVALUATE_EXPECTED.get(name, expected)
    r = invoke("evaluate", base["pred"], "-r", labels, "--class-field", "cls", "--json", *extra)
    if isinstance(expected, tuple):
        assert_clean_error(r, *expected)
        return
    assert r.exit_code == 0, r.output
    ref = _burn(expected, transform(), (SIZE, SIZE))
    pred = base["label_array"]
    res = json.loads(r.output)
    assert res["overall_accuracy"] == pytest.approx(float((ref == pred).mean()))


def _label_raster(path: Path, dtype: str = "uint8", crs=CRS, nodata=255) -> Path:
    from .conftest import write_raster

    lab = _burn([(G1, 1), (G2, 2)], transform(), (SIZE, SIZE)).astype(dtype)
    return write_raster(path, lab[None], crs=crs, nodata=nodata)


LABEL_RASTERS = {
    "label-raster-uint16": (dict(dtype="uint16"), None),
    "label-raster-float": (dict(dtype="float32"), (1, "integer class values")),
    "label-raster-without-crs": (dict(crs=None), (1, "no CRS")),
}


@pytest.mark.parametrize("name", list(LABEL_RASTERS))
def test_label_rasters(name, base, tmp_path):
    """Label rasters instead of vectors: integer class values with a CRS work, others are
    refused by export-chips and evaluate alike."""
    kw, error = LABEL_RASTERS[name]
    labels = _label_raster(tmp_path / "labels.tif", **kw)
    out = tmp_path / "chips"
    r = invoke("export-chips", base["image"], "--labels", labels, "-o", out,
               "--chip-size", "32", "--stride", "32")  # fmt: skip
    e = invoke("evaluate", base["pred"], "-r", labels, "--json")
    if error:
        assert_clean_error(r, *error)
        assert_clean_error(e, *error)
        assert not out.exists() and not leftovers(tmp_path)
        return
    assert r.exit_code == 0, r.output
    for chip in sorted((out / "labels").glob("*.tif")):
        with rasterio.open(chip) as c:
            got = c.read(1)
            assert np.array_equal(got, _burn([(G1, 1), (G2, 2)], c.transform, got.shape))
    assert e.exit_code == 0, e.output
    assert json.loads(e.output)["overall_accuracy"] == 1.0
