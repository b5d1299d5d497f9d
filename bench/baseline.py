"""The plain baseline of bench/quality.py: a stock segmentation-models-pytorch PSPNet.

What a user of other tools gets on the same chips: ``smp.PSPNet("resnet34")`` without
pretrained weights, Adam at lr 1e-3, random horizontal and vertical flips, cross-entropy
(255 ignored), batch 8, whole epochs until the time budget is spent, the last epoch kept.
Inputs are normalized with the chip folder's own band statistics, so the baseline and geopsp
see the same numbers. Mapping uses a half-overlapping sliding window with averaged softmax.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import torch
import torch.nn.functional as F

from geopsp.core.class_raster import describe_class_band
from geopsp.core.classes import index_to_value, load_classes, value_lut
from geopsp.core.normalize import normalize

BATCH = 8


def _stats(chips: Path) -> tuple[np.ndarray, np.ndarray]:
    stats = json.loads((chips / "stats.json").read_text())
    return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)


def _load_chips(chips: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All training chips in memory: normalized images (N, C, H, W), channel labels (N, H, W)."""
    table = pyogrio.read_dataframe(chips / "chips.gpkg", read_geometry=False)
    table = table[table["split"] == "train"]
    mean, std = _stats(chips)
    lut = value_lut(load_classes(chips / "classes.json"))
    images, labels = [], []
    for image, label in zip(table["image"], table["label"], strict=True):
        with rasterio.open(chips / image) as src:
            x = src.read().astype(np.float32)
            valid = src.dataset_mask() > 0
        with rasterio.open(chips / label) as src:
            y = lut[src.read(1)]
        images.append(normalize(x, mean, std, valid))
        labels.append(np.where(valid, y, 255))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels)).long()


def train_baseline(chips: Path, seconds: float, seed: int = 0) -> tuple[torch.nn.Module, int]:
    """Train the stock PSPNet for ``seconds`` of whole epochs; return it and the epoch count."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    x, y = _load_chips(chips)
    classes = len(load_classes(chips / "classes.json"))
    model = smp.PSPNet("resnet34", encoder_weights=None, in_channels=x.shape[1], classes=classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, epochs, epoch_seconds = time.perf_counter(), 0, 0.0
    model.train()
    while time.perf_counter() - start + epoch_seconds <= seconds:
        t0 = time.perf_counter()
        for idx in torch.randperm(len(x)).split(BATCH):
            if len(idx) < 2:  # batch norm needs two samples
                continue
            xb, yb = x[idx], y[idx]
            if torch.rand(()) < 0.5:
                xb, yb = xb.flip(-1), yb.flip(-1)
            if torch.rand(()) < 0.5:
                xb, yb = xb.flip(-2), yb.flip(-2)
            loss = F.cross_entropy(model(xb), yb, ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epochs += 1
        epoch_seconds = time.perf_counter() - t0
    return model.eval(), epochs


@torch.inference_mode()
def predict_raster(model: torch.nn.Module, chips: Path, image: Path, out: Path) -> None:
    """Map ``image`` with a half-overlapping sliding window of the chip size; write a
    geopsp-style class raster."""
    mean, std = _stats(chips)
    tile = int(json.loads((chips / "stats.json").read_text())["chip_size"])
    classes = load_classes(chips / "classes.json")
    with rasterio.open(image) as src:
        x = src.read().astype(np.float32)
        valid = src.dataset_mask() > 0
        profile = src.profile
    h, w = valid.shape
    ph, pw = (
        max(0, tile - h) + (-max(h, tile)) % (tile // 2),
        max(0, tile - w) + (-max(w, tile)) % (tile // 2),
    )
    xn = np.pad(normalize(x, mean, std, valid), ((0, 0), (0, ph), (0, pw)), mode="reflect")
    probs = np.zeros((len(classes), h + ph, w + pw), np.float32)
    for r in range(0, h + ph - tile + 1, tile // 2):
        for c in range(0, w + pw - tile + 1, tile // 2):
            t = torch.from_numpy(xn[None, :, r : r + tile, c : c + tile].copy())
            probs[:, r : r + tile, c : c + tile] += model(t).softmax(1)[0].numpy()
    values = index_to_value(classes)[probs[:, :h, :w].argmax(0)].astype(np.uint8)
    values[~valid] = 255
    profile.update(driver="GTiff", count=1, dtype="uint8", nodata=255, tiled=False)
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(values, 1)
        describe_class_band(dst, classes)
