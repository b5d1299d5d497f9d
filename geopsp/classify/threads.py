"""The threads of the classify pipeline: stages that stop together, and queues and waits
that give up as soon as any stage has failed (the shared stop flag is set)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

POLL = 0.1  # seconds between looks at the stop flag


class Stopped(Exception):
    """Another stage failed; this one stops quietly."""


def put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise Stopped
        try:
            q.put(item, timeout=POLL)
            return
        except queue.Full:
            continue


def get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise Stopped
        try:
            return q.get(timeout=POLL)
        except queue.Empty:
            continue


class Stage(threading.Thread):
    """A daemon thread that records its exception and stops the whole pipeline on failure."""

    def __init__(self, name: str, fn: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.fn, self.stop = fn, stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.fn()
        except Stopped:
            pass
        except BaseException as exc:  # re-raised in the main thread
            self.error = exc
            self.stop.set()


@dataclass
class RowDone:
    """Marker after the last block of block row ``row`` (the writer commits progress)."""

    row: int


class Commits:
    """Block rows whose progress the writer has committed (resumable runs)."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.cond = threading.Condition()

    def done(self, row: int) -> None:
        with self.cond:
            self.last = row
            self.cond.notify_all()

    def wait(self, row: int, stop: threading.Event) -> None:
        with self.cond:
            while self.last < row:
                if stop.is_set():
                    raise Stopped
                self.cond.wait(POLL)


def check(stop: threading.Event) -> None:
    """Raise :class:`Stopped` when another stage has failed."""
    if stop.is_set():
        raise Stopped
