"""Fixtures of the export tests: small model files and the ArcGIS raster-function driver."""

from __future__ import annotations

import importlib.util
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

CLASSES = [
    {"value": 0, "name": "background", "color": [0, 0, 0]},
    {"value": 3, "name": "glacier ice", "color": [80, 160, 255]},
    {"value": 7, "name": "debris/rock", "color": [150, 110, 60]},
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained 3-band, 3-class model (upsample decoder, no PointRend), chip size 32."""
    from model_files import write_model_file

    path = tmp_path_factory.mktemp("export_models") / "model.safetensors"
    return write_model_file(path, CLASSES, chip_size=32, resolution=(30.0, 30.0))


def unpack_dlpk(dlpk: Path, folder: Path) -> Path:
    """Extract a ``.dlpk`` as ArcGIS Pro does; returns the ``.emd`` path."""
    with zipfile.ZipFile(dlpk) as z:
        z.extractall(folder)
    (emd,) = folder.glob("*.emd")
    return emd


def load_raster_function(emd: Path):
    """Import the raster function the ``.emd`` names, from the extracted package, and make
    an instance of the class named after the file (Pro's rule)."""
    info = json.loads(emd.read_text())
    path = emd.parent / info["InferenceFunction"]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, path.stem)()


def run_as_arcgis(emd: Path, image: np.ndarray, mask: np.ndarray, transform, **scalars):
    """Classify ``image`` (bands, rows, cols) the way Classify Pixels Using Deep Learning does.

    ``initialize`` -> ``getParameterInfo`` -> ``getConfiguration`` -> ``updateRasterInfo``,
    then ``updatePixels`` on ``ty`` x ``tx`` blocks of the raster grid, each read with
    ``padding`` pixels more on every side (outside the raster: mask 0), only the bands of
    ``extractBands``, with the block's top-left map corner and the raster's properties; the
    blocks' answers are stitched into one array.
    """
    fn = load_raster_function(emd)
    fn.initialize(model=str(emd), device=-1)
    params = fn.getParameterInfo()
    assert [p["name"] for p in params[:3]] == ["raster", "model", "device"]
    values = {p["name"]: p.get("value") for p in params[3:]}
    values.update(scalars)
    config = fn.getConfiguration(**values)
    info = fn.updateRasterInfo(output_info={"bandCount": image.shape[0], "pixelType": "u1"})
    bands = list(config["extractBands"])
    p, tx, ty = config["padding"], config["tx"], config["ty"]
    _, rows, cols = image.shape
    left, top = transform.c, transform.f
    props = {
        "pixelType": info["output_info"]["pixelType"],
        "extent": (left, top + rows * transform.e, left + cols * transform.a, top),
        "cellSize": (transform.a, -transform.e),
        "width": cols,
        "height": rows,
    }
    pr, pc = math.ceil(rows / ty) * ty, math.ceil(cols / tx) * tx
    padded = np.zeros((len(bands), pr + 2 * p, pc + 2 * p), dtype=image.dtype)
    padded_mask = np.zeros((len(bands), pr + 2 * p, pc + 2 * p), dtype=np.uint8)
    padded[:, p : p + rows, p : p + cols] = image[bands]
    padded_mask[:, p : p + rows, p : p + cols] = mask[bands]
    out = np.zeros((pr, pc), dtype=np.uint8)
    for r in range(0, rows, ty):
        for c in range(0, cols, tx):
            block = {
                "raster_pixels": padded[:, r : r + ty + 2 * p, c : c + tx + 2 * p].copy(),
                "raster_mask": padded_mask[:, r : r + ty + 2 * p, c : c + tx + 2 * p].copy(),
            }
            tlc = (left + c * transform.a, top + r * transform.e)
            res = fn.updatePixels(tlc, (ty, tx), props, **block)
            assert res["output_pixels"].shape == (ty, tx)
            assert res["output_pixels"].dtype == np.uint8
            out[r : r + ty, c : c + tx] = res["output_pixels"]
    return out[:rows, :cols]
