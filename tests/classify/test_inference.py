"""The full classify pipeline driven by pseudo-models (plain callables)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from geopsp.classify.predictor import Predictor
from geopsp.classify.run import ClassifyOptions, classify_raster, plan_tiles
from geopsp.classify.tiling import jump_bound
from geopsp.core.class_raster import read_classes
from geopsp.core.classes import ClassInfo
from geopsp.core.errors import OutputError, UsageError


def _write(path, arr, nodata=None, crs="EPSG:32632"):
    prof = dict(
        driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
        dtype=arr.dtype, crs=crs, transform=from_origin(500000, 4000000, 2, 2), nodata=nodata,
    )  # fmt: skip
    with rasterio.open(path, "w", **prof) as d:
        d.write(arr)
    return str(path)


def _classes(k):
    return [ClassInfo(10 * i, f"class {i}", (20 * i, 100, 200)) for i in range(k)]


def _identity(k):
    return Predictor(lambda x: x, _classes(k), [0.0] * k, [255.0] * k, activation="none")


def _opts(tmp_path, **kw):
    base = dict(tile_size=96, overlap=16, overwrite=True, progress=False)
    base.update(kw)
    return ClassifyOptions(**base)


def _probability_raster(shape, seed=0):
    """K bands of uint8 "probabilities" summing to 255 per pixel, exact in /255 units."""
    k, h, w = shape
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 255 // k, size=(k - 1, h, w))
    return np.concatenate([q, (255 - q.sum(0))[None]]).astype(np.uint8)


@pytest.mark.parametrize(
    ("blend", "block"), [("cosine", None), ("cosine", 96), ("linear", 128), ("none", 200)]
)
def test_identity_model_reproduces_input_exactly(tmp_path, blend, block):
    arr = _probability_raster((3, 301, 257))
    arr[:, 40:60, 100:140] = 0  # nodata hole
    src = _write(tmp_path / "in.tif", arr, nodata=0)
    out, probs = tmp_path / "cls.tif", tmp_path / "p.tif"
    opts = _opts(
        tmp_path,
        blend=blend,
        block_size=block,
        probabilities=str(probs),
        confidence=str(tmp_path / "c.tif"),
    )
    s = classify_raster(src, out, _identity(3), opts)
    valid = (arr != 0).any(axis=0)
    with rasterio.open(probs) as d:
        p = d.read()
        assert (d.dataset_mask()[~valid] == 0).all() and (d.dataset_mask()[valid] == 255).all()
    np.testing.assert_array_equal(p[:, valid], arr[:, valid])
    with rasterio.open(out) as d:
        c = d.read(1)
    expected = (np.argmax(arr, axis=0) * 10).astype(np.uint8)
    np.testing.assert_array_equal(c[valid], expected[valid])
    assert (c[~valid] == 255).all()
    with rasterio.open(tmp_path / "c.tif") as d:
        np.testing.assert_array_equal(d.read(1)[valid], arr.max(axis=0)[valid])
        assert (d.read(1)[~valid] == 0).all()
    assert s.nodata_pixels == int((~valid).sum())
    assert sum(s.class_pixels.values()) == int(valid.sum())


def test_parallel_readers_give_the_same_result(tmp_path):
    arr = _probability_raster((2, 200, 230))
    src = _write(tmp_path / "in.tif", arr)
    for w in (0, 3):
        probs = tmp_path / f"p{w}.tif"
        classify_raster(
            src,
            tmp_path / f"c{w}.tif",
            _identity(2),
            _opts(tmp_path, read_threads=w, probabilities=str(probs)),
        )
        with rasterio.open(probs) as d:
            np.testing.assert_array_equal(d.read(), arr)


def test_identity_with_small_blocks_and_tiny_rasters(tmp_path):
    """Rasters smaller than a tile (padded) and 1-pixel-wide strips go through unchanged."""
    for i, shape in enumerate([(2, 1, 1), (2, 50, 40), (2, 3, 700), (2, 700, 3)]):
        arr = _probability_raster(shape, seed=i)
        src = _write(tmp_path / f"in{i}.tif", arr)
        out, probs = tmp_path / f"c{i}.tif", tmp_path / f"p{i}.tif"
        classify_raster(src, out, _identity(2), _opts(tmp_path, probabilities=str(probs)))
        with rasterio.open(probs) as d:
            np.testing.assert_array_equal(d.read(), arr)


def test_per_tile_model_blends_without_jumps(tmp_path):
    """A model answering one constant per tile (its input mean) gives smooth blends."""
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 255, size=(1, 400, 380), dtype=np.uint8)
    src = _write(tmp_path / "in.tif", arr)

    def per_tile(x):
        p = torch.sigmoid(x.mean(dim=(1, 2, 3)) * 40)[:, None, None, None]
        return torch.cat([p, 1 - p], dim=1).expand(-1, -1, x.shape[2], x.shape[3]).contiguous()

    seen = []

    def model(x):
        out = per_tile(x)
        seen.extend(out[:, 0, 0, 0].tolist())
        return out

    pred = Predictor(model, _classes(2), [127.0], [40.0], activation="none")
    probs = tmp_path / "p.tif"
    classify_raster(
        src, tmp_path / "c.tif", pred, _opts(tmp_path, overlap=24, probabilities=str(probs))
    )
    with rasterio.open(probs) as d:
        p = d.read(1).astype(np.float64) / 255
    jumps = max(np.abs(np.diff(p, axis=0)).max(), np.abs(np.diff(p, axis=1)).max())
    spread = max(seen) - min(seen)
    assert spread > 0.2  # the tiles really disagree
    assert jumps <= spread * jump_bound(24, "cosine") + 1.5 / 255  # + uint8 rounding


def test_nodata_tiles_skip_the_model(tmp_path):
    arr = _probability_raster((2, 400, 400))
    arr[:, :200, :] = 0
    src = _write(tmp_path / "in.tif", arr, nodata=0)
    calls = []

    def model(x):
        calls.append(len(x))
        return x

    pred = Predictor(model, _classes(2), [0, 0], [255, 255], activation="none")
    s = classify_raster(src, tmp_path / "c.tif", pred, _opts(tmp_path, tile_size=64, overlap=8))
    assert s.skipped > 0 and s.computed == sum(calls) and s.computed + s.skipped == s.tiles


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_tta_is_exact_for_equivariant_models(tmp_path, tta):
    arr = _probability_raster((3, 130, 170))
    src = _write(tmp_path / "in.tif", arr)
    probs = tmp_path / "p.tif"
    classify_raster(
        src, tmp_path / "c.tif", _identity(3), _opts(tmp_path, tta=tta, probabilities=str(probs))
    )
    with rasterio.open(probs) as d:
        np.testing.assert_array_equal(d.read(), arr)


def test_interrupt_leaves_nothing(tmp_path):
    arr = _probability_raster((2, 600, 600))
    src = _write(tmp_path / "in.tif", arr)
    calls = []

    def model(x):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return x

    pred = Predictor(model, _classes(2), [0, 0], [255, 255], activation="none")
    before = set(tmp_path.iterdir())
    opts = _opts(tmp_path, tile_size=64, overlap=8, probabilities=str(tmp_path / "p.tif"), cog=True)
    with pytest.raises(KeyboardInterrupt):
        classify_raster(src, tmp_path / "c.tif", pred, opts)
    assert set(tmp_path.iterdir()) == before


def test_failure_in_writer_propagates_and_cleans_up(tmp_path, monkeypatch):
    from geopsp.classify import outputs

    arr = _probability_raster((2, 300, 300))
    src = _write(tmp_path / "in.tif", arr)

    def boom(self, block):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.OutputSet, "write_block", boom)
    before = set(tmp_path.iterdir())
    with pytest.raises(OutputError, match="no space left"):  # one line, not an OSError trace
        classify_raster(src, tmp_path / "c.tif", _identity(2), _opts(tmp_path))
    assert set(tmp_path.iterdir()) == before


def test_class_table_readback(tmp_path):
    arr = _probability_raster((2, 64, 64))
    src = _write(tmp_path / "in.tif", arr)
    classify_raster(src, tmp_path / "c.tif", _identity(2), _opts(tmp_path))
    assert read_classes(tmp_path / "c.tif") == _classes(2)
    with rasterio.open(src) as d:
        assert read_classes(d) is None


def test_plan_tiles_defaults_and_errors():
    p = _identity(2)
    p.size_multiple, p.chip_size = 8, 256
    assert plan_tiles(p, None, None) == (512, 64)
    p.chip_size = 1024
    assert plan_tiles(p, None, None) == (1024, 128)
    assert plan_tiles(p, 250, 10) == (248, 10)  # rounded to a multiple of 8
    with pytest.raises(UsageError, match="less than half"):
        plan_tiles(p, 256, 128)
    with pytest.raises(UsageError, match="too small"):
        plan_tiles(p, 16, 0)


@pytest.mark.parametrize(
    ("chip", "stride", "tile"),
    [(64, 16, 64), (96, 16, 192), (128, 16, 256), (64, 8, 128), (32, 8, 32), (1024, 16, 1024)],
)
def test_default_tile_keeps_chips_too_small_for_the_pyramid(chip, stride, tile):
    # Deepest map chip / stride against the largest bin (6): smaller keeps the chip size.
    p = _identity(2)
    p.size_multiple, p.chip_size = stride, chip
    p.metadata = {"architecture": {"output_stride": stride, "pyramid_sizes": [1, 3, 5, 6]}}
    assert plan_tiles(p, None, None) == (tile, tile // 8)
    p.metadata = {"architecture": {"output_stride": stride, "pyramid_sizes": [1, 2]}}
    assert plan_tiles(p, None, None)[0] == min(2 * chip, 1024)


def test_warns_about_missing_crs_and_resolution(tmp_path, caplog):
    arr = _probability_raster((2, 64, 64))
    src = _write(tmp_path / "in.tif", arr, crs=None)
    pred = _identity(2)
    pred.resolution = (30.0, 30.0)  # the raster has 2-unit pixels: 15x finer
    with caplog.at_level("WARNING", logger="geopsp"):
        classify_raster(src, tmp_path / "c.tif", pred, _opts(tmp_path))
    text = caplog.text
    assert "no CRS" in text and "trained on 30" in text
    caplog.clear()
    pred.resolution = (3.0, 3.0)  # within 2x: no warning
    src = _write(tmp_path / "in2.tif", arr)
    with caplog.at_level("WARNING", logger="geopsp"):
        classify_raster(src, tmp_path / "c2.tif", pred, _opts(tmp_path))
    assert caplog.text == ""


def test_band_selection_and_mismatch(tmp_path):
    arr = _probability_raster((4, 64, 64))
    src = _write(tmp_path / "in.tif", arr)
    pred = _identity(2)
    with pytest.raises(UsageError, match="4 band.*expects 2.*-b/--bands"):
        classify_raster(src, tmp_path / "c.tif", pred, _opts(tmp_path))
    probs = tmp_path / "p.tif"
    classify_raster(
        src, tmp_path / "c.tif", pred, _opts(tmp_path, bands=[3, 1], probabilities=str(probs))
    )
    with rasterio.open(probs) as d:
        np.testing.assert_array_equal(d.read(), arr[[2, 0]])


def test_alpha_band_masks_pixels(tmp_path):
    from rasterio.enums import ColorInterp

    arr = _probability_raster((3, 90, 120))
    alpha = np.full((1, 90, 120), 255, np.uint8)
    alpha[0, 30:50, 40:90] = 0
    path = tmp_path / "rgba.tif"
    prof = dict(driver="GTiff", width=120, height=90, count=4, dtype="uint8", crs="EPSG:32632",
                transform=from_origin(500000, 4000000, 2, 2), photometric="RGB", alpha="YES")  # fmt: skip
    with rasterio.open(path, "w", **prof) as d:
        d.write(np.concatenate([arr, alpha]))
    with rasterio.open(path) as d:
        assert d.colorinterp[3] == ColorInterp.alpha  # GDAL derives the mask from it
    pred = _identity(3)
    classify_raster(str(path), tmp_path / "c.tif", pred, _opts(tmp_path, bands=[1, 2, 3]))
    with rasterio.open(tmp_path / "c.tif") as d:
        c = d.read(1)
    assert (c[30:50, 40:90] == 255).all()
    assert (c[:30] != 255).all() and (c[50:] != 255).all()


def test_model_bands_beyond_the_input_are_refused_not_guessed(tmp_path):
    """A model trained on source bands 4,5,6 must not silently read bands 1..3 of a
    3-band input: the error names both and -b."""
    src = _write(tmp_path / "in.tif", _probability_raster((3, 64, 64)))
    pred = _identity(3)
    pred.bands = [4, 5, 6]
    with pytest.raises(UsageError, match=r"source bands 4,5,6 .*in\.tif has 3 band.*-b/--bands"):
        classify_raster(src, tmp_path / "c.tif", pred, _opts(tmp_path))
    assert not (tmp_path / "c.tif").exists()
    s = classify_raster(src, tmp_path / "c.tif", pred, _opts(tmp_path, bands=[1, 2, 3]))
    assert s.pixels == 64 * 64  # an explicit -b is taken as given
