"""Untrained but real geopsp model files for tests (resnet18 PSPNet at output stride 16,
upsample decoder, no PointRend: small and fast on a CPU)."""

from __future__ import annotations

from pathlib import Path


def write_model_file(
    path, classes: list[dict], *, bands: int = 3, chip_size: int = 64,
    resolution=(30.0, 30.0), crs: str = "EPSG:32645", source_bands: list[int] | None = None,
) -> Path:  # fmt: skip
    """Write a model file with seeded random weights and the given metadata (``source_bands``:
    the 1-based bands classify reads, default ``1..bands``)."""
    import torch

    from geopsp.models import build_model
    from geopsp.models.modelfile import save_model

    torch.manual_seed(0)
    arch = {"backbone": "resnet18", "in_channels": bands, "num_classes": len(classes),
            "output_stride": 16, "decoder": "upsample", "pointrend": False}  # fmt: skip
    model = build_model(arch)
    md = {
        "architecture": model.arch,
        "bands": list(source_bands or range(1, bands + 1)),
        "normalization": {"mean": [80.0] * bands, "std": [40.0] * bands},
        "classes": classes,
        "chip_size": chip_size,
        "resolution": list(resolution),
        "crs": crs,
    }
    save_model(path, model, md)
    return Path(path)
