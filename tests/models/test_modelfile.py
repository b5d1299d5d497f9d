"""The model file: exact round trip, metadata, and clean refusal of bad files."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from geopsp import __version__
from geopsp import load_model as api_load_model
from geopsp.core.errors import ModelFileError, OutputError
from geopsp.models import build_model
from geopsp.models.modelfile import (
    FORMAT_VERSION,
    METADATA_KEYS,
    load_model,
    parameter_count,
    read_metadata,
    save_model,
)

CLASSES = [
    {"value": 0, "name": "background", "color": [0, 0, 0]},
    {"value": 1, "name": "glacier", "color": [80, 160, 255]},
]
METADATA = {
    "bands": [3, 2, 1],
    "normalization": {"mean": [10.0, 20.0, 30.0], "std": [1.0, 2.0, 3.0]},
    "classes": CLASSES,
    "chip_size": 256,
    "resolution": [30.0, 30.0],
    "crs": "EPSG:32645",
    "metrics": {"miou": 0.8, "pixel_accuracy": 0.95},
    "train_config": {"epochs": 3, "seed": 0},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_model(**kw):
    torch.manual_seed(0)
    arch = {"in_channels": 3, "num_classes": 2, "pointrend_params": {"points": 64}}
    arch.update(kw)
    return build_model(arch)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = small_model()
    # A short training-mode pass so BatchNorm running statistics are not the init values.
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    model.eval()
    path = tmp_path_factory.mktemp("mf") / "model.safetensors"
    save_model(path, model, METADATA)
    return path, model


def test_round_trip_is_bit_identical(saved):
    path, model = saved
    loaded, md = load_model(path)
    assert not loaded.training
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    again, _ = api_load_model(str(path))  # the package-level API
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_metadata_contents(saved):
    path, model = saved
    md = read_metadata(path)
    assert set(md) == set(METADATA_KEYS)
    assert md["format_version"] == FORMAT_VERSION
    assert md["geopsp_version"] == __version__
    assert md["architecture"] == model.arch
    for key in ("backbone", "in_channels", "num_classes", "output_stride", "pyramid_sizes"):
        assert key in md["architecture"]
    assert md["classes"] == CLASSES and md["bands"] == [3, 2, 1]
    assert md["normalization"]["std"] == [1.0, 2.0, 3.0]
    assert parameter_count(path) == sum(p.numel() for p in model.parameters())


def test_wrapped_model_saves_bare_keys(saved, tmp_path):
    path, model = saved

    class Wrapper(torch.nn.Module):  # what DDP looks like: the network under .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    target = tmp_path / "wrapped.safetensors"
    save_model(target, Wrapper(model), METADATA)
    loaded, md = load_model(target)
    assert md["architecture"] == model.arch
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_read_metadata_needs_no_torch(saved):
    path, _ = saved
    code = (
        "import sys; from geopsp.models.modelfile import read_metadata, parameter_count; "
        f"read_metadata({str(path)!r}); parameter_count({str(path)!r}); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_overwrite_is_refused_and_failures_leave_nothing(saved, tmp_path):
    path, model = saved
    with pytest.raises(OutputError, match="--overwrite"):
        save_model(path, model, METADATA, overwrite=False)
    target = tmp_path / "bad.safetensors"
    with pytest.raises(ModelFileError, match="JSON"):
        save_model(target, model, {**METADATA, "metrics": {"x": float("nan")}})
    assert list(tmp_path.iterdir()) == []


def _one_line_error(path, match):
    with pytest.raises(ModelFileError, match=match) as err:
        load_model(path)
    assert "\n" not in str(err.value)
    return err


def test_missing_and_foreign_files(tmp_path, everest):
    _one_line_error(tmp_path / "nope.safetensors", "does not exist")
    _one_line_error(everest["image"], "not a geopsp model")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    _one_line_error(empty, "not a geopsp model")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    _one_line_error(plain, "not a geopsp model")
    with pytest.raises(ModelFileError, match="not a geopsp model"):
        read_metadata(plain)


def test_truncated_and_corrupted(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-1000])
    _one_line_error(cut, "truncated")
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(flipped))
    _one_line_error(bad, "checksum")
    header = bytearray(data)
    header[8:20] = b"!" * 12
    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes(bytes(header))
    _one_line_error(garbled, "not a geopsp model")


def _with_metadata(tmp_path, name, md) -> str:
    """A file with the weights of a small model but hand-made geopsp metadata."""
    state = {k: v.contiguous() for k, v in small_model().state_dict().items()}
    path = tmp_path / name
    save_file(state, str(path), metadata={"geopsp": json.dumps(md)})
    return path


def test_versions(saved, tmp_path):
    md = read_metadata(saved[0])
    err = _one_line_error(
        _with_metadata(tmp_path, "new.safetensors", {**md, "format_version": 99}), "newer geopsp"
    )
    assert "upgrade" in str(err.value)
    _one_line_error(
        _with_metadata(tmp_path, "v0.safetensors", {**md, "format_version": 0}),
        "unknown model format version",
    )
    _one_line_error(
        _with_metadata(tmp_path, "vx.safetensors", {**md, "format_version": "one"}),
        "unknown model format version",
    )
    incomplete = {k: v for k, v in md.items() if k != "classes"}
    _one_line_error(_with_metadata(tmp_path, "inc.safetensors", incomplete), "lacks classes")
    path = tmp_path / "badjson.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"geopsp": "{not json"})
    _one_line_error(path, "not valid JSON")


def test_weights_not_matching_architecture(saved, tmp_path):
    md = read_metadata(saved[0])
    for change in ({"num_classes": 5}, {"decoder": "upsample"}, {"backbone": "resnet34"}):
        arch = {**md["architecture"], **change}
        path = _with_metadata(tmp_path, "mismatch.safetensors", {**md, "architecture": arch})
        _one_line_error(path, "do not match the architecture")
    arch = {**md["architecture"], "backbone": "nosuchnet"}
    path = _with_metadata(tmp_path, "unknown.safetensors", {**md, "architecture": arch})
    _one_line_error(path, "cannot build")


def test_header_is_valid_safetensors(saved):
    # Other tools (safetensors, huggingface) can open the file and see the metadata.
    from safetensors import safe_open

    path, model = saved
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["geopsp"])["chip_size"] == 256
        assert set(f.keys()) == set(model.state_dict())
    n = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert n % 8 == 0
