"""``geopsp train --time-limit``: durations, the step plan from measured costs, resume, the CLI."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from geopsp.cli.main import cli
from geopsp.core.durations import parse_duration
from geopsp.core.errors import UsageError
from geopsp.train.budget import (
    MEASURE_STEPS,
    SAVE_EVERY_S,
    TARGET,
    WARMUP_STEPS,
    BudgetedLoader,
    Costs,
    Plan,
    TimeBudget,
    plan_steps,
    start_plan,
)
from geopsp.train.checkpoints import TrainState
from geopsp.train.config import TrainConfig, resolve
from geopsp.train.optim import range_test_steps

TINY_ARGS = [
    "--backbone", "tu-mobilenetv3_small_050", "--encoder-weights", "none", "--output-stride",
    "16", "--no-pointrend", "--decoder", "upsample", "--batch-size", "4", "--device", "cpu",
]  # fmt: skip


class FakeClock:
    """Seconds that only move when a test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("600", 600), ("1.5h", 5400), ("1h30m", 5400),
     (" 20S ", 20), (45, 45), (2.5, 2.5), (".5m", 30)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "15x", "m", "-5", "0", "0s", "1h-5m", "nan", "inf"])
def test_parse_duration_refuses_what_is_not_a_positive_duration(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(1, 10**6), st.sampled_from([("s", 1), ("m", 60), ("h", 3600)]))
def test_parse_duration_units(n, unit):
    assert parse_duration(f"{n}{unit[0]}") == n * unit[1]


def test_plan_fills_whole_epochs_then_a_partial_one():
    # 10 steps of 1 s + validation 4 s = 14 s per epoch; the outputs (1 s) are written once
    # per SAVE_EVERY_S (60 s) of steps and at the end; the end costs 3 s.
    costs = Costs(step=1.0, val=4.0, outputs=1.0, final=3.0)
    # 100 s: 67 steps (67 s), 7 validations (28 s), 2 writes (2 s) and the end (3 s).
    assert SAVE_EVERY_S == 60.0
    assert plan_steps(100.0, costs, 0, 10, 10**6) == 67
    # --epochs bounds it; 3 epochs fit easily.
    assert plan_steps(100.0, costs, 0, 10, 30) == 30
    # Nothing fits: not even one step and its validation.
    assert plan_steps(8.0, costs, 0, 10, 10**6) == 0
    # 4 steps into an epoch, its validation is already owed: 6 more steps close it.
    assert plan_steps(3 + 6 + 5, costs, 4, 10, 10**6) == 6


@given(
    st.floats(0, 1e5), st.floats(1e-3, 10), st.floats(0, 100), st.floats(0, 10),
    st.integers(0, 50), st.integers(1, 50), st.integers(0, 10**5),
)  # fmt: skip
def test_plan_is_the_most_that_fits(remaining, step, val, outputs, in_epoch, spe, max_steps):
    in_epoch = in_epoch % spe
    costs = Costs(step=step, val=val, outputs=outputs, final=outputs)

    def cost(n):
        if not n:
            return 0
        validations = math.ceil((in_epoch + n) / spe)
        saves = min(validations, 1 + int(n * step / SAVE_EVERY_S))
        return n * step + validations * val + saves * outputs + outputs

    n = plan_steps(remaining, costs, in_epoch, spe, max_steps)
    assert 0 <= n <= max_steps
    assert n == 0 or cost(n) <= remaining + 1e-9
    assert n == max_steps or cost(n + 1) > remaining


def test_the_lr_range_test_fits_the_budget():
    assert range_test_steps(None, 5.0, 40) == 40  # no limit: the whole test
    assert range_test_steps(900.0, 0.5, 40) == 40  # 20 s of 90 allowed
    assert range_test_steps(900.0, 4.0, 40) == 22  # 10 % of the limit
    assert range_test_steps(60.0, 1.0, 40) == 10  # the fewest steps that sweep, 17 % of it
    assert range_test_steps(20.0, 1.0, 40) == 0  # no room: a fixed rate instead


def run_loader(limit, step_s, val_s, n_batches=10, epochs=1000, spent=0.0):
    """Train a fake run whose steps take ``step_s`` seconds of a fake clock, epoch by epoch
    as ``_fit`` does; returns (steps, epochs run, elapsed, the budget)."""
    clock = FakeClock()
    budget = TimeBudget(limit, spent=spent, clock=clock)
    budget.val_batch_s = val_s / 2
    state = TrainState(total_steps=n_batches * epochs)
    plan = Plan(budget, state, n_batches, 2, epochs)
    done, epoch = 0, 0
    for epoch in range(1, epochs + 1):
        for _batch in BudgetedLoader(list(range(n_batches)), plan, done, epoch):
            clock.now += step_s
            done += 1
        clock.now += val_s + budget.outputs_s  # validation and the epoch's files
        budget.add_val(val_s)
        if plan.refit(done, epoch + 1, 0) <= done:
            break
    clock.now += budget.outputs_s + budget.val_batch_s  # the preview
    return done, epoch, budget.elapsed(), budget


def test_the_steps_fit_the_budget_from_measured_step_times():
    done, epochs, elapsed, budget = run_loader(limit=300, step_s=0.5, val_s=3.0)
    assert budget.step_cost() == pytest.approx(0.5)
    assert 0.95 * 300 <= elapsed <= 300
    assert epochs >= 2 and done > MEASURE_STEPS + WARMUP_STEPS


