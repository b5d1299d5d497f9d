"""export-chips end to end on the real sample data: georeferencing, labels, coverage, split."""

from __future__ import annotations

import json
import shutil

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geopsp.chips.export import ExportOptions, export_chips
from geopsp.cli.main import cli
from geopsp.core.windows import offsets, window_grid

from .test_splits import shared_pixels


def _export(image, labels, out, **options):
    """Export one image's chips into ``out`` with ``ExportOptions(**options)``."""
    return export_chips([str(image)], str(labels), str(out), ExportOptions(**options))


def _index(folder):
    return gpd.read_file(folder / "chips.gpkg", layer="chips")


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs, ds.nodata


@pytest.mark.parametrize(
    ("size", "chip", "stride", "expected"),
    [
        (10, 4, 4, [0, 4, 6]),
        (8, 4, 2, [0, 2, 4]),
        (3, 16, 8, [0]),
        (16, 16, 8, [0]),
        (17, 16, 16, [0, 1]),
    ],
)
def test_window_offsets(size, chip, stride, expected):
    assert offsets(size, chip, stride) == expected


@pytest.mark.parametrize(
    ("w", "h", "chip", "stride"), [(800, 655, 128, 64), (489, 443, 100, 37), (50, 20, 64, 32)]
)
def test_window_grid_covers_every_pixel(w, h, chip, stride):
    cover = np.zeros((max(h, chip), max(w, chip)), dtype=int)
    for c, r in window_grid(w, h, chip, stride):
        assert c >= 0 and r >= 0
        assert c + chip <= w or c == 0  # inside the raster unless the raster is smaller than a chip
        cover[r : r + chip, c : c + chip] += 1
    assert (cover[:h, :w] > 0).all()


