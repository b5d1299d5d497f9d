"""``geopsp classify --resume`` and ``--block-size`` from the command line: what is skipped,
warned about and refused. The SIGKILL-and-resume tests are in test_faults.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geopsp.classify.resume import Journal, partial_dir

from .conftest import assert_clean_error, image_array, invoke, leftovers, write_raster

# 256 x 256 pixels in 128-pixel blocks: two block rows of two blocks
GRID = ["--device", "cpu", "--tile-size", "64", "--overlap", "8", "--block-size", "128",
        "--co", "BLOCKXSIZE=128", "--co", "BLOCKYSIZE=128"]  # fmt: skip


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    arr = np.tile(image_array(), (1, 4, 4))
    return write_raster(tmp_path_factory.mktemp("resume") / "image.tif", arr)


def loud(*args):
    """The CLI without ``-q``: warnings are printed."""
    from geopsp.cli.main import cli

    return CliRunner().invoke(cli, list(map(str, args)))


def test_resume_of_a_new_output_equals_a_plain_run(image, models, tmp_path):
    plain, resumed = tmp_path / "plain.tif", tmp_path / "resumed.tif"
    assert invoke("classify", image, "-m", models["ok"], "-o", plain, *GRID).exit_code == 0
    r = invoke("classify", image, "-m", models["ok"], "-o", resumed, *GRID, "--resume")
    assert r.exit_code == 0, r.output
    assert plain.read_bytes() == resumed.read_bytes()
    assert not partial_dir(resumed).exists() and not leftovers(tmp_path)


def test_resume_skips_outputs_that_exist(image, models, tmp_path):
    second = write_raster(tmp_path / "second.tif", np.tile(image_array(seed=1), (1, 4, 4)))
    out = tmp_path / "out"
    out.mkdir()
    r = invoke("classify", image, "-m", models["ok"], "-o", out / "image.tif", *GRID)
    assert r.exit_code == 0
    before = (out / "image.tif").stat().st_mtime_ns
    r = loud("classify", image, second, "-m", models["ok"], "-o", out, *GRID, "--resume")
    assert r.exit_code == 0, r.output
    assert "image.tif exists; skipped" in r.output
    assert (out / "image.tif").stat().st_mtime_ns == before  # not classified again
    assert (out / "second.tif").exists() and "second.tif: 65,536 pixels" in r.output
    assert "image.tif: 65,536" not in r.output


def test_plain_run_warns_about_an_interrupted_one(image, models, tmp_path):
    out = tmp_path / "classes.tif"
    partial_dir(out).mkdir()
    r = loud("classify", image, "-m", models["ok"], "-o", out, *GRID)
    assert r.exit_code == 0, r.output
    assert "holds an interrupted classification" in r.output and "--resume" in r.output
    assert partial_dir(out).exists()  # not ours to delete without --resume


def test_resume_with_other_options_is_refused(image, models, tmp_path):
    out = tmp_path / "classes.tif"
    j = Journal(out, {"tile": 32}, 2, 128)  # progress of a run with other settings
    j.open()
    j.close()
    r = invoke("classify", image, "-m", models["ok"], "-o", out, *GRID, "--resume")
    assert_clean_error(r, 1, "cannot resume", "delete", "classes.tif.partial")
    assert not out.exists() and partial_dir(out).exists()


def test_resume_while_another_run_works_is_refused(image, models, tmp_path):
    out = tmp_path / "classes.tif"
    j = Journal(out, {}, 2, 128)
    j.open()  # holds the lock like a running classification
    try:
        r = invoke("classify", image, "-m", models["ok"], "-o", out, *GRID, "--resume")
    finally:
        j.close()
    assert_clean_error(r, 1, "another geopsp run is writing")
    assert not out.exists()


def test_block_size_smaller_than_the_tile_is_a_usage_error(image, models, tmp_path):
    r = invoke("classify", image, "-m", models["ok"], "-o", tmp_path / "c.tif", "--device",
               "cpu", "--tile-size", "256", "--block-size", "128")  # fmt: skip
    assert_clean_error(r, 2, "--block-size 128", "at least the tile size")
    assert not list(tmp_path.iterdir())


def test_threads_option_sets_the_model_threads(image, models, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        r = invoke("classify", image, "-m", models["ok"], "-o", tmp_path / "c.tif", *GRID,
                   "--threads", "1")  # fmt: skip
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    r = invoke("classify", image, "-m", models["ok"], "-o", tmp_path / "d.tif", "--threads", "0")
    assert r.exit_code == 2 and "--threads" in r.output


def test_resume_does_not_skip_an_output_made_with_other_options(image, models, tmp_path):
    out = tmp_path / "classes.tif"
    assert invoke("classify", image, "-m", models["ok"], "-o", out, *GRID).exit_code == 0
    before = out.read_bytes()
    r = invoke("classify", image, "-m", models["ok"], "-o", out, *GRID, "--blend", "linear",
               "--resume")  # fmt: skip
    assert_clean_error(r, 1, "classes.tif exists but was made with blend = 'cosine'", "'linear'",
                       "--overwrite")  # fmt: skip
    assert out.read_bytes() == before


def test_resume_does_not_skip_an_output_made_by_another_model(image, models, tmp_path):
    other = tmp_path / "other.safetensors"
    from model_files import write_model_file

    from .conftest import CLASSES

    write_model_file(other, CLASSES, chip_size=48)  # other weights' metadata, same bands
    out = tmp_path / "classes.tif"
    assert invoke("classify", image, "-m", other, "-o", out, *GRID).exit_code == 0
    r = invoke("classify", image, "-m", models["ok"], "-o", out, *GRID, "--resume")
    assert_clean_error(r, 1, "classes.tif exists but was made with model = ", "--overwrite")


def test_resume_does_not_skip_an_output_missing_its_companions(image, models, tmp_path):
    out, probs, conf = tmp_path / "classes.tif", tmp_path / "probs.tif", tmp_path / "conf.tif"
    assert invoke("classify", image, "-m", models["ok"], "-o", out, *GRID).exit_code == 0
    r = invoke("classify", image, "-m", models["ok"], "-o", out, *GRID, "--probabilities", probs,
               "--resume")  # fmt: skip
    assert_clean_error(r, 1, "--probabilities output", "probs.tif does not", "--overwrite")
    assert not probs.exists()
    # Made with --confidence, asked again with --confidence and --probabilities: the same
    # blocks, but an output is missing.
    assert invoke("classify", image, "-m", models["ok"], "-o", out, *GRID, "--confidence", conf,
                  "--overwrite").exit_code == 0  # fmt: skip
    r = invoke("classify", image, "-m", models["ok"], "-o", out, *GRID, "--confidence", conf,
               "--probabilities", probs, "--resume")  # fmt: skip
    assert_clean_error(r, 1, "--probabilities output", "probs.tif does not", "--overwrite")
    # With its companion made by the same run, the output set is complete and skipped.
    assert invoke("classify", image, "-m", models["ok"], "-o", out, *GRID, "--probabilities",
                  probs, "--overwrite").exit_code == 0  # fmt: skip
    before = out.stat().st_mtime_ns
    r = loud("classify", image, "-m", models["ok"], "-o", out, *GRID, "--probabilities", probs,
             "--resume")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "classes.tif exists; skipped" in r.output and out.stat().st_mtime_ns == before
