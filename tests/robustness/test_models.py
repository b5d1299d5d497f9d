"""Hostile model files and chip folders against classify, info and train: one clear error line,
the right exit code, and no output left behind."""

from __future__ import annotations

import pytest

from .conftest import assert_clean_error, invoke, leftovers

# name -> (exit code, words in the message)
MODEL_ERRORS = {
    "truncated": (1, "truncated"),
    "newer": (1, "newer geopsp", "upgrade"),
    "empty": (1, "not a geopsp model"),
    "not-a-model": (1, "not a geopsp model"),
}
TRAIN = ("--backbone", "resnet18", "--encoder-weights", "none", "--output-stride", "16",
         "--decoder", "upsample", "--no-pointrend", "--epochs", "1", "--lr", "1e-3",
         "--device", "cpu", "--batch-size", "4", "--augment", "none")  # fmt: skip


def _model(models, base, name):
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


@pytest.mark.parametrize("name", ["truncated", "newer", "bands4"])
def test_train_init_refuses_model(name, models, chip_folder, tmp_path):
    """--init with a broken model, or one made for other bands than the chips (3 bands)."""
    chips = chip_folder("chips", n=8)
    out = tmp_path / "run"
    r = invoke("train", chips, "-o", out, "--init", models[name], *TRAIN)
    words = {"bands4": (1, "4")}.get(name, MODEL_ERRORS.get(name))
    assert_clean_error(r, *words)
    assert not out.exists() and not leftovers(tmp_path)


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
