"""Ctrl-C swallowed where Python ignores exceptions still stops the command."""

from __future__ import annotations

import gc
import os
import signal
import sys

import pytest

from geopsp.core.interrupts import (
    raise_if_interrupted,
    sigint_never_lost,
    silence_interrupted_finalizers,
)


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_safe_point():
    with sigint_never_lost():
        raise_if_interrupted()  # nothing pending: no-op
        swallowed = False
        try:  # as in an at-fork handler, whose exceptions Python ignores
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):  # the handler runs at the next bytecode boundary
                pass
        except KeyboardInterrupt:
            swallowed = True
        assert swallowed
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    raise_if_interrupted()  # cleared on leaving the block


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sigint_never_lost():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


class _HalfBuilt:
    """Like a DataLoader iterator stopped by Ctrl-C inside ``__init__``: ``__del__`` reads an
    attribute that was never set (or fails otherwise)."""

    def __init__(self, error=None) -> None:
        self.error = error

    def __del__(self) -> None:
        if self.error is not None:
            raise self.error
        self._shutdown  # noqa: B018  (never set)


def test_after_ctrl_c_half_built_objects_die_quietly():
    reported = []
    saved = sys.unraisablehook
    sys.unraisablehook = lambda u: reported.append(type(u.exc_value))
    try:
        silence_interrupted_finalizers()
        _HalfBuilt()
        _HalfBuilt(KeyboardInterrupt())
        gc.collect()
        assert reported == []
        _HalfBuilt(ValueError("a real bug"))  # other failures are still reported
        gc.collect()
        assert reported == [ValueError]
    finally:
        sys.unraisablehook = saved
