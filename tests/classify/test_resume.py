"""Resumable classification: seams and progress on disk, continuing gives the same bytes.

The SIGKILL-and-resume test of the real CLI is in tests/robustness/test_faults.py; here the
pieces are checked one by one, with pseudo-models so that everything runs in seconds.
"""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geopsp.classify.blending import Blender, blocks_from_stream
from geopsp.classify.predictor import Predictor
from geopsp.classify.resume import Journal, partial_dir
from geopsp.classify.run import ClassifyOptions, classify_raster
from geopsp.classify.tiling import TileGrid
from geopsp.core.classes import ClassInfo
from geopsp.core.errors import OutputError, UsageError

K = 3


def _tile_probs(tile, k=K):
    """Deterministic pseudo-probabilities for one tile (the same whichever run computes it)."""
    rng = np.random.default_rng(tile.row * 100_003 + tile.col)
    return rng.random((k, 64, 64), dtype=np.float32)


def _items(grid, first_block=0):
    for b in range(first_block, grid.n_blocks):
        for t in grid.block_tiles(b):
            yield t, _tile_probs(t), None


@pytest.mark.parametrize("row", [1, 2, 3, 4])
def test_blender_resumes_from_seam_files(tmp_path, row):
    grid = TileGrid(300, 230, 64, 12, 64)  # 5 block rows x 4 block columns
    full = list(blocks_from_stream(grid, Blender(grid, K), _items(grid)))
    seams = tuple(str(tmp_path / f"s{i}") for i in range(3))
    first = Blender(grid, K, seam_paths=seams)
    stream = blocks_from_stream(grid, first, _items(grid))
    done = [next(stream) for _ in range(row * grid.block_cols)]
    first.close()  # the first run dies here; a new process continues from the files
    second = Blender(grid, K, seam_paths=seams)
    second.resume(row)
    rest = list(blocks_from_stream(grid, second, _items(grid, row * grid.block_cols),
                                   row * grid.block_cols))  # fmt: skip
    second.close()
    assert len(done) + len(rest) == grid.n_blocks
    for a, b in zip(full, done + rest, strict=True):
        assert (a.row, a.col) == (b.row, b.col)
        np.testing.assert_array_equal(a.sums, b.sums)  # bitwise: same additions, same order
        np.testing.assert_array_equal(a.weights, b.weights)


def _write(path, arr):
    prof = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                dtype=arr.dtype, crs="EPSG:32632", transform=from_origin(500000, 4000000, 2, 2),
                nodata=0)  # fmt: skip
    with rasterio.open(path, "w", **prof) as d:
        d.write(arr)
    return str(path)


def _classes():
    return [ClassInfo(10 * i, f"class {i}", (20 * i, 100, 200)) for i in range(K)]


class Flaky:
    """A pseudo-model (a smooth function of the input) that fails after ``fail_after`` calls,
    once ``state`` (a progress file) records at least one finished block row."""

    def __init__(self, fail_after=None, exc: type[BaseException] = RuntimeError, state=None):
        self.calls, self.fail_after, self.exc, self.state = 0, fail_after, exc, state

    def __call__(self, x):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            end = time.monotonic() + 20
            while self.state is not None and time.monotonic() < end:
                with contextlib.suppress(OSError, ValueError):
                    if json.loads(self.state.read_text())["rows_done"] >= 1:
                        break
                time.sleep(0.01)
            raise self.exc("the machine went away")
        return x * 0.7 + x.roll(1, dims=-1) * 0.3  # mixes neighbours: seams matter


def _predictor(model):
    return Predictor(model, _classes(), [0.0] * K, [255.0] * K, activation="none")


