"""Hostile rasters against export-chips, classify and evaluate: each either gives a correct
result or one clear ``Error:`` line with exit code 1/2, and never leaves a partial output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from .conftest import (
    RES,
    SIZE,
    X0,
    Y0,
    assert_clean_error,
    image_array,
    invoke,
    label_boxes,
    leftovers,
    write_raster,
    write_vector,
    write_vrt,
)

ROTATED = Affine(8.66, -5.0, X0, -5.0, -8.66, Y0)  # 30 degrees, 10 m pixels
SHEARED = Affine(10.0, 2.0, X0, 0.0, -10.0, Y0)


@pytest.fixture(scope="session")
def rasters(tmp_path_factory) -> dict[str, Path]:
    """Every hostile raster of the matrix, by name."""
    from rasterio.control import GroundControlPoint as G
    from rasterio.features import rasterize

    d = tmp_path_factory.mktemp("rasters")
    r: dict[str, Path] = {}
    (d / "zero.tif").write_bytes(b"")
    r["zero-byte"] = d / "zero.tif"
    raw = write_raster(d / "good.tif").read_bytes()
    (d / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    r["truncated"] = d / "truncated.tif"
    r["png"] = write_raster(d / "plain.png", crs=None, driver="PNG")
    r["jpeg"] = write_raster(d / "plain.jpg", crs=None, driver="JPEG")
    e = SIZE * RES
    gcps = [G(0, 0, X0, Y0), G(0, SIZE, X0 + e, Y0), G(SIZE, 0, X0, Y0 - e), G(SIZE, SIZE, X0 + e, Y0 - e)]  # fmt: skip
    r["gcp-only"] = write_raster(d / "gcp.tif", gcps=gcps)
    r["rpc-only"] = _rpc_only(d / "rpc.tif")
    r["rotated"] = write_raster(d / "rotated.tif", tr=ROTATED)
    r["sheared"] = write_raster(d / "sheared.tif", tr=SHEARED)
    r["1x1"] = write_raster(d / "one.tif", image_array(size=1))
    r["all-nodata"] = write_raster(d / "allnd.tif", np.zeros((3, SIZE, SIZE), np.uint8), nodata=0)
    a = image_array(dtype="float32")
    a[:, :20, :] = np.nan
    r["nan-nodata"] = write_raster(d / "nan.tif", a, nodata=float("nan"))
    for dt in ("int8", "int16", "uint16", "int32", "float32", "float64"):
        r[dt] = write_raster(d / f"{dt}.tif", image_array(dtype=dt))
    r["complex"] = write_raster(d / "complex.tif", image_array(dtype="float32").astype("complex64"))
    for b in (1, 2, 4, 13):
        r[f"bands{b}"] = write_raster(d / f"bands{b}.tif", image_array(bands=b))
    mask = np.ones((SIZE, SIZE), bool)
    mask[:, :16] = False
    r["internal-mask"] = write_raster(d / "mask.tif", mask=mask)
    a = image_array()
    a[:, :, :16] = 0
    r["nodata-value"] = write_raster(d / "nodata.tif", a, nodata=0)
    (d / "dossier spécial ü").mkdir()
    r["spaces-non-ascii"] = write_raster(d / "dossier spécial ü" / "ïmage 1.tif")
    r["vrt"] = write_vrt(d / "virtual.vrt", d / "good.tif")
    # Class rasters for evaluate: the labels burnt onto each grid, so a correct evaluation is exact.
    for name, tr in (("pred-rotated", ROTATED), ("pred", None)):
        lab = rasterize(all_labels(), out_shape=(SIZE, SIZE), transform=tr or _north_up(),
                        dtype="uint8")  # fmt: skip
        r[name] = write_raster(d / f"{name}.tif", lab[None], tr=tr, nodata=255)
    r["pred-float"] = write_raster(d / "pred_float.tif", image_array(1, "float32"))
    with rasterio.open(r["pred"]) as src:
        lab = src.read()
    r["pred-int16"] = write_raster(d / "pred_int16.tif", lab.astype("int16"), nodata=-1)
    half = np.ones((SIZE, SIZE), bool)
    half[:, :20] = False  # masked off: never counted
    r["pred-masked"] = write_raster(d / "pred_masked.tif", lab, mask=half)
    r["pred-spaces"] = write_raster(d / "dossier spécial ü" / "prédiction 1.tif", lab, nodata=255)
    r["pred-vrt"] = write_vrt(d / "pred.vrt", r["pred"])
    raw = r["pred"].read_bytes()
    (d / "pred_truncated.tif").write_bytes(raw[: len(raw) // 2])
    r["pred-truncated"] = d / "pred_truncated.tif"
    return r


def _rpc_only(path: Path) -> Path:
    """A raw satellite-style raster georeferenced only by (trivial) RPC coefficients."""
    from rasterio.rpc import RPC

    zeros = [0.0] * 20
    rpc = RPC(height_off=0, height_scale=100, lat_off=36, lat_scale=0.1, long_off=3,
              long_scale=0.1, line_off=32, line_scale=32, samp_off=32, samp_scale=32,
              line_num_coeff=[0, 0, -1] + zeros[3:], line_den_coeff=[1] + zeros[1:],
              samp_num_coeff=[0, 1] + zeros[2:], samp_den_coeff=[1] + zeros[1:])  # fmt: skip
    arr = image_array()
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3,
                       dtype="uint8", rpcs=rpc) as dst:  # fmt: skip
        dst.write(arr)
    return path


def all_labels():
    """The polygons of the ``labels`` fixture: the two boxes and the 1 x 1 raster's pixel."""
    from shapely.geometry import box

    return [*label_boxes(), (box(X0 - 5, Y0 - 5, X0 + 5, Y0 + 5), 1)]


