"""Ctrl-C swallowed where Python ignores exceptions still stops the command."""

from __future__ import annotations

import os
import signal

import pytest

from geopsp.core.interrupts import raise_if_interrupted, sigint_never_lost


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
