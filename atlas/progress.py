"""Progress for long work: a rich bar with rate and ETA on a terminal, a log line (logger
``atlas.progress``, INFO; the CLI sends it to stderr) every few seconds (or 10 %) otherwise, so CI
logs stay short."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class _LogProgress:
    def __init__(self, description: str, total: float | None, unit: str, every_s: float = 5.0):
        self.description, self.total, self.unit, self.every_s = description, total, unit, every_s
        self.done = 0.0
        self.start = self.last = time.monotonic()
        self.last_fraction = 0.0

    def advance(self, n: float = 1) -> None:
        self.done += n
        now = time.monotonic()
        fraction = self.done / self.total if self.total else 0.0
        if (
            now - self.last >= self.every_s
            or fraction - self.last_fraction >= 0.1
            or (self.total and self.done >= self.total)
        ):
            self.last, self.last_fraction = now, fraction
            self._print(now)

    def _print(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            done = f"{self.done:,.0f}/{self.total:,.0f} {self.unit}"
            msg = f"{self.description}: {done} ({rate:,.1f} {self.unit}/s, ETA {eta:,.0f} s)"
        else:
            msg = f"{self.description}: {self.done:,.0f} {self.unit} ({rate:,.1f} {self.unit}/s)"
        log.info(msg)


class _RichProgress:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def advance(self, n: float = 1) -> None:
        self.progress.advance(self.task, n)


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "it") -> Iterator:
    """``with progress("layers", total=12) as p: ... p.advance()``."""
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        class RateColumn(ProgressColumn):
            def render(self, task):
                return f"{task.speed or 0:,.1f} {unit}/s"

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ) as bar:
            yield _RichProgress(bar, bar.add_task(description, total=total))
    else:
        yield _LogProgress(description, total, unit)


def track(items: Iterable[T], description: str, total: float | None = None, unit: str = "it") -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, unit) as p:
        for item in items:
            yield item
            p.advance()
