"""Durations as users write them (``90s``, ``15m``, ``2h``, ``1h30m``) and as messages show them."""

from __future__ import annotations

import math
import re

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smh])")


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``15m``, ``2h``, ``1.5h`` or ``1h30m``.

    Raises
    ------
    ValueError
        When the text is not a positive duration (the message says what is expected).
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        try:
            seconds = float(s)
        except ValueError:
            parts = _PART.findall(s)
            if not parts or "".join(n + u for n, u in parts) != s:
                raise ValueError(
                    f"expected a duration such as 90s, 15m, 2h or plain seconds, got {text!r}"
                ) from None
            seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"the duration must be positive, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``90 s``, ``15.0 min`` or ``2.00 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
