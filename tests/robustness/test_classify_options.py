"""classify's reader threads: ``--read-threads``, and ``--workers`` as its deprecated name."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from .conftest import image_array, invoke, write_raster

GRID = ["--device", "cpu", "--tile-size", "64", "--overlap", "8"]


def test_workers_is_a_deprecated_alias_of_read_threads(models, tmp_path):
    from geopsp.cli.main import cli

    image = write_raster(tmp_path / "image.tif", np.tile(image_array(), (1, 2, 2)))
    one, threads, old = tmp_path / "one.tif", tmp_path / "threads.tif", tmp_path / "old.tif"
    assert invoke("classify", image, "-m", models["ok"], "-o", one, *GRID).exit_code == 0
    r = invoke("classify", image, "-m", models["ok"], "-o", threads, *GRID, "--read-threads", "3")
    assert r.exit_code == 0 and "is deprecated" not in r.output, r.output
    args = ["classify", image, "-m", models["ok"], "-o", old, *GRID, "--workers", "3"]
    r = CliRunner().invoke(cli, list(map(str, args)))  # without -q: warnings are printed
    assert r.exit_code == 0, r.output
    assert "--workers is deprecated; use --read-threads" in r.output
    assert one.read_bytes() == threads.read_bytes() == old.read_bytes()
    help_text = CliRunner().invoke(cli, ["classify", "--help"]).output
    assert "--read-threads" in help_text and "--workers" not in help_text
