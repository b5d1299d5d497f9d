"""End-to-end training on the real Everest sample, and DDP with two CPU processes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from geopsp.cli.main import cli
from geopsp.train.run import OUTPUT_FILES

ROOT = Path(__file__).resolve().parents[2]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.slow
def test_everest_glaciers_are_learned(everest_model):
    """The shared ``everest_model`` fixture *is* the Everest run (resnet18 from scratch, 64 px
    chips, 2 epochs on CPU, see tests/conftest.py); here we check what it learned."""
    from geopsp.models.modelfile import read_metadata

    meta = read_metadata(everest_model)
    m = meta["metrics"]
    support = [r["support"] for r in m["per_class"]]
    majority = max(support) / sum(support)
    # The validation blocks are 64.5 % glacier, a hard part of the scene: two epochs reach
    # 0.68 pixel accuracy, 0.44 mIoU and background IoU 0.24 there. Predicting the majority
    # class everywhere would score 0.645, 0.32 and 0.
    assert m["pixel_accuracy"] > majority, (m["pixel_accuracy"], majority)
    assert m["miou"] > 0.4
    assert m["per_class"][0]["iou"] > 0.15
    assert meta["architecture"]["backbone"] == "resnet18"
    assert [c["name"] for c in meta["classes"]] == ["background", "glacier_outlines"]
    run = everest_model.parent
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert png_size(run / "curves.png") == (1000, 400)
    assert png_size(run / "val_preview.png") == (750, 4 * 250)
    # The model file is self-describing: `geopsp info` reads it.
    res = CliRunner().invoke(cli, ["info", str(everest_model)])
    assert res.exit_code == 0, res.output
    assert "glacier_outlines" in res.output and "resnet18" in res.output


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    from conftest import write_chip_folder

    chips = write_chip_folder(tmp_path / "chips", n=12)
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--standalone", "-m", "geopsp", "-q", "train", str(chips), "-o", str(out),
        "--epochs", "2", "--backbone", "tu-mobilenetv3_small_050", "--encoder-weights", "none",
        "--output-stride", "16", "--no-pointrend", "--decoder", "upsample", "--batch-size", "2",
        "--lr", "0.001", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Rank 0 alone writes: one model, one metrics row per epoch, one summary per epoch.
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert "x2" in proc.stdout  # the header line reports two processes
    assert proc.stdout.count("epoch 2/2") == 1
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # Each rank trained on half the chips: 9 training chips -> 4 per rank, 2 steps of 2.
    assert all(float(r["chips_per_s"]) > 0 for r in rows)
    from geopsp.models.modelfile import read_metadata

    meta = read_metadata(out / "model.safetensors")
    assert [c["value"] for c in meta["classes"]] == [0, 1]
