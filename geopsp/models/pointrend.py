"""PointRend: re-predict the most uncertain pixels from fine features (Kirillov et al., 2020).

Training samples points where the coarse prediction is least sure (plus some uniform ones) and
learns a small MLP on fine features + coarse logits at those points. Inference upsamples the
coarse logits 2x per step and overwrites the ``N`` most uncertain pixels with the MLP's answer,
until the input resolution is reached. Point coordinates are ``(x, y)`` in ``[0, 1]`` with pixel
centres at ``(i + 0.5) / size`` (the ``align_corners=False`` convention used everywhere here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_POINTREND = {
    "points": 8192,  # points re-predicted per subdivision step at inference
    "train_points": 2048,  # points per image in training
    "k": 3,  # oversampling: k * train_points candidates
    "beta": 0.75,  # share of the training points chosen by uncertainty
    "hidden": 256,  # width of the point head MLP
    "layers": 3,  # hidden layers of the point head MLP
}


def point_sample(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``features`` (B, C, H, W) at ``coords`` (B, P, 2) -> (B, C, P).

    Runs in float32 with autocast off: half-precision grid coordinates lose whole pixels on
    large maps, and ``grid_sample`` is not autocast-safe everywhere.
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        grid = (coords.float() * 2.0 - 1.0).unsqueeze(1)  # (B, 1, P, 2) in [-1, 1]
        # "border" clamps as F.interpolate does, so the outer half pixel is not pulled to 0.
        out = F.grid_sample(
            features.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
    return out.squeeze(2)


def point_labels(target: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Labels of ``target`` (B, H, W) at ``coords`` (B, P, 2), nearest pixel -> (B, P) long.

    Label values (including 255 = ignore) are copied, never interpolated.
    """
    b, h, w = target.shape
    ix = (coords[..., 0] * w).floor().long().clamp_(0, w - 1)
    iy = (coords[..., 1] * h).floor().long().clamp_(0, h - 1)
    flat = target.reshape(b, h * w)
    return flat.gather(1, iy * w + ix).long()


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """``-(top1 - top2)`` over the class dimension (dim 1): 0 where the two best tie."""
    if logits.shape[1] == 1:  # one class: certain wherever the logit is far from 0
        return -logits[:, 0].abs()
    if logits.shape[1] == 2:  # the common binary case in one pass instead of a top-k
        return -(logits[:, 0] - logits[:, 1]).abs()
    top2 = logits.topk(2, dim=1).values
    return top2[:, 1] - top2[:, 0]


