"""``torchrun --nproc-per-node 2 -m geopsp classify``: same bytes as one process (gloo, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import rasterio
from test_classify import crop, make_model


@pytest.mark.slow
def test_torchrun_two_ranks_is_byte_identical(everest, tmp_path):
    model = make_model(tmp_path / "model.safetensors")
    src = crop(everest["image"], tmp_path / "in.tif", 300, nodata=0)
    with rasterio.open(src, "r+") as d:  # a nodata corner: skipped tiles on one rank only
        arr = d.read()
        arr[:, :120, :120] = 0
        d.write(arr)
    # oneDNN may order a convolution's sums differently with a different thread count, so
    # every process gets the same count (torchrun's default is 1 per rank).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["classify", str(src), "-m", str(model), "--tile-size", "96", "--overlap", "16",
              "--batch-size", "3"]  # fmt: skip

    def outs(tag):
        return [
            "-o",
            str(tmp_path / f"{tag}.tif"),
            "--probabilities",
            str(tmp_path / f"{tag}_p.tif"),
        ]

    single = subprocess.run([sys.executable, "-m", "geopsp", "-q", *common, *outs("single")],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert single.returncode == 0, single.stderr
    dist = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "geopsp", "-q", *common, *outs("dist")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert dist.returncode == 0, dist.stderr[-3000:]
    assert dist.stdout.count("pixels") == 1  # only rank 0 reports
    for a, b in (("single.tif", "dist.tif"), ("single_p.tif", "dist_p.tif")):
        assert (tmp_path / a).read_bytes() == (tmp_path / b).read_bytes(), (a, b)
    with rasterio.open(tmp_path / "dist.tif") as d:
        assert (d.read(1)[:100, :100] == 255).all() and (d.read(1)[150:, 150:] != 255).all()
    assert sorted(p.name for p in tmp_path.iterdir() if ".geopsp-tmp" in p.name) == []