def _raster(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(1, 255, size=(K, 700, 420), dtype=np.uint8)
    arr[:, 300:340, 50:200] = 0  # a nodata hole across a block border
    return _write(tmp_path / "in.tif", arr)


def _opts(**kw):
    base = dict(tile_size=64, overlap=12, block_size=128, batch_size=3, progress=False,
                creation_options={"BLOCKXSIZE": "128", "BLOCKYSIZE": "128"})  # fmt: skip
    base.update(kw)
    return ClassifyOptions(**base)


def _files(out):
    return {p.name: p.read_bytes() for p in sorted(out.parent.glob(out.stem + "*")) if p.is_file()}


@pytest.mark.parametrize(("fail_after", "cog"), [(9, False), (20, False), (33, False), (20, True)])
def test_interrupted_run_resumes_to_identical_bytes(tmp_path, fail_after, cog):
    # 14 x 8 tiles in 6 x 4 blocks: a block row is 3 x 8 tiles, 8 batches of 3
    src = _raster(tmp_path)
    ref = tmp_path / "ref" / "cls.tif"
    ref.parent.mkdir()
    extras = dict(probabilities=str(ref.parent / "p.tif"), confidence=str(ref.parent / "c.tif"),
                  cog=cog)  # fmt: skip
    classify_raster(src, ref, _predictor(Flaky()), _opts(**extras))

    out = tmp_path / "run" / "cls.tif"
    out.parent.mkdir()
    extras = dict(probabilities=str(out.parent / "p.tif"), confidence=str(out.parent / "c.tif"),
                  cog=cog)  # fmt: skip
    flaky = Flaky(fail_after, state=partial_dir(out) / "state.json")
    with pytest.raises(RuntimeError, match="went away"):
        classify_raster(src, out, _predictor(flaky), _opts(resume=True, **extras))
    assert not out.exists()
    rows = json.loads((partial_dir(out) / "state.json").read_text())["rows_done"]
    assert 1 <= rows < 6
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".geopsp-tmp")]
    assert leftovers == []  # a failure removes the partial rasters; the journal stays

    model = Flaky()
    s = classify_raster(src, out, _predictor(model), _opts(resume=True, **extras))
    assert not partial_dir(out).exists()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        p.name for p in ref.parent.iterdir()
    )
    for name in ("cls.tif", "cls.tif.aux.xml", "cls.qml", "p.tif", "c.tif"):
        assert (out.parent / name).read_bytes() == (ref.parent / name).read_bytes(), name
    # the resumed run computed only the rest, from the batch holding its first tile
    grid = TileGrid(700, 420, 64, 12, 128)
    assert len(grid) == 112 and grid.block_cols == 4
    first_batch = grid.first_tile(rows * grid.block_cols) // 3
    assert model.calls == 38 - first_batch
    assert s.resumed_at_row == rows * 128 and f"continued at row {rows * 128})" in s.line()
    assert s.computed + s.skipped == 112 - 3 * first_batch
    assert sum(s.class_pixels.values()) + s.nodata_pixels == 700 * 420


