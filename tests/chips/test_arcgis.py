"""ArcGIS Pro Classified_Tiles folders, both ways, on the real files ArcGIS Pro and arcgis.learn
wrote (tests/chips/data/arcgis, see its PROVENANCE.md) and on chips cut from sample data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import transform as window_transform

from chips.arcgis_folders import FORMATS, REAL, SIZE, chip_window, pro_folder
from geopsp.chips import arcgis
from geopsp.chips.folder import open_chip_folder, open_chip_folders
from geopsp.core.classes import PALETTE, value_lut
from geopsp.core.errors import InputError
from geopsp.train.data import read_chip_image, read_chip_label

# ------------------------------------------------------------ the real files, as they are


def test_real_map_txt_is_read_as_written():
    raw = (REAL / "map.txt").read_bytes()
    assert b"\\" in raw and b"  labels" in raw and raw.endswith(b".tif \r\n")  # Pro's bytes
    pairs = arcgis.read_map(REAL / "map.txt")
    assert pairs[0] == ("images/000000019.tif", "labels/000000019.tif")
    assert len(raw.splitlines()) == 20 and len(pairs) == 19  # 000000019 is listed twice
    assert all(re.fullmatch(r"images/\d{9}\.tif", a) for a, _ in pairs)


def test_map_txt_spellings(tmp_path):
    """BOM, LF or CR line ends, tabs, runs of spaces, blank lines: the same pairs."""
    p = tmp_path / "map.txt"
    p.write_bytes(b"\xef\xbb\xbfimages\\a.png\tlabels\\a.png\n\n  images/b.png   labels/b.png  \r")
    assert arcgis.read_map(p) == [
        ("images/a.png", "labels/a.png"),
        ("images/b.png", "labels/b.png"),
    ]


def test_emd_with_classes_only(everest, tmp_path):
    """No sizes, no ExtractBands, no colours: everything but the classes comes from the chips."""
    folder = pro_folder(tmp_path / "pro", everest, names=["000000001.tif", "000000002.tif"])
    emd = {"Classes": [{"Value": 2, "Name": "glacier"}, {"Value": 1, "Name": "ground"}]}
    (folder / "esri_model_definition.emd").write_text(json.dumps(emd))
    (folder / "esri_accumulated_stats.json").unlink()
    cs = open_chip_folder(folder)
    assert [(c.value, c.name) for c in cs.classes] == [
        (0, "background"),
        (1, "ground"),
        (2, "glacier"),
    ]
    assert cs.bands == [1, 2, 3] and cs.chip_size == (SIZE, SIZE)


def test_real_template_emd():
    emd = arcgis.read_json(REAL / "esri_model_definition.emd")
    assert emd["ImageHeight"] == "e.g. 256" and emd["ExtractBands"] == "e.g. [0, 1, 2]"
    assert arcgis.extract_bands(emd) is None
    classes = arcgis.emd_classes(emd, REAL / "esri_model_definition.emd")
    assert [(c.value, c.name) for c in classes] == [(0, "background"), (1, "1"), (2, "2")]
    # Color [-1, -1, -1] gets a palette colour, distinct per class.
    assert [c.color for c in classes] == [(0, 0, 0), PALETTE[0], PALETTE[1]]
    ignored = arcgis.emd_classes(emd, REAL / "esri_model_definition.emd", nodata="ignore")
    assert [c.value for c in ignored] == [1, 2]


def test_writer_reproduces_the_real_files_byte_for_byte():
    for name in ("esri_accumulated_stats.json", "esri_model_definition.emd"):
        raw = (REAL / name).read_bytes()
        assert arcgis.dumps(json.loads(raw)).encode() == raw, name
    acc = arcgis.read_json(REAL / "esri_accumulated_stats.json")
    assert arcgis.stats_text(acc).encode() == (REAL / "stats.txt").read_bytes()
    first = (REAL / "map.txt").read_bytes().split(b"\n")[0] + b"\n"
    assert arcgis.map_line("000000019.tif").encode() == first


def test_accumulated_stats_recomputed_from_counts():
    """The statistics geopsp writes are the ones Pro writes for the same per-chip counts."""
    rng = np.random.default_rng(0)
    counts = np.zeros((50, 256), dtype=np.int64)
    counts[:, 1] = rng.integers(1, 1000, 50)
    counts[::3, 2] = rng.integers(1, 500, 17)
    classes = arcgis.emd_classes({"Classes": [{"Value": 1}, {"Value": 2}]}, REAL)
    acc = arcgis.accumulated_stats(counts, arcgis.listed_classes(classes, False), 3, 400)
    real = arcgis.read_json(REAL / "esri_accumulated_stats.json")
    assert _shape(acc) == _shape(real)
    cps = acc["ClassPixelStats"]
    assert cps["NumImagesPerClass"] == [50, 17]
    assert cps["NumPixelsPerClass"] == [int(counts[:, 1].sum()), int(counts[:, 2].sum())]
    assert cps["NumClassesPerImage"]["Sum"] == 67 and cps["PixelsPerClass"][1]["Min"] == 0


def _shape(obj):
    """Keys, nesting and JSON types of a document (list items by their first)."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(obj[0])] if obj else []
    return type(obj).__name__


