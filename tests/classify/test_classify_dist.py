"""``torchrun --nproc-per-node 2 -m geopsp classify``: same bytes as one process (gloo, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import rasterio

from .test_classify_cli import crop, make_model


@pytest.mark.slow
@pytest.mark.parametrize("adapt", [False, True])
def test_torchrun_two_ranks_is_byte_identical(everest, tmp_path, adapt):
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
    if adapt:  # rank 0's estimate of the class mixes must reach every rank
        common += ["--adapt-priors", str(everest["image"])]

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


@pytest.mark.slow
def test_torchrun_continues_a_killed_resumable_run(everest, tmp_path):
    """A single-process ``--resume`` run killed after some block rows, finished by two ranks:
    the same bytes as an uninterrupted run (every rank starts at the recorded row)."""
    import json
    import signal
    import time

    model = make_model(tmp_path / "model.safetensors")
    src = crop(everest["image"], tmp_path / "in.tif", 512)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the thread count is part of the state
    common = ["-m", "geopsp", "-q", "classify", str(src), "-m", str(model), "--tile-size", "96",
              "--overlap", "16", "--batch-size", "3", "--block-size", "128",
              "--co", "BLOCKXSIZE=128", "--co", "BLOCKYSIZE=128"]  # fmt: skip
    ref = subprocess.run([sys.executable, *common, "-o", str(tmp_path / "ref.tif")], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "out.tif"
    state = tmp_path / "out.tif.partial" / "state.json"
    args = [*common, "-o", str(out), "--resume"]
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    end = time.monotonic() + 120
    while time.monotonic() < end and proc.poll() is None:
        try:
            if json.loads(state.read_text())["rows_done"] >= 1:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = json.loads(state.read_text())["rows_done"]
    assert 1 <= rows < 4 and not out.exists()

    dist = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert dist.returncode == 0, dist.stderr[-3000:]
    assert out.read_bytes() == (tmp_path / "ref.tif").read_bytes()
    assert not state.parent.exists()
