"""Class raster outputs: profiles, color table, attribute table, QGIS style, COG.

A class raster is uint8 class values on the input's grid, nodata 255, with everything a GIS
needs to show it without configuration: an embedded color table, the band description
``class``, the class table as JSON in the ``GEOPSP_CLASSES`` tag, a GDAL raster attribute
table (RAT) in the PAM sidecar ``<file>.aux.xml`` (ArcGIS and QGIS >= 3.30 show it as the
layer's attribute table) and a QGIS ``.qml`` paletted style beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from geopsp.core.classes import IGNORE, ClassInfo, from_dicts, to_dicts

CLASSES_TAG = "GEOPSP_CLASSES"
OUT_BLOCK = 512
DEFAULT_CO = {
    "TILED": "YES",
    "BLOCKXSIZE": str(OUT_BLOCK),
    "BLOCKYSIZE": str(OUT_BLOCK),
    "COMPRESS": "DEFLATE",
    "BIGTIFF": "IF_SAFER",
}
# GDAL RAT field types and usages (gdal.h: GDALRATFieldType / GDALRATFieldUsage).
_GFT_INTEGER, _GFT_STRING = 0, 2
_GFU_GENERIC, _GFU_NAME, _GFU_MINMAX, _GFU_RED, _GFU_GREEN, _GFU_BLUE = 0, 2, 5, 6, 7, 8


def output_profile(src_profile: dict, count: int, nodata: int | None, co: dict | None) -> dict:
    """GeoTIFF profile on the grid of ``src_profile`` with ``count`` uint8 bands.

    ``co`` (``--co NAME=VALUE``) overrides the defaults (tiled 512, DEFLATE, BIGTIFF if safer).
    """
    prof = {
        "driver": "GTiff",
        "width": src_profile["width"],
        "height": src_profile["height"],
        "count": count,
        "dtype": "uint8",
        "crs": src_profile.get("crs"),
        "transform": src_profile["transform"],
        "nodata": nodata,
    }
    opts = dict(DEFAULT_CO)
    opts.update({k.upper(): str(v) for k, v in (co or {}).items()})
    for k, v in opts.items():
        prof[k.lower()] = v
    return prof


def out_block_size(profile: dict) -> int:
    """The internal tile size of an output profile (512 unless ``--co`` changed it)."""
    if str(profile.get("tiled", "YES")).upper() in ("NO", "FALSE", "0"):
        return OUT_BLOCK
    return int(profile.get("blockysize", OUT_BLOCK))


def colormap(classes: list[ClassInfo]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL color table: class colors, transparent nodata (255) and unused values."""
    cmap = {v: (0, 0, 0, 0) for v in range(256)}
    for c in classes:
        cmap[c.value] = (*c.color, 255)
    cmap[IGNORE] = (0, 0, 0, 0)
    return cmap


def describe_class_band(dst, classes: list[ClassInfo], extra_tags: dict | None = None) -> None:
    """Write the color table, band description and class tags into an open class raster."""
    dst.write_colormap(1, colormap(classes))
    dst.set_band_description(1, "class")
    tags = {CLASSES_TAG: json.dumps(to_dicts(classes))}
    tags.update(extra_tags or {})
    dst.update_tags(**tags)


def read_classes(dataset) -> list[ClassInfo] | None:
    """The class table of a class raster (from its ``GEOPSP_CLASSES`` tag), or None.

    Parameters
    ----------
    dataset : rasterio dataset or path-like
        An open dataset or the path of a class raster written by ``geopsp classify``.
    """
    if isinstance(dataset, str | os.PathLike):
        import rasterio

        with rasterio.open(dataset) as ds:
            return read_classes(ds)
    text = dataset.tags().get(CLASSES_TAG)
    if not text:
        return None
    try:
        items = json.loads(text)
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    return from_dicts(items)


def rat_xml(classes: list[ClassInfo], band: int = 1) -> str:
    """A GDAL PAM document (``.aux.xml``) holding a thematic raster attribute table.

    Columns: ``Value`` (MinMax), ``Class_Name`` (Name), ``Red``/``Green``/``Blue``. rasterio
    cannot write RATs, so the document is written directly in GDAL's PAM format.
    """
    fields = [
        ("Value", _GFT_INTEGER, _GFU_MINMAX),
        ("Class_Name", _GFT_STRING, _GFU_NAME),
        ("Red", _GFT_INTEGER, _GFU_RED),
        ("Green", _GFT_INTEGER, _GFU_GREEN),
        ("Blue", _GFT_INTEGER, _GFU_BLUE),
    ]
    lines = [
        "<PAMDataset>",
        f'  <PAMRasterBand band="{band}">',
        '    <GDALRasterAttributeTable tableType="thematic">',
    ]
    for i, (name, ftype, usage) in enumerate(fields):
        lines.append(
            f'      <FieldDefn index="{i}"><Name>{name}</Name><Type>{ftype}</Type>'
            f"<Usage>{usage}</Usage></FieldDefn>"
        )
    for i, c in enumerate(classes):
        cells = [str(c.value), escape(c.name), *(str(int(v)) for v in c.color)]
        lines.append(f'      <Row index="{i}">' + "".join(f"<F>{x}</F>" for x in cells) + "</Row>")
    lines += ["    </GDALRasterAttributeTable>", "  </PAMRasterBand>", "</PAMDataset>", ""]
    return "\n".join(lines)


