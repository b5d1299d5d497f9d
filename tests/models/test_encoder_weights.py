"""``--encoder-weights FILE`` with the files users actually have: torchvision and timm
classifiers, whole smp models, geopsp model files, wrapped checkpoints; wrong files fail in one
line naming missing and unexpected tensors, with exit code 1 through the CLI."""

from __future__ import annotations

import argparse

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from geopsp.cli.main import cli
from geopsp.core.errors import InputError
from geopsp.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def arch(backbone: str = "resnet18", bands: int = 3) -> dict:
    return {"backbone": backbone, "in_channels": bands, "num_classes": 2, "output_stride": 16,
            "decoder": "upsample", "pointrend": False}  # fmt: skip


def save(sd: dict, path) -> str:
    if str(path).endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return str(path)


@pytest.fixture(scope="module")
def torchvision_resnet18() -> dict:
    import torchvision

    torch.manual_seed(3)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("backbone", ["resnet18", "tu-resnet18"])
def test_torchvision_classifier(torchvision_resnet18, tmp_path, suffix, backbone):
    path = save(torchvision_resnet18, tmp_path / f"resnet18{suffix}")
    enc = build_model(arch(backbone), encoder_weights=path).encoder
    own = enc.model if backbone.startswith("tu-") else enc  # timm's encoder wraps the net
    ref = torchvision_resnet18
    assert torch.equal(own.layer4[1].conv2.weight, ref["layer4.1.conv2.weight"])
    assert torch.equal(own.bn1.running_var, ref["bn1.running_var"])
    assert torch.equal(own.conv1.weight, ref["conv1.weight"])


def test_timm_classifier_and_wrapped_checkpoints(torchvision_resnet18, tmp_path):
    import timm

    torch.manual_seed(4)
    net = timm.create_model("resnet18", pretrained=False)
    path = save(net.state_dict(), tmp_path / "timm.safetensors")
    enc = build_model(arch("resnet18"), encoder_weights=path).encoder
    assert torch.equal(enc.layer3[0].downsample[0].weight, net.layer3[0].downsample[0].weight)
    ref = torchvision_resnet18["layer2.1.conv1.weight"]
    # torchvision's reference scripts wrap the weights under "model"; DDP adds "module.".
    wrapped = {"model": {f"module.{k}": v for k, v in torchvision_resnet18.items()}, "epoch": 3}
    enc = build_model(arch(), encoder_weights=save(wrapped, tmp_path / "ckpt.pth")).encoder
    assert torch.equal(enc.layer2[1].conv1.weight, ref)
    # Pickled Python objects are not loaded (weights_only): the message says what to save.
    objs = {"model": torchvision_resnet18, "args": argparse.Namespace(lr=0.1)}
    with pytest.raises(InputError, match=r"state_dict\(\)") as err:
        build_model(arch(), encoder_weights=save(objs, tmp_path / "objs.pth"))
    assert "\n" not in str(err.value)


def test_whole_smp_model_and_geopsp_model_file(tmp_path):
    import segmentation_models_pytorch as smp

    from geopsp.models.modelfile import load_model
    from tests.model_files import write_model_file

    torch.manual_seed(5)
    whole = smp.PSPNet("resnet18", encoder_weights=None, classes=3)
    path = save(whole.state_dict(), tmp_path / "smp.pth")
    enc = build_model(arch(bands=4), encoder_weights=path).encoder
    assert torch.equal(enc.layer4[0].conv1.weight, whole.encoder.layer4[0].conv1.weight)
    assert enc.conv1.weight.shape[1] == 4  # the RGB filters adapted to 4 bands
    classes = [{"value": v, "name": f"c{v}", "color": [v, v, v]} for v in (0, 1)]
    mf = write_model_file(tmp_path / "model.safetensors", classes)  # weights of another run
    trained, _ = load_model(mf, "cpu")
    enc = build_model(arch(), encoder_weights=str(mf)).encoder
    assert torch.equal(enc.layer1[1].conv2.weight, trained.encoder.layer1[1].conv2.weight)


def test_wrong_backbone_names_missing_and_unexpected(torchvision_resnet18, tmp_path):
    import torchvision

    r34 = save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(InputError, match=r"resnet18 encoder: 96 unexpected tensors \(e\.g\. layer1\.2\.") as err:  # fmt: skip
        build_model(arch("resnet18"), encoder_weights=r34)
    assert "\n" not in str(err.value) and "missing" not in str(err.value)
    r18 = save(torchvision_resnet18, tmp_path / "r18.safetensors")
    with pytest.raises(
        InputError, match=r"resnet34 encoder: 80 tensors missing \(e\.g\. layer1\.2\."
    ):
        build_model(arch("resnet34"), encoder_weights=r18)
    mnv2 = save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "m.pth")
    with pytest.raises(InputError) as err:
        build_model(arch("resnet18"), encoder_weights=mnv2)
    msg = str(err.value)
    assert "missing (e.g. conv1.weight" in msg and "unexpected tensors (e.g. features.0.0" in msg
    assert "--backbone" in msg and "\n" not in msg


def test_cli_exit_codes(tmp_path):
    import timm
    from conftest import write_chip_folder

    chips = write_chip_folder(tmp_path / "chips", n=8)
    name = "mobilenetv3_small_050"
    good = save(timm.create_model(name).state_dict(), tmp_path / "timm.safetensors")
    base = [str(chips), "--backbone", f"tu-{name}", "--output-stride", "16", "--no-pointrend",
            "--decoder", "upsample", "--batch-size", "4", "--device", "cpu", "--lr", "0.001",
            "--epochs", "1"]  # fmt: skip
    wrong = save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.safetensors")
    for weights, match in (
        (wrong, "unexpected tensors (e.g. model.conv1.weight"),
        (str(tmp_path / "absent.pth"), "no such file"),
    ):
        out = tmp_path / "bad"
        res = CliRunner().invoke(cli, ["-q", "train", *base, "-o", str(out), "--encoder-weights", weights])  # fmt: skip
        errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
        assert res.exit_code == 1 and len(errors) == 1 and match in errors[0], res.output
        assert "Traceback" not in res.output and not (out / "model.safetensors").exists()
    out = tmp_path / "good"
    res = CliRunner().invoke(cli, ["-q", "train", *base, "-o", str(out), "--encoder-weights", good])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file()
