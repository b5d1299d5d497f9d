"""A rank that fails mid-run makes every rank stop at once with its error (2 CPU processes
joined with gloo, as torchrun starts them, without torchrun's own clean-up)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

# Each process classifies the same raster; the model fails on rank FAIL at its third batch.
# The failing process then stays alive (as a notebook or a long-lived caller would), so only
# a shared abort can tell the other rank what happened.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    from geopsp.classify.predictor import Predictor
    from geopsp.classify.run import ClassifyOptions, classify_raster
    from geopsp.core.classes import ClassInfo
    from geopsp.core.runtime import setup

    src, out, fail = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rt = setup("cpu", backend="gloo")
    calls = []

    def model(x):
        calls.append(1)
        if rt.rank == fail and len(calls) == 3:
            raise RuntimeError("the machine went away")
        return x

    classes = [ClassInfo(i, f"c{i}", (i, i, i)) for i in range(3)]
    pred = Predictor(model, classes, [0.0] * 3, [255.0] * 3, activation="none")
    opts = ClassifyOptions(tile_size=64, overlap=8, batch_size=1, progress=False)
    t0 = time.monotonic()
    try:
        classify_raster(src, out, pred, opts, rt)
        print("finished", flush=True)
    except Exception as exc:
        print(f"error after {time.monotonic() - t0:.1f} s: {type(exc).__name__}: {exc}", flush=True)
        if rt.rank == fail:
            time.sleep(300)
        sys.exit(1)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("fail", [1, 0])
def test_a_failing_rank_stops_every_rank_with_its_error(tmp_path, fail):
    arr = np.random.default_rng(0).integers(1, 255, size=(3, 256, 256), dtype=np.uint8)
    src = tmp_path / "in.tif"
    with rasterio.open(src, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8",
                       crs="EPSG:32632", transform=from_origin(0, 256, 1, 1)) as d:  # fmt: skip
        d.write(arr)
    (tmp_path / "run.py").write_text(SCRIPT)
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, str(tmp_path / "run.py"), str(src), str(tmp_path / "out.tif"),
             str(fail)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))  # fmt: skip
    other = procs[1 - fail]
    try:
        out, _ = other.communicate(timeout=90)  # gloo alone would wait 30 minutes
    except subprocess.TimeoutExpired:
        other.kill()
        pytest.fail(f"rank {1 - fail} still waits for rank {fail}: {other.communicate()[0]}")
    finally:
        end = time.monotonic() + 5
        while procs[fail].poll() is None and time.monotonic() < end:
            time.sleep(0.1)  # let the failing rank print its own error
        procs[fail].kill()
    failed, _ = procs[fail].communicate()
    assert other.returncode == 1, out
    assert f"RankFailed: rank {fail} failed: the machine went away" in out, out
    assert "RuntimeError: the machine went away" in failed, failed
    assert not (tmp_path / "out.tif").exists()
