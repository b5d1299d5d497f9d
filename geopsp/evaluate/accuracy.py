"""The result of an accuracy assessment: confusion matrix, scores and their JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from geopsp.core.classes import ClassInfo
from geopsp.evaluate.boundary import BoundaryCounts
from geopsp.evaluate.metrics import scores

DEFAULT_BOUNDARY_TOLERANCE = 2
DEFAULT_BLOCK_SIZE = 1024


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class EvaluationResult:
    """Metrics of one prediction against one reference.

    ``matrix[i, j]`` counts pixels of reference class ``labels[i]`` predicted as
    ``labels[j]``. Per-class arrays follow the order of ``labels``; NaN marks undefined
    values (e.g. the precision of a class that is never predicted).
    """

    labels: list[int]
    names: list[str]
    matrix: np.ndarray
    overall_accuracy: float
    kappa: float
    miou: float
    fwiou: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    iou: np.ndarray
    support: np.ndarray
    boundary: BoundaryCounts = field(default_factory=BoundaryCounts)
    boundary_tolerance: float = DEFAULT_BOUNDARY_TOLERANCE
    prediction: str = ""
    reference: str = ""

    @property
    def boundary_f1(self) -> float:
        return self.boundary.f1

    @property
    def pixels(self) -> int:
        """Number of pixels assessed (valid in both maps)."""
        return int(self.matrix.sum())

    def to_dict(self) -> dict:
        """The JSON structure printed by ``geopsp evaluate --json`` (NaN -> None)."""
        per_class = [
            {
                "value": int(v),
                "name": n,
                "precision": _nan_to_none(float(self.precision[i])),
                "recall": _nan_to_none(float(self.recall[i])),
                "f1": _nan_to_none(float(self.f1[i])),
                "iou": _nan_to_none(float(self.iou[i])),
                "support": int(self.support[i]),
            }
            for i, (v, n) in enumerate(zip(self.labels, self.names, strict=True))
        ]
        return {
            "overall_accuracy": _nan_to_none(self.overall_accuracy),
            "kappa": _nan_to_none(self.kappa),
            "miou": _nan_to_none(self.miou),
            "fwiou": _nan_to_none(self.fwiou),
            "boundary_f1": _nan_to_none(self.boundary_f1),
            "per_class": per_class,
            "confusion_matrix": self.matrix.astype(int).tolist(),
            "labels": [int(v) for v in self.labels],
        }


def result_from_matrix(
    matrix: np.ndarray,
    classes: list[ClassInfo],
    boundary: BoundaryCounts | None = None,
    boundary_tolerance: float = DEFAULT_BOUNDARY_TOLERANCE,
) -> EvaluationResult:
    """Build an :class:`EvaluationResult` from a ``(K, K)`` matrix in ``classes`` order."""
    s = scores(matrix)
    return EvaluationResult(
        labels=[c.value for c in classes],
        names=[c.name for c in classes],
        matrix=np.asarray(matrix, dtype=np.int64),
        overall_accuracy=s["pixel_accuracy"],
        kappa=s["kappa"],
        miou=s["miou"],
        fwiou=s["fwiou"],
        precision=s["precision"],
        recall=s["recall"],
        f1=s["f1"],
        iou=s["iou"],
        support=s["support"],
        boundary=boundary or BoundaryCounts(),
        boundary_tolerance=boundary_tolerance,
    )
