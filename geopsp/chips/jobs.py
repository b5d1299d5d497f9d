"""Running the window jobs of a chip export, in this process or in worker processes.

Results come back in window order whatever the worker count, and kept chips are renamed to
consecutive ids in that order, so the chip folder is byte-identical for any ``--workers``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from geopsp.chips.metadata import ChipRecord
from geopsp.chips.worker import ChipParams, ChipResult, init_worker, process_batch, temp_names
from geopsp.core.band_stats import BandStats

if TYPE_CHECKING:
    from geopsp.chips.export import ExportPlan


def run_windows(
    plan: ExportPlan, params: ChipParams, workers: int, progress: bool, tmp: Path
) -> tuple[list, BandStats]:
    """Cut every window of ``plan.jobs`` in order; return the kept chips and their band
    statistics.

    ``plan.jobs`` are ``(source_index, address, [(cand, col_off, row_off), ...])``;
    ``plan.summary`` gets the skip counts.
    """
    from geopsp.core.progress import bar

    jobs, summary = plan.jobs, plan.summary
    records: list[ChipRecord] = []
    stats = BandStats(len(plan.bands))
    source_of = {w[0]: job[0] for job in jobs for w in job[2]}
    window_of = {w[0]: (w[1], w[2]) for job in jobs for w in job[2]}
    with bar(plan.windows, "export-chips", enabled=progress, unit="window") as pbar:
        for results in _results(jobs, plan.labels, params, workers):
            for r in results:
                _collect(r, records, stats, summary, source_of, window_of, params, tmp)
            pbar.update(len(results))
    return records, stats


def _results(jobs, src, params, workers):
    if workers == 0:
        init_worker(src, params)
        for job in jobs:
            yield process_batch(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # fork is unsafe with GDAL's threads and caches
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=init_worker, initargs=(src, params)
    ) as ex:
        try:
            yield from ex.map(process_batch, jobs)
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)
            raise


def _collect(
    r: ChipResult, records, stats, summary, source_of, window_of, params, tmp: Path
) -> None:
    if r.status == "empty":
        summary.skipped_empty += 1
        return
    if r.status == "nodata":
        summary.skipped_nodata += 1
        return
    rec = ChipRecord(len(records), source_of[r.cand], *window_of[r.cand], params.chip_size,
                     r.nodata_fraction, r.counts)  # fmt: skip
    img, lab = temp_names(str(tmp), r.cand)
    os.replace(img, tmp / "images" / rec.name)
    os.replace(lab, tmp / "labels" / rec.name)
    records.append(rec)
    stats.merge(r.stats)
