"""Chip folders for training: geopsp folders and ArcGIS "Classified_Tiles" folders.

A geopsp folder (written by ``export-chips``) has ``chips.gpkg`` with a ``split`` column,
``classes.json`` and ``stats.json``. An ArcGIS Pro folder ("Export Training Data For Deep
Learning", Classified_Tiles) has ``map.txt`` (``images\\x.tif labels\\x.tif`` per line) and an
``.emd`` file with ``Classes``; it has no split and no band statistics, so the split is computed
from the chips' footprints (:func:`geopsp.chips.splits.spatial_split`) and the statistics are computed
from the training chips. Several folders merge into one :class:`ChipSet` when their bands and
classes agree.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geopsp.chips.splits import spatial_split
from geopsp.core.band_stats import BandStats
from geopsp.core.classes import ClassInfo, load_classes
from geopsp.core.errors import InputError

log = logging.getLogger(__name__)

ARCGIS_VAL_FRACTION = 0.1  # share of validation chips when a folder has no split of its own


@dataclass
class Chip:
    """One image/label pair and the side of the split it belongs to."""

    image: Path
    label: Path
    split: str  # train | val | gap
    counts: dict[int, int] | None = None  # label pixels per class value, when the index has them
    origin: tuple[str, int, int] | None = None  # (source, row_off, col_off) when the index has it


@dataclass
class ChipSet:
    """One or more merged chip folders: the chips plus what the model file must record."""

    folders: list[Path]
    layouts: list[str]
    chips: list[Chip]
    classes: list[ClassInfo]
    band_count: int
    bands: list[int]
    chip_size: tuple[int, int]  # (height, width)
    mean: list[float] | None = None
    std: list[float] | None = None
    valid_pixels: int | None = None  # pixels behind ``mean``/``std``, to pool folders
    crs: str | None = None
    resolution: list[float] | None = None
    extra: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Chip]:
        return [c for c in self.chips if c.split == name]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it as JSON ({exc})") from exc


def _raster_info(path: Path) -> dict:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            return {
                "count": src.count,
                "shape": (src.height, src.width),
                "bounds": tuple(src.bounds),
                "crs": src.crs.to_string() if src.crs else None,
                "res": [float(r) for r in src.res],
                "georef": src.crs is not None or not src.transform.is_identity,
            }
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a readable chip raster") from exc


def _open_geopsp(folder: Path) -> ChipSet:
    import pyogrio

    try:
        df = pyogrio.read_dataframe(folder / "chips.gpkg", layer="chips", read_geometry=False)
    except Exception as exc:  # any OGR failure means the index is unusable
        raise InputError(f"{folder / 'chips.gpkg'}: cannot read the chip index ({exc})") from exc
    if len(df) == 0:
        raise InputError(f"{folder}: the chip index is empty; export chips that contain labels")
    missing = {"image", "label"} - set(df.columns)
    if missing:
        raise InputError(f"{folder / 'chips.gpkg'}: the chip index lacks columns {sorted(missing)}")
    if not (folder / "classes.json").is_file():
        raise InputError(f"{folder}: classes.json is missing; re-export the chips")
    classes = load_classes(folder / "classes.json")
    stats = _read_json(folder / "stats.json") if (folder / "stats.json").is_file() else {}
    if "split" in df.columns:
        splits = [str(s) for s in df["split"]]
    else:
        b = df[["col_off", "row_off"]].to_numpy(float)
        wh = df[["width", "height"]].to_numpy(float)
        splits = list(spatial_split(np.hstack([b, b + wh]), df["source"].astype(str), 0.1))
    count_cols = [c for c in df.columns if c.startswith("count_") and c[6:].isdigit()]
    placed = {"source", "row_off", "col_off"} <= set(df.columns)
    chips = []
    for i, row in enumerate(df.itertuples(index=False)):
        counts = {int(c[6:]): int(getattr(row, c)) for c in count_cols} if count_cols else None
        img, lab = folder / str(row.image), folder / str(row.label)
        origin = (f"{folder}|{row.source}", int(row.row_off), int(row.col_off)) if placed else None
        chips.append(Chip(img, lab, splits[i], counts, origin))
    first = _raster_info(chips[0].image)
    band_count = int(stats.get("band_count") or first["count"])
    size = stats.get("chip_size") or first["shape"]
    size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
    mean, std = stats.get("mean"), stats.get("std")
    return ChipSet(
        folders=[folder],
        layouts=["geopsp"],
        chips=chips,
        classes=classes,
        band_count=band_count,
        bands=[int(b) for b in stats.get("bands") or range(1, band_count + 1)],
        chip_size=size,  # type: ignore[arg-type]
        mean=[float(m) for m in mean] if mean else None,
        std=[float(s) for s in std] if std else None,
        valid_pixels=stats.get("valid_pixels"),
        crs=stats.get("crs") or first["crs"],
        resolution=stats.get("resolution") or first["res"],
        extra={"chips_total": len(chips)},
    )


def _open_arcgis(folder: Path, seed: int, arcgis_nodata: str) -> ChipSet:
    from geopsp.chips import arcgis

    meta = arcgis.read_folder(folder, arcgis_nodata)
    pairs = meta.pairs
    infos = [_raster_info(img) for img, _ in pairs]
    first = infos[0]
    for (img, _), info in zip(pairs, infos, strict=True):
        if info["count"] != first["count"] or info["shape"] != first["shape"]:
            raise InputError(
                f"{img}: {info['count']} band(s) of {info['shape'][1]}x{info['shape'][0]} pixels, "
                f"but {pairs[0][0]} has {first['count']} of {first['shape'][1]}x{first['shape'][0]}"
            )
    if None not in meta.image_size and meta.image_size != first["shape"]:
        log.warning(
            "%s: ImageHeight/ImageWidth differ from the chips; using the chips' size", meta.emd_path
        )
    bounds = np.array([i["bounds"] for i in infos], dtype=float)
    groups = [str(i["crs"]) for i in infos]
    if not first["georef"]:  # chips without georeferencing: split by order, in blocks
        bounds = np.array([[k, 0, k + 1, 1] for k in range(len(pairs))], dtype=float)
    split = spatial_split(bounds, groups, ARCGIS_VAL_FRACTION, seed=seed)
    chips = [Chip(img, lab, str(s)) for (img, lab), s in zip(pairs, split, strict=True)]
    return ChipSet(
        folders=[folder],
        layouts=["arcgis"],
        chips=chips,
        classes=meta.classes,
        band_count=first["count"],
        bands=arcgis.source_bands(meta.extract_bands, first["count"], meta.emd_path),
        chip_size=first["shape"],
        crs=first["crs"],
        resolution=first["res"],
        extra={"chips_total": len(chips)},
    )


def open_chip_folder(path: str | Path, seed: int = 0, arcgis_nodata: str = "background") -> ChipSet:
    """Read a chip folder's index, classes and statistics (no pixels are read).

    Parameters
    ----------
    path : str or Path
        A folder written by ``geopsp export-chips`` (``chips.gpkg``) or by ArcGIS Pro's
        "Export Training Data For Deep Learning" in the Classified_Tiles format (``map.txt``
        and an ``.emd`` file).
    seed : int
        Seed of the spatial split computed for folders that have none.
    arcgis_nodata : {"background", "ignore"}
        ArcGIS folders: label value 0 (ArcGIS NoData), when the ``.emd`` does not list it, is
        trained as a ``background`` class or ignored (see :func:`geopsp.chips.arcgis.emd_classes`).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    if (folder / "chips.gpkg").is_file():
        return _open_geopsp(folder)
    if (folder / "map.txt").is_file():
        return _open_arcgis(folder, seed, arcgis_nodata)
    raise InputError(
        f"{folder}: not a chip folder (no chips.gpkg or map.txt); create one with geopsp export-chips"
    )