def test_interrupt_before_first_row_leaves_nothing(tmp_path):
    src = _raster(tmp_path)
    out = tmp_path / "cls.tif"
    with pytest.raises(KeyboardInterrupt):
        classify_raster(src, out, _predictor(Flaky(0, KeyboardInterrupt)), _opts(resume=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_changed_options_refuse_to_resume(tmp_path):
    src = _raster(tmp_path)
    out = tmp_path / "cls.tif"
    with pytest.raises(RuntimeError):
        flaky = Flaky(12, state=partial_dir(out) / "state.json")
        classify_raster(src, out, _predictor(flaky), _opts(resume=True))
    with pytest.raises(
        OutputError, match=r"overlap = 12, this run has 16.*delete .*cls\.tif\.partial"
    ):
        classify_raster(src, out, _predictor(Flaky()), _opts(resume=True, overlap=16))
    assert partial_dir(out).exists() and not out.exists()
    # changing the input is refused too (size and modification time are recorded)
    arr = np.full((K, 700, 420), 9, dtype=np.uint8)
    _write(tmp_path / "in.tif", arr)
    with pytest.raises(OutputError, match="input_"):
        classify_raster(src, out, _predictor(Flaky()), _opts(resume=True))


def test_progress_folder_is_locked_while_in_use(tmp_path):
    out = tmp_path / "cls.tif"
    first = Journal(out, {"a": 1}, 2, 128)
    assert first.open() == 0
    with pytest.raises(OutputError, match="another geopsp run is writing"):
        Journal(out, {"a": 1}, 2, 128).open()
    first.commit(0)
    first.close()
    again = Journal(out, {"a": 1}, 2, 128)
    assert again.open() == 1  # the lock went with the first run
    again.close(remove=True)
    assert not partial_dir(out).exists()


def test_damaged_progress_is_refused(tmp_path):
    out = tmp_path / "cls.tif"
    j = Journal(out, {"a": 1}, 2, 128)
    j.open()
    j.commit(0)  # claims a row whose blocks were never saved
    j.close()
    (partial_dir(out) / "state.json").write_text("{not json")
    with pytest.raises(OutputError, match=r"state\.json is damaged.*delete"):
        Journal(out, {"a": 1}, 2, 128).open()
    (partial_dir(out) / "state.json").write_text(
        json.dumps({"format": 1, "rows_done": 1, "fingerprint": {"a": 1}})
    )
    j = Journal(out, {"a": 1}, 2, 128)
    assert j.open() == 1
    with pytest.raises(OutputError, match=r"000000\.npz is missing or damaged"):
        list(j.finished_blocks())
    j.close()


def test_block_size_smaller_than_tile_is_a_usage_error(tmp_path):
    src = _raster(tmp_path)
    with pytest.raises(UsageError, match="--block-size 32 must be at least the tile size"):
        classify_raster(src, tmp_path / "o.tif", _predictor(Flaky()), _opts(block_size=32))


def test_full_disk_keeps_progress_and_resume_finishes(tmp_path, monkeypatch):
    """The disk fills up after 3 block rows: one clear error, progress kept; after freeing
    space the same command finishes with the bytes of an uninterrupted run."""
    import errno

    src = _raster(tmp_path)
    ref = tmp_path / "ref.tif"
    classify_raster(src, ref, _predictor(Flaky()), _opts())
    out = tmp_path / "cls.tif"
    save = Journal.save_block

    def filling(self, row, col, arrays):
        if row >= 3 * self.block:  # a block of the fourth block row
            raise OSError(errno.ENOSPC, "No space left on device")
        save(self, row, col, arrays)

    monkeypatch.setattr(Journal, "save_block", filling)
    with pytest.raises(OutputError, match="no space left on the device"):
        classify_raster(src, out, _predictor(Flaky()), _opts(resume=True))
    monkeypatch.setattr(Journal, "save_block", save)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".geopsp-tmp" in p.name]
    assert json.loads((partial_dir(out) / "state.json").read_text())["rows_done"] == 3
    model = Flaky()
    classify_raster(src, out, _predictor(model), _opts(resume=True))
    assert out.read_bytes() == ref.read_bytes()
    assert model.calls == 38 - TileGrid(700, 420, 64, 12, 128).first_tile(12) // 3


def test_other_thread_count_is_refused_with_the_option_to_use(tmp_path):
    out = tmp_path / "cls.tif"
    j = Journal(out, {"cpu_threads": 4, "tile": 64}, 1, 512)
    j.open()
    j.close()
    with pytest.raises(OutputError, match=r"cpu_threads = 4, this run has 1; use --threads 4"):
        Journal(out, {"cpu_threads": 1, "tile": 64}, 1, 512).open()


@pytest.mark.parametrize(
    ("before", "now", "hint"), [(False, True, "--no-amp"), (True, False, "--amp")]
)
def test_other_precision_is_refused_with_the_option_to_use(tmp_path, before, now, hint):
    out = tmp_path / "cls.tif"
    j = Journal(out, {"amp": before, "tile": 64}, 1, 512)
    j.open()
    j.close()
    with pytest.raises(OutputError, match=rf"amp = {before}, this run has {now}; use {hint} as"):
        Journal(out, {"amp": now, "tile": 64}, 1, 512).open()


def test_blender_never_overwrites_the_seams_recorded_progress_needs(tmp_path, monkeypatch):
    """With a slow writer, the blender may run ahead, but never writes the seam file that the
    last recorded row points to (else a crash at that moment would resume from wrong sums)."""
    from geopsp.classify import blending
    from geopsp.classify.pipeline import Progress, Settings, run_pipeline

    grid = TileGrid(640, 60, 64, 12, 64)  # 10 block rows of one block: the blender runs ahead
    seams = tuple(str(tmp_path / f"s{i}") for i in range(3))
    rows_done, started, violations = [0], [0], []
    start, put = blending.Blender.start, blending._SeamFile.put

    def tracking_start(self, block):
        started[0] = block // grid.block_cols
        start(self, block)

    def checked_put(self, slot, arr):
        row, needed = started[0], rows_done[0] - 1  # the row whose seams resuming would read
        if needed >= 0 and self._file.name == seams[needed % 3] and row != needed:
            violations.append((row, rows_done[0]))
        put(self, slot, arr)

    def slow_commit(row):
        time.sleep(0.03)
        rows_done[0] = row + 1

    monkeypatch.setattr(blending.Blender, "start", tracking_start)
    monkeypatch.setattr(blending._SeamFile, "put", checked_put)

    class Recording(Progress):
        seam_paths = seams

        def row_done(self, row):
            slow_commit(row)

    blocks = []
    run_pipeline(
        grid, lambda t: (np.ones((K, 64, 64), np.float32), np.ones((64, 64), bool)),
        lambda x: x * 0.5, blocks.append, K, Settings(batch_size=2), progress=Recording(),
    )  # fmt: skip
    assert len(blocks) == grid.n_blocks and rows_done[0] == 10
    assert violations == []


def test_model_identity_tells_models_apart_without_reading_weights(tmp_path):
    import shutil

    from model_files import write_model_file

    from geopsp.classify.fingerprint import model_identity

    classes = [{"value": v, "name": f"c{v}", "color": [v, v, v]} for v in range(2)]
    a = write_model_file(tmp_path / "a.safetensors", classes)
    b = write_model_file(tmp_path / "b.safetensors", classes, bands=4)  # other weights
    c = write_model_file(tmp_path / "c.safetensors", classes, chip_size=128)  # other metadata
    shutil.copy(a, tmp_path / "copy.safetensors")
    ids = [model_identity(p) for p in (a, b, c, tmp_path / "copy.safetensors")]
    assert len(set(ids[:3])) == 3 and ids[3] == ids[0]


def test_fingerprint_keeps_the_identity_of_the_loaded_weights(tmp_path):
    """A model file replaced after loading (hours later, between inputs) must not lend its
    identity to blocks computed with the weights in memory."""
    import shutil

    from model_files import write_model_file

    from geopsp.classify.fingerprint import classify_fingerprint, model_identity

    classes = [{"value": v, "name": f"c{v}", "color": [v, v, v]} for v in range(K)]
    path = write_model_file(tmp_path / "model.safetensors", classes)
    loaded = model_identity(path)
    pred = Predictor.from_file(str(path), "cpu", amp=False)
    other = write_model_file(tmp_path / "other.safetensors", classes, chip_size=128)
    shutil.copy(other, path)  # the file is replaced while the weights are in use
    fp = classify_fingerprint(_raster(tmp_path), pred, TileGrid(700, 420, 64, 12, 128), [1, 2, 3],
                              _opts())  # fmt: skip
    assert fp["model"] == loaded != model_identity(path)
