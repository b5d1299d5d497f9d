"""Exceptions raised by the geopsp library.

The CLI turns a :class:`GeopspError` into one line on stderr and its ``exit_code``
(1 for runtime problems, 2 for bad usage); the library itself never exits or prints.
"""

from __future__ import annotations


class GeopspError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 1


class UsageError(GeopspError):
    """An option value or combination of options is invalid (exit code 2)."""

    exit_code = 2


class InputError(GeopspError):
    """An input file is missing, unreadable or unsuitable."""


class OutputError(GeopspError):
    """An output cannot be written (exists without --overwrite, not writable, disk full...)."""


class ModelFileError(GeopspError):
    """A model file is missing, corrupt, foreign or of an unsupported version."""


class ResourceError(GeopspError):
    """Out of memory (host or GPU) or a requested device is unavailable."""


class RankFailed(GeopspError):
    """Another torchrun rank failed; the message is that rank's error."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying what the interrupted run kept for later and how to continue it.

    A KeyboardInterrupt, so code that handles Ctrl-C handles it; the CLI names ``kept``
    instead of saying that partial outputs were removed.
    """

    def __init__(self, kept: list[str], hint: str) -> None:
        super().__init__(f"kept {', '.join(kept)}; {hint}")
        self.kept, self.hint = list(kept), hint