def _merge_classes(sets: list[ChipSet]) -> list[ClassInfo]:
    table: dict[int, ClassInfo] = {}
    for s in sets:
        for c in s.classes:
            seen = table.get(c.value)
            if seen is not None and seen.name.strip().lower() != c.name.strip().lower():
                raise InputError(
                    f"conflicting classes: value {c.value} is {seen.name!r} in {sets[0].folders[0]} "
                    f"but {c.name!r} in {s.folders[0]}; export all folders with the same classes"
                )
            table.setdefault(c.value, c)
    return [table[v] for v in sorted(table)]


def _pooled_stats(sets: list[ChipSet]) -> tuple[list[float] | None, list[float] | None]:
    """The statistics of all the folders' valid pixels together (None when a folder lacks its
    statistics or their pixel count: training then measures the chips)."""
    if any(s.mean is None or s.std is None or not s.valid_pixels for s in sets):
        return None, None
    pooled = BandStats(sets[0].band_count)
    for s in sets:
        pooled.merge(BandStats.from_summary(s.valid_pixels, s.mean, s.std))  # type: ignore[arg-type]
    return pooled.mean.tolist(), pooled.std.tolist()


def merge_chip_sets(sets: list[ChipSet]) -> ChipSet:
    """Merge chip folders whose band count and chip size agree and whose classes do not conflict.

    The class table is the union of the folders' tables; band statistics are pooled (weighted
    by valid pixels) when every folder has them.
    """
    if len(sets) == 1:
        return sets[0]
    first = sets[0]
    for s in sets[1:]:
        if s.band_count != first.band_count:
            raise InputError(
                f"{s.folders[0]} has {s.band_count} band(s) but {first.folders[0]} has "
                f"{first.band_count}; merge only folders exported with the same bands"
            )
        if s.chip_size != first.chip_size:
            raise InputError(
                f"{s.folders[0]} has {s.chip_size[1]}x{s.chip_size[0]} chips but {first.folders[0]} "
                f"has {first.chip_size[1]}x{first.chip_size[0]}; export them with the same --chip-size"
            )
    mean, std = _pooled_stats(sets)
    return ChipSet(
        folders=[f for s in sets for f in s.folders],
        layouts=[x for s in sets for x in s.layouts],
        chips=[c for s in sets for c in s.chips],
        classes=_merge_classes(sets),
        band_count=first.band_count,
        bands=first.bands,
        chip_size=first.chip_size,
        mean=mean,
        std=std,
        valid_pixels=sum(s.valid_pixels or 0 for s in sets) if mean else None,
        crs=first.crs,
        resolution=first.resolution,
        extra={"chips_total": sum(len(s.chips) for s in sets)},
    )


def open_chip_folders(
    paths: list[str | Path], seed: int = 0, arcgis_nodata: str = "background"
) -> ChipSet:
    """Open and merge several chip folders; see :func:`open_chip_folder`."""
    if not paths:
        raise InputError("no chip folder given")
    return merge_chip_sets([open_chip_folder(p, seed, arcgis_nodata) for p in paths])
