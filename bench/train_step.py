"""Training-step benchmark: how close does a full training step come to the machine's limit?

For each configuration and chip size, one training step (forward, loss, backward, optimizer;
``geopsp.train.loop.train_step`` on a batch already in memory) is timed and its FLOPs are
counted with ``torch.utils.flop_counter.FlopCounterMode`` on the same step. The achieved
GFLOP/s is compared with a ceiling measured in the same run at the same thread count and in
the step's precision: a 2048x2048 matmul and a 3x3 convolution (8x128x64x64, 128 -> 128
channels) forward + backward, whichever is faster, in float32 for float32 steps and in
bfloat16 (channels_last) for bfloat16 ones. Timings alternate between configurations (and,
with ``--baseline-tree``, between two source trees) round by round, so the noise of a shared machine hits all of them
alike; the ceiling is measured just before and just after each step and averaged, and the
medians over rounds are reported. Each time is taken both by wall clock and by CPU time of
the process: with one thread (the default) CPU time leaves out the time the step spent
descheduled while other programs ran, so on a busy machine it is the steadier measure.

``--baseline-tree DIR`` also measures the geopsp package found in ``DIR`` (for example an
older commit unpacked with ``git archive``) in a second process, round by round alternating
with this tree, and reports its step time and ratio beside this tree's.

Usage::

    python bench/train_step.py                                   # 1 thread, all configs, 128 + 256 px
    python bench/train_step.py --configs default --sizes 256 --rounds 5 --baseline-tree /tmp/old
    python bench/train_step.py --profile default --sizes 128      # per-op table of one step
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

try:
    from geopsp.train.config import CPU_ARCH_DEFAULTS, CPU_BATCH_SIZE
except ImportError:  # an older tree (--baseline-tree) trained the same network on every device
    CPU_ARCH_DEFAULTS, CPU_BATCH_SIZE = {}, 8

# "amp": the step's precision (True: bfloat16 autocast, False: float32); absent: what
# `geopsp train` chooses on this CPU (bfloat16 where the CPU has bfloat16 instructions).
CONFIGS: dict[str, dict] = {
    "default": {},  # the model's defaults: what `geopsp train` builds on CUDA
    "cpu-default": dict(CPU_ARCH_DEFAULTS),  # what `geopsp train` builds on a CPU
    "cpu-default-fp32": {**CPU_ARCH_DEFAULTS, "amp": False},
    "default-fp32": {"amp": False},
    "os16-no-pointrend": {"output_stride": 16, "pointrend": False},
    "os16": {"output_stride": 16},
    "upsample": {"decoder": "upsample"},
    "no-pointrend": {"pointrend": False},
    "no-aux": {"aux": False},
    "cheap": {"output_stride": 16, "decoder": "upsample", "pointrend": False},
    # The CPU default under torch.compile (inductor); FLOPs are counted on the eager step.
    "cpu-default-compiled": {**CPU_ARCH_DEFAULTS, "compile": True},
}
NUM_CLASSES = 2


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _timed(fn, repeats: int = 1) -> tuple[float, float]:
    """Wall and CPU seconds of one call of ``fn`` (mean of ``repeats``)."""
    w0, c0 = _clocks()
    for _ in range(repeats):
        fn()
    w1, c1 = _clocks()
    return (w1 - w0) / repeats, (c1 - c0) / repeats


class Ceiling:
    """The machine's rate on the two kernels a training step is made of, in float32 and in
    bfloat16 (``bf16_`` keys)."""

    def __init__(self) -> None:
        self.a, self.b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        self.a16, self.b16 = self.a.bfloat16(), self.b.bfloat16()
        self.conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False)
        self.x = torch.randn(8, 128, 64, 64, requires_grad=True)
        self.conv16 = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False).to(
            memory_format=torch.channels_last
        )
        self.x16 = torch.randn(8, 128, 64, 64).contiguous(memory_format=torch.channels_last)
        self.x16.requires_grad_(True)
        self.flops = {}
        for name, fn in self.kernels().items():
            fn()  # warm-up
            with FlopCounterMode(display=False) as fc:
                fn()
            self.flops[name] = fc.get_total_flops()

    def _conv_step(self) -> None:
        y = self.conv(self.x)
        y.backward(torch.ones_like(y))

    def _conv16_step(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.conv16(self.x16)
        y.backward(torch.ones_like(y))

    def kernels(self) -> dict:
        return {
            "matmul": lambda: self.a @ self.b,
            "conv3x3": self._conv_step,
            "bf16_matmul": lambda: self.a16 @ self.b16,
            "bf16_conv3x3": self._conv16_step,
        }

    def measure(self, precision: str) -> dict[str, float]:
        """GFLOP/s of the kernels of ``precision`` (``fp32`` or ``bf16``) by wall clock and by
        CPU time (``cpu_`` keys)."""
        out = {}
        for name, fn in self.kernels().items():
            if name.startswith("bf16_") != (precision == "bf16"):
                continue
            wall, cpu = _timed(fn, 2)
            out[name], out[f"cpu_{name}"] = (
                self.flops[name] / wall / 1e9,
                self.flops[name] / cpu / 1e9,
            )
        return out


class Case:
    """A model, optimizer and batch for one (configuration, chip size, batch size)."""

    def __init__(self, config: str, size: int, batch: int) -> None:
        from geopsp.models import AUX_WEIGHT, build_model
        from geopsp.train.loop import Accel, train_step
        from geopsp.train.losses import make_criterion
        from geopsp.train.optim import make_optimizer

        torch.manual_seed(0)
        arch = {k: v for k, v in CONFIGS[config].items() if k not in ("aux", "amp", "compile")}
        arch.update(backbone="resnet18", in_channels=3, num_classes=NUM_CLASSES)
        self.model = build_model(arch)
        self.aux_weight = AUX_WEIGHT
        if not CONFIGS[config].get("aux", True):
            self.model.aux_head = None  # the network without its training-only aux head
            self.aux_weight = 0.0
        self.model.train()
        accel = Accel.for_device(torch.device("cpu"), CONFIGS[config].get("amp"))
        self.precision = "bf16" if accel.amp and accel.amp_dtype == torch.bfloat16 else "fp32"
        opt, scaler = make_optimizer("adamw", self.model, 1e-4), accel.scaler()
        crit = make_criterion("ce")  # the defaults of geopsp train: AdamW, cross-entropy
        x = torch.randn(batch, 3, size, size)
        y = torch.randint(0, NUM_CLASSES, (batch, size, size))
        x, y = accel.to_device(x, y)

        run = torch.compile(self.model) if CONFIGS[config].get("compile") else self.model

        def step(model=run) -> None:
            train_step(model, opt, scaler, x, y, crit, None, accel, self.aux_weight)

        self.step = step
        t0 = time.perf_counter()
        step()  # warm-up: allocator, optimizer state, first-call overheads (and compilation)
        self.first_step_s = time.perf_counter() - t0
        with FlopCounterMode(display=False) as fc:
            step(self.model)  # eager: the same arithmetic, counted op by op
        self.flops = fc.get_total_flops()

    def time(self, steps: int) -> tuple[float, float]:
        return _timed(self.step, steps)


class Local:
    """Measurements of the geopsp importable here (this tree, or the baseline in a worker)."""

    def __init__(self, batch: int) -> None:
        self.batch, self.cases, self.ceiling = batch, {}, Ceiling()

    def measure(self, config: str, size: int, steps: int) -> dict:
        key = (config, size)
        if key not in self.cases:
            self.cases[key] = Case(config, size, self.batch)
        case = self.cases[key]
        # The ceiling is measured just before and just after the step and averaged, so that
        # both see the same load on a shared machine.
        before = self.ceiling.measure(case.precision)
        wall, cpu = case.time(steps)
        after = self.ceiling.measure(case.precision)
        ceil = {k: (before[k] + after[k]) / 2 for k in before}
        return {
            "seconds": wall, "cpu_seconds": cpu, "gflop": case.flops / 1e9,
            "precision": case.precision, "first_step_s": case.first_step_s, **ceil,
        }  # fmt: skip

    def drop(self, config: str, size: int) -> None:
        self.cases.pop((config, size), None)


class Remote:
    """The same measurements run by a worker process on another source tree."""

    def __init__(self, tree: Path, args: argparse.Namespace) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree))
        cmd = [sys.executable, __file__, "--serve", "--threads", str(args.threads)]
        cmd += ["--batch-size", str(args.batch_size)]
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def _ask(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the baseline worker stopped; see its error above")
        return json.loads(line)

    def measure(self, config: str, size: int, steps: int) -> dict:
        return self._ask({"op": "measure", "config": config, "size": size, "steps": steps})

    def drop(self, config: str, size: int) -> None:
        self._ask({"op": "drop", "config": config, "size": size})

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def serve(args: argparse.Namespace) -> None:
    local = Local(args.batch_size)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["op"] == "measure":
            out = local.measure(msg["config"], msg["size"], msg["steps"])
        else:
            local.drop(msg["config"], msg["size"])
            out = {}
        print(json.dumps(out), flush=True)


def summarise(samples: list[dict]) -> dict:
    """Medians over rounds; ratios are taken per round, against that round's ceiling in the
    step's precision (the faster of the two kernels), by wall clock and by CPU time."""
    gflop = samples[0]["gflop"]
    precision = samples[0].get("precision", "fp32")
    kind = "bf16_" if precision == "bf16" else ""
    med = lambda key, rows: statistics.median(r[key] for r in rows)  # noqa: E731
    out: dict = {"gflop_per_step": round(gflop, 1), "precision": precision}
    if "first_step_s" in samples[0]:  # absent from an older tree's worker
        out["first_step_s"] = round(samples[0]["first_step_s"], 1)
    for clock, pre in (("wall", kind), ("cpu", "cpu_" + kind)):
        sec = "seconds" if clock == "wall" else "cpu_seconds"
        rows = [
            {
                "rate": gflop / s[sec],
                "ratio": gflop / s[sec] / max(s[f"{pre}matmul"], s[f"{pre}conv3x3"]),
                "ratio_conv": gflop / s[sec] / s[f"{pre}conv3x3"],
            }
            for s in samples
        ]
        out[clock] = {
            "step_s": round(med(sec, samples), 3),
            "gflop_per_s": round(med("rate", rows), 1),
            "ceiling_matmul": round(med(f"{pre}matmul", samples), 1),
            "ceiling_conv3x3": round(med(f"{pre}conv3x3", samples), 1),
            "ratio": round(med("ratio", rows), 3),
            "ratio_vs_conv3x3": round(med("ratio_conv", rows), 3),
            "step_s_rounds": [round(s[sec], 3) for s in samples],
        }
    return out


