"""Class raster metadata: profile, color table, attribute table, QGIS style, class tags."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import rasterio
from rasterio.transform import from_origin

from geopsp.core.class_raster import (
    CLASSES_TAG,
    colormap,
    describe_class_band,
    output_profile,
    qml,
    rat_xml,
    read_classes,
    read_rat,
    stage_options,
)
from geopsp.core.classes import ClassInfo

CLASSES = [
    ClassInfo(0, "background", (0, 0, 0)),
    ClassInfo(7, 'roads & "tracks" <paved>', (250, 10, 5)),
]
SRC = {"width": 30, "height": 20, "crs": "EPSG:3857", "transform": from_origin(0, 0, 10, 10)}


def test_profile_defaults_and_overrides():
    p = output_profile(SRC, 1, 255, None)
    assert (p["width"], p["height"], p["dtype"], p["nodata"]) == (30, 20, "uint8", 255)
    assert p["tiled"] == "YES" and p["blockxsize"] == "512" and p["compress"] == "DEFLATE"
    p = output_profile(SRC, 3, None, {"compress": "zstd", "BLOCKXSIZE": "256"})
    assert p["compress"] == "zstd" and p["blockxsize"] == "256" and p["count"] == 3


def test_stage_options_keep_gtiff_options_only():
    co = stage_options({"BLOCKSIZE": "256", "COMPRESS": "ZSTD", "OVERVIEWS": "AUTO", "level": "9"})
    assert co == {"COMPRESS": "ZSTD", "BLOCKXSIZE": "256", "BLOCKYSIZE": "256"}


def test_colormap_covers_all_values():
    cm = colormap(CLASSES)
    assert len(cm) == 256 and cm[7] == (250, 10, 5, 255) and cm[255] == (0, 0, 0, 0)


def test_rat_xml_is_gdal_pam_with_escaped_names(tmp_path):
    path = tmp_path / "x.tif.aux.xml"
    path.write_text(rat_xml(CLASSES))
    root = ET.parse(path).getroot()
    assert root.tag == "PAMDataset"
    rat = root.find("PAMRasterBand/GDALRasterAttributeTable")
    assert rat.get("tableType") == "thematic"
    fields = [
        (f.findtext("Name"), f.findtext("Type"), f.findtext("Usage"))
        for f in rat.findall("FieldDefn")
    ]
    # GFT_Integer=0 / GFT_String=2; GFU_MinMax=5, GFU_Name=2, GFU_Red/Green/Blue=6/7/8
    assert fields == [("Value", "0", "5"), ("Class_Name", "2", "2"), ("Red", "0", "6"),
                      ("Green", "0", "7"), ("Blue", "0", "8")]  # fmt: skip
    rows = read_rat(path)
    assert rows[1] == {
        "Value": "7",
        "Class_Name": CLASSES[1].name,
        "Red": "250",
        "Green": "10",
        "Blue": "5",
    }


def test_qml_is_a_paletted_style(tmp_path):
    root = ET.fromstring(qml(CLASSES).split("\n", 1)[1])
    r = root.find("pipe/rasterrenderer")
    assert r.get("type") == "paletted" and r.get("band") == "1"
    entries = [(e.get("value"), e.get("color"), e.get("label")) for e in r.iter("paletteEntry")]
    assert entries == [("0", "#000000", "background"), ("7", "#fa0a05", CLASSES[1].name)]


def test_describe_and_read_back(tmp_path):
    path = tmp_path / "c.tif"
    with rasterio.open(path, "w", **output_profile(SRC, 1, 255, None)) as dst:
        dst.write(np.full((1, 20, 30), 7, np.uint8))
        describe_class_band(dst, CLASSES, {"GEOPSP_MODEL": "m.safetensors"})
    with rasterio.open(path) as d:
        assert read_classes(d) == CLASSES
        assert d.colormap(1)[7] == (250, 10, 5, 255)
        assert d.descriptions == ("class",) and d.tags()["GEOPSP_MODEL"] == "m.safetensors"
        assert json.loads(d.tags()[CLASSES_TAG])[1]["value"] == 7
    with rasterio.open(path, "r+") as d:
        d.update_tags(**{CLASSES_TAG: "not json"})
    assert read_classes(path) is None
