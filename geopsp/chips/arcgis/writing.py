"""Writing the "Classified_Tiles" files arcgis.learn reads (see :mod:`geopsp.chips.arcgis`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geopsp.chips.arcgis.reading import (
    ACC_STATS,
    EMD,
    IGNORE_NAME,
    MAP,
    METADATA_MODE,
    STATS_TXT,
)
from geopsp.core.classes import IGNORE, ClassInfo


def dumps(obj, level: int = 0) -> str:
    """JSON as ArcGIS Pro writes it: 2-space indent, ``" : "`` between key and value, one
    item per line, floats with 17 significant digits (and always a decimal point)."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        body = ",\n".join(
            f"{inner}{json.dumps(str(k), ensure_ascii=False)} : {dumps(v, level + 1)}"
            for k, v in obj.items()
        )
        return "{\n" + body + "\n" + pad + "}"
    if isinstance(obj, list | tuple):
        if not obj:
            return "[]"
        return "[\n" + ",\n".join(inner + dumps(v, level + 1) for v in obj) + "\n" + pad + "]"
    if isinstance(obj, float):
        if not math.isfinite(obj):  # strict JSON has no NaN: GDAL's spelling as a string
            return json.dumps("NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity"))
        text = format(obj, ".17g")
        return text if any(ch in text for ch in ".en") else text + ".0"
    if isinstance(obj, np.generic):
        return dumps(obj.item(), level)
    return json.dumps(obj, ensure_ascii=False)


def _summary(x: np.ndarray) -> dict:
    """ArcGIS's ``{Min, Max, Mean, Sum, Count}`` of per-chip numbers."""
    return {
        "Min": int(x.min()),
        "Max": int(x.max()),
        "Mean": float(x.mean()),
        "Sum": int(x.sum()),
        "Count": int(x.size),
    }


def listed_classes(classes: Sequence[ClassInfo], has_ignore: bool) -> list[ClassInfo]:
    """The classes as ArcGIS numbers them: 0 (NoData) left out, 255 listed as ``ignore``
    when the label chips hold it."""
    out = [c for c in classes if c.value != 0]
    if has_ignore:
        out.append(ClassInfo(IGNORE, IGNORE_NAME, (255, 255, 255)))
    return out


def accumulated_stats(
    counts: np.ndarray, listed: Sequence[ClassInfo], band_count: int, chip_size: int
) -> dict:
    """``esri_accumulated_stats.json`` of chips whose label pixel counts are ``counts``
    (``(chips, 256)``), with the keys, types and nesting of ArcGIS Pro's file."""
    per = np.asarray(counts, dtype=np.int64)[:, [c.value for c in listed]]
    present = per > 0
    return {
        "Version": 1,
        "NumBands": int(band_count),
        "TileSizeX": int(chip_size),
        "TileSizeY": int(chip_size),
        "NumClasses": len(listed),
        "NumTiles": int(per.shape[0]),
        "OutputFeatures": False,
        "MetaDataMode": METADATA_MODE,
        "Classes": [{"ClassValue": c.value, "ClassName": c.name} for c in listed],
        "ClassPixelStats": {
            "NumClasses": len(listed),
            "NumImagesTotal": int(per.shape[0]),
            "NumImagesPerClass": [int(n) for n in present.sum(axis=0)],
            "NumPixelsPerClass": [int(n) for n in per.sum(axis=0)],
            "NumClassesPerImage": _summary(present.sum(axis=1)),
            "PixelsPerClass": [_summary(per[:, i]) for i in range(len(listed))],
        },
    }


def stats_text(acc: dict) -> str:
    """``stats.txt``: ArcGIS Pro's human-readable summary of ``esri_accumulated_stats.json``."""
    cps = acc["ClassPixelStats"]
    per_image = cps["NumClassesPerImage"]
    lines = [
        f"images = {acc['NumTiles']} *{acc['NumBands']}*{acc['TileSizeY']}*{acc['TileSizeX']}",
        f"classes = {acc['NumClasses']}",
        f"classes per image = [min = {per_image['Min']}, mean = {per_image['Mean']:.2f}, "
        f"max = {per_image['Max']}]",
        "cls name              cls value     images   pixels      min size   mean size    max size",
    ]
    for c, n_img, px in zip(
        acc["Classes"], cps["NumImagesPerClass"], cps["PixelsPerClass"], strict=True
    ):
        lines.append(
            f"{c['ClassName']:<22}{c['ClassValue']:>9}{n_img:>11}{px['Sum']:>11}"
            f"{px['Min']:>12.2f}{px['Mean']:>12.2f}{px['Max']:>12.2f}"
        )
    return "".join(line + "\r\n" for line in lines)


def map_line(name: str) -> str:
    """One ``map.txt`` line as Pro writes it: Windows separators, two spaces, a trailing
    space, CRLF."""
    return f"images\\{name}  labels\\{name} \r\n"


def model_definition(listed: Sequence[ClassInfo], bands: Sequence[int], chip_size: int) -> dict:
    """The ``.emd`` beside the chips, with real numbers: ``ExtractBands`` are the chips'
    0-based source band indexes, ``Classes`` as ArcGIS numbers them."""
    return {
        "Framework": "geopsp",
        "ModelConfiguration": "PSPNet",
        "ModelType": "ImageClassification",
        "ImageHeight": int(chip_size),
        "ImageWidth": int(chip_size),
        "ExtractBands": [int(b) - 1 for b in bands],
        "ImageSpaceUsed": "MAP_SPACE",
        "Classes": [{"Value": c.value, "Name": c.name, "Color": list(c.color)} for c in listed],
    }


def write_files(
    folder: Path,
    names: Sequence[str],
    counts: np.ndarray,
    classes: Sequence[ClassInfo],
    bands: Sequence[int],
    chip_size: int,
) -> None:
    """Write ``map.txt``, ``esri_model_definition.emd``, ``esri_accumulated_stats.json`` and
    ``stats.txt`` for chips ``names`` (in ``images/`` and ``labels/``) into ``folder``.

    ``counts`` are the label pixels per value of each chip, ``(chips, 256)``.
    """
    counts = np.asarray(counts)
    listed = listed_classes(classes, bool(counts[:, IGNORE].any()))
    acc = accumulated_stats(counts, listed, len(bands), chip_size)
    with open(folder / MAP, "w", encoding="utf-8", newline="") as f:
        f.writelines(map_line(n) for n in names)
    (folder / EMD).write_text(dumps(model_definition(listed, bands, chip_size)), "utf-8")
    (folder / ACC_STATS).write_text(dumps(acc), "utf-8")
    (folder / STATS_TXT).write_bytes(stats_text(acc).encode("utf-8"))
