"""Defaults of ``geopsp train`` that depend on the time limit and the device."""

from __future__ import annotations

import pytest

from geopsp.core.errors import UsageError
from geopsp.train.config import (
    BATCH_SIZE,
    CPU_ARCH_DEFAULTS,
    CPU_BATCH_SIZE,
    DEFAULTS,
    TIME_LIMIT_DEFAULTS,
    TrainConfig,
    device_defaults,
    resolve,
)


def _cfg(**kw) -> TrainConfig:
    return resolve(TrainConfig(["chips"], "out", **kw))


def test_a_time_limit_lifts_the_epoch_cap_and_early_stopping():
    cfg = _cfg(time_limit="2m")
    assert cfg.time_limit == 120
    assert (cfg.epochs, cfg.patience, cfg.monitor) == (TIME_LIMIT_DEFAULTS["epochs"], 0, "last")
    assert cfg.epochs >= 10_000  # never the bound of a timed run in practice
    cfg = _cfg(time_limit="2m", epochs=7, patience=2)
    # Early stopping asked for: it watches the validation mIoU, and keeps the best epoch.
    assert (cfg.epochs, cfg.patience, cfg.monitor) == (7, 2, "miou")
    assert _cfg(time_limit="2m", patience=0).monitor == "last"
    untimed = _cfg()
    assert (untimed.epochs, untimed.patience) == (DEFAULTS["epochs"], DEFAULTS["patience"])
    assert untimed.monitor == "miou"


def test_monitor_last_turns_off_default_early_stopping_and_refuses_given_patience():
    assert _cfg(monitor="last").patience == 0
    with pytest.raises(UsageError, match="--patience .* --monitor last"):
        _cfg(monitor="last", patience=3)


def test_the_default_learning_rate_depends_on_the_optimizer():
    assert _cfg().lr == 1e-3
    assert _cfg(optimizer="sgd").lr == 1e-2
    assert _cfg(lr="auto").lr == "auto"
    assert _cfg(optimizer="sgd", lr=0.05).lr == 0.05


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_architecture_and_batch_defaults_follow_the_device(device):
    cfg = _cfg()
    assert cfg.batch_size is None  # left to the device
    device_defaults(cfg, device, None)
    if device == "cpu":
        assert (cfg.output_stride, cfg.pointrend) == (16, False)
        assert CPU_ARCH_DEFAULTS == {"output_stride": 16, "pointrend": False}
        assert cfg.batch_size == CPU_BATCH_SIZE == 16
    else:  # the model's own defaults (output stride 8, PointRend) apply
        assert (cfg.output_stride, cfg.pointrend) == (None, None)
        assert cfg.batch_size == BATCH_SIZE == 8
    assert cfg.decoder is None and cfg.backbone is None


def test_a_given_or_resumed_batch_size_wins_over_the_device_default():
    cfg = _cfg(batch_size=4)
    device_defaults(cfg, "cpu", None)
    assert cfg.batch_size == 4
    cfg = resolve(TrainConfig(["chips"], "out"), saved={"batch_size": 8})
    device_defaults(cfg, "cpu", None)
    assert cfg.batch_size == 8  # the checkpoint's, not the CPU's 16
    with pytest.raises(UsageError, match="--batch-size must be >= 1"):
        _cfg(batch_size=0)


def test_given_options_and_a_resumed_architecture_win_over_the_cpu_defaults():
    cfg = _cfg(output_stride=8, pointrend=True)
    device_defaults(cfg, "cpu", None)
    assert (cfg.output_stride, cfg.pointrend) == (8, True)
    cfg = _cfg()
    saved = {"backbone": "resnet18", "output_stride": 8, "pyramid_sizes": [1, 3, 5, 6],
             "decoder": "fpn", "pointrend": True}  # fmt: skip
    device_defaults(cfg, "cpu", saved)
    assert (cfg.output_stride, cfg.pointrend, cfg.decoder) == (8, True, "fpn")


def test_cli_refuses_patience_with_monitor_last(chip_folder, tmp_path):
    from click.testing import CliRunner

    from geopsp.cli.main import cli

    out = tmp_path / "run"
    res = CliRunner().invoke(
        cli, ["train", str(chip_folder()), "-o", str(out), "--monitor", "last", "--patience", "3"]
    )
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "--patience" in errors[0] and "--monitor last" in errors[0]
    assert "Traceback" not in res.output and not out.exists()
