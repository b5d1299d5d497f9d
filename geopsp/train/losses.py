"""Segmentation losses that never learn from ignored pixels (label 255), and class weights.

``--loss``: ``ce`` (cross-entropy), ``focal`` (cross-entropy scaled by ``(1 - p_true)^2``,
which focuses on hard pixels), ``dice`` (1 - soft Dice averaged over the classes present in
the batch, which does not care how many pixels a class has), ``ce+dice`` (their sum),
``lovasz`` (the Lovasz-softmax surrogate of 1 - IoU, Berman et al. 2018, averaged over the
classes present in the batch: the metric maps are scored with) and ``ce+lovasz``.
The PSPNet total is ``loss(logits) + 0.4 * loss(aux) + ce(point_logits)`` when the auxiliary
and PointRend heads exist.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from geopsp.core.classes import IGNORE
from geopsp.core.errors import UsageError

LOSSES = ("ce", "focal", "dice", "ce+dice", "lovasz", "ce+lovasz")
CLASS_WEIGHTS = ("none", "auto", "sqrt")
FOCAL_GAMMA = 2.0
WEIGHT_CLIP = (0.1, 10.0)  # keeps a very rare class from dominating the loss
POINT_WEIGHT = 1.0


def auto_class_weights(pixels: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Median-frequency balancing: ``w_c = (median(f) / f_c) ** power`` clipped to [0.1, 10].

    ``power`` 1 is ``--class-weights auto``, 0.5 the softer ``sqrt``.

    ``f_c`` is the share of labelled training pixels in class ``c`` and the median is taken
    over classes that occur. A class with no training pixels gets weight 0 (it cannot be
    learned anyway, and 0 keeps it from affecting the loss). Balanced classes all get 1.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    total = pixels.sum()
    if total <= 0:
        return np.ones(len(pixels), dtype=np.float32)
    freq = pixels / total
    present = freq > 0
    med = float(np.median(freq[present]))
    w = np.zeros_like(freq)
    w[present] = np.clip((med / freq[present]) ** power, *WEIGHT_CLIP)
    return w.astype(np.float32)


def _pixel_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None):
    return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE, reduction="none")


def _weighted_mean(per_pixel: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None):
    # Same normalisation as F.cross_entropy(reduction="mean"): divide by the summed weights of
    # the labelled pixels; a batch without labelled pixels contributes 0 (not NaN).
    valid = target != IGNORE
    if weight is None:
        denom = valid.sum()
    else:
        denom = weight[target.clamp(max=len(weight) - 1)][valid].sum()
    return per_pixel.sum() / denom.clamp(min=1e-12) if valid.any() else per_pixel.sum() * 0.0


def cross_entropy(logits, target, weight=None) -> torch.Tensor:
    """Cross-entropy over labelled pixels; ``logits`` (B, K, ...), ``target`` (B, ...) int64."""
    return _weighted_mean(_pixel_ce(logits, target, weight), target, weight)


def focal(logits, target, weight=None, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Focal loss: per-pixel (weighted) cross-entropy times ``(1 - p_true) ** gamma``."""
    ce = _pixel_ce(logits, target, None)
    pt = torch.exp(-ce)
    per = (1 - pt) ** gamma * ce
    if weight is not None:
        per = per * torch.where(target != IGNORE, weight[target.clamp(max=len(weight) - 1)], 0)
    return _weighted_mean(per, target, weight)


def _labelled_probs(logits: torch.Tensor, target: torch.Tensor):
    """Softmax probabilities (N, K) and int64 labels (N,) of the labelled pixels."""
    k = logits.shape[1]
    prob = logits.float().softmax(1).movedim(1, -1).reshape(-1, k)
    t = target.reshape(-1)
    valid = t != IGNORE
    return prob[valid], t[valid].long()


def dice(logits, target, weight=None, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, averaged (with class weights) over classes present in the batch."""
    k = logits.shape[1]
    prob, t = _labelled_probs(logits, target)
    onehot = F.one_hot(t, k).to(prob.dtype)
    inter = (prob * onehot).sum(0)
    card = prob.sum(0) + onehot.sum(0)
    score = (2 * inter + eps) / (card + eps)
    present = onehot.sum(0) > 0
    w = present.to(prob.dtype) if weight is None else weight.to(prob.dtype) * present
    if w.sum() <= 0:
        return logits.sum() * 0.0
    return ((1 - score) * w).sum() / w.sum()


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    # The Jaccard loss of the first i pixels of the sorted order, for every i, differenced:
    # the gradient of the Lovasz extension (Berman et al. 2018, equation 9).
    gts = fg_sorted.sum()
    inter = gts - fg_sorted.cumsum(0)
    union = gts + (1 - fg_sorted).cumsum(0)
    jac = 1.0 - inter / union
    jac[1:] = jac[1:] - jac[:-1]
    return jac


def lovasz(logits, target, weight=None) -> torch.Tensor:
    """Lovasz-softmax: the tight convex surrogate of 1 - IoU, over the whole batch.

    Averaged (with class weights) over the classes present in the batch. With one-hot
    probabilities it equals 1 - the mean IoU of those classes.
    """
    k = logits.shape[1]
    prob, t = _labelled_probs(logits, target)
    # One host transfer for all classes, not a GPU sync per class.
    present = (torch.bincount(t, minlength=k) > 0).tolist()
    weights = [1.0] * k if weight is None else weight.float().tolist()
    per_class, ws = [], []
    for c in range(k):
        w = weights[c]
        if w <= 0 or not present[c]:
            continue
        fg = (t == c).to(prob.dtype)
        err, order = torch.sort((fg - prob[:, c]).abs(), descending=True)
        per_class.append(torch.dot(err, _lovasz_grad(fg[order])))
        ws.append(w)
    if not per_class:
        return logits.sum() * 0.0
    w = torch.tensor(ws, dtype=prob.dtype, device=prob.device)
    return (torch.stack(per_class) * w).sum() / w.sum()


def make_criterion(name: str, weight: torch.Tensor | None = None):
    """Return ``criterion(logits, target) -> scalar`` for ``--loss name``."""
    if name not in LOSSES:
        raise UsageError(f"--loss must be one of {', '.join(LOSSES)}, got {name!r}")

    def criterion(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # losses in float32 even under AMP
        if name == "ce":
            return cross_entropy(logits, target, weight)
        if name == "focal":
            return focal(logits, target, weight)
        if name == "dice":
            return dice(logits, target, weight)
        if name == "lovasz":
            return lovasz(logits, target, weight)
        region = dice if name == "ce+dice" else lovasz
        return cross_entropy(logits, target, weight) + region(logits, target, weight)

    return criterion


def total_loss(out, target: torch.Tensor, criterion, weight=None, aux_weight: float = 0.4):
    """Main + auxiliary + PointRend loss of one train-mode forward pass.

    ``out`` is the model's train-mode dict (``logits``, ``aux``, ``point_logits``,
    ``point_coords``) or a plain logits tensor.
    """
    if isinstance(out, torch.Tensor):
        return criterion(out, target)
    loss = criterion(out["logits"], target)
    aux = out.get("aux")
    if aux is not None:
        if aux.shape[-2:] != target.shape[-2:]:
            aux = F.interpolate(
                aux.float(), size=target.shape[-2:], mode="bilinear", align_corners=False
            )
        loss = loss + aux_weight * criterion(aux, target)
    pl = out.get("point_logits")
    if pl is not None and out.get("point_coords") is not None:
        from geopsp.models import point_labels

        labels = point_labels(target, out["point_coords"]).long()
        loss = loss + POINT_WEIGHT * cross_entropy(pl.float(), labels, weight)
    return loss
