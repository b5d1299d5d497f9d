"""PSPNet on a dilated encoder: pyramid pooling, FPN or upsample decoder, aux head, PointRend."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geopsp.models.pointrend import PointRend

DECODER_CHANNELS = 256  # width of the pyramid bottleneck (the paper's 512 costs 4x the FLOPs)
FPN_CHANNELS = (128, 64)  # fusion widths at stride 4 and stride 2: full-resolution convs are costly


def conv_bn_relu(c_in: int, c_out: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """Pyramid pooling module + 3x3 bottleneck.

    Each branch: adaptive average pool to ``s x s``, 1x1 conv to ``C / len(sizes)``, GroupNorm,
    ReLU, bilinear upsampling. BatchNorm cannot normalise the ``1 x 1`` branch in training with
    batch size 1 (one value per channel); GroupNorm normalises over channel groups within each
    sample, so it works for any batch and map size and behaves identically in train and eval.
    """

    def __init__(self, in_channels: int, sizes: list[int], out_channels: int = DECODER_CHANNELS):
        super().__init__()
        branch = max(in_channels // len(sizes), 1)
        groups = _gn_groups(branch)
        self.sizes = list(sizes)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(s),
                nn.Conv2d(in_channels, branch, 1, bias=False),
                nn.GroupNorm(groups, branch),
                nn.ReLU(inplace=True),
            )
            for s in sizes
        )
        self.bottleneck = conv_bn_relu(in_channels + branch * len(sizes), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        feats = [x] + [_up(b(x), size) for b in self.branches]
        return self.bottleneck(torch.cat(feats, dim=1))


def _gn_groups(channels: int) -> int:
    # At least 8 channels per group: few-channel groups whiten a 1x1 map into noise.
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 8:
            return g
    return 1


class UpsampleDecoder(nn.Module):
    """The paper's head after the bottleneck: dropout 0.1, 1x1 classifier (upsampled later)."""

    def __init__(self, encoder_channels: list[int], num_classes: int):
        super().__init__()
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(DECODER_CHANNELS, num_classes, 1)

    def forward(self, p: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(p))


class FPNDecoder(nn.Module):
    """Top-down path: pyramid output -> stride 4 -> stride 2 through lateral 1x1 convs and 3x3
    fusions, then a 1x1 classifier; gives boundaries at stride 2 instead of the output stride."""

    def __init__(self, encoder_channels: list[int], num_classes: int):
        super().__init__()
        c4, c2 = FPN_CHANNELS
        self.reduce4 = nn.Conv2d(DECODER_CHANNELS, c4, 1, bias=False)
        self.lateral4 = nn.Conv2d(encoder_channels[2], c4, 1, bias=False)
        self.fuse4 = conv_bn_relu(c4, c4)
        self.reduce2 = nn.Conv2d(c4, c2, 1, bias=False)
        self.lateral2 = nn.Conv2d(encoder_channels[1], c2, 1, bias=False)
        self.fuse2 = conv_bn_relu(c2, c2)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(c2, num_classes, 1)

    def forward(self, p: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        f2, f4 = feats[1], feats[2]
        # 1x1 reduction before upsampling: same result as after, on 4x-64x fewer pixels.
        x = _up(self.reduce4(p), tuple(f4.shape[-2:])) + self.lateral4(f4)
        x = self.fuse4(x)
        x = _up(self.reduce2(x), tuple(f2.shape[-2:])) + self.lateral2(f2)
        x = self.fuse2(x)
        return self.classifier(self.dropout(x))


DECODERS = {"fpn": FPNDecoder, "upsample": UpsampleDecoder}


class AuxHead(nn.Module):
    """Auxiliary classifier on the stage-3 features (training only; loss weight 0.4)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.block = conv_bn_relu(in_channels, DECODER_CHANNELS)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(DECODER_CHANNELS, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.block(x)))


class PSPNet(nn.Module):
    """PSPNet with a dilated encoder; see :func:`geopsp.models.build_model`.

    Eval mode returns full-resolution logits (B, K, H, W). Train mode returns a dict with
    ``logits`` (B, K, H, W), ``aux`` (B, K, H, W), ``point_logits`` (B, K, P) or None and
    ``point_coords`` (B, P, 2) or None. H and W must be multiples of ``size_multiple``.
    """

    def __init__(self, encoder: nn.Module, arch: dict):
        super().__init__()
        self.arch = arch
        k = int(arch["num_classes"])
        ch = list(encoder.out_channels)
        self.encoder = encoder
        self.ppm = PyramidPooling(ch[5], list(arch["pyramid_sizes"]))
        self.decoder = DECODERS[arch["decoder"]](ch, k)
        self.aux_head = AuxHead(ch[4], k)
        self.pointrend = (
            PointRend(ch[2], k, arch["pointrend_params"]) if arch["pointrend"] else None
        )
        self.size_multiple = int(arch["output_stride"])

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor | None]:
        size = tuple(x.shape[-2:])
        if size[0] % self.size_multiple or size[1] % self.size_multiple:
            raise ValueError(
                f"input size {size[0]}x{size[1]} is not a multiple of {self.size_multiple}"
            )
        feats = self.encoder(x)
        coarse = self.decoder(self.ppm(feats[5]), feats)
        if not self.training:
            if self.pointrend is not None:
                return self.pointrend.forward_infer(coarse, feats[2], size)
            return _up(coarse, size)
        out: dict[str, torch.Tensor | None] = {
            "logits": _up(coarse, size),
            "aux": None if self.aux_head is None else _up(self.aux_head(feats[4]), size),
            "point_logits": None,
            "point_coords": None,
        }
        if self.pointrend is not None:
            out["point_logits"], out["point_coords"] = self.pointrend.forward_train(
                coarse, feats[2]
            )
        return out
