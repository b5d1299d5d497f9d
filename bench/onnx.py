"""ONNX Runtime (CPU) against torch (CPU) on the same tiles: throughput ratio of an exported model.

For each architecture, writes a model file with random weights, exports it with
``geopsp export-model --format onnx``, cuts ``--tiles`` tiles from the Everest sample and
normalizes them as classify does, then times batches through geopsp's predictor (torch,
``inference_mode``, softmax included) and through an ONNX Runtime CPU session of the exported
graph, interleaved, best of ``--reps``. Both use ``--threads`` intra-op threads. Prints the
seconds per tile (wall and CPU) and the ratio ``torch time / ONNX Runtime time`` (> 1: ONNX
Runtime is faster), plus the share of pixels where both give the same class.

Usage::

    python bench/onnx.py                      # default and light architectures, 256 px tiles
    python bench/onnx.py --tile 512 --tiles 4 --threads 2
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as ``python bench/onnx.py``, this folder is first on sys.path and this file would
# shadow the onnx package that the export imports.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import torch  # noqa: E402

from geopsp.classify.predictor import Predictor  # noqa: E402
from geopsp.core.normalize import normalize  # noqa: E402
from geopsp.export import ExportModelOptions, export_model  # noqa: E402
from geopsp.models import build_model  # noqa: E402
from geopsp.models.modelfile import save_model  # noqa: E402

SAMPLE = _HERE.parent / "sample_data/everest_landsat7_glaciers/LE71400412000304SGS00_RGB.tif"
ARCHS = {
    "default": {"output_stride": 8, "decoder": "fpn", "pointrend": True},
    "light": {"output_stride": 16, "decoder": "upsample", "pointrend": False},
}


def write_model(path: Path, arch: dict, tile: int) -> Path:
    torch.manual_seed(0)
    model = build_model({"backbone": "resnet18", "in_channels": 3, "num_classes": 2, **arch})
    md = {"architecture": model.arch, "bands": [1, 2, 3],
          "normalization": {"mean": [80.0] * 3, "std": [40.0] * 3},
          "classes": [{"value": 0, "name": "background"}, {"value": 1, "name": "glacier"}],
          "chip_size": tile // 2, "resolution": [30.0, 30.0], "crs": "EPSG:32645"}  # fmt: skip
    save_model(path, model, md)
    return path


def tiles(tile: int, n: int) -> np.ndarray:
    with rasterio.open(SAMPLE) as src:
        data = src.read()
    rows = np.linspace(0, data.shape[1] - tile, n).astype(int)
    cols = np.linspace(0, data.shape[2] - tile, n).astype(int)[::-1]
    return np.stack(
        [normalize(data[:, r : r + tile, c : c + tile], [80.0] * 3, [40.0] * 3)
         for r, c in zip(rows, cols, strict=True)]
    )  # fmt: skip


def timed(run, batches) -> tuple[float, float, list]:
    t, c = time.perf_counter(), time.process_time()
    outs = [run(b) for b in batches]
    return time.perf_counter() - t, time.process_time() - c, outs


def bench(name: str, arch: dict, args, folder: Path) -> dict:
    import onnxruntime as ort

    model = write_model(folder / f"{name}.safetensors", arch, args.tile)
    onnx_path = folder / f"{name}.onnx"
    export_model(model, onnx_path, ExportModelOptions(tile_size=args.tile))
    x = tiles(args.tile, args.tiles)
    batches = [x[i : i + args.batch] for i in range(0, len(x), args.batch)]
    torch_fn = Predictor.from_file(str(model), device="cpu", amp=False).forward_fn()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name_in = sess.get_inputs()[0].name

    def ort_fn(b):
        return sess.run(None, {name_in: b})[0]

    torch_fn(batches[0]), ort_fn(batches[0])  # warm-up
    best = {"torch": (np.inf, np.inf), "ort": (np.inf, np.inf)}
    for _ in range(args.reps):
        for key, fn in (("torch", torch_fn), ("ort", ort_fn)):
            wall, cpu, outs = timed(fn, batches)
            best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
            if key == "torch":
                ref = np.concatenate(outs)
            else:
                got = np.concatenate(outs)
    n = len(x)
    return {
        "arch": name,
        "torch_wall": best["torch"][0] / n, "ort_wall": best["ort"][0] / n,
        "torch_cpu": best["torch"][1] / n, "ort_cpu": best["ort"][1] / n,
        "same": float((ref.argmax(1) == got.argmax(1)).mean()),
        "maxdiff": float(np.abs(ref - got).max()),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--tiles", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--archs", default=",".join(ARCHS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.tiles} tiles of {args.tile} px, batch {args.batch}, "
          f"{args.threads} thread(s), best of {args.reps}")  # fmt: skip
    print("| arch | torch s/tile (wall, CPU) | ONNX Runtime s/tile (wall, CPU) "
          "| ratio wall | ratio CPU | same class | max prob diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name in args.archs.split(","):
            r = bench(name, ARCHS[name], args, Path(d))
            print(f"| {r['arch']} | {r['torch_wall']:.3f}, {r['torch_cpu']:.3f} "
                  f"| {r['ort_wall']:.3f}, {r['ort_cpu']:.3f} "
                  f"| {r['torch_wall'] / r['ort_wall']:.2f} | {r['torch_cpu'] / r['ort_cpu']:.2f} "
                  f"| {100 * r['same']:.3f} % | {r['maxdiff']:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
