"""ONNX export: ONNX Runtime against the torch model on sample tiles, the Deepness metadata and
the Deepness preprocessing of a raw uint8 tile."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

from geopsp.core.normalize import normalize
from geopsp.export import ExportModelOptions, export_model
from geopsp.export.onnx import pool_matrix

ort = pytest.importorskip("onnxruntime")


def sample_tiles(image_path, tile: int, n: int = 4) -> np.ndarray:
    """``n`` raw tiles (n, bands, tile, tile) spread over a sample raster."""
    with rasterio.open(image_path) as src:
        data = src.read()
    rows = np.linspace(0, data.shape[1] - tile, n).astype(int)
    cols = np.linspace(data.shape[2] - tile, 0, n).astype(int)
    return np.stack([data[:, r : r + tile, c : c + tile] for r, c in zip(rows, cols, strict=True)])


def torch_probs(model_path, x: np.ndarray) -> np.ndarray:
    from geopsp.classify.predictor import Predictor

    return Predictor.from_file(str(model_path), device="cpu", amp=False).forward_fn()(x)


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_same(onnx_probs: np.ndarray, ref: np.ndarray) -> None:
    assert onnx_probs.shape == ref.shape
    assert (onnx_probs.argmax(1) == ref.argmax(1)).mean() >= 0.999
    assert np.abs(onnx_probs - ref).max() <= 1e-3


def write_arch_model(path, **arch):
    """A random-weight 3-band model with the given architecture changes."""
    import torch

    from geopsp.models import build_model
    from geopsp.models.modelfile import save_model

    from .conftest import CLASSES

    torch.manual_seed(1)
    full = {"backbone": "resnet18", "in_channels": 3, "num_classes": 3, "output_stride": 16,
            "pointrend_params": {"points": 512}, **arch}  # fmt: skip
    model = build_model(full)
    md = {"architecture": model.arch, "bands": [1, 2, 3], "classes": CLASSES,
          "normalization": {"mean": [60.0, 70.0, 80.0], "std": [30.0, 35.0, 40.0]},
          "chip_size": 48, "resolution": [30.0, 30.0], "crs": "EPSG:32645"}  # fmt: skip
    save_model(path, model, md)
    return path


@pytest.mark.parametrize(
    "arch",
    [
        {"decoder": "upsample", "pointrend": False},
        {"decoder": "fpn", "pointrend": True, "pyramid_sizes": [1, 2, 5, 7]},
    ],  # fmt: skip
    ids=["upsample", "fpn-pointrend"],
)
def test_onnxruntime_matches_torch(arch, everest, tmp_path, one_torch_thread):
    model = write_arch_model(tmp_path / "m.safetensors", **arch)
    out = tmp_path / "m.onnx"
    # 48 px chips are smaller than the pyramid at stride 16 (3 cells, bins up to 6-7), so the
    # default tile would be the chip size; a 96 px tile checks a larger graph.
    summary = export_model(model, out, ExportModelOptions(opset=17, tile_size=96))
    assert summary.tile == 96
    sess = session(out)
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert inp.shape == ["batch", 3, 96, 96] and outp.shape == ["batch", 3, 96, 96]
    raw = sample_tiles(everest["image"], 96, n=3)
    x = np.stack([normalize(t, [60.0, 70.0, 80.0], [30.0, 35.0, 40.0]) for t in raw])
    got = sess.run(None, {inp.name: x})[0]
    assert_same(got, torch_probs(model, x))
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)  # probabilities, not logits


def test_opset_at_most_17(tiny_model, tmp_path):
    import onnx

    out = tmp_path / "m.onnx"
    export_model(tiny_model, out)
    graph = onnx.load(str(out), load_external_data=False)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) == 17


def test_deepness_metadata(tiny_model, tmp_path):
    """The metadata parsed the way the plugin parses it (json.loads of each value)."""
    out = tmp_path / "m.onnx"
    export_model(tiny_model, out)
    meta = {k: json.loads(v) for k, v in session(out).get_modelmeta().custom_metadata_map.items()}
    assert str(meta["model_type"]).capitalize() == "Segmentor"
    names = sorted(meta["class_names"].items(), key=lambda kv: int(kv[0]))
    assert [int(k) for k, _ in names] == [0, 1, 2]  # consecutive channels, as Deepness needs
    assert [v for _, v in names] == ["background", "glacier ice", "debris/rock"]
    assert meta["geopsp_class_values"] == [0, 3, 7]
    assert meta["resolution"] == 3000.0  # 30 m in centimetres
    assert meta["tile_size"] == meta["tiles_size"] == 64
    assert meta["tiles_overlap"] == 12  # classify's overlap, 8 of 64 pixels
    assert meta["standardization_mean"] == pytest.approx([80 / 255] * 3)
    assert meta["standardization_std"] == pytest.approx([40 / 255] * 3)


@pytest.mark.slow
def test_trained_model_on_sample_tiles_and_deepness_preprocessing(everest, everest_model,
                                                                  tmp_path):  # fmt: skip
    """The trained Everest model (FPN, PointRend): ONNX Runtime on normalized sample tiles, and
    on raw uint8 tiles preprocessed as Deepness does, gives the torch model's answer."""
    out = tmp_path / "glaciers.onnx"
    summary = export_model(everest_model, out)
    sess = session(out)
    name = sess.get_inputs()[0].name
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    norm = meta["geopsp"]["normalization"]
    raw = sample_tiles(everest["image"], summary.tile)  # uint8 (n, bands, T, T)
    x = np.stack([normalize(t, norm["mean"], norm["std"]) for t in raw])
    ref = torch_probs(everest_model, x)
    assert_same(sess.run(None, {name: x})[0], ref)
    # Deepness: NHWC uint8 tiles, x / 255, then (x - mean) / std with the stored values.
    nhwc = raw.transpose(0, 2, 3, 1)
    pre = np.float32(nhwc * (1.0 / 255.0))
    pre = (pre - np.float32(meta["standardization_mean"])) / np.float32(meta["standardization_std"])
    pre = pre.transpose(0, 3, 1, 2).astype(np.float32)
    assert np.abs(pre - x).max() < 1e-5  # the same input, up to float rounding
    got = sess.run(None, {name: pre})[0]
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.999
    # PointRend re-predicts the N most uncertain pixels; where two uncertainties tie within
    # float rounding, a 1e-7 change of the input may pick the other pixel, whose probability
    # then moves by up to a few hundredths. Every other pixel is within 1e-3.
    assert (np.abs(got - ref).max(axis=1) <= 1e-3).mean() >= 0.999


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 9))
def test_pool_matrix_is_adaptive_average_pooling(size_in, size_out):
    import torch
    import torch.nn.functional as F

    x = torch.randn(1, 2, size_in, size_in + 3)
    want = F.adaptive_avg_pool2d(x, size_out)
    rows = torch.from_numpy(pool_matrix(size_in, size_out))
    cols = torch.from_numpy(pool_matrix(size_in + 3, size_out))
    got = rows @ x @ cols.T
    assert torch.allclose(got, want, atol=1e-5)
