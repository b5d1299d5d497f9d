"""Ctrl-C that cannot be lost.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT
arrives. When that is a callback whose exceptions Python ignores, the interrupt is lost and
the command carries on: ``os.fork``'s at-fork handlers are such callbacks, and they run each
time a DataLoader starts its worker processes. Inside :func:`sigint_never_lost` the signal
also sets a flag, and :func:`raise_if_interrupted`, called at safe points (after every
training batch and epoch), raises ``KeyboardInterrupt`` again if it was swallowed.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_pending = threading.Event()


def _on_sigint(signum, frame) -> None:
    _pending.set()
    raise KeyboardInterrupt


@contextmanager
def sigint_never_lost() -> Iterator[None]:
    """Within the block, remember Ctrl-C for :func:`raise_if_interrupted`.

    Only in the main thread, and only where SIGINT has Python's default handler (a process
    started with SIGINT ignored, e.g. by ``nohup``, keeps ignoring it).
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _pending.clear()
    hook = sys.unraisablehook

    def quiet(unraisable) -> None:
        # The swallowed Ctrl-C is raised again; its "Exception ignored in" report is noise.
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and _pending.is_set()):
            hook(unraisable)

    sys.unraisablehook = quiet
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook = hook
        _pending.clear()


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C arrived inside :func:`sigint_never_lost`."""
    if _pending.is_set():
        raise KeyboardInterrupt


def silence_interrupted_finalizers() -> None:
    """For the rest of the process, drop the "Exception ignored in" reports of finalizers that
    fail with ``AttributeError`` or ``KeyboardInterrupt``.

    Ctrl-C can stop an object halfway through its ``__init__`` (torch's DataLoader iterator,
    while it forks its workers); its ``__del__`` then reads attributes that were never set
    and Python prints that failure, with a traceback, when the object is collected after the
    command has reported the interrupt. Only for a command that is about to exit.
    """
    hook = sys.unraisablehook

    def quiet(unraisable) -> None:
        if not isinstance(unraisable.exc_value, AttributeError | KeyboardInterrupt):
            hook(unraisable)

    sys.unraisablehook = quiet
