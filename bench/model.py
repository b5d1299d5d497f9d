"""Model cost benchmark: parameters, GFLOPs per tile, CPU forward speed vs the matmul ceiling.

For each backbone x decoder x PointRend on/off (and output stride), builds the model with
random weights, counts the FLOPs of one eval forward pass over a ``--size`` tile with
``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs), times batch-1
eval forwards under ``torch.inference_mode`` and compares the achieved GFLOP/s with the
GFLOP/s of a large float32 matmul measured in the same run (the practical compute ceiling).

Usage::

    python bench/model.py                    # the full table (a few minutes on 2 cores)
    python bench/model.py --backbones resnet18 --reps 1 --size 256   # quick look
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from geopsp.models import build_model


def matmul_gflops(n: int = 2048, reps: int = 5) -> tuple[float, float]:
    """Best-of-``reps`` float32 matmul speed: (GFLOP per wall second, per CPU second).

    A product is ``2 n^3`` FLOPs. CPU seconds are summed over this process's threads, so the
    per-CPU-second figure stays meaningful when other processes share the cores.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    wall, cpu = float("inf"), float("inf")
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return 2 * n**3 / wall / 1e9, 2 * n**3 / cpu / 1e9


def count_gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() / 1e9


def time_forward(model: torch.nn.Module, x: torch.Tensor, reps: int) -> dict[str, float]:
    """Best-of-``reps`` wall and CPU seconds per forward, and the matmul ceilings measured
    between the forwards (so both see the same machine conditions)."""
    out = {"wall": float("inf"), "cpu": float("inf"), "mm_wall": 0.0, "mm_cpu": 0.0}
    with torch.inference_mode():
        model(x)
        for _ in range(reps):
            mm_wall, mm_cpu = matmul_gflops(reps=2)
            out["mm_wall"], out["mm_cpu"] = max(out["mm_wall"], mm_wall), max(out["mm_cpu"], mm_cpu)
            t, c = time.perf_counter(), time.process_time()
            model(x)
            out["wall"] = min(out["wall"], time.perf_counter() - t)
            out["cpu"] = min(out["cpu"], time.process_time() - c)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="resnet18,resnet34,resnet50")
    ap.add_argument("--decoders", default="fpn,upsample")
    ap.add_argument("--output-strides", default="8", help="comma list, e.g. 8,16")
    ap.add_argument("--size", type=int, default=512, help="tile size in pixels")
    ap.add_argument("--bands", type=int, default=3)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tile {args.size}px")
    wall, cpu = matmul_gflops()
    print(f"matmul ceiling at start: {wall:.0f} GFLOP/s, {cpu:.0f} GFLOP per CPU-second\n")
    print(
        "| backbone | OS | decoder | PointRend | params (M) | GFLOPs / tile | s / tile "
        "| MP/s | GFLOP/s | matmul GFLOP/s | % of matmul | % of matmul (CPU time) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    x = torch.randn(1, args.bands, args.size, args.size)
    combos = itertools.product(
        args.backbones.split(","),
        [int(s) for s in args.output_strides.split(",")],
        args.decoders.split(","),
        (True, False),
    )
    for backbone, os_, decoder, pointrend in combos:
        arch = {
            "backbone": backbone,
            "in_channels": args.bands,
            "num_classes": args.classes,
            "output_stride": os_,
            "decoder": decoder,
            "pointrend": pointrend,
        }
        model = build_model(arch).eval()
        # Parameters used at inference (the aux head is training-only).
        params = sum(
            p.numel() for n, p in model.named_parameters() if not n.startswith("aux_head.")
        )
        gflops = count_gflops(model, x)
        t = time_forward(model, x, args.reps)
        sec = t["wall"]
        achieved = gflops / sec
        cpu_eff = 100 * (gflops / t["cpu"]) / t["mm_cpu"]
        print(
            f"| {backbone} | {os_} | {decoder} | {'on' if pointrend else 'off'} "
            f"| {params / 1e6:.1f} | {gflops:.1f} | {sec:.2f} | {args.size**2 / sec / 1e6:.3f} "
            f"| {achieved:.0f} | {t['mm_wall']:.0f} | {100 * achieved / t['mm_wall']:.0f}% "
            f"| {cpu_eff:.0f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
