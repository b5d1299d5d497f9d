"""Ctrl-C says what each command kept: ``OUTPUT.partial/`` (classify --resume), ``last.ckpt``
(train), or that partial outputs were removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geopsp.classify.resume import partial_dir

from .conftest import image_array, invoke, leftovers, write_raster

# 256 x 256 pixels in 128-pixel blocks: two block rows of two blocks, one tile per batch
GRID = ["--device", "cpu", "--tile-size", "64", "--overlap", "8", "--block-size", "128",
        "--batch-size", "1", "--co", "BLOCKXSIZE=128", "--co", "BLOCKYSIZE=128"]  # fmt: skip


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    arr = np.tile(image_array(), (1, 4, 4))
    return write_raster(tmp_path_factory.mktemp("ctrl-c") / "image.tif", arr)


def _ctrl_c_after(monkeypatch, calls: int) -> None:
    """Make the model's forward pass raise KeyboardInterrupt at call ``calls + 1``."""
    from geopsp.classify.predictor import Predictor

    real = Predictor.forward_fn

    def interrupted(self, tta="none"):
        fwd, n = real(self, tta), []

        def forward(x):
            n.append(1)
            if len(n) > calls:
                raise KeyboardInterrupt
            return fwd(x)

        return forward

    monkeypatch.setattr(Predictor, "forward_fn", interrupted)


def test_classify_resume_names_the_kept_progress_folder(image, models, tmp_path, monkeypatch):
    # Tiles 0..15 of 25 are the first block row; stopped after the first row is recorded.
    _ctrl_c_after(monkeypatch, 20)
    out = tmp_path / "classes.tif"
    r = invoke("classify", image, "-m", models["ok"], "-o", out, *GRID, "--resume")
    assert r.exit_code == 130, r.output
    assert "Traceback" not in r.output
    assert "partial outputs were removed" not in r.output
    assert f"kept {partial_dir(out)}" in r.output and "--resume" in r.output
    assert partial_dir(out).is_dir() and not out.exists() and not leftovers(tmp_path)


def test_classify_without_resume_says_outputs_were_removed(image, models, tmp_path, monkeypatch):
    _ctrl_c_after(monkeypatch, 20)
    r = invoke("classify", image, "-m", models["ok"], "-o", tmp_path / "c.tif", *GRID)
    assert r.exit_code == 130, r.output
    assert "partial outputs were removed" in r.output and "kept" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_train_names_the_kept_checkpoint(chip_folder, tmp_path, monkeypatch):
    from geopsp.train import checkpoints

    save = checkpoints.save_checkpoint

    def save_then_ctrl_c(path, state):  # Ctrl-C right after the first epoch is saved
        save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_ctrl_c)
    out = tmp_path / "run"
    r = invoke("train", chip_folder(), "-o", out, "--epochs", "3", "--backbone",
               "tu-mobilenetv3_small_050", "--encoder-weights", "none", "--output-stride", "16",
               "--no-pointrend", "--decoder", "upsample", "--batch-size", "4", "--device", "cpu")  # fmt: skip
    assert r.exit_code == 130, r.output
    assert "partial outputs were removed" not in r.output
    assert f"kept {out / 'last.ckpt'}" in r.output and f"--resume {out / 'last.ckpt'}" in r.output
    assert (out / "last.ckpt").is_file()
