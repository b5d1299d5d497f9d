"""--sampling windows: random windows of the exported area, never a validation pixel."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geopsp.chips.export import ExportOptions, export_chips
from geopsp.chips.folder import open_chip_folders
from geopsp.core.classes import IGNORE, value_lut
from geopsp.core.normalize import normalize
from geopsp.train.data import ChipDataset
from geopsp.train.windows import WindowDataset, mosaic_bytes

SIZE = 32


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 200 x 260 scene with a class raster, cut into overlapping chips with a spatial split."""
    tmp = tmp_path_factory.mktemp("windows")
    rng = np.random.default_rng(3)
    img = rng.integers(0, 250, (3, 200, 260), dtype=np.uint8)
    lab = (img[0] > 125).astype(np.uint8)
    prof = dict(
        driver="GTiff", width=260, height=200, crs="EPSG:32631",
        transform=from_origin(500000, 4000000, 10, 10),
    )  # fmt: skip
    with rasterio.open(tmp / "image.tif", "w", count=3, dtype="uint8", **prof) as dst:
        dst.write(img)
    with rasterio.open(tmp / "labels.tif", "w", count=1, dtype="uint8", **prof) as dst:
        dst.write(lab, 1)
    out = tmp / "chips"
    export_chips(
        [str(tmp / "image.tif")],
        str(tmp / "labels.tif"),
        str(out),
        ExportOptions(chip_size=SIZE, stride=SIZE // 2, val_fraction=0.25, seed=0),
    )
    chips = open_chip_folders([str(out)])
    return {"img": img, "lab": lab, "chips": chips}


def _dataset(chips, **kw) -> WindowDataset:
    lut = value_lut(chips.classes)
    return WindowDataset(
        chips.split("train"), chips.chips, lut=lut, mean=chips.mean, std=chips.std,
        chip_size=chips.chip_size, seed=0, **kw,
    )  # fmt: skip


def _val_mask(chips, shape) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for c in chips.split("val"):
        _, r, q = c.origin
        mask[r : r + SIZE, q : q + SIZE] = True
    return mask


def test_windows_are_the_source_pixels_where_they_lie(scene):
    chips = scene["chips"]
    assert chips.split("train") and chips.split("val") and chips.split("gap")
    ds = _dataset(chips)
    val = _val_mask(chips, scene["lab"].shape)
    shifted = 0
    for epoch in range(3):
        for i, chip in enumerate(ds.chips):
            source, r, c = ds.window(i, epoch)
            m = ds.mosaics[source]
            row, col = r + m.row0, c + m.col0
            shifted += (row, col) != chip.origin[1:]
            assert abs(row - chip.origin[1]) <= SIZE // 2 and abs(col - chip.origin[2]) <= SIZE // 2
            x, y = ds[(i, epoch)]
            window = (slice(row, row + SIZE), slice(col, col + SIZE))
            seen = y.numpy() != IGNORE
            # Every labelled pixel is the scene's own label and image, never a validation pixel.
            assert not (seen & val[window]).any()
            assert np.array_equal(y.numpy()[seen], scene["lab"][window][seen])
            expected = normalize(scene["img"][:, window[0], window[1]], chips.mean, chips.std)
            np.testing.assert_allclose(x.numpy()[:, seen], expected[:, seen], rtol=1e-6)
            # Pixels under validation chips reach the network as nodata (zero), not imagery.
            assert np.all(x.numpy()[:, val[window]] == 0)
    assert shifted > len(ds.chips)  # windows move between epochs


def test_windows_are_reproducible_and_change_per_epoch(scene):
    a, b = _dataset(scene["chips"], augment="d4"), _dataset(scene["chips"], augment="d4")
    x1, y1 = a[(5, 2)]
    x2, y2 = b[(5, 2)]
    assert np.array_equal(x1.numpy(), x2.numpy()) and np.array_equal(y1.numpy(), y2.numpy())
    assert [a.window(5, e) for e in range(6)] != [a.window(5, 0)] * 6


def test_mosaic_holds_training_and_gap_pixels_outside_validation(scene):
    chips = scene["chips"]
    ds = _dataset(chips)
    cover = {k: np.zeros(scene["lab"].shape, bool) for k in ("train", "val", "gap")}
    for c in chips.chips:
        cover[c.split][c.origin[1] : c.origin[1] + SIZE, c.origin[2] : c.origin[2] + SIZE] = True
    m = next(iter(ds.mosaics.values()))
    labelled = np.zeros(scene["lab"].shape, bool)
    h, w = m.label.shape
    labelled[m.row0 : m.row0 + h, m.col0 : m.col0 + w] = m.label != IGNORE
    assert np.array_equal(labelled, (cover["train"] | cover["gap"]) & ~cover["val"])


def test_mosaic_bytes_counts_the_bounding_box(scene):
    chips = scene["chips"].chips
    rows = [c.origin[1] for c in chips]
    cols = [c.origin[2] for c in chips]
    h, w = max(rows) - min(rows) + SIZE, max(cols) - min(cols) + SIZE
    assert mosaic_bytes(chips, 3, 4, (SIZE, SIZE)) == h * w * (3 * 4 + 2)


def test_folders_without_positions_use_the_grid(arcgis_chips):
    from geopsp.train.config import TrainConfig, resolve
    from geopsp.train.loaders import _train_set

    chips = open_chip_folders([str(arcgis_chips)])
    assert all(c.origin is None for c in chips.chips)
    cfg = resolve(TrainConfig([str(arcgis_chips)], "unused"))
    cfg.sampling = "windows"
    common = dict(
        lut=value_lut(chips.classes), mean=[0.0] * chips.band_count,
        std=[1.0] * chips.band_count, chip_size=chips.chip_size, seed=0,
    )  # fmt: skip
    ds = _train_set(cfg, chips, common)
    assert type(ds) is ChipDataset
