"""``geopsp train``: parse options, call :func:`geopsp.train.run.train`, print the summary."""

from __future__ import annotations

import click

from geopsp.cli import options


def _option(flag: str, help_text: str, choices: list[str] | None = None, **kw):
    """A train option whose default is None, "not given": then the documented default (in
    its help) applies, or with --resume the checkpoint's value. Choices ignore case."""
    if choices is not None:
        kw["type"] = click.Choice(choices, case_sensitive=False)
    return click.option(flag, default=None, help=help_text, **kw)


def _ints(text: str | None, opt: str) -> list[int] | None:
    if text is None or text == "":
        return None
    try:
        return [int(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError as exc:
        raise click.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint=opt
        ) from exc


class Duration(click.ParamType):
    """``90s``, ``15m``, ``2h``, ``1h30m`` or plain seconds, converted to seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        from geopsp.core.durations import parse_duration

        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _fmt(x, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def epoch_line(row: dict, epochs: int, time_limit: float | None = None) -> str:
    """One summary line per epoch (with a time limit: the run's elapsed time too)."""
    clock = f"  [{row['elapsed']:.0f}/{time_limit:.0f} s]" if time_limit else ""
    from geopsp.train.config import epoch_label

    return (
        f"{epoch_label(row['epoch'], epochs)}  train loss {_fmt(row['train_loss'])}  "
        f"val loss {_fmt(row['val_loss'])}  accuracy {_fmt(row['pixel_accuracy'], True)}  "
        f"mIoU {_fmt(row['miou'])}  lr {row['lr']:.2e}  {row['seconds']:.1f} s"
        + clock
        + ("  *best" if row.get("best") else "")
    )


def class_table(rows: list[dict]) -> str:
    """The per-class table printed at the end."""
    width = max([5] + [len(r["name"]) for r in rows])
    head = f"{'value':>5}  {'class':<{width}}  {'IoU':>6}  {'prec.':>6}  {'recall':>6}  {'F1':>6}  {'pixels':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['value']:>5}  {r['name']:<{width}}  {_fmt(r['iou']):>6}  {_fmt(r['precision']):>6}  "
            f"{_fmt(r['recall']):>6}  {_fmt(r['f1']):>6}  {r['support']:>10}"
        )
    return "\n".join(lines)


def start_line(info: dict) -> str:
    """The line printed before the first epoch (see ``train``'s ``on_start``)."""
    lr = f"{info['lr']:.2e}" + (" (chosen by the range test)" if info["lr_auto"] else "")
    return (
        f"training on {info['device']} x{info['world_size']} (amp {info['amp']}): "
        f"{info['train_chips']} training / {info['val_chips']} validation chips, "
        f"batch {info['batch_size']}, lr {lr}"
        + (f", time limit {info['time_limit']:.0f} s" if info["time_limit"] else "")
    )


def summary(result) -> str:
    """What the run did and where its model is, printed when training ends."""
    lines = []
    if result.time_limit:
        lines.append(
            f"trained {result.steps} steps in {result.elapsed:.1f} s "
            f"(time limit {result.time_limit:.0f} s)"
        )
    if result.stopped_early:
        lines.append(
            f"stopped early after epoch {result.epochs_run}: {result.monitor} stopped improving"
        )
    best = result.best_metrics
    which = "last epoch" if result.monitor == "last" else "best epoch"
    lines.append(
        f"{which} {result.best_epoch}: accuracy {_fmt(best.get('pixel_accuracy'), True)}, "
        f"mIoU {_fmt(best.get('miou'))}, val loss {_fmt(best.get('val_loss'))}"
    )
    lines.append(class_table(result.per_class))
    lines.append(f"model: {result.model_path}")
    return "\n".join(lines)


@click.command("train", context_settings={"show_default": True})
@click.argument("chips_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(), help="Output folder.")
@options.config
@_option("--backbone", "Encoder (smp name or tu-<timm>).  [default: resnet18]")
@_option("--encoder-weights", "imagenet, none, or an encoder weights file.  [default: imagenet]")
@_option(
    "--output-stride",
    "Encoder output stride. On a CPU the cheaper 16 trains more epochs in the same time and "
    "made better held-out maps (docs/performance.md).  [default: 8 on CUDA, 16 on a CPU]",
    ["8", "16"],
)
@_option("--pyramid-sizes", "Pyramid pooling bin sizes.  [default: 1,3,5,6]")
@_option(
    "--decoder", "Decoder: fpn (sharper edges) or upsample.  [default: fpn]", ["fpn", "upsample"]
)
@_option(
    "--pointrend/--no-pointrend",
    "PointRend boundary refinement.  [default: on with CUDA, off on a CPU]",
)
@_option(
    "--epochs",
    "Epochs (an upper bound with --patience or --time-limit).  [default: 20; none with "
    "--time-limit]",
    type=int,
)
@_option(
    "--time-limit",
    "Wall-clock budget of the whole run (90s, 15m, 2h or seconds): step and validation "
    "costs are measured in the first steps and the number of steps, and the learning-rate "
    "schedule, are fitted so the run, validation and outputs included, ends within it; the "
    "last epoch may be partial. --resume keeps the remaining budget.  [default: none]",
    type=Duration(),
    metavar="DURATION",
)
@_option(
    "--batch-size",
    "Chips per step (per process). A CPU step of few chips is mostly fixed cost, so a CPU "
    "takes more of them.  [default: 8 on CUDA, 16 on a CPU]",
    type=int,
)
@_option(
    "--lr",
    "Peak learning rate; auto runs a short range test.  [default: 0.001 with adamw, 0.01 with sgd]",
    metavar="auto|FLOAT",
)
@_option("--optimizer", "Optimizer.  [default: adamw]", ["adamw", "sgd"])
@_option(
    "--schedule", "Learning-rate schedule.  [default: onecycle]", ["onecycle", "poly", "cosine"]
)
@_option(
    "--loss",
    "Loss; 255 labels are always ignored.  [default: ce+dice]",
    ["ce", "focal", "dice", "ce+dice", "lovasz", "ce+lovasz"],
)
@_option(
    "--class-weights",
    "auto: median-frequency balancing; sqrt: its square root (softer).  [default: auto]",
    ["none", "auto", "sqrt"],
)
@_option(
    "--ignore-classes", "Class values to leave out (their pixels are ignored).", metavar="V,..."
)
@_option(
    "--arcgis-nodata",
    "ArcGIS Classified_Tiles folders: label 0 (ArcGIS NoData) when the .emd does not list it "
    "is a trained background class, or ignored.  [default: background]",
    ["background", "ignore"],
)
@_option("--augment", "Geometric augmentation.  [default: d4]", ["d4", "flips", "none"])
@_option(
    "--sampling",
    "grid: the exported chips as they are; windows: each epoch, every training chip becomes "
    "a window shifted at random by up to half a chip within the exported area (validation "
    "chips' pixels never).  [default: grid]",
    ["grid", "windows"],
)
@_option(
    "--color-jitter", "Per-band scale/shift jitter (normalized units).  [default: 0.0]", type=float
)
@_option(
    "--scale-jitter",
    "s: zoom each training chip by a factor drawn log-uniformly from [1/(1+s), 1+s], then "
    "crop it, or pad it with ignored pixels, back to the chip size (0: off).  [default: 0]",
    type=float,
)
@_option(
    "--ema",
    "Validate and save a moving average of the weights, updated after every step with this "
    "decay (0.99: about the last 100 steps); 0: off, the weights of the last step.  [default: 0]",
    type=float,
    metavar="DECAY",
)
@_option(
    "--patience",
    "Stop after this many epochs without improvement (0: never).  [default: 5; 0 with "
    "--time-limit]",
    type=int,
)
@_option(
    "--monitor",
    "Validation score that picks the best model; last: the final epoch's weights.  [default: "
    "miou; last with --time-limit]",
    ["miou", "loss", "last"],
)
@options.device
@options.threads
@_option(
    "--amp/--no-amp",
    "Mixed precision: on CUDA bfloat16, else float16 + loss scaling; on a CPU bfloat16.  "
    "[default: on for CUDA and for CPUs with bfloat16 instructions (AMX, AVX512-BF16)]",
)
@options.workers
@_option("--seed", "Random seed.  [default: 0]", type=int)
@_option("--resume", "Continue from OUTDIR/last.ckpt.", type=click.Path(dir_okay=False))
@_option("--init", "Start from the weights of a model file.", type=click.Path(dir_okay=False))
@options.overwrite
@click.pass_context
def command(
    ctx: click.Context, chips_dirs, pyramid_sizes, ignore_classes, output_stride, **params
) -> None:
    """Train a PSPNet on one or more chip folders (export-chips or ArcGIS Classified_Tiles).

    Writes OUTPUT/model.safetensors (the best epoch; with --time-limit the last),
    last.ckpt (for --resume), metrics.csv, curves.png, val_preview.png and config.yaml
    (reusable with -c). Under `torchrun --nproc-per-node N -m geopsp train ...` each process
    trains on a shard (DDP).
    """
    import time

    started = time.monotonic()  # --time-limit counts loading torch too
    from geopsp.train.run import TrainConfig, train

    if isinstance(chips_dirs, str):  # a single folder from -c config
        chips_dirs = [chips_dirs]
    # Choices are case-insensitive; click hands over the canonical (lower-case) spelling.
    cfg = options.build(
        TrainConfig,
        params,
        chips_dirs=[str(p) for p in chips_dirs],
        pyramid_sizes=_ints(pyramid_sizes, "--pyramid-sizes"),
        ignore_classes=_ints(ignore_classes, "--ignore-classes"),
        output_stride=int(output_stride) if output_stride else None,
    )
    main = options.env_rank() == 0
    epochs = {"n": 0, "limit": None}

    def on_start(info: dict) -> None:
        epochs["n"], epochs["limit"] = info["epochs"], info["time_limit"]
        click.echo(start_line(info))

    result = train(
        cfg,
        progress=options.progress_enabled(ctx),
        on_epoch=lambda row: click.echo(epoch_line(row, epochs["n"], epochs["limit"])),
        on_start=on_start,
        started=started,
    )
    if main:
        click.echo(summary(result))