@pytest.fixture(scope="module")
def everest_chips(everest, tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "chips"
    r = CliRunner().invoke(
        cli,
        ["-q", "export-chips", str(everest["image"]), "--labels", str(everest["labels"]), "-o", str(out),
         "--chip-size", "128", "--stride", "96", "--keep-empty", "1"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out, r.output


def test_everest_labels_match_direct_rasterization(everest, everest_chips):
    out, stdout = everest_chips
    assert "chips written:" in stdout and "skipped as empty: 0" in stdout
    with rasterio.open(everest["image"]) as ds:
        gdf = gpd.read_file(everest["labels"]).to_crs(ds.crs)
        truth = rasterize(
            ((g, 1) for g in gdf.geometry), (ds.height, ds.width), transform=ds.transform
        )
        src_tr, src_crs, height, width = ds.transform, ds.crs, ds.height, ds.width
    idx = _index(out)
    agree = total = 0
    cover = np.zeros((height, width), dtype=bool)
    for row in idx.itertuples():
        lab, tr, crs, nodata = _read(out / row.label)
        img, itr, icrs, _ = _read(out / row.image)
        win = Window(row.col_off, row.row_off, row.width, row.height)
        assert tr == itr == window_transform(win, src_tr)  # georeferencing of the source window
        assert crs == icrs == src_crs and nodata == 255 and img.shape == (3, 128, 128)
        ref = truth[row.row_off : row.row_off + 128, row.col_off : row.col_off + 128]
        agree += int((lab[0] == ref).sum())
        total += ref.size
        cover[row.row_off : row.row_off + 128, row.col_off : row.col_off + 128] = True
        assert row.count_0 + row.count_1 + row.count_255 == 128 * 128
        assert row.count_1 == int((lab[0] == 1).sum())
    assert agree / total >= 0.99
    assert cover.all()  # --keep-empty 1 keeps every window: the grid covers the raster


def test_everest_folder_metadata(everest, everest_chips):
    out, _ = everest_chips
    idx = _index(out)
    assert idx.crs.to_epsg() == 4326
    assert list(idx.chip_id) == list(range(len(idx)))
    assert {
        "image",
        "label",
        "source",
        "split",
        "nodata_fraction",
        "count_0",
        "count_1",
        "count_255",
    } <= set(idx.columns)
    assert set(idx.split) <= {"train", "val", "gap"} and (idx.split == "val").any()
    classes = json.loads((out / "classes.json").read_text())
    assert [c["value"] for c in classes] == [0, 1]
    stats = json.loads((out / "stats.json").read_text())
    for key in ("bands", "band_count", "mean", "std", "min", "max", "class_pixels", "chip_size", "stride",
                "crs", "resolution", "dtype", "nodata", "unlabeled", "sources"):  # fmt: skip
        assert key in stats
    assert (
        stats["crs"] == "EPSG:32645"
        and stats["resolution"] == [30.0, 30.0]
        and stats["stride"] == 96
    )
    pix = np.concatenate([_read(out / p)[0].reshape(3, -1) for p in idx.image], axis=1).astype(
        np.float64
    )
    assert np.allclose(stats["mean"], pix.mean(axis=1)) and np.allclose(
        stats["std"], pix.std(axis=1)
    )
    assert stats["min"] == pix.min(axis=1).tolist() and stats["max"] == pix.max(axis=1).tolist()
    assert stats["class_pixels"]["1"] == int(idx.count_1.sum())
    lines = (out / "map.txt").read_text().splitlines()
    assert lines[0] == "images\\000000000.tif  labels\\000000000.tif " and len(lines) == len(idx)
    emd = json.loads((out / "esri_model_definition.emd").read_text())
    assert emd["Classes"][0] == {  # ArcGIS lists classes from 1 (0 is its NoData)
        "Value": 1,
        "Name": "glacier_outlines",
        "Color": classes[1]["color"],
    }
    assert emd["ImageHeight"] == 128 and emd["ExtractBands"] == [0, 1, 2]
    assert json.loads((out / "esri_accumulated_stats.json").read_text())["NumTiles"] == len(idx)


def test_split_keeps_overlapping_chips_on_one_side(everest_chips):
    idx = _index(everest_chips[0])
    b = np.stack(
        [idx.col_off, idx.row_off, idx.col_off + idx.width, idx.row_off + idx.height], axis=1
    )
    assert (idx.split == "val").any() and (idx.split == "train").any()
    assert not shared_pixels(b, np.asarray(idx.split))


@pytest.fixture(scope="module")
def atlanta_with_nodata(atlanta, tmp_path_factory):
    """The Atlanta image with a block of nodata (0) written into it."""
    path = tmp_path_factory.mktemp("atl") / "atlanta.tif"
    shutil.copy(atlanta["image"], path)
    with rasterio.open(path, "r+") as ds:
        ds.write(np.zeros((1, 150, 200), dtype="uint16"), window=Window(300, 100, 200, 150))
    return path


def test_atlanta_single_band_nodata_becomes_ignore(atlanta, atlanta_with_nodata, tmp_path):
    out = tmp_path / "chips"
    s = _export(
        atlanta_with_nodata, atlanta["labels"], str(out), chip_size=128, stride=128, max_nodata=0.9
    )
    assert s.chips_written > 0 and s.class_pixels[255] > 0
    seen = 0
    for row in _index(out).itertuples():
        img, _, _, nodata = _read(out / row.image)
        lab = _read(out / row.label)[0][0]
        assert img.dtype == np.uint16 and img.shape[0] == 1 and nodata == 0
        assert np.array_equal(lab == 255, img[0] == 0)
        seen += int((img[0] == 0).sum())
        assert set(np.unique(lab)) <= {0, 1, 255}
    assert seen > 0
    # With the default --max-nodata 0.5, chips that are mostly nodata are skipped.
    s2 = _export(
        atlanta_with_nodata, atlanta["labels"], str(tmp_path / "c2"), chip_size=128, stride=128
    )
    assert s2.skipped_nodata > 0


def test_nc_label_raster_six_bands_seven_classes(nc_landsat, tmp_path):
    out = tmp_path / "chips"
    s = _export(
        nc_landsat["image"], nc_landsat["label_raster"], str(out), chip_size=96, unlabeled="ignore"
    )
    assert [c.value for c in s.classes] == list(range(1, 8))
    assert all(s.class_pixels[v] > 0 for v in range(1, 8))
    with rasterio.open(nc_landsat["image"]) as ds:
        valid = ds.dataset_mask() > 0
    with rasterio.open(nc_landsat["label_raster"]) as ds:
        strata = ds.read(1)
    row = _index(out).iloc[len(_index(out)) // 2]
    img, _, _, _ = _read(out / row.image)
    lab = _read(out / row.label)[0][0]
    sl = np.s_[row.row_off : row.row_off + 96, row.col_off : row.col_off + 96]
    assert img.shape == (6, 96, 96)
    expect = np.where(valid[sl], strata[sl], 255)
    assert (lab == expect).mean() > 0.99  # same lattice; the CRSs differ only by datum realization


def test_nc_polygons_sparse_labels(nc_landsat, tmp_path):
    out = tmp_path / "chips"
    s = _export(
        nc_landsat["image"],
        nc_landsat["labels"],
        str(out),
        class_field="label",
        chip_size=64,
        stride=64,
        unlabeled="ignore",
        bands=[4, 3, 2],
    )
    assert [c.name for c in s.classes][:2] == ["agriculture", "developed"] and len(s.classes) == 7
    assert s.skipped_empty > 0 and s.class_pixels.get(0, 0) == 0
    idx = _index(out)
    assert (
        idx[[f"count_{v}" for v in range(1, 8)]].sum(axis=1) > 0
    ).all()  # only chips with labels
    assert json.loads((out / "stats.json").read_text())["bands"] == [4, 3, 2]


def test_raster_smaller_than_a_chip_gives_one_padded_chip(nc_landsat, tmp_path):
    small = tmp_path / "small.tif"
    with rasterio.open(nc_landsat["image"]) as ds:
        win = Window(100, 150, 40, 30)
        prof = ds.profile | {
            "width": 40,
            "height": 30,
            "transform": window_transform(win, ds.transform),
        }
        prof.pop("blockysize", None)
        with rasterio.open(small, "w", **prof) as dst:
            dst.write(ds.read(window=win))
    out = tmp_path / "chips"
    s = _export(small, nc_landsat["label_raster"], str(out), chip_size=64, unlabeled="ignore")
    assert s.chips_written == 1
    img, tr, _, _ = _read(out / "images/000000000.tif")
    lab = _read(out / "labels/000000000.tif")[0][0]
    assert tr == prof["transform"] and img.shape == (6, 64, 64)
    assert (lab[30:, :] == 255).all() and (lab[:, 40:] == 255).all()
    assert (img[:, 30:, :] == 0).all() and (img[:, :, 40:] == 0).all()  # image padding = nodata
    assert (lab[:30, :40] != 255).any()


def test_workers_give_byte_identical_output(atlanta, tmp_path):
    outs = []
    for n in (1, 2):
        out = tmp_path / f"w{n}"
        _export(
            atlanta["image"], atlanta["labels"], str(out), chip_size=128, workers=n, keep_empty=0.3
        )
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    assert len(files) > 20
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f


def test_keep_empty_is_reproducible_and_proportional(nc_landsat, tmp_path):
    runs = []
    for i, (keep, seed) in enumerate([(0.0, 0), (0.5, 0), (0.5, 0), (0.5, 7)]):
        s = _export(
            nc_landsat["image"],
            nc_landsat["labels"],
            str(tmp_path / f"k{i}"),
            chip_size=48,
            stride=48,
            keep_empty=keep,
            seed=seed,
            val_fraction=0,
            unlabeled="ignore",
        )
        idx = pyogrio.read_dataframe(tmp_path / f"k{i}" / "chips.gpkg", read_geometry=False)
        runs.append((s, list(zip(idx.col_off, idx.row_off, strict=True))))
    none, half, again, other_seed = runs
    assert half[1] == again[1]  # same seed, same chips
    n_empty = none[0].skipped_empty
    assert n_empty > 40
    # Drawn empty chips are written, or skipped as nodata when mostly nodata.
    kept = half[0].chips_written - none[0].chips_written
    drawn = kept + half[0].skipped_nodata - none[0].skipped_nodata
    assert kept > 5 and 0.3 * n_empty < drawn < 0.7 * n_empty
    assert half[0].skipped_empty == n_empty - drawn
    assert other_seed[1] != half[1]