# ------------------------------------------------ ArcGIS Pro folders -> geopsp


def test_real_metadata_with_pro_tiff_chips(everest, tmp_path):
    folder = pro_folder(tmp_path / "pro", everest)
    cs = open_chip_folder(folder)
    assert cs.layouts == ["arcgis"] and len(cs.chips) == 19
    assert [(c.value, c.name) for c in cs.classes] == [(0, "background"), (1, "1"), (2, "2")]
    assert cs.band_count == 3 and cs.bands == [1, 2, 3]  # template ExtractBands: every band
    assert cs.chip_size == (SIZE, SIZE)  # from the chips, not the template "e.g. 256"
    assert {c.split for c in cs.chips} == {"train", "val"}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("world", [True, False])
def test_pro_chip_formats(everest, tmp_path, fmt, world):
    names = [f"{k:09d}.tif" for k in range(1, 9)]
    folder = pro_folder(tmp_path / "pro", everest, fmt, world, names)
    cs = open_chip_folder(folder, arcgis_nodata="ignore")
    assert [c.value for c in cs.classes] == [1, 2] and len(cs.chips) == 8
    assert cs.chip_size == (SIZE, SIZE) and cs.bands == [1, 2, 3]
    with rasterio.open(everest["image"]) as src:
        for k, chip in enumerate(cs.chips):
            assert chip.image.suffix == "." + FORMATS[fmt][1]
            win = chip_window(k)
            img, valid = read_chip_image(chip.image)
            diff = np.abs(img.astype(int) - src.read(window=win).astype(int))
            assert valid.all() and (diff.mean() < 8 if fmt == "jpg" else not diff.any())
            lab = read_chip_label(chip.label)
            assert (lab[:4] == 0).all() and set(np.unique(lab[4:])) <= {1, 2}
            with rasterio.open(chip.image) as ds:  # the world file (or MRF header) is used
                expect = window_transform(win, src.transform)
                georef = world or fmt == "mrf"
                assert ds.transform.almost_equals(expect) == georef


def test_several_pro_folders_merge(everest, tmp_path):
    a = pro_folder(tmp_path / "a", everest, "tif", names=[f"{k:09d}.tif" for k in range(1, 7)])
    b = pro_folder(tmp_path / "b", everest, "png", names=[f"{k:09d}.tif" for k in range(1, 5)])
    cs = open_chip_folders([a, b])
    assert cs.layouts == ["arcgis", "arcgis"] and len(cs.chips) == 10
    assert [c.value for c in cs.classes] == [0, 1, 2]
    assert {c.image.suffix for c in cs.chips} == {".tif", ".png"}


def test_extract_bands_are_zero_based(everest, tmp_path):
    folder = pro_folder(tmp_path / "pro", everest, names=["000000001.tif", "000000002.tif"])
    emd = arcgis.read_json(folder / "esri_model_definition.emd")
    for eb, want in (([0, 1, 2], [1, 2, 3]), ([1, 2, 3], [2, 3, 4]), ([2, 1, 0], [3, 2, 1])):
        emd["ExtractBands"] = eb
        (folder / "esri_model_definition.emd").write_text(json.dumps(emd))
        assert open_chip_folder(folder).bands == want
    emd["ExtractBands"] = [0, 1]
    (folder / "esri_model_definition.emd").write_text(json.dumps(emd))
    with pytest.raises(InputError, match="ExtractBands lists 2 band"):
        open_chip_folder(folder)


# ------------------------------------------------ geopsp -> arcgis.learn


def _like_prepare_data(folder: Path) -> tuple[list[str], np.ndarray]:
    """Load a folder the way arcgis.learn's ``prepare_data`` does for Classified_Tiles (its
    documented behaviour): the three esri files must exist; ``MetaDataMode`` picks the
    dataset type; the first map.txt line with two fields gives an image (``\\`` -> ``/``) and
    the label extension; classes are ``{Value: Name}`` of the .emd with 0 dropped and
    ``NoData`` prepended; label values are remapped to contiguous indexes when
    ``[0] + values`` is not contiguous (unlisted values become 0);
    ``ClassPixelStats.NumPixelsPerClass`` becomes an int64 array, one entry per listed class.
    Returns the class names and the remapped labels of every chip.
    """
    for f in ("esri_model_definition.emd", "map.txt", "esri_accumulated_stats.json"):
        assert (folder / f).is_file(), f
    stats = json.loads((folder / "esri_accumulated_stats.json").read_text())
    assert stats["MetaDataMode"] == "Classified_Tiles"
    first = next(ln for ln in (folder / "map.txt").read_text().splitlines() if len(ln.split()) == 2)
    assert (folder / first.split()[0].replace("\\", "/")).is_file()
    label_ext = first.split()[1].split(".")[-1].lower()
    emd = json.loads((folder / "esri_model_definition.emd").read_text())
    mapping = {c["Value"]: c["Name"] for c in emd["Classes"]}
    colors = {c["Value"]: c["Color"] for c in emd["Classes"]}
    mapping.pop(0, None)
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in mapping)
    assert not (np.array(list(colors.values())) == -1).any()
    keys = sorted([0, *mapping])
    contiguous = keys == list(range(len(keys)))
    labels = []
    for img in sorted((folder / "images").glob("*.tif")):
        with rasterio.open(folder / "labels" / f"{img.stem}.{label_ext}") as src:
            lab = src.read(1).astype(np.int64)
        if not contiguous:
            out = np.zeros_like(lab)
            for i, v in enumerate([0, *mapping]):
                out[lab == v] = i
            lab = out
        labels.append(lab)
    npc = np.array(stats["ClassPixelStats"]["NumPixelsPerClass"], dtype=np.int64)
    assert npc.shape == (len(mapping),) and npc.sum() > 0
    weight = npc.sum() / npc  # its class balancing
    assert np.isfinite(weight).all()
    cps = stats["ClassPixelStats"]  # what merging several folders indexes
    for i in range(cps["NumClasses"]):
        assert isinstance(cps["NumImagesPerClass"][i], int)
        assert isinstance(cps["NumPixelsPerClass"][i], int)
    return ["NoData", *mapping.values()], np.stack(labels)


