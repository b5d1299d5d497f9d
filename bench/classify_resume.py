"""What ``classify --resume`` costs, and what it saves after an interruption.

1. **Overhead**: wall time of an uninterrupted ``--resume`` run / a plain run (same raster,
   model and options; runs alternate and the best of each is kept, as the machine is shared).
2. **Progress folder size** at its largest (after the last committed block row), next to
   the size of the finished class raster.
3. **Continuation**: a run stopped after half of its forward passes (or later, once a block
   row is recorded), then resumed: wall time of the resumed part / a full plain run, and
   whether the bytes equal the plain run's.

Usage::

    python bench/classify_resume.py                 # 3072^2 pixels, resnet18 PSPNet, ~3 min
    python bench/classify_resume.py --size 2048 --reps 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from classify import make_predictor, synthetic_raster

from geopsp.classify.resume import Journal, partial_dir
from geopsp.classify.run import ClassifyOptions, classify_raster


class _Stop(Exception):
    pass


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=3072)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    return ap.parse_args()


def uninterrupted(src: str, work: Path, pred, opts: dict, reps: int) -> tuple[list, list, int]:
    """Seconds of plain runs and of `--resume` runs that are never stopped, alternating, and
    the number of windows a run computes."""
    s = classify_raster(src, work / "warm.tif", pred, ClassifyOptions(**opts))  # warm-up
    plain_s, resume_s = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        classify_raster(src, work / "plain.tif", pred, ClassifyOptions(**opts))
        plain_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        classify_raster(src, work / "resume.tif", pred, ClassifyOptions(**opts, resume=True))
        resume_s.append(time.perf_counter() - t0)
    return plain_s, resume_s, s.computed


def stopped_then_resumed(
    src: str, out: Path, pred, opts: dict, batch: int, computed: int
) -> tuple[int, float]:
    """Stop a run after half of its ``computed`` windows' forward passes, then continue it:
    (block rows done when it stopped, seconds of the rest)."""
    calls = [0]
    forward = pred.model
    state = partial_dir(out) / "state.json"

    def stopping(x):  # stop after half of the passes, once a block row is recorded
        calls[0] += 1
        half = calls[0] > (computed // batch) // 2
        if half and state.exists() and json.loads(state.read_text())["rows_done"] >= 1:
            raise _Stop
        return forward(x)

    shutil.rmtree(partial_dir(out), ignore_errors=True)
    pred.model = stopping
    with contextlib.suppress(_Stop):
        classify_raster(src, out, pred, ClassifyOptions(**opts, resume=True))
    pred.model = forward
    if not state.exists():  # the run ended before it had recorded a block row
        raise SystemExit("the raster is too small to stop a run midway: use --size 2048 or more")
    rows = json.loads(state.read_text())["rows_done"]
    t0 = time.perf_counter()
    classify_raster(src, out, pred, ClassifyOptions(**opts, resume=True))
    return rows, time.perf_counter() - t0


def main() -> None:
    a = parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="geopsp-bench-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    src = str(synthetic_raster(work / f"in{a.size}.tif", a.size))
    pred = make_predictor("pspnet")
    opts = dict(tile_size=a.tile, overlap=a.overlap, batch_size=a.batch, progress=False,
                overwrite=True)  # fmt: skip

    largest = [0]
    commit = Journal.commit

    def measuring_commit(self, row):  # the folder is largest right after a commit
        commit(self, row)
        largest[0] = max(largest[0], _du(self.dir))

    Journal.commit = measuring_commit
    plain_s, resume_s, computed = uninterrupted(src, work, pred, opts, a.reps)
    same_uninterrupted = (work / "plain.tif").read_bytes() == (work / "resume.tif").read_bytes()
    out = work / "stopped.tif"
    rows, rest_s = stopped_then_resumed(src, out, pred, opts, a.batch, computed)
    result = {
        "size": a.size, "tile": a.tile, "overlap": a.overlap, "batch": a.batch,
        "plain_s": plain_s, "resume_s": resume_s,
        "resume_overhead": min(resume_s) / min(plain_s),
        "same_bytes_uninterrupted": same_uninterrupted,
        "partial_folder_max_bytes": largest[0],
        "class_raster_bytes": (work / "plain.tif").stat().st_size,
        "stopped_after_block_rows": rows,
        "resumed_part_s": rest_s,
        "resumed_part_over_full_run": rest_s / min(plain_s),
        "same_bytes_resumed": out.read_bytes() == (work / "plain.tif").read_bytes(),
    }  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
