"""The model can learn: a tiny PSPNet overfits one small batch of real imagery on CPU."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.features import rasterize

from geopsp.models import AUX_WEIGHT, build_model, point_labels

CROP = 64


def glacier_batch(everest: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64x64 Landsat crops with glacier (1) / other (0) labels rasterized from RGI."""
    with rasterio.open(everest["image"]) as src:
        image = src.read().astype(np.float32)
        outlines = gpd.read_file(everest["labels"]).to_crs(src.crs)
        mask = rasterize(
            ((g, 1) for g in outlines.geometry),
            out_shape=(src.height, src.width),
            transform=src.transform,
            fill=0,
            dtype="uint8",
        )
    # Crops where both classes are well represented, in a fixed scan order (deterministic).
    crops = []
    for r in range(0, image.shape[1] - CROP + 1, CROP):
        for c in range(0, image.shape[2] - CROP + 1, CROP):
            frac = mask[r : r + CROP, c : c + CROP].mean()
            if 0.25 <= frac <= 0.75:
                crops.append((r, c))
    assert len(crops) >= 2, "sample data should hold mixed glacier crops"
    x = np.stack([image[:, r : r + CROP, c : c + CROP] for r, c in crops[:2]])
    y = np.stack([mask[r : r + CROP, c : c + CROP] for r, c in crops[:2]])
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), keepdims=True)
    return torch.from_numpy((x - mean) / std), torch.from_numpy(y).long()


@pytest.mark.slow
def test_tiny_model_overfits_real_batch(everest, one_torch_thread):
    torch.manual_seed(0)
    x, y = glacier_batch(everest)
    assert 0.25 < y.float().mean() < 0.75
    arch = {
        "backbone": "resnet18",
        "in_channels": 3,
        "num_classes": 2,
        "output_stride": 16,  # 2.6x fewer FLOPs than 8; the FPN decoder keeps stride-2 detail
        "pointrend_params": {"train_points": 256, "points": 1024},
    }
    model = build_model(arch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    accuracy = 0.0
    for step in range(1, 101):
        model.train()
        out = model(x)
        loss = F.cross_entropy(out["logits"], y, ignore_index=255)
        loss = loss + AUX_WEIGHT * F.cross_entropy(out["aux"], y, ignore_index=255)
        labels = point_labels(y, out["point_coords"])
        loss = loss + F.cross_entropy(out["point_logits"], labels, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            model.eval()
            with torch.no_grad():
                accuracy = (model(x).argmax(1) == y).float().mean().item()
            if accuracy >= 0.95:
                break
    print(f"pixel accuracy {accuracy:.3f} after {step} steps")
    assert accuracy >= 0.95, f"pixel accuracy {accuracy:.3f} after {step} steps"
