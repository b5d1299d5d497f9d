"""Confusion-matrix metrics, accumulated over a whole dataset (never averaged per batch).

Rows are the reference class, columns the predicted class, both as channel indexes
``0..K-1``. Pixels whose reference (or prediction) is the ignore value never count.
"""

from __future__ import annotations

import numpy as np

from geopsp.core.classes import IGNORE


def confusion_matrix(
    pred: np.ndarray, ref: np.ndarray, num_classes: int, ignore: int = IGNORE
) -> np.ndarray:
    """Count ``(reference, prediction)`` pairs over pixels where neither is ``ignore``.

    Values outside ``0..num_classes-1`` are ignored too. Returns int64 ``(K, K)``.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.dtype == np.uint8 and ref.dtype == np.uint8 and pred.shape == ref.shape:
        # Fast path for class rasters and label chips (3x quicker on large blocks): count all
        # 256 x 256 value pairs, then drop the ignore row/column and out-of-range values.
        full = np.bincount(((ref.astype(np.intp) << 8) | pred).ravel(), minlength=65536)
        full = full.reshape(256, 256).astype(np.int64)
        if 0 <= ignore < 256:
            full[ignore, :] = 0
            full[:, ignore] = 0
        out = np.zeros((num_classes, num_classes), dtype=np.int64)
        k = min(num_classes, 256)
        out[:k, :k] = full[:k, :k]
        return out
    p = pred.ravel().astype(np.int64)
    r = ref.ravel().astype(np.int64)
    keep = (
        (r != ignore) & (p != ignore) & (r >= 0) & (r < num_classes) & (p >= 0) & (p < num_classes)
    )
    idx = r[keep] * num_classes + p[keep]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def scores(cm: np.ndarray) -> dict:
    """Metrics of a confusion matrix.

    Returns a dict with ``pixel_accuracy`` (= overall accuracy), ``kappa``, ``miou``
    (mean over classes present in the reference or the prediction), ``fwiou``
    (IoU weighted by reference frequency) and per-class arrays ``iou``, ``precision``,
    ``recall``, ``f1``, ``support`` (NaN where undefined).
    """
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    ref_n = cm.sum(axis=1)
    pred_n = cm.sum(axis=0)
    iou = _div(tp, ref_n + pred_n - tp)
    precision = _div(tp, pred_n)
    recall = _div(tp, ref_n)
    f1 = _div(2 * tp, ref_n + pred_n)
    oa = float(tp.sum() / total) if total else float("nan")
    pe = float((ref_n * pred_n).sum() / total**2) if total else float("nan")
    kappa = (
        (oa - pe) / (1 - pe) if total and pe < 1 else (1.0 if total and oa == 1.0 else float("nan"))
    )
    present = (ref_n + pred_n) > 0
    miou = float(np.nanmean(iou[present])) if present.any() else float("nan")
    fwiou = float(np.nansum(ref_n / total * np.nan_to_num(iou))) if total else float("nan")
    return {
        "pixel_accuracy": oa,
        "kappa": float(kappa),
        "miou": miou,
        "fwiou": fwiou,
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": ref_n.astype(np.int64),
    }


class ConfusionMatrix:
    """Accumulate a confusion matrix batch by batch (numpy or torch integer arrays)."""

    def __init__(self, num_classes: int, ignore: int = IGNORE) -> None:
        self.num_classes = num_classes
        self.ignore = ignore
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, ref) -> None:
        if hasattr(pred, "detach"):
            pred = pred.detach().cpu().numpy()
        if hasattr(ref, "detach"):
            ref = ref.detach().cpu().numpy()
        self.matrix += confusion_matrix(pred, ref, self.num_classes, self.ignore)

    def compute(self) -> dict:
        return scores(self.matrix)
