"""Options of ``geopsp train``: defaults, validation, and what a resumed run may change.

Every option defaults to ``None`` ("not given"), so a resumed run can tell an option the user
set (which must agree with the checkpoint) from one left at its default (taken from the
checkpoint). :func:`resolve` fills the defaults, and :func:`device_defaults` those that
depend on the device once it is known.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from geopsp.chips.arcgis import NODATA_CHOICES
from geopsp.core.durations import parse_duration
from geopsp.core.errors import UsageError
from geopsp.train.losses import CLASS_WEIGHTS, LOSSES

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "poly", "cosine")
AUGMENTS = ("d4", "flips", "none")
SAMPLINGS = ("grid", "windows")
MONITORS = ("miou", "loss", "last")
ARCH_KEYS = ("backbone", "output_stride", "pyramid_sizes", "decoder", "pointrend")

DEFAULTS: dict = {
    "encoder_weights": "imagenet",
    "epochs": 20,
    "optimizer": "adamw",
    "schedule": "onecycle",
    # Measured on the held-out benchmark (docs/performance.md): cross-entropy plus Dice with
    # median-frequency class weights made better maps than plain cross-entropy on all three
    # datasets, most where one class is rare (buildings, minor land-cover classes).
    "loss": "ce+dice",
    "class_weights": "auto",
    "ignore_classes": [],
    "arcgis_nodata": "background",
    "augment": "d4",
    "sampling": "grid",
    "color_jitter": 0.0,
    "scale_jitter": 0.0,
    # Off: on the held-out benchmark (docs/performance.md) the moving average of the weights
    # made maps neither better nor worse than the annealed schedule's last weights.
    "ema": 0.0,
    "patience": 5,
    "monitor": "miou",
    "device": "auto",
    "amp": None,  # None: on for CUDA, off on CPU
    "workers": 0,
    "seed": 0,
    "time_limit": None,  # seconds; None: --epochs alone decides
}
# Peak learning rates of the one-cycle schedule when --lr is not given. The --lr auto range
# test, run in a few dozen steps from scratch, chose 4e-5..2e-4 on the benchmark datasets,
# too low to train in a short budget (docs/performance.md).
LR_DEFAULTS: dict = {"adamw": 1e-3, "sgd": 1e-2}
# With --time-limit the budget ends the run: no epoch cap and no early stopping unless asked
# for, since the schedule is fitted to the budget and a half-run schedule wastes it.
# Its model is the last epoch's, the end of the annealed schedule: over 29 paired benchmark
# runs the last weights mapped the held-out area 1.0 mIoU points better on average than the
# epoch the (small) validation set picked, and varied less between runs.
TIME_LIMIT_DEFAULTS: dict = {"epochs": 100_000, "patience": 0, "monitor": "last"}
# On a CPU the same minutes buy more epochs of a cheaper network, and more epochs make the
# better held-out map (docs/performance.md): output stride 16, no PointRend. On CUDA the
# seed's PSPNet (output stride 8, PointRend) stays the default.
CPU_ARCH_DEFAULTS: dict = {"output_stride": 16, "pointrend": False}
# A CPU step of 8 small chips is mostly fixed cost: 16 chips a step trained 1.2-1.5 times the
# epochs in the same minutes and made land-cover maps as good or better (docs/performance.md).
# On CUDA (and other accelerators) it stays 8, which fits the seed's network at 256 px on
# common cards. Both are filled by device_defaults, once the device is known.
BATCH_SIZE = 8
CPU_BATCH_SIZE = 16
# May differ between a run and its --resume; everything else must match the checkpoint.
RESUMABLE_CHANGES = (
    "epochs", "patience", "device", "amp", "workers", "encoder_weights", "init", "time_limit",
    "ema",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Options of :func:`geopsp.train.run.train` (``None``: default, or the checkpoint's value)."""

    chips_dirs: list[str]
    output: str
    backbone: str | None = None
    encoder_weights: str | None = None
    output_stride: int | None = None
    pyramid_sizes: list[int] | None = None
    decoder: str | None = None
    pointrend: bool | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | str | None = None
    optimizer: str | None = None
    schedule: str | None = None
    loss: str | None = None
    class_weights: str | None = None
    ignore_classes: list[int] | None = None
    arcgis_nodata: str | None = None
    augment: str | None = None
    sampling: str | None = None
    color_jitter: float | None = None
    scale_jitter: float | None = None
    ema: float | None = None  # decay of the weight average; 0: off
    patience: int | None = None
    monitor: str | None = None
    device: str | None = None
    amp: bool | None = None
    workers: int | None = None
    seed: int | None = None
    time_limit: float | str | None = None  # seconds, or a duration such as "15m"
    resume: str | None = None
    init: str | None = None
    overwrite: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        opt = "--" + name.replace("_", "-")
        raise UsageError(f"{opt} must be one of {', '.join(choices)}, got {value!r}")


