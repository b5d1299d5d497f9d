"""Chip folders (geopsp and ArcGIS layouts), merging, augmentation and sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geopsp.chips.folder import open_chip_folder, open_chip_folders
from geopsp.core.classes import IGNORE, value_lut
from geopsp.core.errors import InputError
from geopsp.train.data import (
    ChipDataset,
    EpochSampler,
    augment,
    class_pixels,
    d4,
    rescale,
    shard,
)


def test_geopsp_folder_index_classes_and_stats(chip_folder):
    folder = chip_folder(n=8, bands=4, val_every=4)
    cs = open_chip_folder(folder)
    assert cs.layouts == ["geopsp"]
    assert [c.value for c in cs.classes] == [0, 1]
    assert cs.band_count == 4 and cs.bands == [1, 2, 3, 4]
    assert cs.chip_size == (32, 32)
    assert [c.split for c in cs.chips].count("val") == 2
    assert len(cs.mean) == 4 and all(s > 0 for s in cs.std)
    # Per-class pixel counts come from the index and match the label rasters.
    from geopsp.train.data import read_chip_label

    train = cs.split("train")
    direct = sum(np.bincount(read_chip_label(c.label).ravel(), minlength=2)[:2] for c in train)
    assert class_pixels(train, cs.classes).tolist() == direct.tolist()


def test_everest_export_is_readable(everest_chips):
    cs = open_chip_folder(everest_chips)
    assert cs.crs and cs.resolution == [30.0, 30.0]
    splits = {c.split for c in cs.chips}
    assert {"train", "val"} <= splits
    assert cs.chip_size == (64, 64)


def test_arcgis_folder(arcgis_chips):
    cs = open_chip_folder(arcgis_chips)
    assert cs.layouts == ["arcgis"]
    # The .emd lists only Glacier; ArcGIS's 0 pixels are trained as background.
    assert [(c.value, c.name) for c in cs.classes] == [(0, "background"), (1, "Glacier")]
    assert cs.band_count == 3 and cs.bands == [1, 2, 3]
    assert cs.mean is None  # no stats.json: computed from the training chips when training
    assert all(c.image.is_file() and c.label.is_file() for c in cs.chips)  # back-slashes
    n_val = sum(c.split == "val" for c in cs.chips)
    assert 1 <= n_val < len(cs.chips)
    # The split is spatial: no training chip overlaps a validation chip.
    assert len(cs.chips) == 24


def test_merge_two_folders_unions_classes(chip_folder):
    a = chip_folder("a", n=8, classes=((0, "background"), (1, "water")))
    b = chip_folder("b", n=8, classes=((0, "Background"), (2, "forest")))
    cs = open_chip_folders([a, b])
    assert [c.value for c in cs.classes] == [0, 1, 2]
    assert len(cs.chips) == 16 and cs.folders == [a, b]
    assert len(cs.mean) == 3


def test_merge_conflicting_classes(chip_folder):
    a = chip_folder("a", classes=((0, "background"), (1, "water")))
    b = chip_folder("b", classes=((0, "background"), (1, "forest")))
    with pytest.raises(InputError, match="conflicting classes: value 1"):
        open_chip_folders([a, b])


def test_merge_different_bands(chip_folder):
    a = chip_folder("a", bands=3)
    b = chip_folder("b", bands=4)
    with pytest.raises(InputError, match="4 band"):
        open_chip_folders([a, b])


def test_not_a_chip_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="not a chip folder"):
        open_chip_folder(tmp_path / "x")
    with pytest.raises(InputError, match="no such folder"):
        open_chip_folder(tmp_path / "missing")


def test_arcgis_without_emd(tmp_path):
    (tmp_path / "map.txt").write_text("images\\a.tif labels\\a.tif\n")
    with pytest.raises(InputError, match=r"no \.emd"):
        open_chip_folder(tmp_path)


def test_d4_moves_image_and_label_together():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 5, (6, 6)).astype(np.uint8)
    img = np.stack([lab * 10.0, lab * -3.0]).astype(np.float32)
    seen = set()
    for k in range(8):
        i2, l2 = d4(img, lab, k)
        assert np.array_equal(i2[0], l2 * 10.0) and np.array_equal(i2[1], l2 * -3.0)
        seen.add(l2.tobytes())
    assert len(seen) == 8  # all eight transforms are distinct


@pytest.mark.parametrize("mode", ["d4", "flips", "none"])
def test_augment_is_consistent_and_jitter_spares_invalid(mode):
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 3, (8, 8)).astype(np.uint8)
    lab[0, 0] = 0
    img = np.stack([lab * 1.0, lab * 2.0]).astype(np.float32)
    valid = np.ones((8, 8), bool)
    valid[0, 0] = False
    for s in range(10):
        x, y = augment(img, lab, valid, mode, 0.0, np.random.default_rng(s))
        assert np.array_equal(x[0], y) and np.array_equal(x[1], 2 * y)
        if mode == "none":
            assert np.array_equal(y, lab)
    x, _ = augment(img, lab, valid, "none", 0.3, np.random.default_rng(0))
    assert x[0, 0, 0] == 0 and x[1, 0, 0] == 0  # invalid pixels stay at the band mean
    assert not np.array_equal(x, img)


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.0, 1.25, 2.0])
def test_rescale_keeps_size_and_labels_and_pads_with_ignore(factor):
    # A left/right half chip: wherever the zoomed window falls, each label column is one
    # class, the image follows the label, and only the padding of a shrunk chip is ignored.
    lab = np.zeros((16, 16), np.uint8)
    lab[:, 8:] = 1
    img = np.stack([lab * 4.0 - 2.0]).astype(np.float32)
    x, y = rescale(img, lab, factor, np.random.default_rng(3))
    assert x.shape == (1, 16, 16) and y.shape == (16, 16)
    assert set(np.unique(y)) <= {0, 1, IGNORE}
    inside = round(16 * min(factor, 1.0))
    assert (y != IGNORE).sum() == inside * inside
    kept = y != IGNORE
    assert np.all(x[0][kept & (y == 0)] <= 0) and np.all(x[0][kept & (y == 1)] >= 0)
    assert np.all(x[0][~kept] == 0)  # padding at the band mean
    if factor == 1.0:
        assert np.array_equal(y, lab) and np.array_equal(x, img)


def test_scale_jitter_draws_zooms_within_its_range():
    lab = np.zeros((20, 20), np.uint8)
    lab[5:15, 5:15] = 1  # a 10 x 10 square: its area shows the zoom
    img = lab[None].astype(np.float32)
    valid = np.ones((20, 20), bool)
    areas = set()
    for s in range(40):
        _, y = augment(img, lab, valid, "none", 0.0, np.random.default_rng(s), scale_jitter=0.5)
        area = int((y == 1).sum())
        assert 100 / 1.5**2 * 0.7 <= area <= 100 * 1.5**2 * 1.3  # zoom in [1/1.5, 1.5]
        areas.add(area)
    assert len(areas) >= 6  # zooms differ between draws
    # Off by default: the other draws are made before it and do not change.
    a = augment(img, lab, valid, "d4", 0.0, np.random.default_rng(1))
    b = augment(img, lab, valid, "d4", 0.0, np.random.default_rng(1), scale_jitter=0.0)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def test_dataset_normalizes_maps_values_and_is_reproducible(chip_folder):
    cs = open_chip_folder(chip_folder(classes=((0, "bg"), (3, "roof"))))
    ds = ChipDataset(cs.chips, value_lut(cs.classes), cs.mean, cs.std, cs.chip_size, "d4", 0.1, 7)
    x, y = ds[(2, 5)]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    assert y.dtype == torch.uint8 and set(np.unique(y.numpy())) <= {0, 1}  # value 3 -> channel 1
    x2, y2 = ds[(2, 5)]
    assert torch.equal(x, x2) and torch.equal(y, y2)  # same (chip, epoch) -> same augmentation
    x3, _ = ds[(2, 6)]
    assert not torch.equal(x, x3)
    assert abs(float(x.mean())) < 1.5


def test_dataset_rejects_wrong_chip_size(chip_folder):
    cs = open_chip_folder(chip_folder())
    ds = ChipDataset(cs.chips, value_lut(cs.classes), cs.mean, cs.std, (64, 64))
    with pytest.raises(InputError, match="expected 64x64"):
        ds[0]


def test_sampler_depends_on_seed_and_epoch_only():
    a = EpochSampler(20, True, seed=3)
    b = EpochSampler(20, True, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and all(e == 2 for _, e in a)
    b.set_epoch(3)
    assert [i for i, _ in a] != [i for i, _ in b]
    # Two ranks: disjoint, equal-length shards.
    r0, r1 = EpochSampler(21, True, 0, 0, 2), EpochSampler(21, True, 0, 1, 2)
    i0, i1 = {i for i, _ in r0}, {i for i, _ in r1}
    assert len(r0) == len(r1) == 10 and not i0 & i1
    assert sorted(shard(7, 0, 2) + shard(7, 1, 2)) == list(range(7))


def test_band_stats_without_stats_json(chip_folder):
    from geopsp.train.data import band_stats, read_chip_image

    with_stats = open_chip_folder(chip_folder("a", stats=True))
    cs = open_chip_folder(chip_folder("b", stats=False))
    assert cs.mean is None and cs.std is None
    mean, std = band_stats(cs.chips, cs.band_count)
    px = np.stack([read_chip_image(c.image)[0] for c in cs.chips]).astype(np.float64)
    assert np.allclose(mean, px.mean(axis=(0, 2, 3))) and np.allclose(std, px.std(axis=(0, 2, 3)))
    assert np.allclose(mean, with_stats.mean)  # same data, same numbers as stats.json