def test_geopsp_export_loads_like_prepare_data(everest_chips):
    names, labels = _like_prepare_data(everest_chips)
    assert names == ["NoData", "glacier_outlines"]  # geopsp's background is ArcGIS's 0
    assert labels.max() < len(names)  # every label pixel is a class index
    real = arcgis.read_json(REAL / "esri_accumulated_stats.json")
    acc = arcgis.read_json(everest_chips / "esri_accumulated_stats.json")
    assert _shape(acc) == _shape(real)
    # The counts are those of the label chips.
    stack = np.stack([read_chip_label(p) for p in sorted((everest_chips / "labels").glob("*.tif"))])
    cps = acc["ClassPixelStats"]
    assert cps["NumPixelsPerClass"] == [int((stack == 1).sum())]
    assert cps["NumImagesPerClass"] == [int((stack == 1).any(axis=(1, 2)).sum())]
    assert acc["NumTiles"] == len(stack) and acc["TileSizeX"] == 64 and acc["NumBands"] == 3
    emd = arcgis.read_json(everest_chips / "esri_model_definition.emd")
    assert emd["ImageHeight"] == emd["ImageWidth"] == 64 and emd["ExtractBands"] == [0, 1, 2]
    text = (everest_chips / "map.txt").read_bytes()
    assert re.fullmatch(rb"(images\\\d{9}\.tif  labels\\\d{9}\.tif \r\n)+", text)
    assert (everest_chips / "stats.txt").read_bytes() == arcgis.stats_text(acc).encode()
    for f in ("classes.json", "stats.json", "chips.gpkg"):
        assert (everest_chips / f).is_file()  # geopsp's own files stay beside them


@pytest.fixture(scope="module")
def ignore_chips(everest, tmp_path_factory) -> Path:
    """An ``--unlabeled ignore`` export of bands 2,3 (label 255 outside the glaciers)."""
    from geopsp.chips.export import ExportOptions, export_chips

    out = tmp_path_factory.mktemp("ignore") / "chips"
    export_chips(
        [str(everest["image"])],
        str(everest["labels"]),
        str(out),
        ExportOptions(chip_size=64, stride=64, bands=[2, 3], unlabeled="ignore", val_fraction=0.2),
    )
    return out


def test_ignore_export_loads_like_prepare_data(ignore_chips):
    names, labels = _like_prepare_data(ignore_chips)
    assert names == ["NoData", "glacier_outlines", "ignore"]  # 255 has an index of its own
    assert labels.max() == 2 and (labels == 2).any()
    emd = arcgis.read_json(ignore_chips / "esri_model_definition.emd")
    assert emd["ExtractBands"] == [1, 2]  # source bands 2, 3, 0-based


def _as_arcgis(folder: Path, tmp_path: Path) -> Path:
    """The export with geopsp's own files removed: only what ArcGIS reads is left."""
    out = tmp_path / "arcgis"
    shutil.copytree(folder, out)
    for f in ("chips.gpkg", "classes.json", "stats.json"):
        (out / f).unlink()
    return out


@pytest.mark.parametrize("which", ["background", "ignore"])
def test_round_trip(everest_chips, ignore_chips, tmp_path, which):
    src = everest_chips if which == "background" else ignore_chips
    own = open_chip_folder(src)
    back = open_chip_folder(_as_arcgis(src, tmp_path), arcgis_nodata=which)
    assert back.layouts == ["arcgis"]
    assert back.classes == own.classes and back.bands == own.bands
    assert back.band_count == own.band_count and back.chip_size == own.chip_size
    assert [c.image.name for c in back.chips] == [c.image.name for c in own.chips]
    lut_own, lut_back = value_lut(own.classes), value_lut(back.classes)
    for a, b in zip(own.chips, back.chips, strict=True):
        assert np.array_equal(read_chip_image(a.image)[0], read_chip_image(b.image)[0])
        assert np.array_equal(lut_own[read_chip_label(a.label)], lut_back[read_chip_label(b.label)])
