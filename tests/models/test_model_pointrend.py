"""PointRend pieces: point sampling, labels, the training sampler and the subdivision step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geopsp.models import point_labels
from geopsp.models.pointrend import (
    PointHead,
    PointRend,
    point_sample,
    refine_step,
    sample_training_points,
    uncertainty,
)


def test_point_sample_at_pixel_centres_is_exact():
    feats = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    ys, xs = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
    coords = torch.stack([(xs + 0.5) / 5, (ys + 0.5) / 4], dim=-1).reshape(1, 20, 2)
    out = point_sample(feats, coords.expand(2, -1, -1))
    assert out.shape == (2, 3, 20)
    assert torch.allclose(out, feats.reshape(2, 3, 20))
    # Beyond the outer pixel centres values are clamped, not pulled towards zero.
    edge = point_sample(feats, torch.tensor([[[0.0, 0.0], [1.0, 1.0]]]).expand(2, -1, -1))
    assert torch.allclose(edge[:, :, 0], feats[:, :, 0, 0])
    assert torch.allclose(edge[:, :, 1], feats[:, :, -1, -1])


def test_point_sample_float32_under_autocast():
    feats = torch.randn(1, 2, 8, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = point_sample(feats, torch.rand(1, 10, 2))
    assert out.dtype == torch.float32


def test_point_labels_nearest_keeps_ignore():
    target = torch.tensor([[[0, 1, 2], [3, 255, 5]]])  # (1, 2, 3)
    coords = torch.tensor([[[0.1, 0.2], [0.5, 0.75], [0.99, 0.99], [0.0, 0.0], [1.0, 1.0]]])
    assert point_labels(target, coords).tolist() == [[0, 255, 5, 0, 5]]
    assert point_labels(target, coords).dtype == torch.long


def test_uncertainty_is_minus_top1_minus_top2():
    logits = torch.tensor([[[[3.0]], [[1.0]], [[2.5]]]])  # (1, 3, 1, 1)
    assert torch.allclose(uncertainty(logits), torch.tensor([[[-0.5]]]))


def ramp(width: int = 16) -> torch.Tensor:
    """Two-class logits whose margin shrinks from left (certain) to right (a tie)."""
    x = torch.linspace(0, 1, width)
    margin = (1 - x).expand(width, width)
    return torch.stack([margin, torch.zeros_like(margin)]).unsqueeze(0)  # (1, 2, W, W)


def test_training_sampler_picks_most_uncertain_with_beta_split():
    coarse = ramp().repeat(2, 1, 1, 1)
    n, k, beta = 200, 3, 0.75
    coords = sample_training_points(coarse, n, k, beta, generator=torch.Generator().manual_seed(5))
    assert coords.shape == (2, n, 2)
    assert coords.min() >= 0 and coords.max() <= 1
    # Replay the candidates: the first beta*N points are exactly the most uncertain of k*N.
    g = torch.Generator().manual_seed(5)
    cand = torch.rand(2, k * n, 2, generator=g)
    unc = uncertainty(point_sample(coarse, cand))
    n_imp = int(beta * n)
    for b in range(2):
        best = cand[b, unc[b].argsort(descending=True)[:n_imp]]
        chosen = coords[b, :n_imp]
        assert sorted(map(tuple, chosen.tolist())) == sorted(map(tuple, best.tolist()))
        assert unc[b].sort(descending=True).values[n_imp - 1] > unc[b].median()
    # The remaining (1 - beta)*N are uniform: they also cover the certain left half.
    uniform = coords[:, n_imp:]
    assert uniform.shape[1] == n - n_imp
    assert (uniform[..., 0] < 0.5).float().mean() > 0.3
    assert (coords[:, :n_imp, 0] > 0.6).all()


class ConstantHead(nn.Module):
    """Stands in for the MLP: predicts class 1 with a huge margin everywhere."""

    def forward(self, fine, coarse):
        out = torch.zeros_like(coarse)
        out[:, 1] = 100.0
        return out


def test_subdivision_changes_only_the_selected_points():
    # A confident map (class 0) with a short uncertain boundary.
    coarse = torch.zeros(1, 2, 8, 8)
    coarse[:, 0] = 5.0
    coarse[:, 0, 3:5, 2:6] = 0.2
    up = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    fine = torch.randn(1, 4, 16, 16)
    n = 20
    out, idx = refine_step(up, coarse, fine, ConstantHead(), n)
    assert idx.shape == (1, n)
    changed = (out != up).any(dim=1).reshape(-1)
    assert changed.sum() == n
    assert set(torch.nonzero(changed).flatten().tolist()) == set(idx[0].tolist())
    unc = uncertainty(up).reshape(-1)
    assert unc[changed].min() >= unc[~changed].max()
    # Selected pixels got the head's prediction; the rest are the plain bilinear upsampling.
    assert (out.reshape(1, 2, -1)[0, 1, changed] == 100).all()
    assert torch.equal(out.reshape(1, 2, -1)[:, :, ~changed], up.reshape(1, 2, -1)[:, :, ~changed])
    assert torch.equal(up, F.interpolate(coarse, size=(16, 16), mode="bilinear"))  # not in place


def test_dense_path_equals_point_path():
    torch.manual_seed(0)
    head = PointHead(4, 3, hidden=8, layers=2).eval()
    coarse, fine = torch.randn(2, 3, 4, 6), torch.randn(2, 4, 8, 12)
    up = F.interpolate(coarse, size=(8, 12), mode="bilinear", align_corners=False)
    with torch.no_grad():
        dense, idx_dense = refine_step(up, coarse, fine, head, 8 * 12)
        sparse, idx = refine_step(up, coarse, fine, head, 8 * 12 - 1)
    assert idx_dense is None and idx.shape == (2, 95)
    mask = torch.zeros(2, 96, dtype=torch.bool).scatter_(1, idx, True).reshape(2, 1, 8, 12)
    assert torch.allclose(dense.masked_select(mask), sparse.masked_select(mask), atol=1e-5)


def test_inference_reaches_full_resolution_in_2x_steps():
    params = {"points": 50, "train_points": 16, "k": 3, "beta": 0.75, "hidden": 8, "layers": 1}
    rend = PointRend(4, 3, params).eval()
    calls = []
    orig = rend.head.forward
    rend.head.forward = lambda f, c: calls.append(f.shape[-1]) or orig(f, c)
    with torch.no_grad():
        out = rend.forward_infer(torch.randn(1, 3, 2, 3), torch.randn(1, 4, 16, 24), (32, 48))
    assert out.shape == (1, 3, 32, 48)
    # 4x6 (24 pixels <= N: all, densely), then 8x12, 16x24, 32x48 (N most uncertain each).
    assert calls == [24, 50, 50, 50]
