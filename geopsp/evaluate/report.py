"""Presenting an accuracy assessment: a readable table, JSON, and a confusion-matrix plot."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from geopsp.core.atomic import atomic_path, check_writable
from geopsp.evaluate.accuracy import EvaluationResult


def _fmt(x: float, digits: int = 4) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 1] + "~"


def to_json(result: EvaluationResult) -> str:
    """``result.to_dict()`` as indented JSON (undefined values are ``null``)."""
    return json.dumps(result.to_dict(), indent=2)


def format_table(result: EvaluationResult) -> str:
    """A plain-text report: summary metrics, per-class table and the confusion matrix."""
    b = result.boundary
    lines = [
        f"Prediction: {result.prediction}",
        f"Reference:  {result.reference}",
        f"Pixels assessed: {result.pixels}",
        "",
        f"Overall accuracy   {_fmt(result.overall_accuracy)}",
        f"Cohen's kappa      {_fmt(result.kappa)}",
        f"mIoU               {_fmt(result.miou)}",
        f"Frequency-wt IoU   {_fmt(result.fwiou)}",
        f"Boundary F1        {_fmt(result.boundary_f1)}  (tolerance {result.boundary_tolerance:g} px; "
        f"precision {_fmt(b.precision)}, recall {_fmt(b.recall)})",
        "",
    ]
    nw = min(max([5] + [len(n) for n in result.names]), 24)
    head = f"{'class':<{nw}}  {'value':>5}  {'precision':>9}  {'recall':>7}  {'F1':>7}  {'IoU':>7}  {'support':>10}"
    lines += [head, "-" * len(head)]
    for i, (v, n) in enumerate(zip(result.labels, result.names, strict=True)):
        lines.append(
            f"{_short(n, nw):<{nw}}  {v:>5}  {_fmt(result.precision[i]):>9}  "
            f"{_fmt(result.recall[i]):>7}  {_fmt(result.f1[i]):>7}  {_fmt(result.iou[i]):>7}  "
            f"{int(result.support[i]):>10}"
        )
    lines += ["", "Confusion matrix (pixels; rows: reference, columns: prediction)"]
    cw = max([6] + [len(str(int(x))) for x in result.matrix.ravel()])
    cw = max(cw, min(max([1] + [len(n) for n in result.names]), 12))
    rw = min(max([5] + [len(n) for n in result.names]), 24)
    lines.append(" " * rw + "".join(f"  {_short(n, cw):>{cw}}" for n in result.names))
    for i, n in enumerate(result.names):
        lines.append(
            f"{_short(n, rw):<{rw}}" + "".join(f"  {int(x):>{cw}}" for x in result.matrix[i])
        )
    return "\n".join(lines)


def plot_confusion(
    result: EvaluationResult, path: str | os.PathLike, overwrite: bool = False
) -> None:
    """Write the confusion matrix as a PNG: colors show row shares (recall), text the counts.

    Parameters
    ----------
    result : EvaluationResult
        The assessment to draw.
    path : path-like
        Output PNG; refused when it exists unless ``overwrite``. Written atomically.
    overwrite : bool
        Replace an existing file.
    """
    check_writable(path, overwrite)
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    from matplotlib.figure import Figure

    m = result.matrix.astype(np.float64)
    k = len(result.labels)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = min(max(4.0, 0.6 * k + 2.5), 20.0)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of reference pixels")
    names = [_short(n, 18) for n in result.names]
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    ax.set_title(
        f"OA {_fmt(result.overall_accuracy, 3)}  kappa {_fmt(result.kappa, 3)}  "
        f"mIoU {_fmt(result.miou, 3)}"
    )
    if k <= 20:  # counts stay legible up to about 20 classes
        for i in range(k):
            for j in range(k):
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8, color=color)
    fig.tight_layout()
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
