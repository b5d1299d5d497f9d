"""The ArcGIS Pro deep learning package: its .emd, its files, and its raster function run as
ArcGIS runs it, against ``geopsp classify``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geopsp.export import ExportModelOptions, export_model

from .conftest import CLASSES, load_raster_function, run_as_arcgis, unpack_dlpk

REAL_EMD = Path(__file__).parent / "data" / "arcgis_learn" / "30e.emd"  # see PROVENANCE.md


def test_emd_has_the_documented_keys(tiny_model, tmp_path):
    out = tmp_path / "glaciers.dlpk"
    summary = export_model(tiny_model, out, ExportModelOptions(batch_size=2))
    assert summary.format == "dlpk" and summary.tile == 64  # classify's default: 2 x chip 32
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == [
            "GeopspClassifier.py", "glaciers.emd", "model.safetensors"
        ]  # fmt: skip
        emd = json.loads(z.read("glaciers.emd"))
        assert z.read("model.safetensors") == tiny_model.read_bytes()
    assert emd["ModelType"] == "ImageClassification"
    assert emd["InferenceFunction"] == "GeopspClassifier.py"
    assert emd["ModelFile"] == "model.safetensors"
    assert (emd["ImageHeight"], emd["ImageWidth"]) == (64, 64)
    assert all(isinstance(emd[k], int) for k in ("ImageHeight", "ImageWidth", "BatchSize"))
    assert emd["ExtractBands"] == [0, 1, 2]  # source bands 1, 2, 3
    assert emd["Classes"] == [
        {"Value": c["value"], "Name": c["name"], "Color": c["color"]} for c in CLASSES
    ]
    assert emd["BatchSize"] == 2 and emd["ModelPadding"] == 0
    assert (emd["Overlap"], emd["Blend"], emd["BlockSize"]) == (8, "cosine", 256)
    params = emd["ModelParameters"]
    assert params["backbone"] == "resnet18" and params["pyramid_sizes"] == [1, 3, 5, 6]
    assert params["use_unet"] is False and params["pointrend"] is False
    assert params["decoder"] == "upsample" and params["output_stride"] == 16


def test_emd_keys_have_the_types_of_a_real_arcgis_learn_emd(tiny_model, tmp_path):
    """Every key the two files share has the same JSON type as in arcgis.learn's own."""
    real = json.loads(REAL_EMD.read_text())
    out = tmp_path / "m.dlpk"
    export_model(tiny_model, out)
    with zipfile.ZipFile(out) as z:
        emd = json.loads(z.read("m.emd"))
    shared = set(real) & set(emd)
    assert {"ModelType", "InferenceFunction", "ModelFile", "ExtractBands", "Classes"} <= shared
    for key in shared:
        assert type(emd[key]) is type(real[key]), key
    assert set(real["Classes"][0]) == set(emd["Classes"][0])
    assert set(real["ModelParameters"]) <= set(emd["ModelParameters"])


def test_extract_bands_are_zero_based_model_bands(tmp_path):
    from model_files import write_model_file

    model = write_model_file(tmp_path / "b.safetensors", CLASSES, bands=2, chip_size=32)
    raw = model.read_bytes()  # rewrite bands 1,2 -> 4,2 in place (same length)
    model.write_bytes(raw.replace(b'\\"bands\\": [1, 2]', b'\\"bands\\": [4, 2]', 1))
    out = tmp_path / "b.dlpk"
    export_model(model, out)
    with zipfile.ZipFile(out) as z:
        assert json.loads(z.read("b.emd"))["ExtractBands"] == [3, 1]


def test_raster_function_protocol(tiny_model, tmp_path):
    out = tmp_path / "m.dlpk"
    export_model(tiny_model, out, ExportModelOptions(batch_size=4))
    emd = unpack_dlpk(out, tmp_path / "unpacked")
    # ArcGIS may pass the .emd's JSON text instead of its path (ModelFile then absolute).
    info = json.loads(emd.read_text())
    info["ModelFile"] = str(emd.parent / info["ModelFile"])
    fn = load_raster_function(emd)
    fn.initialize(model=json.dumps(info), device=-2)
    names = [p["name"] for p in fn.getParameterInfo()]
    assert names == ["raster", "model", "device", "batch_size"]
    config = fn.getConfiguration(batch_size=4)
    assert config["extractBands"] == (0, 1, 2) and config["inputMask"] is True
    assert (config["tx"], config["ty"], config["padding"]) == (256, 256, 64)
    raster_info = fn.updateRasterInfo(output_info={"bandCount": 3, "pixelType": "u1"})
    oi = raster_info["output_info"]
    assert oi["bandCount"] == 1 and oi["pixelType"] == "u1" and oi["noData"][0] == 255
    table = json.loads(oi["rasterAttributeTable"])
    assert [f["name"] for f in table["fields"]] == ["OID", "Value", "Class", "Red", "Green", "Blue"]
    rows = [f["attributes"] for f in table["features"]]
    assert [(r["Value"], r["Class"], [r["Red"], r["Green"], r["Blue"]]) for r in rows] == [
        (c["value"], c["name"], c["color"]) for c in CLASSES
    ]
    # A small block whose left half is masked: those pixels are nodata, the rest classes.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (3, 96 + 128, 96 + 128), dtype=np.uint8)
    mask = np.ones_like(pixels)
    mask[:, :, : 64 + 48] = 0
    res = fn.updatePixels((0, 0), (96, 96), {"pixelType": "u1"}, raster_pixels=pixels,
                          raster_mask=mask)  # fmt: skip
    got = res["output_pixels"]
    assert got.shape == (96, 96) and got.dtype == np.uint8
    assert (got[:, :48] == 255).all() and (res["output_mask"][:, :48] == 0).all()
    assert set(np.unique(got[:, 48:])) <= {c["value"] for c in CLASSES}
    assert (res["output_mask"][:, 48:] == 1).all()


