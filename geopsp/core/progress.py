"""Progress bars on stderr, silenced by ``-q`` (library callers pass ``progress=False``)."""

from __future__ import annotations

import sys
from typing import Any


def bar(total: int | float | None, desc: str, enabled: bool = True, unit: str = "it", **kw: Any):
    """Return a tqdm progress bar writing to stderr (a no-op bar when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
        **kw,
    )