def read_rat(aux_xml: str | os.PathLike) -> list[dict]:
    """Rows of the raster attribute table in a ``.aux.xml`` file, as ``{field: value}`` dicts."""
    import xml.etree.ElementTree as ET

    root = ET.parse(aux_xml).getroot()
    rat = root.find(".//GDALRasterAttributeTable")
    if rat is None:
        return []
    names = [f.findtext("Name") for f in rat.findall("FieldDefn")]
    return [
        dict(zip(names, [f.text or "" for f in row.findall("F")], strict=False))
        for row in rat.findall("Row")
    ]


def qml(classes: list[ClassInfo]) -> str:
    """A QGIS layer style (``.qml``): paletted renderer with class names and colors.

    QGIS applies ``<name>.qml`` automatically when it opens ``<name>.tif``.
    """
    entries = "\n".join(
        "        <paletteEntry value={} color={} label={} alpha=\"255\"/>".format(
            quoteattr(str(c.value)), quoteattr("#{:02x}{:02x}{:02x}".format(*c.color)),
            quoteattr(c.name),
        )
        for c in classes
    )  # fmt: skip
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="AllStyleCategories">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <colorPalette>\n"
        f"{entries}\n"
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
        "  </pipe>\n"
        "</qgis>\n"
    )


def qml_path(path: str | os.PathLike) -> Path:
    """Where QGIS looks for the style of ``path``: the same name with ``.qml``."""
    return Path(path).with_suffix(".qml")


def write_sidecars(path: str | os.PathLike, classes: list[ClassInfo]) -> None:
    """Write ``<path>.aux.xml`` (RAT) beside a finished, closed class raster.

    GDAL keeps other PAM items (statistics) in the same file; geopsp writes it only after the
    raster is closed, so GDAL never overwrites it.
    """
    Path(str(path) + ".aux.xml").write_text(rat_xml(classes), encoding="utf-8")


# COG driver options the GTiff driver does not know (used only for the final copy).
COG_ONLY = {
    "BLOCKSIZE", "OVERVIEWS", "OVERVIEW_RESAMPLING", "RESAMPLING", "OVERVIEW_COMPRESS",
    "OVERVIEW_QUALITY", "OVERVIEW_PREDICTOR", "TILING_SCHEME", "TARGET_SRS", "ALIGNED_LEVELS",
    "ADD_ALPHA", "STATISTICS", "WARP_RESAMPLING", "LEVEL", "QUALITY",
}  # fmt: skip


def stage_options(co: dict) -> dict:
    """GTiff creation options for the staging file of a COG (``BLOCKSIZE`` -> X/Y sizes)."""
    out = {k.upper(): v for k, v in co.items() if k.upper() not in COG_ONLY}
    size = {k.upper(): v for k, v in co.items()}.get("BLOCKSIZE")
    if size:
        out["BLOCKXSIZE"] = out["BLOCKYSIZE"] = str(size)
    return out


def to_cog(src_path: str | os.PathLike, dst_path: str | os.PathLike, co: dict | None) -> None:
    """Copy a finished tiled GeoTIFF to a Cloud-Optimized GeoTIFF with NEAREST overviews.

    The COG driver builds the overviews itself; NEAREST keeps class values (averaging class
    codes would invent classes). ``co`` may set e.g. ``COMPRESS`` or ``BLOCKSIZE``.
    """
    from rasterio.shutil import copy

    opts = {"COMPRESS": "DEFLATE", "BLOCKSIZE": str(OUT_BLOCK), "RESAMPLING": "NEAREST"}
    opts["BIGTIFF"] = "IF_SAFER"
    for k, v in (co or {}).items():
        k = k.upper()
        if k in ("TILED", "BLOCKXSIZE", "BLOCKYSIZE", "INTERLEAVE"):
            continue  # GTiff-only options; the COG layout is fixed by the driver
        opts[k] = str(v)
    copy(str(src_path), str(dst_path), driver="COG", **opts)
