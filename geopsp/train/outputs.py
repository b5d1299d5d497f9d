"""Training outputs beside the model: metrics.csv, curves.png, val_preview.png, config.yaml.

Every file is written atomically; figures have fixed pixel sizes (no tight bounding box) so
they are predictable: ``curves.png`` is 1000x400, ``val_preview.png`` 750 wide and 250 per
previewed chip high.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from geopsp.core.atomic import atomic_path
from geopsp.core.classes import ClassInfo
from geopsp.core.errors import OutputError

CURVES_SIZE = (1000, 400)
PREVIEW_CELL = 250
DPI = 100


def per_class_rows(metrics: dict, classes: list[ClassInfo]) -> list[dict]:
    """One row per class: value, name, IoU, precision, recall, F1 and reference pixels."""
    rows = []
    for i, c in enumerate(classes):
        rows.append(
            {
                "value": c.value,
                "name": c.name,
                **{k: _f(metrics[k][i]) for k in ("iou", "precision", "recall", "f1")},
                "support": int(metrics["support"][i]),
            }
        )
    return rows


def _f(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """One row per finished epoch; the columns are the union of the rows' keys, in order."""
    cols: list[str] = []
    for row in history:
        cols += [k for k in row if k not in cols]
    with (
        atomic_path(path, overwrite=True) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as f,
    ):
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _figure(size: tuple[int, int]):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)


def _save(fig, path: Path) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")


def warm_up_plots() -> None:
    """Draw a throw-away figure: the first one pays for importing matplotlib and loading its
    fonts, which would otherwise be counted as the cost of every epoch's outputs."""
    import io

    fig = _figure((10, 10))
    fig.subplots().plot([0, 1], [0, 1], "o-")
    fig.savefig(io.BytesIO(), dpi=DPI, format="png")


def plot_curves(path: Path, history: list[dict], monitor: str) -> None:
    """Loss (train and validation) and validation mIoU / pixel accuracy per epoch."""
    fig = _figure(CURVES_SIZE)
    ax1, ax2 = fig.subplots(1, 2)
    ep = [r["epoch"] for r in history]
    ax1.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
    ax1.plot(ep, [r["val_loss"] for r in history], "o-", label="validation")
    ax1.set(title="loss", xlabel="epoch")
    ax1.legend()
    ax2.plot(ep, [r["miou"] for r in history], "o-", label="mIoU")
    ax2.plot(ep, [r["pixel_accuracy"] for r in history], "o-", label="pixel accuracy")
    ax2.set(title="validation", xlabel="epoch", ylim=(0, 1))
    ax2.legend()
    best = [r["epoch"] for r in history if r.get("best")]
    if best:
        for ax in (ax1, ax2):
            ax.axvline(best[-1], color="gray", ls="--", lw=1)
    kept = "model: last epoch" if monitor == "last" else f"best epoch by {monitor}"
    fig.suptitle(f"{kept}: {best[-1] if best else '-'}")
    _save(fig, path)


def class_colors(labels: np.ndarray, classes: list[ClassInfo]) -> np.ndarray:
    """RGB image of channel-index labels in the classes' colors (ignore = light gray)."""
    lut = np.full((256, 3), 200, dtype=np.uint8)
    for i, c in enumerate(classes):
        lut[i] = c.color
    return lut[labels.astype(np.uint8)]


def display_rgb(image: np.ndarray) -> np.ndarray:
    """A normalized (C, H, W) chip as an RGB picture: first three bands (or one, gray),
    stretched between the 2nd and 98th percentiles."""
    x = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    x = np.moveaxis(x.astype(np.float32), 0, -1)
    lo, hi = np.percentile(x, (2, 98))
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)


def plot_preview(
    path: Path, images: list, refs: list, preds: list, classes: list[ClassInfo]
) -> None:
    """A grid with one validation chip per row: image, reference, prediction."""
    n = max(1, len(images))
    fig = _figure((3 * PREVIEW_CELL, n * PREVIEW_CELL))
    axes = np.atleast_2d(fig.subplots(n, 3, squeeze=False))
    for r in range(n):
        for c in range(3):
            axes[r, c].set_axis_off()
        if r >= len(images):
            continue
        axes[r, 0].imshow(display_rgb(images[r]))
        axes[r, 1].imshow(class_colors(refs[r], classes), interpolation="nearest")
        axes[r, 2].imshow(class_colors(preds[r], classes), interpolation="nearest")
        if r == 0:
            for c, t in enumerate(("image", "reference", "prediction")):
                axes[r, c].set_title(t)
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=0.99 - 0.1 / n, wspace=0.03, hspace=0.03
    )
    _save(fig, path)


def write_config(path: Path, config: dict) -> None:
    """The resolved options as YAML, reusable with ``geopsp train -c config.yaml``."""
    import yaml

    text = "# geopsp train options (reuse with: geopsp train -c config.yaml -o NEW_OUTDIR)\n"
    text += yaml.safe_dump(config, sort_keys=False)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_output(cfg) -> tuple[Path, bool]:
    """Refuse an existing output folder unless --overwrite or resuming in place."""
    out = Path(cfg.output)
    in_place = bool(cfg.resume) and out.resolve() == Path(cfg.resume).resolve().parent
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder")
    busy = out.is_dir() and any(out.iterdir())
    if busy and not (in_place or cfg.overwrite):
        hint = "use --overwrite to replace it, or --resume OUTDIR/last.ckpt to continue"
        raise OutputError(f"output folder {out} already exists and is not empty; {hint}")
    if not out.parent.exists() and not out.exists():
        raise OutputError(f"cannot create {out}: folder {out.parent} does not exist")
    return out, in_place


def clean(v):
    """JSON/YAML-safe copies of metric values (NaN -> None)."""
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple | np.ndarray):
        return (
            [clean(x) for x in np.asarray(v).tolist()]
            if isinstance(v, np.ndarray)
            else [clean(x) for x in v]
        )
    if isinstance(v, float | np.floating):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def model_metadata(cfg, s, lr: float, best: dict) -> dict:
    """The model file's metadata for run options ``cfg`` and session ``s`` (see modelfile)."""
    from geopsp.core.classes import to_dicts
    from geopsp.train.config import saved_options

    return {
        "architecture": s.arch,
        "bands": s.chips.bands,
        "normalization": {"mean": list(map(float, s.mean)), "std": list(map(float, s.std))},
        "classes": to_dicts(s.classes),
        "chip_size": s.chips.chip_size[0]
        if s.chips.chip_size[0] == s.chips.chip_size[1]
        else list(s.chips.chip_size),
        "resolution": s.chips.resolution,
        "crs": s.chips.crs,
        "metrics": clean(best),
        "train_config": clean(saved_options(cfg, lr)),
    }