def profile(args: argparse.Namespace) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    case = Case(args.profile, args.sizes[0], args.batch_size)
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=args.by_shape) as prof:
        case.step()
    table = prof.key_averages(group_by_input_shape=args.by_shape)
    print(
        f"CPU: {cpu_model()}; {torch.get_num_threads()} thread(s), {args.batch_size} chips a step"
    )
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows))


def cpu_model() -> str:
    """The CPU's model name and its bfloat16 instructions, from ``/proc/cpuinfo``: the
    ratios depend on them (a matrix unit such as AMX raises the bfloat16 ceiling about four
    times, far more than the small convolutions of a training step can use)."""
    from geopsp.core.precision import bf16_flags  # noqa: PLC0415  (this tree's, as Local's)

    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "unknown"
    name = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
        "unknown",
    )
    flags = bf16_flags(info)
    return f"{name} ({', '.join(flags) or 'no bfloat16 instructions'})"


def run(args: argparse.Namespace) -> dict:
    trees: dict[str, Local | Remote] = {"this": Local(args.batch_size)}
    if args.baseline_tree:
        trees["baseline"] = Remote(args.baseline_tree, args)
    results: dict = {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
    }
    try:
        for size in args.sizes:
            samples: dict = {(t, c): [] for t in trees for c in args.configs}
            for _ in range(args.rounds):
                for config in args.configs:
                    for tree, m in trees.items():
                        samples[tree, config].append(m.measure(config, size, args.steps))
            for (tree, config), rows in samples.items():
                results.setdefault(tree, {}).setdefault(config, {})[size] = summarise(rows)
            for config in args.configs:  # free this size's activations before the next one
                for m in trees.values():
                    m.drop(config, size)
    finally:
        if "baseline" in trees:
            trees["baseline"].close()
    if "baseline" in trees:
        for config in args.configs:
            for size in args.sizes:
                new, old = results["this"][config][size], results["baseline"][config][size]
                results.setdefault("speedup", {}).setdefault(config, {})[size] = {
                    clock: round(
                        statistics.median(
                            o / n
                            for o, n in zip(
                                old[clock]["step_s_rounds"],
                                new[clock]["step_s_rounds"],
                                strict=True,
                            )
                        ),
                        3,
                    )
                    for clock in ("wall", "cpu")
                }
    return results