def parse_lr(value) -> float | str:
    """``auto`` or a positive float."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        lr = float(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--lr must be 'auto' or a positive number, got {value!r}") from exc
    if not lr > 0 or lr != lr:
        raise UsageError(f"--lr must be 'auto' or a positive number, got {value!r}")
    return lr


def resolve(cfg: TrainConfig, saved: dict | None = None) -> TrainConfig:
    """Fill defaults (or a checkpoint's saved options) into ``cfg`` and validate them."""
    out = TrainConfig(**{f.name: getattr(cfg, f.name) for f in fields(TrainConfig)})
    if saved is not None:
        for key, old in saved.items():
            if key in ("chips_dirs", "output", "resume", "overwrite", "extra") or not hasattr(
                out, key
            ):
                continue
            new = getattr(out, key)
            if new is None or (key == "lr" and _norm(new) == "auto"):
                setattr(out, key, old)
            elif key not in RESUMABLE_CHANGES and _norm(new) != _norm(old):
                opt = "--" + key.replace("_", "-")
                what = "a different architecture" if key in ARCH_KEYS else "different options"
                raise UsageError(
                    f"the checkpoint was trained with {what} ({opt} {_show(old)}, not {_show(new)}); "
                    f"drop {opt} to resume it, or start a new run without --resume"
                )
    patience_given = bool(out.patience)  # early stopping asked for
    for key, value in DEFAULTS.items():
        # Early stopping asked for under a time limit watches the default score.
        timed = out.time_limit is not None and not (key == "monitor" and patience_given)
        if timed and key in TIME_LIMIT_DEFAULTS:
            value = TIME_LIMIT_DEFAULTS[key]
        if getattr(out, key) is None:
            setattr(out, key, value)
    _choice("optimizer", out.optimizer, OPTIMIZERS)
    out.lr = parse_lr(LR_DEFAULTS[out.optimizer] if out.lr is None else out.lr)
    _choice("schedule", out.schedule, SCHEDULES)
    _choice("loss", out.loss, LOSSES)
    _choice("class_weights", out.class_weights, CLASS_WEIGHTS)
    _choice("augment", out.augment, AUGMENTS)
    _choice("sampling", out.sampling, SAMPLINGS)
    _choice("monitor", out.monitor, MONITORS)
    _choice("arcgis_nodata", out.arcgis_nodata, NODATA_CHOICES)
    if out.monitor == "last" and out.patience:
        if patience_given:
            raise UsageError(
                "--patience stops when the validation score stops improving, but --monitor "
                "last keeps the final weights whatever the score; drop one of them"
            )
        out.patience = 0
    for key, low in (("epochs", 1), ("batch_size", 1), ("patience", 0), ("workers", 0)):
        if getattr(out, key) is not None and int(getattr(out, key)) < low:
            raise UsageError(f"--{key.replace('_', '-')} must be >= {low}, got {getattr(out, key)}")
    if out.time_limit is not None:
        try:
            out.time_limit = parse_duration(out.time_limit)
        except ValueError as exc:
            raise UsageError(f"--time-limit: {exc}") from exc
    if not 0 <= float(out.color_jitter) <= 1:
        raise UsageError(f"--color-jitter must be between 0 and 1, got {out.color_jitter}")
    if not 0 <= float(out.scale_jitter) <= 3:
        raise UsageError(f"--scale-jitter must be between 0 and 3, got {out.scale_jitter}")
    if not 0 <= float(out.ema) < 1:
        raise UsageError(f"--ema must be at least 0 and less than 1 (0: off), got {out.ema}")
    out.ignore_classes = sorted({int(v) for v in out.ignore_classes or []})
    if any(not 0 <= v <= 254 for v in out.ignore_classes):
        raise UsageError(f"--ignore-classes are class values 0..254, got {out.ignore_classes}")
    return out


def device_defaults(cfg: TrainConfig, device_type: str, checkpoint_arch: dict | None) -> None:
    """Fill the options whose default depends on the device, in place.

    Architecture options left unset take a resumed checkpoint's own, else
    :data:`CPU_ARCH_DEFAULTS` when training on a CPU (the model's defaults fill the rest); the
    batch size (a resumed run's comes from its saved options) is :data:`CPU_BATCH_SIZE` on a
    CPU, else :data:`BATCH_SIZE`.
    """
    if cfg.batch_size is None:
        cfg.batch_size = CPU_BATCH_SIZE if device_type == "cpu" else BATCH_SIZE
    for key in ARCH_KEYS:
        if getattr(cfg, key) is not None:
            continue
        if checkpoint_arch is not None and key in checkpoint_arch:
            setattr(cfg, key, checkpoint_arch[key])
        elif device_type == "cpu" and key in CPU_ARCH_DEFAULTS:
            setattr(cfg, key, CPU_ARCH_DEFAULTS[key])


def epoch_label(epoch: int, epochs: int) -> str:
    """``epoch 3/20``, or ``epoch 3`` when a time limit, not ``--epochs``, bounds the run."""
    return f"epoch {epoch}" + (f"/{epochs}" if epochs < TIME_LIMIT_DEFAULTS["epochs"] else "")


def _norm(v):
    if isinstance(v, list | tuple):
        return [_norm(x) for x in v]
    if isinstance(v, str):
        # "1e-3" on the command line and 0.001 saved in the checkpoint are the same value.
        try:
            return float(v)
        except ValueError:
            return v.strip().lower()
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return v


def _show(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)


def saved_options(cfg: TrainConfig, lr: float) -> dict:
    """The resolved options as saved in config.yaml, the model file and the checkpoint:
    ``--lr auto`` is replaced by the rate it chose, so ``-c config.yaml`` repeats the run."""
    d = cfg.to_dict()
    for key in ("output", "resume", "overwrite", "extra"):
        d.pop(key, None)
    d["lr"] = float(lr)
    d["chips_dirs"] = [str(p) for p in d["chips_dirs"]]
    return d
