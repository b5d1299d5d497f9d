"""What ``geopsp train`` returns: :class:`TrainResult`, collected from a finished session."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from geopsp.core.runtime import Runtime
from geopsp.train.outputs import clean
from geopsp.train.setup import Session


@dataclass
class TrainResult:
    """What a training run produced."""

    output: Path
    model_path: Path
    monitor: str
    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    lr: float
    lr_auto: bool
    device: str
    world_size: int
    amp: str
    batch_size: int
    steps: int = 0  # optimizer steps trained (earlier processes of a resumed run included)
    elapsed: float = 0.0  # seconds of training, earlier processes included
    time_limit: float | None = None
    history: list[dict] = field(default_factory=list)
    per_class: list[dict] = field(default_factory=list)
    best_metrics: dict = field(default_factory=dict)


def amp_name(s: Session) -> str:
    """``bfloat16``, ``float16`` or ``off``: the mixed precision the session trains in."""
    return str(s.accel.amp_dtype).replace("torch.", "") if s.accel.amp else "off"


def collect_result(cfg, s: Session, rt: Runtime, out: Path, stopped: bool, clock) -> TrainResult:
    """The :class:`TrainResult` of a finished (or early-stopped) run, from its session."""
    st = s.state
    best = st.best_metrics or {}
    return TrainResult(
        output=out,
        model_path=out / "model.safetensors",
        monitor=cfg.monitor,
        best_epoch=int(st.best_epoch or 0),
        best_score=float(st.best_score) if st.best_score is not None else float("nan"),
        epochs_run=int(st.epoch),
        stopped_early=stopped,
        lr=float(s.lr),
        lr_auto=bool(s.lr_auto),
        device=str(rt.device),
        world_size=rt.world,
        amp=amp_name(s),
        batch_size=s.batch_size,
        steps=int(s.scheduler.last_epoch),
        elapsed=clock.elapsed(),
        time_limit=cfg.time_limit,
        history=list(st.history),
        per_class=clean(best.get("per_class", [])),
        best_metrics=clean({k: v for k, v in best.items() if k != "per_class"}),
    )
