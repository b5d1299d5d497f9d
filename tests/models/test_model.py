"""PSPNet: shapes for every option, dilation, gradients, encoder weights, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import geopsp.models.encoder as encoder_mod
from geopsp.core.errors import InputError, ResourceError, UsageError
from geopsp.models import AUX_WEIGHT, DEFAULT_ARCH, build_model, point_labels, resolve_arch

DECODERS = ("fpn", "upsample")
POINTREND = (True, False)
STRIDES = (8, 16)
PYRAMIDS = ([1, 3, 5, 6], [1, 2, 3, 6], [2])
BANDS = (1, 3, 6, 13)
# Few points so that inference takes the sparse top-k path (N < H*W) on these small inputs.
SMALL_POINTS = {"points": 100, "train_points": 64}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def arch(**kw) -> dict:
    base = {"backbone": "resnet18", "in_channels": 3, "num_classes": 4}
    base["pointrend_params"] = dict(SMALL_POINTS)
    base.update(kw)
    return base


# The full cross-product (2*2*2*3*4 = 96 builds) is dominated by building resnet18s; the
# product of every factor except the band count is covered, with band counts cycled through
# it so each count meets both decoders, both strides, PointRend on/off and all pyramids.
SHAPE_CASES = [
    (dec, pr, os_, sizes, BANDS[i % len(BANDS)])
    for i, (dec, pr, os_, sizes) in enumerate(
        itertools.product(DECODERS, POINTREND, STRIDES, PYRAMIDS)
    )
]


@pytest.mark.parametrize("decoder,pointrend,os_,sizes,bands", SHAPE_CASES)
def test_output_shapes(decoder, pointrend, os_, sizes, bands):
    torch.manual_seed(0)
    model = build_model(
        arch(
            decoder=decoder,
            pointrend=pointrend,
            output_stride=os_,
            pyramid_sizes=sizes,
            in_channels=bands,
            num_classes=5,
        )
    )
    assert model.size_multiple == os_
    x = torch.randn(2, bands, 32, 48)  # non-square, a multiple of 16
    model.train()
    out = model(x)
    assert out["logits"].shape == (2, 5, 32, 48)
    assert out["aux"].shape == (2, 5, 32, 48)
    if pointrend:
        assert out["point_logits"].shape == (2, 5, 64)
        assert out["point_coords"].shape == (2, 64, 2)
        assert out["point_coords"].min() >= 0 and out["point_coords"].max() <= 1
    else:
        assert out["point_logits"] is None and out["point_coords"] is None
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (2, 5, 48 - 16, 48)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("bands", BANDS)
def test_any_band_count_tall_input(bands):
    model = build_model(arch(in_channels=bands, pointrend=True)).eval()
    with torch.no_grad():
        y = model(torch.randn(1, bands, 64, 24))
    assert y.shape == (1, 4, 64, 24)


def test_batch_of_one_trains_and_channels_last():
    # BatchNorm on the 1x1 pooled branch would fail here; GroupNorm does not.
    model = build_model(arch(pyramid_sizes=[1, 2, 3, 6])).train()
    out = model(torch.randn(1, 3, 32, 32))
    assert out["logits"].shape == (1, 4, 32, 32)
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert model(x).shape == (2, 4, 32, 32)


def test_eval_under_bfloat16_autocast():
    model = build_model(arch(decoder="upsample")).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(torch.randn(1, 3, 32, 32))
    assert y.shape == (1, 4, 32, 32) and torch.isfinite(y.float()).all()


def test_input_size_rule():
    model = build_model(arch(output_stride=8)).eval()
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.randn(1, 3, 36, 32))


def _convs(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_dilation_output_stride_8(backbone):
    model = build_model(arch(backbone=backbone, output_stride=8))
    enc = model.encoder
    for layer, rate in ((enc.layer3, 2), (enc.layer4, 4)):
        for conv in _convs(layer):
            assert conv.stride == (1, 1)
            if conv.kernel_size == (3, 3):
                assert conv.dilation == (rate, rate)
                assert conv.padding == (rate, rate)
    assert any(c.stride == (2, 2) for c in _convs(enc.layer2))
    assert all(c.dilation == (1, 1) for c in _convs(enc.layer2))
    feats = enc(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 8, 8]


def test_dilation_output_stride_16():
    enc = build_model(arch(output_stride=16)).encoder
    assert any(c.stride == (2, 2) for c in _convs(enc.layer3))
    assert all(c.dilation == (1, 1) for c in _convs(enc.layer3))
    for conv in _convs(enc.layer4):
        assert conv.stride == (1, 1)
        if conv.kernel_size == (3, 3):
            assert conv.dilation == (2, 2)
    assert [f.shape[-1] for f in enc(torch.randn(1, 3, 64, 64))] == [64, 32, 16, 8, 4, 4]


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_parameter_gets_a_gradient(decoder):
    torch.manual_seed(0)
    model = build_model(arch(decoder=decoder, num_classes=3)).train()
    x = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 3, (2, 32, 32))
    target[:, :4] = 255
    out = model(x)
    loss = F.cross_entropy(out["logits"], target, ignore_index=255)
    loss = loss + AUX_WEIGHT * F.cross_entropy(out["aux"], target, ignore_index=255)
    labels = point_labels(target, out["point_coords"])
    loss = loss + F.cross_entropy(out["point_logits"], labels, ignore_index=255)
    loss.backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad
        and (p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any())
    ]
    assert missing == []


def test_resolve_arch_defaults_and_validation():
    full = resolve_arch({"in_channels": 4, "num_classes": 2, "pointrend_params": {"points": 7}})
    assert full["backbone"] == DEFAULT_ARCH["backbone"]
    assert full["output_stride"] == 8 and full["pyramid_sizes"] == [1, 3, 5, 6]
    assert full["decoder"] == "fpn" and full["pointrend"] is True
    assert full["pointrend_params"]["points"] == 7 and full["pointrend_params"]["k"] == 3
    bad = [
        {"output_stride": 32},
        {"pyramid_sizes": []},
        {"pyramid_sizes": list(range(1, 10))},
        {"pyramid_sizes": [0, 2]},
        {"decoder": "unet"},
        {"num_classes": 0},
        {"pointrend_params": {"beta": 1.5}},
    ]
    for extra in bad:
        with pytest.raises(UsageError):
            resolve_arch({"in_channels": 3, "num_classes": 2, **extra})
    with pytest.raises(UsageError, match="in_channels"):
        resolve_arch({"num_classes": 2})


def test_unknown_and_undilatable_backbones():
    with pytest.raises(UsageError, match="resnet34") as err:
        build_model(arch(backbone="resnet17"))
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="cannot be dilated"):
        build_model(arch(backbone="vgg11"))


def test_imagenet_offline_names_the_way_out(monkeypatch):
    import segmentation_models_pytorch.encoders as smp_encoders

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore lines")

    monkeypatch.setattr(smp_encoders, "hf_hub_download", offline)
    with pytest.raises(ResourceError, match="--encoder-weights none") as err:
        build_model(arch(), encoder_weights="imagenet")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_encoder_weights_from_path_adapt_bands(tmp_path, suffix):
    torch.manual_seed(1)
    src = build_model(arch()).encoder  # a 3-band encoder stands in for downloaded weights
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    path = tmp_path / f"enc{suffix}"
    if suffix == ".pth":
        torch.save({f"encoder.{k}": v for k, v in sd.items()}, path)  # whole-model prefix
    else:
        save_file(sd, str(path))
    model = build_model(arch(in_channels=6), encoder_weights=str(path))
    w = model.encoder.conv1.weight.detach()
    ref = sd["conv1.weight"]
    assert w.shape[1] == 6
    # Bands repeat the RGB filters, scaled so a constant image gives the same response.
    assert torch.allclose(w[:, :3], ref * 0.5) and torch.allclose(w[:, 3:], ref * 0.5)
    assert torch.equal(model.encoder.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])
    one = build_model(arch(in_channels=1), encoder_weights=str(path)).encoder.conv1.weight
    assert torch.allclose(one[:, 0], ref.sum(1))


def test_encoder_weights_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        build_model(arch(), encoder_weights=str(tmp_path / "missing.pth"))
    other = build_model(arch(backbone="resnet34")).encoder.state_dict()
    path = tmp_path / "r34.safetensors"
    save_file({k: v.contiguous() for k, v in other.items()}, str(path))
    with pytest.raises(InputError, match="another --backbone"):
        build_model(arch(), encoder_weights=str(path))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        build_model(arch(), encoder_weights=str(junk))


def test_none_weights_spelled_none():
    # "none" (as typed on the command line) means random initialisation.
    assert encoder_mod.build_encoder("resnet18", 3, 8, "none") is not None


def test_timm_and_other_smp_encoders_dilate():
    # timm ("tu-") encoders dilate through timm's output_stride, others through smp.
    for backbone in ("tu-resnet18", "mobilenet_v2"):
        model = build_model(arch(backbone=backbone, output_stride=8))
        feats = model.encoder(torch.randn(1, 3, 64, 64))
        assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 8, 8], backbone
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)
    tu = build_model(arch(backbone="tu-resnet18", output_stride=8)).encoder
    # timm keeps the previous rate on a stage's first conv (as torchvision does), then 2 / 4.
    assert tu.model.layer3[1].conv1.dilation == (2, 2)
    assert tu.model.layer4[1].conv1.dilation == (4, 4)
    assert all(c.stride == (1, 1) for c in _convs(tu.model.layer4))
    with pytest.raises(UsageError, match="feature pyramid"):
        build_model(arch(backbone="mit_b0"))


def test_timm_checkpoint_for_tu_backbone(tmp_path):
    import timm

    net = timm.create_model("resnet18", pretrained=False)  # a classifier checkpoint, fc included
    path = tmp_path / "timm_resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    enc = build_model(arch(backbone="tu-resnet18", in_channels=4), encoder_weights=str(path))
    assert torch.equal(enc.encoder.model.layer2[0].conv1.weight, net.layer2[0].conv1.weight)
    assert torch.allclose(enc.encoder.model.conv1.weight[:, 3], net.conv1.weight[:, 0] * 0.75)
