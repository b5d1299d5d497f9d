"""Faults: Ctrl-C (SIGINT) and SIGKILL in the middle of export-chips, train and classify, and a
full disk. No final output may look complete when it is not; ``train --resume`` after a
SIGKILL finishes with exactly the metrics of an uninterrupted run (CPU, fixed seed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import image_array, write_raster

pytestmark = pytest.mark.slow

TRAIN = ["--backbone", "resnet18", "--encoder-weights", "none", "--output-stride", "16",
         "--decoder", "upsample", "--no-pointrend", "--lr", "1e-3", "--device", "cpu",
         "--batch-size", "4", "--augment", "flips", "--patience", "0", "--seed", "0"]  # fmt: skip
TMP = ".geopsp-tmp-"


def start(*args: object) -> subprocess.Popen:
    """``python -m geopsp -q ARGS`` in a new process (its own signals, like a terminal run)."""
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "geopsp", "-q", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip


def wait_for(proc: subprocess.Popen, found, timeout: float = 60.0) -> None:
    """Poll until ``found()`` is true; fail if the process ends or time runs out first."""
    end = time.monotonic() + timeout
    while not found():
        if proc.poll() is not None:
            pytest.fail(f"finished before the interruption: {proc.communicate()[0]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("the work never started")
        time.sleep(0.02)


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TMP in p.name]


def interrupt(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # a hang on Ctrl-C is itself the bug
        proc.kill()
        pytest.fail(f"still running 30 s after signal {sig}: {proc.communicate()[0]}")
    return proc.returncode, out


def assert_interrupted(code: int, out: str, sig: int) -> None:
    if sig == signal.SIGINT:  # the CLI's own message and exit code, no traceback
        assert code == 130, out
        assert "Traceback" not in out and "Interrupted" in out, out
    else:
        assert code == -signal.SIGKILL, out


@pytest.fixture(scope="module")
def big_image(tmp_path_factory) -> Path:
    """1024 x 1024 pixels: a few seconds of work for every command."""
    arr = np.tile(image_array(), (1, 16, 16))
    return write_raster(tmp_path_factory.mktemp("big") / "big.tif", arr)


@pytest.fixture(scope="module")
def big_labels(big_image, tmp_path_factory) -> Path:
    from shapely.geometry import box

    from .conftest import RES, X0, Y0, write_vector

    boxes = [box(X0 + c * 640 + 80, Y0 - r * 640 - 400, X0 + c * 640 + 400, Y0 - r * 640 - 80)
             for r in range(16) for c in range(16)]  # fmt: skip
    assert RES == 10.0
    return write_vector(tmp_path_factory.mktemp("big_labels") / "l.gpkg", boxes, [1] * 256)


@pytest.mark.parametrize(
    ("sig", "workers"),
    [(signal.SIGINT, 0), (signal.SIGKILL, 0), (signal.SIGINT, 2)],
    ids=["SIGINT", "SIGKILL", "SIGINT-workers"],
)
def test_export_chips_interrupted(sig, workers, big_image, big_labels, tmp_path):
    out = tmp_path / "chips"
    proc = start("export-chips", big_image, "--labels", big_labels, "-o", out,
                 "--chip-size", "16", "--stride", "8", "--workers", workers)  # fmt: skip
    wait_for(proc, lambda: any((tmp_path / p.name / "images").exists() for p in temps(tmp_path)))
    time.sleep(0.3)
    assert_interrupted(*interrupt(proc, sig), sig)
    assert not out.exists()  # the folder appears only complete
    if sig == signal.SIGINT:
        assert not temps(tmp_path)


@pytest.mark.parametrize(
    ("sig", "threads"),
    [(signal.SIGINT, 0), (signal.SIGKILL, 0), (signal.SIGINT, 2)],
    ids=["SIGINT", "SIGKILL", "SIGINT-read-threads"],
)
def test_classify_interrupted(sig, threads, big_image, models, tmp_path):
    out = tmp_path / "classes.tif"
    proc = start("classify", big_image, "-m", models["ok"], "-o", out, "--device", "cpu",
                 "--tile-size", "64", "--overlap", "8", "--batch-size", "1",
                 "--read-threads", threads)  # fmt: skip
    wait_for(proc, lambda: bool(temps(tmp_path)))
    time.sleep(0.5)
    assert_interrupted(*interrupt(proc, sig), sig)
    assert not out.exists() and not Path(str(out) + ".aux.xml").exists()
    assert not (tmp_path / "classes.qml").exists()
    if sig == signal.SIGINT:
        assert not temps(tmp_path)


RESUME = ["--device", "cpu", "--tile-size", "64", "--overlap", "8", "--batch-size", "3",
          "--block-size", "128", "--co", "BLOCKXSIZE=128", "--co", "BLOCKYSIZE=128"]  # fmt: skip


def rows_done(out: Path) -> int:
    import json

    try:
        return json.loads((Path(str(out) + ".partial") / "state.json").read_text())["rows_done"]
    except (OSError, ValueError, KeyError):
        return 0


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_classify_resume_is_byte_identical(sig, big_image, models, tmp_path):
    """1024 x 1024 pixels in 8 block rows; stopped after 2 or more, continued, compared."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir(), run.mkdir()
    proc = start("classify", big_image, "-m", models["ok"], "-o", ref / "c.tif", *RESUME,
                 "--probabilities", ref / "p.tif")  # fmt: skip
    assert proc.wait(timeout=120) == 0, proc.communicate()[0]

    out = run / "c.tif"
    proc = start("classify", big_image, "-m", models["ok"], "-o", out, *RESUME,
                 "--probabilities", run / "p.tif", "--resume")  # fmt: skip
    wait_for(proc, lambda: rows_done(out) >= 2)
    assert_interrupted(*interrupt(proc, sig), sig)
    done = rows_done(out)
    assert 2 <= done < 8
    assert not out.exists() and not (run / "p.tif").exists()  # nothing looks finished
    if sig == signal.SIGINT:
        assert not temps(run)  # the partial rasters are gone; the progress folder stays

    proc = start("classify", big_image, "-m", models["ok"], "-o", out, *RESUME,
                 "--probabilities", run / "p.tif", "--resume")  # fmt: skip
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, text
    # only the rest was computed: 19 x 19 tiles, at least 2 rows of 19 per finished block row
    import re

    found = re.search(r"(\d+) tiles, continued at row (\d+)\)", text)
    assert found and int(found[2]) == done * 128, text
    assert int(found[1]) <= 361 - done * 19 * 2
    assert outputs(run) == outputs(ref)  # class raster, .aux.xml, .qml, probabilities
    assert not temps(run) and not Path(str(out) + ".partial").exists()


