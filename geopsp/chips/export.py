"""Chip export: cut rasters and their labels into georeferenced training chips.

``export_chips`` plans the window grid of every raster, cuts the windows (in this process or
in worker processes), keeps the chips that hold labels and enough valid imagery, and writes
the chip folder described in ``docs/architecture.md`` atomically (a failure leaves no folder).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from geopsp.chips.jobs import run_windows
from geopsp.chips.metadata import write_index, write_metadata
from geopsp.chips.worker import ChipParams
from geopsp.core.atomic import atomic_path, check_writable, refuse_replacing_inputs
from geopsp.core.band_stats import BandStats
from geopsp.core.classes import IGNORE, ClassInfo, load_classes
from geopsp.core.errors import InputError, UsageError
from geopsp.core.sources import check_bands, open_raster, parse_bands
from geopsp.core.windows import window_grid
from geopsp.labels.class_rules import check_unlabeled
from geopsp.labels.rasterize import open_labels

log = logging.getLogger(__name__)

MIN_CHIP = 16
BATCH = 16  # windows per task: large enough to amortize inter-process overhead


@dataclass
class ExportSummary:
    """What an export wrote and skipped."""

    outdir: str
    chips_written: int = 0
    skipped_empty: int = 0
    skipped_nodata: int = 0
    invalid_repaired: int = 0
    invalid_skipped: int = 0
    class_pixels: dict[int, int] = field(default_factory=dict)
    split_counts: dict[str, int] = field(default_factory=dict)
    classes: list[ClassInfo] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        """Human-readable summary (the CLI prints it on stdout)."""
        names = {c.value: c.name for c in self.classes}
        lines = [
            f"chips written: {self.chips_written} -> {self.outdir}",
            f"skipped as empty: {self.skipped_empty}",
            f"skipped as nodata: {self.skipped_nodata}",
            "split: " + ", ".join(f"{k} {v}" for k, v in self.split_counts.items()),
        ]
        if self.invalid_repaired or self.invalid_skipped:
            lines.append(
                f"invalid geometries: {self.invalid_repaired} repaired, {self.invalid_skipped} skipped"
            )
        lines.append("pixels per class:")
        for v, n in self.class_pixels.items():
            name = names.get(v, "ignore" if v == IGNORE else "?")
            lines.append(f"  {v:>3} {name}: {n}")
        return lines


def _check_options(
    chip_size, stride, keep_empty, max_nodata, val_fraction, workers, unlabeled
) -> int:
    check_unlabeled(unlabeled)
    if chip_size < MIN_CHIP:
        raise UsageError(f"--chip-size must be at least {MIN_CHIP}, got {chip_size}")
    stride = chip_size // 2 if stride is None else stride
    if stride <= 0:
        raise UsageError(f"--stride must be a positive number of pixels, got {stride}")
    for name, v in (("--keep-empty", keep_empty), ("--max-nodata", max_nodata)):
        if not 0.0 <= v <= 1.0:
            raise UsageError(f"{name} must be a fraction between 0 and 1, got {v}")
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {workers}")
    return stride


def _describe_images(images: list[str], bands: list[int] | None) -> tuple[list[dict], list[int]]:
    """Open each raster once to check it and record its grid."""
    if not images:
        raise UsageError("give at least one IMAGE")
    sources, used = [], None
    for addr in images:
        with open_raster(addr) as ds:
            if ds.crs is None:
                raise InputError(
                    f"{addr}: raster has no CRS; assign one (gdal_edit.py -a_srs EPSG:XXXX)"
                )
            b = check_bands(bands, ds.count, addr)
            dtype = ds.dtypes[b[0] - 1]
            if any(ds.dtypes[i - 1] != dtype for i in b):
                raise InputError(
                    f"{addr}: the selected bands have different data types; choose bands with -b"
                )
            sources.append(
                {
                    "address": str(addr),
                    "crs": ds.crs,
                    "transform": ds.transform,
                    "width": ds.width,
                    "height": ds.height,
                    "bounds": tuple(ds.bounds),
                    "dtype": dtype,
                    "nodata": ds.nodata,
                    "res": [float(ds.res[0]), float(ds.res[1])],
                }
            )
            used = b if used is None else used
            if len(b) != len(used):
                raise InputError(
                    f"{addr} has {len(b)} band(s) but {images[0]} has {len(used)}; choose bands with -b"
                )
    dtypes = sorted({s["dtype"] for s in sources})
    if len(dtypes) > 1:
        raise InputError(
            f"the images have different data types ({', '.join(dtypes)}); one chip folder needs one"
        )
    return sources, used or []


def export_chips(
    images: list[str],
    labels: str,
    outdir: str,
    *,
    class_field: str | None = None,
    layer: str | None = None,
    classes: str | list[ClassInfo] | None = None,
    chip_size: int = 256,
    stride: int | None = None,
    bands: list[int] | None = None,
    unlabeled: str = "background",
    buffer: float | None = None,
    all_touched: bool = False,
    keep_empty: float = 0.0,
    max_nodata: float = 0.5,
    val_fraction: float = 0.1,
    seed: int = 0,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> ExportSummary:
    """Cut ``images`` and ``labels`` into a chip folder ``outdir``.

    Parameters
    ----------
    images : list of str
        Rasters GDAL reads, each in its own CRS (same band count and data type).
    labels : str
        Vector labels (any OGR format and CRS) or a label raster of class values.
    outdir : str
        Chip folder to create (refused if it exists, unless ``overwrite``).
    class_field, layer, classes, buffer
        See :func:`geopsp.labels.rasterize.open_labels`; ``classes`` may be a ``classes.json`` path.
    chip_size, stride : int
        Chip edge and step in pixels (stride defaults to half a chip).
    bands : list of int, optional
        1-based source bands (default: all).
    unlabeled : str
        ``background`` (pixels outside labels are class 0) or ``ignore`` (255).
    all_touched : bool
        Burn every pixel a feature touches, not only those whose center it covers.
    keep_empty : float
        Fraction of chips without any labelled pixel to keep (chosen reproducibly from ``seed``).
    max_nodata : float
        Skip chips whose imagery nodata fraction exceeds this.
    val_fraction, seed
        Spatial train/val split (see :func:`geopsp.chips.splits.spatial_split`).
    workers : int
        Worker processes (0: this process). The output is byte-identical for any value.
    overwrite, progress : bool
        Replace ``outdir``; show a progress bar on stderr.

    Returns
    -------
    ExportSummary
    """
    stride = _check_options(
        chip_size, stride, keep_empty, max_nodata, val_fraction, workers, unlabeled
    )
    bands = parse_bands(bands)
    check_writable(outdir, overwrite)
    inputs = [*images, labels, classes if isinstance(classes, str | os.PathLike) else None]
    refuse_replacing_inputs(outdir, inputs, overwrite)
    table = load_classes(classes) if isinstance(classes, str | os.PathLike) else classes
    sources, used_bands = _describe_images([os.fspath(i) for i in images], bands)
    src = open_labels(
        labels,
        layer=layer,
        class_field=class_field,
        classes=table,
        buffer=buffer,
        unlabeled=unlabeled,
    )
    touched = [i for i, s in enumerate(sources) if src.touches(s["crs"], s["bounds"])]
    if not touched:
        raise InputError(
            f"{labels}: the labels touch none of the rasters; check the files and their CRSs"
        )
    for i, s in enumerate(sources):
        if i not in touched:
            log.warning("%s: no label touches this raster; it gives no chips", s["address"])
    jobs, cand = [], 0
    for i in touched:
        s = sources[i]
        wins = window_grid(s["width"], s["height"], chip_size, stride)
        for k in range(0, len(wins), BATCH):
            chunk = wins[k : k + BATCH]
            jobs.append((i, s["address"], [(cand + j, c, r) for j, (c, r) in enumerate(chunk)]))
            cand += len(chunk)
    summary = ExportSummary(
        outdir=os.fspath(outdir),
        invalid_repaired=src.invalid_repaired,
        invalid_skipped=src.invalid_skipped,
        classes=src.classes,
    )
    with atomic_path(outdir, overwrite, is_dir=True) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        params = ChipParams(
            chip_size, tuple(used_bands), unlabeled, all_touched, keep_empty, max_nodata, seed, str(tmp),
            tuple(src.classes),
        )  # fmt: skip
        records, stats = run_windows(
            jobs, cand, src, params, summary, len(used_bands), workers, progress, tmp
        )
        if not records:
            raise InputError(
                f"no chip written: {summary.skipped_empty} without labels, {summary.skipped_nodata} with "
                "too much nodata; check the labels, --unlabeled, --keep-empty and --max-nodata"
            )
        _finish(tmp, records, stats, sources, used_bands, src.classes, summary, chip_size, stride,
                unlabeled, val_fraction, seed)  # fmt: skip
    return summary


def _finish(
    tmp,
    records,
    band_stats: BandStats,
    sources,
    bands,
    classes,
    summary,
    chip_size,
    stride,
    unlabeled,
    val_fraction,
    seed,
):
    from geopsp.chips.splits import spatial_split

    bounds = np.array(
        [(r.col_off, r.row_off, r.col_off + r.size, r.row_off + r.size) for r in records]
    )
    groups = [sources[r.source_index]["address"] for r in records]
    split = spatial_split(bounds, groups, val_fraction, seed=seed)
    counts = np.sum([r.counts for r in records], axis=0)
    values = [c.value for c in classes] + [IGNORE]
    summary.chips_written = len(records)
    summary.class_pixels = {v: int(counts[v]) for v in values}
    summary.split_counts = {k: int((split == k).sum()) for k in ("train", "val", "gap")}
    first = sources[0]
    crs = first["crs"]
    stats = {
        "bands": list(bands),
        "band_count": len(bands),
        **band_stats.as_dict(),
        "class_pixels": {str(v): int(counts[v]) for v in values},
        "chip_size": chip_size,
        "stride": stride,
        "crs": crs.to_string() if crs.to_epsg() else crs.to_wkt(),
        "resolution": first["res"],
        "dtype": first["dtype"],
        "nodata": first["nodata"],
        "unlabeled": unlabeled,
        "sources": [s["address"] for s in sources],
        "chips": len(records),
        "split_counts": summary.split_counts,
    }
    write_index(tmp / "chips.gpkg", records, split, sources, classes)
    write_metadata(tmp, records, classes, stats)
