"""Chip export: cut rasters and their labels into georeferenced training chips.

``export_chips`` plans the window grid of every raster, cuts the windows (in this process or
in worker processes), keeps the chips that hold labels and enough valid imagery, and writes
the chip folder described in ``docs/architecture.md`` atomically (a failure leaves no folder).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

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
from geopsp.labels.rasterize import LabelSource, open_labels

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


@dataclass(frozen=True)
class ExportOptions:
    """Options of :func:`export_chips` (``geopsp export-chips``; see docs/export-chips.md).

    Attributes
    ----------
    class_field, layer, classes, buffer
        See :func:`geopsp.labels.rasterize.open_labels`; ``classes`` may be a ``classes.json`` path.
    chip_size, stride : int
        Chip edge and step in pixels (``stride`` None: half a chip).
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
        Replace the output folder; show a progress bar on stderr.
    """

    class_field: str | None = None
    layer: str | None = None
    classes: str | os.PathLike | list[ClassInfo] | None = None
    chip_size: int = 256
    stride: int | None = None
    bands: list[int] | None = None
    unlabeled: str = "background"
    buffer: float | None = None
    all_touched: bool = False
    keep_empty: float = 0.0
    max_nodata: float = 0.5
    val_fraction: float = 0.1
    seed: int = 0
    workers: int = 0
    overwrite: bool = False
    progress: bool = False

    def checked(self) -> ExportOptions:
        """These options validated, with the default stride and ``-b`` parsed."""
        check_unlabeled(self.unlabeled)
        if self.chip_size < MIN_CHIP:
            raise UsageError(f"--chip-size must be at least {MIN_CHIP}, got {self.chip_size}")
        stride = self.chip_size // 2 if self.stride is None else self.stride
        if stride <= 0:
            raise UsageError(f"--stride must be a positive number of pixels, got {stride}")
        for name, v in (("--keep-empty", self.keep_empty), ("--max-nodata", self.max_nodata)):
            if not 0.0 <= v <= 1.0:
                raise UsageError(f"{name} must be a fraction between 0 and 1, got {v}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.workers < 0:
            raise UsageError(f"--workers must be 0 or more, got {self.workers}")
        return replace(self, stride=stride, bands=parse_bands(self.bands))

    @property
    def classes_file(self) -> str | None:
        """``classes`` when it names a ``classes.json`` file."""
        return os.fspath(self.classes) if isinstance(self.classes, str | os.PathLike) else None


@dataclass
class ExportPlan:
    """What an export works on, known before any window is cut."""

    sources: list[dict]  # per image: address, crs, transform, size, bounds, dtype, nodata, res
    bands: list[int]
    labels: LabelSource
    jobs: list  # (source index, address, [(candidate, col_off, row_off), ...])
    windows: int
    summary: ExportSummary


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
    images: list[str], labels: str, outdir: str, options: ExportOptions | None = None
) -> ExportSummary:
    """Cut ``images`` and ``labels`` into a chip folder ``outdir``.

    Parameters
    ----------
    images : list of str
        Rasters GDAL reads, each in its own CRS (same band count and data type).
    labels : str
        Vector labels (any OGR format and CRS) or a label raster of class values.
    outdir : str
        Chip folder to create (refused if it exists, unless ``options.overwrite``).
    options : ExportOptions, optional
        Chip size, stride, bands, label rules, split, workers (defaults: ``ExportOptions()``).

    Returns
    -------
    ExportSummary
    """
    opts = (options or ExportOptions()).checked()
    plan = _plan(images, labels, outdir, opts)
    with atomic_path(outdir, opts.overwrite, is_dir=True) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        params = ChipParams(
            chip_size=opts.chip_size, bands=tuple(plan.bands), unlabeled=opts.unlabeled,
            all_touched=opts.all_touched, keep_empty=opts.keep_empty, max_nodata=opts.max_nodata,
            seed=opts.seed, workdir=str(tmp), classes=tuple(plan.labels.classes),
        )  # fmt: skip
        records, stats = run_windows(plan, params, opts.workers, opts.progress, tmp)
        summary = plan.summary
        if not records:
            raise InputError(
                f"no chip written: {summary.skipped_empty} without labels, {summary.skipped_nodata} with "
                "too much nodata; check the labels, --unlabeled, --keep-empty and --max-nodata"
            )
        _write_folder(tmp, plan, opts, records, stats)
    return plan.summary


def _plan(images: list[str], labels: str, outdir: str, opts: ExportOptions) -> ExportPlan:
    """Check the output and inputs, open the labels and list the windows of every raster."""
    check_writable(outdir, opts.overwrite)
    refuse_replacing_inputs(outdir, [*images, labels, opts.classes_file], opts.overwrite)
    table = load_classes(opts.classes_file) if opts.classes_file else opts.classes
    sources, bands = _describe_images([os.fspath(i) for i in images], opts.bands)
    src = open_labels(
        labels,
        layer=opts.layer,
        class_field=opts.class_field,
        classes=table,  # type: ignore[arg-type]
        buffer=opts.buffer,
        unlabeled=opts.unlabeled,
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
        wins = window_grid(s["width"], s["height"], opts.chip_size, opts.stride)  # type: ignore[arg-type]
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
    return ExportPlan(sources, bands, src, jobs, cand, summary)


def _write_folder(
    tmp, plan: ExportPlan, opts: ExportOptions, records, band_stats: BandStats
) -> None:
    """Split the kept chips and write the index, classes.json, stats.json and ArcGIS files."""
    from geopsp.chips.splits import spatial_split

    bounds = np.array(
        [(r.col_off, r.row_off, r.col_off + r.size, r.row_off + r.size) for r in records]
    )
    groups = [plan.sources[r.source_index]["address"] for r in records]
    split = spatial_split(bounds, groups, opts.val_fraction, seed=opts.seed)
    counts = np.sum([r.counts for r in records], axis=0)
    classes = plan.labels.classes
    values = [c.value for c in classes] + [IGNORE]
    summary = plan.summary
    summary.chips_written = len(records)
    summary.class_pixels = {v: int(counts[v]) for v in values}
    summary.split_counts = {k: int((split == k).sum()) for k in ("train", "val", "gap")}
    first = plan.sources[0]
    crs = first["crs"]
    stats = {
        "bands": list(plan.bands),
        "band_count": len(plan.bands),
        **band_stats.as_dict(),
        "class_pixels": {str(v): int(counts[v]) for v in values},
        "chip_size": opts.chip_size,
        "stride": opts.stride,
        "crs": crs.to_string() if crs.to_epsg() else crs.to_wkt(),
        "resolution": first["res"],
        "dtype": first["dtype"],
        "nodata": first["nodata"],
        "unlabeled": opts.unlabeled,
        "sources": [s["address"] for s in plan.sources],
        "chips": len(records),
        "split_counts": summary.split_counts,
    }
    write_index(tmp / "chips.gpkg", records, split, plan.sources, classes)
    write_metadata(tmp, records, classes, stats)