def metrics(folder: Path) -> list[dict]:
    """metrics.csv without the timing columns (which differ between any two runs)."""
    from conftest import read_metrics

    return read_metrics(folder / "metrics.csv")


def test_train_sigint_leaves_no_model(chip_folder, tmp_path):
    chips = chip_folder("chips", n=8)
    out = tmp_path / "run"
    # With DataLoader worker processes: they must not keep the run alive after Ctrl-C.
    # Far more epochs than can finish before the signal, however fast the machine is.
    proc = start("train", chips, "-o", out, "--epochs", "100000", "--workers", "2", *TRAIN)
    line = proc.stdout.readline()  # printed once the chips are open and training begins
    assert line.startswith("training on"), line
    time.sleep(0.5)
    assert_interrupted(*interrupt(proc, signal.SIGINT), signal.SIGINT)
    assert not temps(tmp_path)
    # Epochs finished before the signal may leave their best model and checkpoint (to
    # resume), but every file at a final name must be complete.
    if out.exists():
        _assert_complete(out)


def _assert_complete(out: Path) -> None:
    import torch

    from geopsp.models.modelfile import load_model

    if (out / "model.safetensors").exists():
        load_model(out / "model.safetensors", "cpu")
    if (out / "last.ckpt").exists():
        torch.load(out / "last.ckpt", weights_only=True)


def test_train_resume_after_sigkill_equals_uninterrupted(chip_folder, tmp_path):
    chips = chip_folder("chips", n=8)
    full, cut = tmp_path / "full", tmp_path / "cut"
    ref = start("train", chips, "-o", full, "--epochs", "2", *TRAIN)
    proc = start("train", chips, "-o", cut, "--epochs", "2", *TRAIN)
    wait_for(proc, lambda: (cut / "last.ckpt").exists(), timeout=120)
    assert_interrupted(*interrupt(proc, signal.SIGKILL), signal.SIGKILL)
    assert (cut / "metrics.csv").exists() and len(metrics(cut)) == 1
    _assert_complete(cut)
    # A SIGKILL cannot clean up: temp files may stay in the folder and must not confuse --resume.
    resumed = start("train", chips, "-o", cut, "--epochs", "2", "--resume", cut / "last.ckpt",
                    *TRAIN)  # fmt: skip
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out
    out, _ = ref.communicate(timeout=180)
    assert ref.returncode == 0, out
    assert len(metrics(full)) == 2
    assert metrics(cut) == metrics(full)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs mounted in tmp_path (needs root or CAP_SYS_ADMIN; skipped otherwise)."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up ({r.stderr.strip() or r.returncode})")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until only about ``leave`` bytes are free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    (disk / "filler").write_bytes(b"\0" * max(free - leave, 0))


def test_export_chips_disk_full(tiny_disk, big_image, big_labels):
    from .conftest import assert_clean_error, invoke

    fill(tiny_disk, 64 * 1024)
    out = tiny_disk / "chips"
    r = invoke("export-chips", big_image, "--labels", big_labels, "-o", out, "--chip-size", "64")
    assert_clean_error(r, 1, "no space left")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_classify_disk_full(tiny_disk, big_image, models):
    from .conftest import assert_clean_error, invoke

    fill(tiny_disk, 64 * 1024)
    out = tiny_disk / "classes.tif"
    r = invoke("classify", big_image, "-m", models["ok"], "-o", out, "--device", "cpu",
               "--tile-size", "256", "--co", "COMPRESS=NONE")  # fmt: skip
    assert_clean_error(r, 1, "no space left")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]
