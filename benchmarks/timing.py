"""What several benchmark scripts share: a median timing, and a count argument of at least 1."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable


def median_seconds(
    work: Callable[[], object], rounds: int, warmup: int = 3, calls: int = 1
) -> float:
    """Median over ``rounds`` of the mean time of ``calls`` calls, after ``warmup`` untimed
    calls."""
    for _ in range(warmup):
        work()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        times.append((time.perf_counter() - started) / calls)
    return statistics.median(times)


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1, else argparse's one-line error."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)
