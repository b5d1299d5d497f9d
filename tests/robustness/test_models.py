"""Hostile model files and chip folders against classify, info and train: one clear error line,
the right exit code, and no output left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import assert_clean_error, invoke, leftovers

# name -> (exit code, words in the message)
MODEL_ERRORS = {
    "truncated": (1, "truncated"),
    "newer": (1, "newer geopsp", "upgrade"),
    "empty": (1, "not a geopsp model"),
    "not-a-model": (1, "not a geopsp model"),
    "training-folder": (1, "is a folder", "model.safetensors inside"),
}
TRAIN = ("--backbone", "resnet18", "--encoder-weights", "none", "--output-stride", "16",
         "--decoder", "upsample", "--no-pointrend", "--epochs", "1", "--lr", "1e-3",
         "--device", "cpu", "--batch-size", "4", "--augment", "none")  # fmt: skip


def _model(models, base, name):
    if name == "training-folder":  # the folder train writes, instead of the model inside it
        return models["ok"].parent
    return base["image"] if name == "not-a-model" else models[name]


@pytest.mark.parametrize("name", list(MODEL_ERRORS))
def test_classify_refuses_model(name, models, base, tmp_path):
    out = tmp_path / "classes.tif"
    r = invoke("classify", base["image"], "-m", _model(models, base, name), "-o", out)
    assert_clean_error(r, *MODEL_ERRORS[name])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", list(MODEL_ERRORS))
def test_info_refuses_model(name, models, base):
    assert_clean_error(invoke("info", _model(models, base, name)), *MODEL_ERRORS[name])


def test_classify_model_with_other_bands(models, base, tmp_path):
    r = invoke("classify", base["image"], "-m", models["bands4"], "-o", tmp_path / "c.tif")
    assert_clean_error(r, 2, "3 band(s)", "model expects 4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["truncated", "newer", "empty"])
def test_train_init_refuses_model(name, models, chip_folder, tmp_path):
    """--init with a broken or newer model file: the same message as classify gives."""
    chips = chip_folder("chips", n=8)
    out = tmp_path / "run"
    r = invoke("train", chips, "-o", out, "--init", models[name], *TRAIN)
    assert_clean_error(r, *MODEL_ERRORS[name])
    assert not out.exists() and not leftovers(tmp_path)


def test_train_init_from_a_model_with_other_bands(models, chip_folder, tmp_path):
    """Fine-tuning a 4-band model on 3-band chips: every weight that fits is used, the
    first convolution starts fresh, and the new model expects 3 bands."""
    from geopsp.models.modelfile import read_metadata

    chips = chip_folder("chips", n=8)
    out = tmp_path / "run"
    r = invoke("train", chips, "-o", out, "--init", models["bands4"], *TRAIN)
    assert r.exit_code == 0, r.output
    md = read_metadata(out / "model.safetensors")
    assert md["architecture"]["in_channels"] == 3 and md["bands"] == [1, 2, 3]


def test_train_truncated_chip(chip_folder, tmp_path):
    """A chip folder with one chip cut short by a failed copy: named in one line."""
    chips = chip_folder("chips", n=8)
    img = chips / "images" / "000000002.tif"
    raw = img.read_bytes()
    img.write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "run"
    r = invoke("train", chips, "-o", out, *TRAIN)
    assert_clean_error(r, 1, "000000002.tif")
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("kind", ["float32-nan-nodata", "uint16-one-band"])
def test_train_and_classify_unusual_rasters(kind, tmp_path):
    """Chips of float32 with NaN nodata, or of one uint16 band, train to a finite loss and the
    model classifies the source raster (nodata pixels stay nodata)."""
    import csv

    import numpy as np
    import rasterio
    import shapely

    from .conftest import image_array, label_boxes, write_raster, write_vector

    if kind == "float32-nan-nodata":
        a = np.tile(image_array(dtype="float32"), (1, 2, 2))
        a[:, :40, :] = np.nan
        img = write_raster(tmp_path / "img.tif", a, nodata=float("nan"))
    else:
        img = write_raster(tmp_path / "img.tif", np.tile(image_array(1, "uint16"), (1, 2, 2)) * 40)
    geoms, values = zip(*label_boxes(), strict=True)
    moved = [shapely.affinity.translate(g, 640, -640) for g in geoms]
    labels = write_vector(tmp_path / "l.gpkg", [*geoms, *moved], [*values, *values])
    chips, run = tmp_path / "chips", tmp_path / "run"
    r = invoke("export-chips", img, "--labels", labels, "--class-field", "cls", "-o", chips,
               "--chip-size", "32", "--stride", "32", "--val-fraction", "0.3",
               "--max-nodata", "0.9")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("train", chips, "-o", run, *TRAIN)
    assert r.exit_code == 0, r.output
    with open(run / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert np.isfinite(float(row["train_loss"])) and np.isfinite(float(row["val_loss"]))
    out = tmp_path / "classes.tif"
    r = invoke("classify", img, "-m", run / "model.safetensors", "-o", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    with rasterio.open(img) as src, rasterio.open(out) as dst:
        invalid = ~src.dataset_mask().astype(bool)
        cls = dst.read(1)
        assert (cls[invalid] == 255).all() and np.isin(cls[~invalid], [0, 1, 2]).all()
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("target", ["input raster", "model file"])
def test_classify_never_overwrites_what_it_reads(target, models, base, tmp_path):
    """-o naming the input or the model, even with --overwrite, is refused: nothing is lost."""
    import shutil

    img = Path(shutil.copy(base["image"], tmp_path / "img.tif"))
    model = Path(shutil.copy(models["ok"], tmp_path / "m.safetensors"))
    victim = img if target == "input raster" else model
    before = victim.read_bytes()
    r = invoke("classify", img, "-m", model, "-o", victim, "--overwrite")
    assert_clean_error(r, 2, f"is the {target}")
    assert victim.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif", "m.safetensors"]
