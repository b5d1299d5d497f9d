"""``geopsp info``: summary, JSON metadata, clean errors, no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from geopsp.cli.main import cli
from geopsp.models import build_model
from geopsp.models.modelfile import save_model

WKT_UTM45 = (
    'PROJCS["WGS 84 / UTM zone 45N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",'
    '6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
    'PROJECTION["Transverse_Mercator"],UNIT["metre",1],AUTHORITY["EPSG","32645"]]'
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model({"in_channels": 3, "num_classes": 2, "decoder": "upsample"})
    path = tmp_path_factory.mktemp("info") / "glaciers.safetensors"
    save_model(
        path,
        model,
        {
            "bands": [1, 2, 3],
            "normalization": {"mean": [80.5, 90.25, 100.0], "std": [20.0, 21.0, 22.0]},
            "classes": [
                {"value": 0, "name": "background", "color": [0, 0, 0]},
                {"value": 1, "name": "glacier", "color": [80, 160, 255]},
            ],
            "chip_size": 256,
            "resolution": [30.0, 30.0],
            "crs": WKT_UTM45,
            "metrics": {"miou": 0.8123, "epoch": 7},
            "train_config": {"epochs": 10},
        },
    )
    return path, sum(p.numel() for p in model.parameters())


def test_summary(model_file):
    path, n_params = model_file
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "resnet18" in out and "output stride 8" in out and "multiples of 8" in out
    assert "1,3,5,6" in out and "upsample" in out and "PointRend       on (8192" in out
    assert f"{n_params:,}" in out
    assert "source bands 1,2,3" in out and "chip size       256" in out
    assert "30 x 30" in out and "WGS 84 / UTM zone 45N (EPSG:32645)" in out
    assert "80.5" in out and "22" in out
    assert "#50a0ff  glacier" in out and "#000000  background" in out
    assert "miou" in out and "0.8123" in out


def test_json(model_file):
    path, _ = model_file
    result = CliRunner().invoke(cli, ["info", str(path), "--json"])
    assert result.exit_code == 0
    md = json.loads(result.stdout)
    assert set(md) == {
        "format_version",
        "geopsp_version",
        "architecture",
        "bands",
        "normalization",
        "classes",
        "chip_size",
        "resolution",
        "crs",
        "metrics",
        "train_config",
    }
    assert {
        "backbone",
        "in_channels",
        "num_classes",
        "output_stride",
        "pyramid_sizes",
        "decoder",
        "pointrend",
    } <= set(md["architecture"])
    assert md["architecture"]["decoder"] == "upsample"
    assert md["classes"][1] == {"value": 1, "name": "glacier", "color": [80, 160, 255]}
    assert md["normalization"]["mean"] == [80.5, 90.25, 100.0]


@pytest.mark.parametrize("kind", ["missing", "foreign", "truncated"])
def test_errors_are_one_line_exit_1(model_file, tmp_path, everest, kind):
    if kind == "missing":
        target = tmp_path / "nope.safetensors"
    elif kind == "foreign":
        target = everest["labels"]
    else:
        target = tmp_path / "cut.safetensors"
        target.write_bytes(model_file[0].read_bytes()[:5000])
    result = CliRunner().invoke(cli, ["info", str(target)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")


def test_info_does_not_import_torch(model_file):
    code = (
        "import sys; from click.testing import CliRunner; from geopsp.cli.main import cli; "
        f"r = CliRunner().invoke(cli, ['info', {str(model_file[0])!r}]); "
        "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
