"""``geopsp train --time-limit``: fit the number of optimizer steps to a wall-clock budget.

The run's clock starts when training is called (opening the chips, building the model and the
``--lr auto`` range test count) and, with ``--resume``, carries on from the time the checkpoint
had already spent. After a few steps the cost of a step, of a validation pass and of writing an
epoch's outputs are measured, and :func:`plan_steps` picks the largest total number of steps
whose training, validations (one per epoch, and one after a partial last epoch) and outputs
end within the limit. The learning-rate schedule is built for that total, which is re-fitted
every few percent of the run and after every epoch from the costs measured so far.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from geopsp.core.durations import format_duration

log = logging.getLogger(__name__)

# Aim a little under the limit: step times wander on a busy machine and the process still has
# to exit after the last file is written.
TARGET = 0.98
WARMUP_STEPS = 1  # the first step of a process allocates buffers: not a typical step
MEASURE_STEPS = 3  # steps timed before the first plan
REPLAN_FRACTION = 0.05  # re-fit the plan every 5 % of the planned steps
# A re-fit closer than this to the current total keeps it: the schedule does not twitch with
# the noise of the step timings.
KEEP_WITHIN = 0.02
DEFAULT_OUTPUTS_S = 2.0  # writing the outputs once, until measured
# The model file and last.ckpt are written at most this often (and after the last epoch):
# see geopsp.train.saving.
SAVE_EVERY_S = 60.0


@dataclass
class Costs:
    """Measured (or estimated) seconds of the parts of a run."""

    step: float  # one optimizer step, data loading included
    val: float  # one validation pass
    outputs: float = DEFAULT_OUTPUTS_S  # writing the outputs once (model, last.ckpt, plots)
    final: float = DEFAULT_OUTPUTS_S  # the end of the run (val_preview.png)


def plan_steps(
    remaining: float, costs: Costs, in_epoch: int, steps_per_epoch: int, max_steps: int
) -> int:
    """How many more optimizer steps fit in ``remaining`` seconds.

    Running ``n`` more steps from ``in_epoch`` steps into the current epoch costs ``n`` steps,
    one validation for every epoch that ends (a partial last epoch is validated too), one write
    of the outputs per :data:`SAVE_EVERY_S` seconds of steps (at most one
    per epoch, at least the last one), and the end of the run once.

    Parameters
    ----------
    remaining : float
        Seconds left in the budget.
    costs : Costs
        Seconds per step, per validation, per epoch's outputs and for the end of the run.
    in_epoch : int
        Steps already done in the current epoch (0 at an epoch's start).
    steps_per_epoch : int
        Steps of a full epoch.
    max_steps : int
        At most this many more steps (what ``--epochs`` leaves).

    Returns
    -------
    int
        Between 0 and ``max_steps``; 0 when not even one step and its validation fit.
    """
    spe = max(int(steps_per_epoch), 1)

    def cost(n: int) -> float:
        validations = math.ceil((in_epoch + n) / spe) if n else 0
        # The large files are written at most every SAVE_EVERY_S seconds and after the last
        # epoch, not after every validation.
        saves = min(validations, 1 + int(n * costs.step / SAVE_EVERY_S))
        return n * costs.step + validations * costs.val + saves * costs.outputs + costs.final

    lo, hi = 0, max(int(max_steps), 0)  # cost() grows with n: the largest n that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= remaining:
            lo = mid
        else:
            hi = mid - 1
    return lo


class TimeBudget:
    """A run's wall clock against its limit, and the step costs measured on the way.

    Parameters
    ----------
    limit : float
        Seconds the whole run may take.
    spent : float
        Seconds already spent before this process (a resumed run's checkpoint).
    clock : callable
        Seconds from an arbitrary origin (injected by tests).
    """

    def __init__(
        self,
        limit: float | None,
        spent: float = 0.0,
        clock: Callable[[], float] | None = None,
        start: float | None = None,
        prior: dict | None = None,
    ) -> None:
        self.limit = math.inf if limit is None else float(limit)
        self.spent = float(spent)
        self.clock = clock or time.monotonic
        self.start = self.clock() if start is None else float(start)
        self.step_time = 0.0  # seconds of timed steps
        self.step_count = 0  # timed steps
        self.seen = 0  # steps of this process
        # What an earlier process measured (a resumed run) until this one has measured its own.
        prior = prior or {}
        self.prior_step: float | None = prior.get("step")
        # Validation and output times are averaged: one slow epoch on a busy machine must not
        # shrink the rest of the plan.
        self._val = [float(prior["val"]), 1] if "val" in prior else [0.0, 0]
        self._outputs = [float(prior["outputs"]), 1] if "outputs" in prior else [0.0, 0]
        self.val_batch_s: float | None = prior.get("val_batch")

    @property
    def val_s(self) -> float | None:
        """Mean seconds of a validation pass (None until one is timed)."""
        return self._val[0] / self._val[1] if self._val[1] else None

    @property
    def outputs_s(self) -> float:
        """Mean seconds of writing one epoch's files (a default until timed)."""
        return self._outputs[0] / self._outputs[1] if self._outputs[1] else DEFAULT_OUTPUTS_S

    def add_val(self, seconds: float) -> None:
        self._val = [self._val[0] + seconds, self._val[1] + 1]

    def add_outputs(self, seconds: float) -> None:
        self._outputs = [self._outputs[0] + seconds, self._outputs[1] + 1]

    def measured(self) -> dict:
        """The costs to keep in ``last.ckpt`` for a resumed run's first plan."""
        out = {"step": self.step_cost(), "val": self.val_s, "outputs": self.outputs_s}
        out["val_batch"] = self.val_batch_s
        return {k: float(v) for k, v in out.items() if v is not None}

    def step_cost(self) -> float | None:
        if self.step_count:
            return self.step_time / self.step_count
        return self.prior_step

    def elapsed(self) -> float:
        """Seconds of the run so far, earlier processes included."""
        return self.spent + self.clock() - self.start

    def remaining(self) -> float:
        """Seconds left before the target end (a little under the limit)."""
        return self.limit * TARGET - self.elapsed()

    def add_step(self, seconds: float) -> None:
        """Time one step (this process's first ones only warm up and are not counted)."""
        self.seen += 1
        if self.seen > WARMUP_STEPS:
            self.step_time += seconds
            self.step_count += 1

    def costs(self, val_batches: int) -> Costs:
        """The costs measured so far (validation from one batch until a full pass is timed)."""
        step = self.step_cost() or 0.0
        batch = self.val_batch_s or 0.0
        val = self.val_s if self.val_s is not None else batch * max(val_batches, 1)
        # The end of the run writes val_preview.png: a few chips' forward and one figure.
        return Costs(step=step, val=val, outputs=self.outputs_s, final=self.outputs_s + batch)


class Plan:
    """The run's planned total of optimizer steps, re-fitted to the budget as costs are measured.

    ``state.total_steps`` is what the learning-rate schedule reads, so every re-fit reshapes
    the rest of the schedule. ``agree`` makes every process of a distributed run use the
    first process's total (the stop must happen at the same step everywhere).
    """

    def __init__(self, budget: TimeBudget, state, steps_per_epoch: int, val_batches: int,
                 epochs: int, agree: Callable[[float], float] = float) -> None:  # fmt: skip
        self.budget = budget
        self.state = state
        self.spe = max(int(steps_per_epoch), 1)
        self.val_batches = val_batches
        self.epochs = int(epochs)
        self.agree = agree
        self.fitted = False  # after the first plan from measured steps

    def refit(self, done: int, epoch: int, in_epoch: int) -> int:
        """Plan from step ``done`` of the run, ``in_epoch`` steps into epoch ``epoch``."""
        left = (self.epochs - epoch) * self.spe + (self.spe - in_epoch)
        costs = self.budget.costs(self.val_batches)
        n = plan_steps(self.budget.remaining(), costs, in_epoch, self.spe, left)
        if done == 0:
            n = max(n, 1)  # a model needs at least one step and its validation
        total = int(self.agree(float(done + n)))
        old = self.state.total_steps
        # A small change keeps the total, also once the schedule has run to its end: a few
        # more steps there would train at the schedule's floor and buy nothing.
        if done < total and abs(total - old) <= KEEP_WITHIN * old:
            total = old
        if total != old:
            log.debug(
                "time limit: %d steps planned (%.3g s/step, validation %.3g s, %.0f s left)",
                total, costs.step, costs.val, self.budget.remaining(),
            )  # fmt: skip
        self.state.total_steps = total
        self.fitted = self.fitted or self.budget.step_count >= MEASURE_STEPS
        return total


class BudgetedLoader:
    """The training loader of one epoch, cut short when the run's planned steps are done.

    Each step is timed from one batch handed out to the next (data loading included); the
    plan is re-fitted once :data:`MEASURE_STEPS` steps are timed, then every
    :data:`REPLAN_FRACTION` of the planned total.
    """

    def __init__(self, loader, plan: Plan, done: int, epoch: int) -> None:
        self.loader = loader
        self.plan = plan
        self.done = done  # the run's steps before this epoch
        self.epoch = epoch
        self.steps = 0
        self.last_fit = done

    def __len__(self) -> int:
        return max(0, min(len(self.loader), self.plan.state.total_steps - self.done))

    def __iter__(self) -> Iterator:
        clock = self.plan.budget.clock
        prev = None
        for batch in self.loader:
            if prev is not None:  # the previous batch's step has run
                self._stepped(clock() - prev)
            if self.done + self.steps >= self.plan.state.total_steps:
                return
            prev = clock()
            yield batch
        if prev is not None:
            self.steps += 1  # the epoch's last step (not timed: nothing follows it)

    def _stepped(self, seconds: float) -> None:
        self.steps += 1
        run_step = self.done + self.steps
        budget = self.plan.budget
        budget.add_step(seconds)
        every = max(1, round(REPLAN_FRACTION * self.plan.state.total_steps))
        first = not self.plan.fitted and budget.step_count >= MEASURE_STEPS
        if first or (self.plan.fitted and run_step - self.last_fit >= every):
            self.plan.refit(run_step, self.epoch, self.steps)
            self.last_fit = run_step


def start_plan(limit: float | None, s, rt, clock: TimeBudget, epochs: int) -> Plan | None:
    """With a time limit: the step plan of session ``s``, after timing one validation batch
    (so even a budget shorter than one epoch knows what its closing validation costs).

    Raises
    ------
    UsageError
        When a resumed run's checkpoint has already spent its whole limit.
    """
    from geopsp.core.errors import UsageError
    from geopsp.core.runtime import broadcast_float
    from geopsp.train.loop import validate
    from geopsp.train.outputs import warm_up_plots

    if limit is None:
        return None
    if clock.spent >= clock.limit * TARGET:
        raise UsageError(
            f"the run has already spent {format_duration(clock.spent)} of its "
            f"{format_duration(clock.limit)} --time-limit; give a larger --time-limit to train more"
        )
    if rt.is_main:
        warm_up_plots()
    t0 = time.monotonic()
    batch = itertools.islice(s.data.val_loader, 1)
    validate(s.plain, batch, s.criterion, len(s.classes), s.accel, rt)
    clock.val_batch_s = broadcast_float(time.monotonic() - t0, rt)

    def agree(x: float) -> float:
        return broadcast_float(x, rt)

    plan = Plan(clock, s.state, len(s.data.train_loader), len(s.data.val_loader), epochs, agree)
    if clock.step_cost() is not None:  # a resumed run: plan from the checkpoint's costs
        plan.refit(int(s.scheduler.last_epoch), s.state.epoch + 1, 0)
    return plan