def table(results: dict) -> str:
    """A Markdown table of the results (the JSON holds every round)."""
    head = "| tree | config | precision | chip | GFLOP/step | step s (CPU) | GFLOP/s (CPU) | ceiling (CPU) | ratio (CPU) | ratio (wall) | speedup (CPU) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for tree in ("this", "baseline"):
        for config, by in results.get(tree, {}).items():
            for size, r in by.items():
                c, w = r["cpu"], r["wall"]
                ceil = max(c["ceiling_matmul"], c["ceiling_conv3x3"])
                sp = results.get("speedup", {}).get(config, {}).get(size, {}).get("cpu", "")
                sp = sp if tree == "this" else ""
                lines.append(
                    f"| {tree} | {config} | {r.get('precision', 'fp32')} | {size} | "
                    f"{r['gflop_per_step']} | {c['step_s']} | "
                    f"{c['gflop_per_s']} | {ceil} | {c['ratio']} | {w['ratio']} | {sp} |"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    ap.add_argument(
        "--batch-size",
        type=int,
        default=CPU_BATCH_SIZE,
        help="chips a step (default: train's on a CPU)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1, help="training steps per measurement")
    ap.add_argument("--baseline-tree", type=Path, help="also measure geopsp from this tree")
    ap.add_argument("--profile", choices=list(CONFIGS), help="print a per-op table instead")
    ap.add_argument("--rows", type=int, default=30, help="rows of the --profile table")
    ap.add_argument("--by-shape", action="store_true", help="--profile: one row per op and shape")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.serve:
        return serve(args)
    if args.profile:
        return profile(args)
    out = run(args)
    print(json.dumps(out, indent=2))
    print(f"CPU: {out['cpu']}; {out['threads']} thread(s), {out['batch_size']} chips a step")
    print(table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