def _north_up():
    from .conftest import transform

    return transform()


@pytest.fixture(scope="session")
def labels(tmp_path_factory) -> Path:
    """Labels covering the test image's two boxes plus the 1 x 1 raster's single pixel."""
    geoms, values = zip(*all_labels(), strict=True)
    d = tmp_path_factory.mktemp("labels")
    return write_vector(d / "labels.gpkg", geoms, list(values))


def _check_chips(out: Path, src_path: Path) -> None:
    """Every chip: the source pixels of its window, and labels equal to a direct rasterization
    of the polygons at the chip's own (possibly rotated) transform."""
    from rasterio.features import rasterize
    from rasterio.windows import Window

    for f in [*out.glob("*.json"), *out.glob("*.emd")]:  # strict JSON, as ArcGIS and jq expect
        json.loads(f.read_text(), parse_constant=lambda c, n=f.name: pytest.fail(f"{n}: {c}"))
    index = json.loads((out / "stats.json").read_text())
    with rasterio.open(src_path) as src:
        assert index["dtype"] == src.dtypes[0] and index["band_count"] == src.count
        assert all(np.isfinite(index["mean"])) and all(np.isfinite(index["std"]))
        images = sorted((out / "images").glob("*.tif"))
        assert images
        for img in images:
            with rasterio.open(img) as c, rasterio.open(out / "labels" / img.name) as lab:
                inv = ~src.transform  # the chip's origin in source pixels
                x, y = c.transform.c, c.transform.f
                col, row = (
                    round(inv.a * x + inv.b * y + inv.c),
                    round(inv.d * x + inv.e * y + inv.f),
                )
                assert c.transform.almost_equals(src.window_transform(Window(col, row, 1, 1)))
                assert c.crs == src.crs and c.dtypes == src.dtypes
                w, h = min(c.width, src.width - col), min(c.height, src.height - row)
                chip, ref = c.read()[:, :h, :w], src.read(window=Window(col, row, w, h))
                assert np.array_equal(chip, ref, equal_nan=chip.dtype.kind == "f")
                got = lab.read(1)
                want = rasterize(all_labels(), out_shape=got.shape, transform=c.transform,
                                 dtype="uint8")  # fmt: skip
                known = got != 255
                assert known.any()
                assert np.array_equal(got[known], want[known]), img.name


def _export(src: Path, labels: Path, out: Path, *extra):
    return invoke("export-chips", src, "--labels", labels, "--class-field", "cls", "-o", out,
                  "--chip-size", "32", "--stride", "32", "--max-nodata", "0.9", *extra)  # fmt: skip


EXPORT_ERRORS = {
    "zero-byte": (1, "empty"),
    "truncated": (1, "truncated or corrupt"),
    "png": (1, "no CRS"),
    "jpeg": (1, "no CRS"),
    "gcp-only": (1, "ground control points", "gdalwarp"),
    "rpc-only": (1, "RPCs", "gdalwarp -rpc"),
    "complex": (1, "complex"),
    "all-nodata": (1, "no chip written", "nodata"),
}
EXPORT_OK = [
    "rotated", "sheared", "1x1", "nan-nodata", "int8", "int16", "uint16", "int32", "float32",
    "float64", "bands1", "bands2", "bands4", "bands13", "internal-mask", "nodata-value",
    "spaces-non-ascii", "vrt",
]  # fmt: skip