def sample_training_points(
    coarse: torch.Tensor,
    num_points: int,
    k: float = 3,
    beta: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Points for the training loss: the ``beta*N`` most uncertain of ``k*N`` random candidates
    plus ``(1-beta)*N`` uniform ones.

    Parameters
    ----------
    coarse : torch.Tensor
        Coarse logits (B, K, h, w); no labels are needed.
    num_points : int
        ``N``, points per image.
    k, beta : float
        Oversampling ratio and importance share.
    generator : torch.Generator, optional
        For reproducible sampling (tests).

    Returns
    -------
    torch.Tensor
        (B, N, 2) coordinates ``(x, y)`` in [0, 1]; the first ``int(beta*N)`` are the uncertain ones.
    """
    b = coarse.shape[0]
    dev = coarse.device
    n_cand = max(int(k * num_points), num_points)
    n_imp = int(beta * num_points)
    with torch.no_grad():
        cand = torch.rand(b, n_cand, 2, device=dev, generator=generator)
        unc = uncertainty(point_sample(coarse.detach(), cand))  # (B, n_cand)
        idx = unc.topk(n_imp, dim=1).indices
        important = cand.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
        uniform = torch.rand(b, num_points - n_imp, 2, device=dev, generator=generator)
    return torch.cat([important, uniform], dim=1)


class PointHead(nn.Module):
    """MLP on (fine features, coarse logits) per point; coarse logits re-enter every layer.

    Layer ``i`` computes ``relu(W_i h + S_i coarse + b_i)``, which is ``Linear(cat([h, coarse]))``
    without building the concatenation: ``fcs[i]`` holds ``W_i``, ``skips[i]`` holds ``S_i, b_i``.
    Points are flattened to a ``(B*P, C)`` matrix so each layer is one large matmul (fast on
    CPU, unlike 1-wide 1D convolutions).
    """

    def __init__(self, fine_channels: int, num_classes: int, hidden: int = 256, layers: int = 3):
        super().__init__()
        self.num_classes = num_classes
        widths = [fine_channels] + [hidden] * layers
        self.fcs = nn.ModuleList(nn.Linear(widths[i], hidden, bias=False) for i in range(layers))
        self.skips = nn.ModuleList(nn.Linear(num_classes, hidden) for _ in range(layers))
        self.predictor = nn.Linear(hidden, num_classes, bias=False)
        self.predictor_skip = nn.Linear(num_classes, num_classes)
        for m in (self.predictor, self.predictor_skip):
            nn.init.normal_(m.weight, std=0.001)
        nn.init.zeros_(self.predictor_skip.bias)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """``fine`` (B, Cf, P), ``coarse`` (B, K, P) -> logits (B, K, P)."""
        b, _, p = fine.shape
        k = self.num_classes
        c = coarse.transpose(1, 2).reshape(b * p, k)
        h = fine.transpose(1, 2).reshape(b * p, -1)
        for fc, skip in zip(self.fcs, self.skips, strict=True):
            # addmm fuses the matmul with the coarse term (and follows autocast).
            h = F.relu(torch.addmm(skip(c), h, fc.weight.t()), inplace=True)
        out = torch.addmm(self.predictor_skip(c), h, self.predictor.weight.t())
        return out.reshape(b, p, k).transpose(1, 2)


def refine_step(
    logits: torch.Tensor,
    coarse: torch.Tensor,
    fine: torch.Tensor,
    head: nn.Module,
    num_points: int,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One subdivision step: overwrite the ``num_points`` most uncertain pixels of ``logits``.

    Parameters
    ----------
    logits : torch.Tensor
        Current (already upsampled) logits (B, K, H, W).
    coarse, fine : torch.Tensor
        The original coarse logits and the fine feature map (any resolution).
    head : nn.Module
        The point head.
    num_points : int
        ``N``. When ``N >= H*W`` every pixel is re-predicted densely (no top-k, no scatter).
    inplace : bool
        Write into ``logits`` instead of a copy (saves a full-size copy per step).

    Returns
    -------
    (torch.Tensor, torch.Tensor or None)
        Refined logits and the flat indices (B, N) of the re-predicted pixels (None if all).
    """
    b, k, h, w = logits.shape
    if num_points >= h * w:
        # Dense path: bilinear resize == grid_sample at every pixel centre, but far cheaper.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            f = F.interpolate(fine.float(), size=(h, w), mode="bilinear", align_corners=False)
            c = F.interpolate(coarse.float(), size=(h, w), mode="bilinear", align_corners=False)
        out = head(f.reshape(b, -1, h * w), c.reshape(b, k, h * w))
        return out.reshape(b, k, h, w).to(logits.dtype), None
    flat = logits.reshape(b, k, h * w)
    unc = uncertainty(flat.unsqueeze(-1)).squeeze(-1)  # (B, H*W)
    idx = unc.topk(num_points, dim=1).indices  # (B, N)
    xs = ((idx % w).float() + 0.5) / w
    ys = (torch.div(idx, w, rounding_mode="floor").float() + 0.5) / h
    coords = torch.stack([xs, ys], dim=-1)
    pts = head(point_sample(fine, coords), point_sample(coarse, coords))
    if not inplace and flat.data_ptr() == logits.data_ptr():
        flat = flat.clone()
    flat.scatter_(2, idx.unsqueeze(1).expand(-1, k, -1), pts.to(flat.dtype))
    return flat.reshape(b, k, h, w), idx


class PointRend(nn.Module):
    """Point head plus the training sampler and the inference subdivision."""

    def __init__(self, fine_channels: int, num_classes: int, params: dict):
        super().__init__()
        self.params = dict(params)
        self.head = PointHead(fine_channels, num_classes, params["hidden"], params["layers"])

    def forward_train(
        self, coarse: torch.Tensor, fine: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Point logits (B, K, P) and their coordinates (B, P, 2) for the point loss."""
        p = self.params
        coords = sample_training_points(coarse, int(p["train_points"]), p["k"], p["beta"])
        logits = self.head(point_sample(fine, coords), point_sample(coarse, coords))
        return logits, coords

    def forward_infer(
        self, coarse: torch.Tensor, fine: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """Full-resolution logits by adaptive subdivision of ``coarse`` up to ``size``."""
        logits = coarse
        h, w = coarse.shape[-2:]
        while (h, w) != tuple(size):
            # 2x per step; the last step lands exactly on the input size.
            h, w = min(h * 2, size[0]), min(w * 2, size[1])
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            logits, _ = refine_step(
                logits, coarse, fine, self.head, int(self.params["points"]), inplace=True
            )
        return logits
