"""``geopsp train``: parse options, call :func:`geopsp.train.run.train`, print the summary."""

from __future__ import annotations

import click

from geopsp.cli import options

CHOICE = dict(case_sensitive=False)


def _ints(text: str | None, opt: str) -> list[int] | None:
    if text is None or text == "":
        return None
    try:
        return [int(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError as exc:
        raise click.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint=opt
        ) from exc


def _fmt(x, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def epoch_line(row: dict, epochs: int) -> str:
    """One summary line per epoch."""
    return (
        f"epoch {row['epoch']}/{epochs}  train loss {_fmt(row['train_loss'])}  "
        f"val loss {_fmt(row['val_loss'])}  accuracy {_fmt(row['pixel_accuracy'], True)}  "
        f"mIoU {_fmt(row['miou'])}  lr {row['lr']:.2e}  {row['seconds']:.1f} s"
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


@click.command("train", context_settings={"show_default": True})
@click.argument("chips_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(), help="Output folder.")
@options.config
@click.option(
    "--backbone", default=None, help="Encoder (smp name or tu-<timm>).  [default: resnet18]"
)
@click.option(
    "--encoder-weights",
    default=None,
    help="imagenet, none, or an encoder weights file.  [default: imagenet]",
)
@click.option(
    "--output-stride",
    type=click.Choice(["8", "16"]),
    default=None,
    help="Encoder output stride.  [default: 8]",
)
@click.option(
    "--pyramid-sizes", default=None, help="Pyramid pooling bin sizes.  [default: 1,3,5,6]"
)
@click.option(
    "--decoder",
    type=click.Choice(["fpn", "upsample"], **CHOICE),
    default=None,
    help="Decoder: fpn (sharper edges) or upsample.  [default: fpn]",
)
@click.option(
    "--pointrend/--no-pointrend",
    default=None,
    help="PointRend boundary refinement.  [default: on]",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Epochs (an upper bound with --patience).  [default: 20]",
)
@click.option(
    "--batch-size", type=int, default=None, help="Chips per step (per process).  [default: 8]"
)
@click.option(
    "--lr",
    default=None,
    metavar="auto|FLOAT",
    help="Peak learning rate; auto runs a short range test.  [default: auto]",
)
@click.option(
    "--optimizer",
    type=click.Choice(["adamw", "sgd"], **CHOICE),
    default=None,
    help="Optimizer.  [default: adamw]",
)
@click.option(
    "--schedule",
    type=click.Choice(["onecycle", "poly", "cosine"], **CHOICE),
    default=None,
    help="Learning-rate schedule.  [default: onecycle]",
)
@click.option(
    "--loss",
    type=click.Choice(["ce", "focal", "dice", "ce+dice"], **CHOICE),
    default=None,
    help="Loss; 255 labels are always ignored.  [default: ce]",
)
@click.option(
    "--class-weights",
    type=click.Choice(["none", "auto"], **CHOICE),
    default=None,
    help="auto: median-frequency balancing.  [default: none]",
)
@click.option(
    "--ignore-classes",
    default=None,
    metavar="V,...",
    help="Class values to leave out (their pixels are ignored).",
)
@click.option(
    "--augment",
    type=click.Choice(["d4", "flips", "none"], **CHOICE),
    default=None,
    help="Geometric augmentation.  [default: d4]",
)
@click.option(
    "--color-jitter",
    type=float,
    default=None,
    help="Per-band scale/shift jitter (normalized units).  [default: 0.0]",
)
@click.option(
    "--patience",
    type=int,
    default=None,
    help="Stop after this many epochs without improvement (0: never).  [default: 5]",
)
@click.option(
    "--monitor",
    type=click.Choice(["miou", "loss"], **CHOICE),
    default=None,
    help="Validation score that picks the best model.  [default: miou]",
)
@options.device
@options.threads
@click.option(
    "--amp/--no-amp",
    default=None,
    help="Mixed precision (bfloat16, else float16 + loss scaling).  [default: on for CUDA]",
)
@options.workers
@click.option("--seed", type=int, default=None, help="Random seed.  [default: 0]")
@click.option(
    "--resume",
    type=click.Path(dir_okay=False),
    default=None,
    help="Continue from OUTDIR/last.ckpt.",
)
@click.option(
    "--init",
    type=click.Path(dir_okay=False),
    default=None,
    help="Start from the weights of a model file.",
)
@options.overwrite
@click.pass_context
def command(
    ctx: click.Context, chips_dirs, pyramid_sizes, ignore_classes, output_stride, **params
) -> None:
    """Train a PSPNet on one or more chip folders (export-chips or ArcGIS Classified_Tiles).

    Writes OUTPUT/model.safetensors (best epoch), last.ckpt (for --resume), metrics.csv,
    curves.png, val_preview.png and config.yaml (reusable with -c). Under
    `torchrun --nproc-per-node N -m geopsp train ...` each process trains on a shard (DDP).
    """
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
    epochs = {"n": 0}

    def on_start(info: dict) -> None:
        epochs["n"] = info["epochs"]
        lr = f"{info['lr']:.2e}" + (" (chosen by the range test)" if info["lr_auto"] else "")
        click.echo(
            f"training on {info['device']} x{info['world_size']} (amp {info['amp']}): "
            f"{info['train_chips']} training / {info['val_chips']} validation chips, "
            f"batch {info['batch_size']}, lr {lr}"
        )

    result = train(
        cfg,
        progress=options.progress_enabled(ctx),
        on_epoch=lambda row: click.echo(epoch_line(row, epochs["n"])),
        on_start=on_start,
    )
    if not main:
        return
    if result.stopped_early:
        click.echo(
            f"stopped early after epoch {result.epochs_run}: {result.monitor} stopped improving"
        )
    best = result.best_metrics
    click.echo(
        f"best epoch {result.best_epoch}: accuracy {_fmt(best.get('pixel_accuracy'), True)}, "
        f"mIoU {_fmt(best.get('miou'))}, val loss {_fmt(best.get('val_loss'))}"
    )
    click.echo(class_table(result.per_class))
    click.echo(f"model: {result.model_path}")
