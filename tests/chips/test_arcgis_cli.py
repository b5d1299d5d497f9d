"""ArcGIS Pro folders through the CLI: train on the real template metadata, classify with the
bands ExtractBands names, and one clear line (exit 1) for every unreadable file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from robustness.conftest import assert_clean_error, invoke, write_raster

from chips.arcgis_folders import pro_folder
from geopsp.chips.folder import open_chip_folder

TINY_ARGS = [
    "--backbone", "tu-mobilenetv3_small_050", "--encoder-weights", "none", "--output-stride",
    "16", "--no-pointrend", "--decoder", "upsample", "--batch-size", "4", "--device", "cpu",
    "--lr", "0.001", "--epochs", "1", "--augment", "none",
]  # fmt: skip
NAMES = [f"{k:09d}.tif" for k in range(1, 13)]


@pytest.fixture(scope="module")
def pro_chips(everest, tmp_path_factory) -> Path:
    """12 TIFF chips with world files beside the real (template) metadata of a Pro export."""
    return pro_folder(tmp_path_factory.mktemp("pro") / "export", everest, names=NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("nodata", ["background", "ignore"])
def test_train_and_classify_on_real_pro_metadata(pro_chips, everest, tmp_path, nodata):
    """The template .emd (strings for sizes and bands, Color [-1,-1,-1]) trains, previews and
    gives class rasters whose colours are real colours."""
    from geopsp.core.class_raster import qml_path
    from geopsp.models.modelfile import read_metadata

    out = tmp_path / "run"
    res = invoke("train", pro_chips, "-o", out, "--arcgis-nodata", nodata, *TINY_ARGS)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and (out / "val_preview.png").is_file()
    md = read_metadata(out / "model.safetensors")
    values = [c["value"] for c in md["classes"]]
    assert values == ([0, 1, 2] if nodata == "background" else [1, 2])
    assert md["bands"] == [1, 2, 3] and md["chip_size"] == 64
    assert all(0 <= v <= 255 for c in md["classes"] for v in c["color"])
    assert md["train_config"]["arcgis_nodata"] == nodata
    pred = tmp_path / "pred.tif"
    small = tmp_path / "small.tif"
    with rasterio.open(everest["image"]) as src:
        win = rasterio.windows.Window(200, 100, 96, 96)
        write_raster(small, src.read(window=win), crs=src.crs,
                     tr=rasterio.windows.transform(win, src.transform))  # fmt: skip
    res = invoke("classify", "-m", out / "model.safetensors", small, "-o", pred)
    assert res.exit_code == 0, res.output
    style = qml_path(pred).read_text()
    colors = re.findall(r'paletteEntry value="\d+" color="([^"]*)"', style)
    assert len(colors) == len(values) and all(re.fullmatch("#[0-9a-f]{6}", c) for c in colors)
    with rasterio.open(pred) as ds:
        cmap = ds.colormap(1)
    assert all(0 <= x <= 255 for v in values for x in cmap[v])


def test_extract_bands_select_source_bands_in_classify(pro_chips, tmp_path):
    """ExtractBands [1, 2, 3] (0-based) is recorded as source bands 2, 3, 4: classify reads
    those bands of a 4-band raster, exactly as a 3-band raster of them."""
    from model_files import write_model_file

    folder = tmp_path / "eb"
    folder.mkdir()
    for p in pro_chips.iterdir():  # the chips are shared; only the .emd changes
        (folder / p.name).symlink_to(p)
    emd = json.loads((pro_chips / "esri_model_definition.emd").read_text())
    emd["ExtractBands"] = [1, 2, 3]
    (folder / "esri_model_definition.emd").unlink()
    (folder / "esri_model_definition.emd").write_text(json.dumps(emd))
    bands = open_chip_folder(folder).bands
    assert bands == [2, 3, 4]
    classes = [{"value": v, "name": str(v)} for v in (0, 1, 2)]
    m234 = write_model_file(tmp_path / "m234.safetensors", classes, source_bands=bands)
    m123 = write_model_file(tmp_path / "m123.safetensors", classes)
    rng = np.random.default_rng(0)
    four = rng.integers(0, 255, (4, 64, 64)).astype(np.uint8)
    write_raster(tmp_path / "four.tif", four)
    write_raster(tmp_path / "three.tif", four[1:])
    probs = {}
    for key, model, image in (("234", m234, "four"), ("123", m123, "three"), ("bad", m123, "four")):
        p = tmp_path / f"p{key}.tif"
        res = invoke("classify", "-m", model, tmp_path / f"{image}.tif", "-o", tmp_path / f"c{key}.tif",
                     "--probabilities", p)  # fmt: skip
        assert res.exit_code == 0, res.output
        with rasterio.open(p) as ds:
            probs[key] = ds.read()
    assert np.array_equal(probs["234"], probs["123"])
    assert not np.array_equal(probs["bad"], probs["123"])  # bands 1-3 would differ


def _break(folder: Path, what: str) -> str:
    """Damage one thing in a Pro folder; return the words the error line must hold."""
    emd = folder / "esri_model_definition.emd"
    if what == "emd-json":
        emd.write_text('{"Classes": [')
        return "esri_model_definition.emd"
    if what == "emd-class":
        emd.write_text(json.dumps({"Classes": [{"Value": "e.g. 1", "Name": "x"}]}))
        return "esri_model_definition.emd"
    if what == "emd-twice":
        emd.write_text(json.dumps({"Classes": [{"Value": 1}, {"Value": 1, "Name": "again"}]}))
        return "esri_model_definition.emd: duplicate class values"
    if what == "emd-no-classes":
        emd.write_text(json.dumps({"ImageHeight": "e.g. 256"}))
        return "lists no classes"
    if what == "no-emd":
        emd.unlink()
        return "no .emd"
    if what == "map-fields":
        (folder / "map.txt").write_bytes(b"images\\000000001.tif  labels\\000000001.tif extra\r\n")
        return "map.txt line 1"
    if what == "map-binary":
        (folder / "map.txt").write_bytes(b"\xff\xfe\x00\x81 binary")
        return "map.txt"
    if what == "map-empty":
        (folder / "map.txt").write_bytes(b"\r\n  \r\n")
        return "lists no chips"
    if what == "missing-chip":
        (folder / "labels" / "000000002.tif").unlink()
        return "000000002.tif"
    if what == "bad-image":
        (folder / "images" / "000000003.tif").write_bytes(b"not a tiff")
        return "000000003.tif"
    if what == "bad-label":
        (folder / "labels" / "000000004.tif").write_bytes(b"not a tiff")
        return "000000004.tif"
    if what == "stats-json":
        (folder / "esri_accumulated_stats.json").write_text("{")
        return "esri_accumulated_stats.json"
    if what == "not-classified-tiles":
        (folder / "esri_accumulated_stats.json").write_text(
            '{"MetaDataMode": "PASCAL_VOC_rectangles"}'
        )
        return "PASCAL_VOC_rectangles"
    if what == "mixed-sizes":
        write_raster(folder / "images" / "000000005.tif", np.zeros((3, 32, 32), np.uint8))
        return "000000005.tif"
    if what == "extract-bands":
        emd.write_text(json.dumps({**json.loads(emd.read_text()), "ExtractBands": [0, 1]}))
        return "ExtractBands"
    raise AssertionError(what)


CASES = ["emd-json", "emd-class", "emd-twice", "emd-no-classes", "no-emd", "map-fields", "map-binary",
         "map-empty", "missing-chip", "bad-image", "bad-label", "stats-json",
         "not-classified-tiles", "extract-bands", "mixed-sizes"]  # fmt: skip


@pytest.mark.parametrize("what", CASES)
def test_unreadable_pro_folder_is_one_line(everest, tmp_path, what):
    folder = pro_folder(tmp_path / "pro", everest, names=NAMES[:8])
    word = _break(folder, what)
    out = tmp_path / "run"
    res = invoke("train", folder, "-o", out, *TINY_ARGS)
    assert_clean_error(res, 1, word)
    assert not (out / "model.safetensors").exists()


def test_arcgis_nodata_choice_is_checked(pro_chips, tmp_path):
    res = invoke("train", pro_chips, "-o", tmp_path / "run", "--arcgis-nodata", "zero")
    assert res.exit_code == 2 and "--arcgis-nodata" in res.output and "Traceback" not in res.output
