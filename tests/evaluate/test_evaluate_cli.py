"""``geopsp evaluate`` on the command line: table, JSON, plot and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from geopsp.cli.main import cli

from .test_evaluate import (
    EXPECTED,
    GLACIER_TABLE,
    PRED,
    REF,
    TABLE,
    glacier_prediction,
    write_raster,
)

JSON_KEYS = {"overall_accuracy", "kappa", "miou", "fwiou", "boundary_f1", "per_class",
             "confusion_matrix", "labels"}  # fmt: skip
CLASS_KEYS = {"value", "name", "precision", "recall", "f1", "iou", "support"}


@pytest.fixture
def case(tmp_path):
    return {
        "pred": write_raster(tmp_path / "pred.tif", PRED),
        "ref": write_raster(tmp_path / "ref.tif", REF, None),
        "dir": tmp_path,
    }


def run(*args):
    return CliRunner().invoke(cli, ["-q", "evaluate", *map(str, args)])


def assert_one_line_error(r, code, *words):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    err = [ln for ln in lines if ln.startswith("Error")]
    assert len(err) == 1, r.output
    for w in words:
        assert w in err[0], r.output


def test_table_output(case):
    r = run(case["pred"], "--reference", case["ref"])
    assert r.exit_code == 0, r.output
    assert "Overall accuracy   0.8182" in r.output  # 18 / 22
    assert "Cohen's kappa      0.7267" in r.output  # 234 / 322
    assert "Boundary F1" in r.output and "tolerance 2 px" in r.output
    urban = next(ln for ln in r.output.splitlines() if ln.startswith("urban "))
    assert urban.split() == ["urban", "3", "-", "0.0000", "0.0000", "0.0000", "2"]


def test_json_keys_and_values(case):
    r = run(case["pred"], "--reference", case["ref"], "--json", "--boundary-tolerance", "0")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert set(d) == JSON_KEYS
    assert d["labels"] == [0, 1, 2, 3]
    assert d["confusion_matrix"] == EXPECTED
    assert d["overall_accuracy"] == pytest.approx(18 / 22)
    assert [set(c) for c in d["per_class"]] == [CLASS_KEYS] * 4
    assert [c["name"] for c in d["per_class"]] == ["background", "water", "forest", "urban"]
    assert d["per_class"][3]["precision"] is None
    assert 0 < d["boundary_f1"] < 1


def test_plot_and_overwrite(case):
    png = case["dir"] / "confusion.png"
    r = run(case["pred"], "--reference", case["ref"], "--plot", png)
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = png.stat().st_mtime_ns
    r = run(case["pred"], "--reference", case["ref"], "--plot", png)
    assert_one_line_error(r, 1, "already exists", "--overwrite")
    assert png.stat().st_mtime_ns == before
    r = run(case["pred"], "--reference", case["ref"], "--plot", png, "--overwrite")
    assert r.exit_code == 0, r.output


def test_vector_reference_on_real_data(tmp_path, everest):
    """A prediction with one corrupted block still scores high against the 4326 outlines."""
    pred, grid = glacier_prediction(everest)
    shape = pred.shape
    pred[:50, :50] = 1 - pred[:50, :50]  # 2500 wrong pixels
    p = write_raster(tmp_path / "g.tif", pred, GLACIER_TABLE, **grid)
    r = run(p, "--reference", everest["labels"], "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert sum(map(sum, d["confusion_matrix"])) == shape[0] * shape[1]
    wrong = d["confusion_matrix"][0][1] + d["confusion_matrix"][1][0]
    assert wrong == 2500
    assert d["overall_accuracy"] == pytest.approx(1 - 2500 / (shape[0] * shape[1]))


def test_missing_inputs(case):
    r = run(case["dir"] / "nope.tif", "--reference", case["ref"])
    assert_one_line_error(r, 1, "nope.tif", "no such file")
    r = run(case["pred"], "--reference", case["dir"] / "nope.gpkg")
    assert_one_line_error(r, 1, "nope.gpkg", "no such file")
    r = run(case["pred"])
    assert r.exit_code == 2 and "--reference" in r.output


def test_reference_not_overlapping(case):
    far = write_raster(case["dir"] / "far.tif", REF, None, crs="EPSG:32610")
    r = run(case["pred"], "--reference", far)
    assert_one_line_error(r, 1, "does not overlap")


def test_unknown_class_field_lists_fields(case, everest):
    import rasterio

    with rasterio.open(everest["image"]) as img:
        p = write_raster(case["dir"] / "e.tif", np.zeros((img.height, img.width)), None,
                         crs=img.crs, transform=img.transform)  # fmt: skip
    r = run(p, "--reference", everest["labels"], "--class-field", "klass")
    assert_one_line_error(r, 2, "klass", "RGIId", "Name")


def test_reference_classes_not_in_prediction_table(case):
    ref = np.array(REF)
    ref[0, 0] = 7
    bad = write_raster(case["dir"] / "bad.tif", ref, None)
    r = run(case["pred"], "--reference", bad)
    assert_one_line_error(r, 1, "7", "class table")
    # Background 0 in the reference but not in the prediction's table: the hint names the option.
    no_bg = [c for c in TABLE if c["value"] != 0]
    p = write_raster(case["dir"] / "nobg.tif", np.where(np.array(PRED) == 0, 1, PRED), no_bg)
    r = run(p, "--reference", case["ref"])
    assert_one_line_error(r, 1, "--unlabeled ignore")
    r = run(p, "--reference", case["ref"], "--unlabeled", "ignore")
    assert r.exit_code == 0, r.output


def test_docs_examples_run_as_written(tmp_path, sample_data, monkeypatch):
    """Every bash and python block of docs/evaluate.md runs from a checkout-like folder."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = (sample_data.parent / "docs" / "evaluate.md").read_text(encoding="utf-8")
    bash = re.findall(r"```bash\n(.*?)```", doc, flags=re.S)
    python = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(bash) >= 3 and len(python) == 1
    (tmp_path / "sample_data").symlink_to(sample_data)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # One shell for all blocks (each block still stops the script on its first failure).
    script = "\n".join(f"( set -euo pipefail\n{b})" for b in bash)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    metrics = json.loads((tmp_path / "nc_metrics.json").read_text())
    assert set(metrics) == JSON_KEYS and metrics["overall_accuracy"] > 0.99
    (tmp_path / "nc_confusion.png").unlink()
    monkeypatch.chdir(tmp_path)
    exec(compile(python[0], "docs/evaluate.md", "exec"), {})
    assert (tmp_path / "nc_confusion.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_classify_output_end_to_end(tmp_path, everest):
    """What ``geopsp classify`` writes (nodata, class table) is what evaluate reads."""
    import rasterio
    import torch
    from rasterio.features import rasterize

    from geopsp.models import build_model
    from geopsp.models.modelfile import save_model

    torch.manual_seed(0)
    arch = {"in_channels": 3, "num_classes": 2, "output_stride": 16, "decoder": "upsample",
            "pointrend": False}  # fmt: skip
    net = build_model(arch)
    table = [{"value": 0, "name": "background", "color": [0, 0, 0]},
             {"value": 1, "name": "glacier", "color": [120, 200, 255]}]  # fmt: skip
    save_model(tmp_path / "m.safetensors", net, {
        "architecture": net.arch, "bands": [1, 2, 3], "classes": table, "chip_size": 64,
        "normalization": {"mean": [80.0] * 3, "std": [40.0] * 3}, "resolution": [30.0, 30.0],
        "crs": "EPSG:32645"})  # fmt: skip
    from rasterio.windows import Window

    win = Window(150, 50, 256, 256)  # a crop keeps the model run short on CPU
    with rasterio.open(everest["image"]) as src:
        arr, prof = src.read(window=win), src.profile
        transform = src.window_transform(win)
        outlines = __import__("geopandas").read_file(everest["labels"]).to_crs(src.crs)
    glacier = rasterize(((g, 1) for g in outlines.geometry), out_shape=arr.shape[1:],
                        transform=transform, dtype="uint8")  # fmt: skip
    arr[:, 50:130, 50:180] = 0  # a nodata hole in the image becomes nodata in the map
    prof.update(nodata=0, width=256, height=256, transform=transform, blockysize=16)
    with rasterio.open(tmp_path / "img.tif", "w", **prof) as dst:
        dst.write(arr)
    r = CliRunner().invoke(cli, ["-q", "classify", str(tmp_path / "img.tif"), "-m",
                                 str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "c.tif")])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run(tmp_path / "c.tif", "--reference", everest["labels"], "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["labels"] == [0, 1] and [c["name"] for c in d["per_class"]] == [
        "background",
        "glacier",
    ]
    valid = np.ones(glacier.shape, dtype=bool)
    valid[50:130, 50:180] = False
    assert sum(map(sum, d["confusion_matrix"])) == valid.sum()
    assert [c["support"] for c in d["per_class"]] == [
        int((glacier[valid] == v).sum()) for v in (0, 1)
    ]