@pytest.mark.parametrize("name", list(EXPORT_ERRORS))
def test_export_chips_refuses(name, rasters, labels, tmp_path):
    out = tmp_path / "chips"
    r = _export(rasters[name], labels, out)
    code, *words = EXPORT_ERRORS[name]
    assert_clean_error(r, code, *words)
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("name", EXPORT_OK)
def test_export_chips_works(name, rasters, labels, tmp_path):
    out = tmp_path / "chips"
    r = _export(rasters[name], labels, out)
    assert r.exit_code == 0, r.output
    _check_chips(out, rasters[name])
    assert not leftovers(tmp_path)
    if name in ("internal-mask", "nodata-value"):  # masked pixels are ignored in the labels
        with rasterio.open(out / "labels" / "000000000.tif") as lab:
            assert (lab.read(1)[:, :16] == 255).all() and (lab.read(1)[:, 16:] != 255).all()


def _classify(src: Path, model: Path, out: Path, *extra):
    return invoke("classify", src, "-m", model, "-o", out, "--device", "cpu", *extra)


CLASSIFY_ERRORS = {
    "zero-byte": (1, "empty"),
    "gcp-only": (1, "ground control points"),
    "rpc-only": (1, "RPCs"),
    "complex": (1, "complex"),
    "bands1": (2, "1 band(s)", "model expects 3"),
    "bands2": (2, "2 band(s)", "-b/--bands"),
}
# name -> extra options; plain images classify with a warning and keep their (absent) grid.
CLASSIFY_OK = {
    "png": (), "rotated": (), "sheared": (), "1x1": (), "all-nodata": (), "nan-nodata": (),
    "int8": (), "int16": (), "uint16": (), "int32": (), "float32": (), "float64": (),
    "bands4": (), "bands13": ("-b", "4,3,2"), "internal-mask": (), "nodata-value": (),
    "spaces-non-ascii": (), "vrt": (),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CLASSIFY_ERRORS))
def test_classify_refuses(name, rasters, models, tmp_path):
    out = tmp_path / "classes.tif"
    code, *words = CLASSIFY_ERRORS[name]
    assert_clean_error(_classify(rasters[name], models["ok"], out), code, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_classify_truncated_raster(rasters, models, tmp_path):
    out = tmp_path / "classes.tif"
    r = _classify(rasters["truncated"], models["ok"], out)
    assert_clean_error(r, 1, "truncated or corrupt")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", list(CLASSIFY_OK))
def test_classify_works(name, rasters, models, tmp_path):
    out = tmp_path / "classes.tif"
    r = _classify(rasters[name], models["ok"], out, *CLASSIFY_OK[name])
    assert r.exit_code == 0, r.output
    with rasterio.open(rasters[name]) as src, rasterio.open(out) as dst:
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.transform == src.transform and dst.crs == src.crs
        assert dst.dtypes == ("uint8",) and dst.nodata == 255
        cls = dst.read(1)
        invalid = ~src.dataset_mask().astype(bool)
        assert (cls[invalid] == 255).all() and np.isin(cls[~invalid], [0, 1, 2]).all()
    assert not leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "classes.qml", "classes.tif", "classes.tif.aux.xml"]  # fmt: skip


EVALUATE_CASES = {
    "zero-byte": (1, "empty"),
    "complex": (1, "complex"),
    "gcp-only": (1, "ground control points"),
    "rpc-only": (1, "RPCs"),
    "pred-float": (1, "integer class values"),
    "pred-truncated": (1, "truncated or corrupt"),
    "png": (1, "no CRS"),
}


@pytest.mark.parametrize("name", list(EVALUATE_CASES))
def test_evaluate_refuses(name, rasters, labels, tmp_path):
    plot = tmp_path / "confusion.png"
    r = invoke("evaluate", rasters[name], "-r", labels, "--class-field", "cls", "--plot", plot)
    assert_clean_error(r, *EVALUATE_CASES[name])
    assert not plot.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize(
    "name", ["pred", "pred-rotated", "pred-int16", "pred-masked", "pred-spaces", "pred-vrt"]
)
def test_evaluate_exact_on_any_grid(name, rasters, labels, tmp_path):
    """The labels burnt on the prediction's grid (north-up or rotated, any integer type, any
    path) score exactly 1, over exactly the unmasked pixels."""
    r = invoke("evaluate", rasters[name], "-r", labels, "--class-field", "cls", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["overall_accuracy"] == 1.0 and res["kappa"] == 1.0 and res["miou"] == 1.0
    counted = sum(c["support"] for c in res["per_class"])
    assert counted == SIZE * (SIZE - 20 if name == "pred-masked" else SIZE)