@pytest.mark.slow
def test_raster_function_matches_geopsp_classify(everest, everest_model, tmp_path):
    """Blocks of a 300 x 400 crop of the Everest sample through the raster function, stitched,
    against ``geopsp classify`` of the same raster with the same trained model (PointRend on,
    default tile and overlap)."""
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from geopsp.classify.run import ClassifyOptions, classify

    crop = tmp_path / "crop.tif"
    with rasterio.open(everest["image"]) as src:
        win = Window(150, 100, 400, 300)
        image, mask = src.read(window=win), src.read_masks(window=win)
        prof = dict(
            src.profile, width=400, height=300, transform=window_transform(win, src.transform)
        )
    with rasterio.open(crop, "w", **prof) as dst:
        dst.write(image)
    out = tmp_path / "glaciers.dlpk"
    summary = export_model(everest_model, out, ExportModelOptions(batch_size=4))
    emd = unpack_dlpk(out, tmp_path / "unpacked")
    arcgis = run_as_arcgis(emd, image, mask, prof["transform"])
    classify([str(crop)], everest_model, tmp_path / "classes.tif",
             ClassifyOptions(progress=False), device="cpu")  # fmt: skip
    with rasterio.open(tmp_path / "classes.tif") as ds:
        geopsp = ds.read(1)
    edge = summary.tile // 2
    inner = (slice(edge, -edge), slice(edge, -edge))
    assert (arcgis[inner] == geopsp[inner]).mean() >= 0.995
    # The raster function lays classify's own grid and blend over the raster, so even the
    # edge agrees; only the order of float additions differs.
    assert (arcgis == geopsp).mean() >= 0.999
    assert set(np.unique(arcgis)) == set(np.unique(geopsp)) == {0, 1}


def test_raster_function_needs_no_gis_packages(tiny_model, tmp_path):
    """Run in a fresh interpreter, the packaged function classifies a block without importing
    GDAL bindings, rasterio, geopandas, shapely, click or matplotlib: Pro's Python needs only
    torch and geopsp's model dependencies (docs/export-model.md)."""
    import subprocess
    import sys

    out = tmp_path / "m.dlpk"
    export_model(tiny_model, out)
    emd = unpack_dlpk(out, tmp_path / "unpacked")
    script = f"""
import sys, numpy as np
sys.path.insert(0, {str(emd.parent)!r})
from GeopspClassifier import GeopspClassifier
f = GeopspClassifier()
f.initialize(model={str(emd)!r}, device=-1)
f.getParameterInfo()
c = f.getConfiguration()
f.updateRasterInfo(output_info={{}})
px = np.full((3, c["ty"] + 2 * c["padding"], c["tx"] + 2 * c["padding"]), 90, np.uint8)
r = f.updatePixels((0, 0), (c["ty"], c["tx"]), {{"pixelType": "u1"}}, raster_pixels=px,
                   raster_mask=np.ones_like(px))
assert r["output_pixels"].shape == (c["ty"], c["tx"])
gis = {{"rasterio", "geopandas", "pyogrio", "shapely", "osgeo", "fiona", "click", "matplotlib"}}
print(sorted(m for m in sys.modules if m.split(".")[0] in gis))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "device, expected",
    [(-2, "auto"), (-1, "cpu"), ("-1", "cpu"), (0, "cuda:0"), (1.0, "cuda:1"), (None, "auto")],
)
def test_arcgis_device_numbers(device, expected):
    from geopsp.export.raster_function import torch_device

    assert torch_device(device) == expected


def test_block_origin_from_arcgis_properties():
    from geopsp.export.raster_function import block_origin

    props = {"extent": (500000.0, 3990000.0, 512000.0, 4000000.0), "cellSize": (30.0, 30.0),
             "width": 400, "height": 333}  # fmt: skip
    assert block_origin((500000.0 + 30 * 256, 4000000.0 - 30 * 512), (256, 256), props) == (
        512,
        256,
        333,
        400,
    )
    # Without the raster's properties the block is a raster of its own.
    assert block_origin((0.0, 0.0), (256, 128), {"pixelType": "u1"}) == (0, 0, 256, 128)
