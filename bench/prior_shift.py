"""Would correcting for the held-out area's class mix make a better map?

A model learns its classes' shares in the training area (and, with ``--class-weights auto``,
a reweighted version of them); a spatially separate area often has another mix (the
benchmark's glacier held-out area is 71 % glacier against 44 % in training, the land-cover
one 50 % developed against 25 %). Saerens, Latinne and Decaestecker (2002) correct the
posteriors for such a prior shift by expectation-maximization on the unlabelled target:
``p'(c|x) ∝ p(c|x) · π'_c / π_c``, where ``π`` is the model's mean posterior on its
training data and ``π'`` is re-estimated as the mean of ``p'`` over the target.

For each model folder kept by ``bench/quality.py --keep KEEP`` this script maps the training
and the held-out area with ``geopsp classify --probabilities``, takes ``π`` from the training
area and ``π'`` from 1, 2, 4 or 9 updates (or convergence) on the held-out area, and scores
each map with ``geopsp evaluate``. The map with no update is ``classify``'s own.

Usage::

    python bench/prior_shift.py KEEP/glaciers/model_geopsp-default [...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).parent))
from quality import DATASETS, geopsp  # noqa: E402  (bench/ sibling)

UPDATES = (0, 1, 2, 4, 9, None)  # None: until the estimate moves by less than 1e-6


def posteriors(area: Path, model: Path, work: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(class probabilities (C, H, W), valid-pixel mask, class raster profile) of ``area``."""
    classes, probs = work / f"{area.stem}_classes.tif", work / f"{area.stem}_probs.tif"
    geopsp("classify", str(area), "-m", str(model), "-o", str(classes),
           "--probabilities", str(probs), "--overwrite")  # fmt: skip
    with rasterio.open(classes) as ds:
        valid = ds.read(1) != ds.nodata if ds.nodata is not None else None
        profile = ds.profile
    with rasterio.open(probs) as ds:
        p = ds.read().astype(np.float64) / 255.0
    if valid is None:
        valid = np.ones(p.shape[1:], bool)
    return p, valid, profile


def adapt(p: np.ndarray, prior: np.ndarray, updates: int | None) -> np.ndarray:
    """Posteriors ``p`` (C, N) corrected for the target prior after ``updates`` EM updates."""
    p = p / np.maximum(p.sum(0, keepdims=True), 1e-12)
    target, q, n = prior.copy(), p, 0
    while updates is None or n < updates:
        new = q.mean(1)
        if updates is None and np.abs(new - target).max() < 1e-6:
            break
        target = new
        q = p * (target / np.maximum(prior, 1e-12))[:, None]
        q /= np.maximum(q.sum(0, keepdims=True), 1e-12)
        n += 1
        if n > 1000:
            break
    return q


def one_model(model_dir: Path) -> dict:
    """mIoU of the held-out map after each number of updates, for one kept model."""
    work = model_dir.parent
    ds = DATASETS[work.name]
    model = model_dir / "model.safetensors"
    values = np.array(
        [c["value"] for c in json.loads((work / "chips" / "classes.json").read_text())]
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pt, vt, _ = posteriors(work / "train_area.tif", model, tmp)
        ph, vh, profile = posteriors(work / "heldout_area.tif", model, tmp)
        prior = pt[:, vt].mean(1)
        prior /= prior.sum()
        scores = {}
        for updates in UPDATES:
            q = adapt(ph[:, vh], prior, updates)
            out = np.full(vh.shape, profile["nodata"] if profile["nodata"] is not None else 0)
            out[vh] = values[q.argmax(0)]
            path = tmp / f"map_{updates}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(out.astype(profile["dtype"]), 1)
            report = json.loads(
                geopsp(
                    "evaluate", str(path), "--reference", str(ds.labels), *ds.reference, "--json"
                )
            )
            scores["converged" if updates is None else str(updates)] = report["miou"]
    return {"model": str(model_dir), "dataset": work.name, "prior": prior.round(3).tolist(),
            "miou": scores}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model folders kept by quality.py")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    results = []
    for m in args.models:
        r = one_model(m)
        results.append(r)
        cells = "  ".join(f"{k}: {v:.3f}" for k, v in r["miou"].items())
        print(f"{r['dataset']:10s} {m}  {cells}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    by_ds: dict[str, list[dict]] = {}
    for r in results:
        by_ds.setdefault(r["dataset"], []).append(r["miou"])
    for name, rows in by_ds.items():
        gains = {k: np.mean([row[k] - row["0"] for row in rows]) * 100 for k in rows[0]}
        cells = "  ".join(f"{k}: {v:+.1f}" for k, v in gains.items() if k != "0")
        print(f"{name}: {len(rows)} models, mean change in points  {cells}")


if __name__ == "__main__":
    main()