def test_a_budget_shorter_than_one_epoch_ends_in_a_partial_validated_epoch():
    done, epochs, elapsed, _ = run_loader(limit=60, step_s=1.0, val_s=2.0, n_batches=500)
    assert epochs == 1 and 0 < done < 500
    assert 0.95 * 60 <= elapsed <= 60


@pytest.mark.parametrize(("spent", "total"), [(96.5, 100), (87.5, 110)])
def test_a_finished_schedule_is_extended_only_by_more_than_a_few_steps(spent, total):
    # 100 steps planned and done (the schedule is at its floor); time is left for 1 or 10
    # more 1 s steps. One more step would train at the floor: the run ends. Ten (10 %: the
    # machine got faster) stretch the schedule.
    clock = FakeClock()
    prior = {"step": 1.0, "val": 0.0, "outputs": 0.0}
    budget = TimeBudget(100.0, spent=spent, clock=clock, prior=prior)
    budget.val_batch_s = 0.0
    plan = Plan(budget, TrainState(total_steps=100), 10, 1, 1000)
    assert plan.refit(100, 11, 0) == total


def test_epochs_bound_the_run_when_they_fit():
    done, epochs, elapsed, _ = run_loader(limit=1000, step_s=0.1, val_s=1.0, epochs=3)
    assert (done, epochs) == (30, 3) and elapsed < 100


def test_resumed_run_keeps_the_remaining_budget(tmp_path):
    state = TrainState(epoch=2, total_steps=40, elapsed=250.0, time_limit=300.0)
    state.costs = {"step": 0.5, "val": 3.0, "outputs": 2.0, "val_batch": 1.5}
    ckpt = state.as_checkpoint()
    torch.save(ckpt, tmp_path / "state.pt")
    back = TrainState.from_checkpoint(torch.load(tmp_path / "state.pt", weights_only=True))
    assert (back.elapsed, back.time_limit, back.total_steps) == (250.0, 300.0, 40)
    clock = FakeClock()
    budget = TimeBudget(back.time_limit, back.elapsed, clock=clock, prior=back.costs)
    assert budget.remaining() == pytest.approx(300 * TARGET - 250)
    assert budget.step_cost() == 0.5  # the first plan of the resumed process
    # Without --time-limit the checkpoint's limit applies; a new one replaces it.
    saved = {"chips_dirs": ["c"], "time_limit": 300.0}
    assert resolve(TrainConfig(["c"], "o"), saved).time_limit == 300.0
    assert resolve(TrainConfig(["c"], "o", time_limit="10m"), saved).time_limit == 600.0
    # The rest of the run spends what is left, not a fresh limit.
    done, _, elapsed, _ = run_loader(limit=300, step_s=0.5, val_s=3.0, spent=250.0)
    assert 0.95 * 300 <= elapsed <= 300 and done < 100


def test_a_checkpoint_that_spent_its_limit_asks_for_a_larger_one():
    spent = TimeBudget(300.0, spent=299.0, clock=FakeClock())
    with pytest.raises(UsageError, match="larger --time-limit") as exc:
        start_plan(300.0, None, None, spent, epochs=20)
    assert exc.value.exit_code == 2
    assert start_plan(None, None, None, TimeBudget(None), epochs=20) is None  # no limit


@pytest.mark.parametrize("value", ["soon", "-3m", "0"])
def test_cli_refuses_a_bad_time_limit(value, tmp_path):
    res = CliRunner().invoke(cli, ["train", str(tmp_path), "-o", str(tmp_path / "o"),
                                   "--time-limit", value])  # fmt: skip
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "--time-limit" in errors[0] and "duration" in errors[0]
    assert "Traceback" not in res.output


def test_cli_run_ends_within_its_time_limit(chip_folder, tmp_path, one_torch_thread):
    chips = chip_folder(n=24)
    out = tmp_path / "run"
    limit = 20
    args = ["-q", "train", str(chips), "-o", str(out), *TINY_ARGS,
            "--time-limit", f"{limit}s"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    with open(out / "metrics.csv", newline="") as f:
        history = list(csv.DictReader(f))
    # The run's clock at the last validation, and what the command printed at the end
    # (best-model preview written): within the limit, with room for a loaded machine.
    assert 0 < float(history[-1]["elapsed"]) <= limit * 1.05 + 3
    line = next(ln for ln in res.output.splitlines() if ln.startswith("trained "))
    assert float(line.split(" in ")[1].split(" s")[0]) <= limit * 1.05 + 3
    assert int(history[-1]["steps"]) == int(line.split()[1])
    # The budget, not --epochs, ended it; the outputs of a finished run are all there.
    assert len(history) < 10000
    for name in ("model.safetensors", "last.ckpt", "metrics.csv", "curves.png",
                 "val_preview.png", "config.yaml"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert ckpt["time_limit"] == limit and 0 < ckpt["elapsed"] <= limit * 1.05 + 3
    # A timed run's model file holds its last weights (--monitor last), not a best epoch.
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    assert saved.keys() <= ckpt["model"].keys()
    assert all(torch.equal(saved[k], ckpt["model"][k]) for k in saved)
    assert all(row["best"] == "True" for row in history)
