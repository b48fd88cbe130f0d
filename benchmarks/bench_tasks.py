"""Task functions (and actor classes) run by every contender.

They live in a real module (not ``__main__``) so that multiprocessing, ProcessPoolExecutor,
joblib, dask and Ray pickle them by reference; the harness puts this directory on the
children's ``PYTHONPATH`` so every library's workers can import them.
"""

from __future__ import annotations

import importlib
import time
from typing import Any


def noop(i: int) -> int:
    """The no-op task: returns its argument (so results can be checked)."""
    return i


# ---------------------------------------------------------------------------------------------
# Object-store benchmarks (issue 3). ``module`` is "raylite" or "ray": the task calls that
# library's ``get`` on a ref it received inside a list (so the library did not resolve it).

FANOUT_ARRAY: Any = None
"""multiprocessing's fan-out: set before its fork pool starts, so workers inherit the array."""


def slice_sum(arr: Any, lo: int, hi: int) -> float:
    """Sums ``arr[lo:hi]`` (the array arrives as a task argument)."""
    return float(arr[lo:hi].sum())


def global_slice_sum(lo: int, hi: int) -> float:
    """Sums ``FANOUT_ARRAY[lo:hi]`` (the array inherited through fork)."""
    return float(FANOUT_ARRAY[lo:hi].sum())


def timed_get(refs: list[Any], module: str) -> tuple[float, int]:
    """Microseconds of ``get(refs[0])`` in this worker, and the bytes of what it got."""
    get = importlib.import_module(module).get
    start = time.perf_counter()
    value = get(refs[0])
    elapsed = time.perf_counter() - start
    return elapsed * 1e6, int(value.nbytes)


def memory_growth(refs: list[Any], module: str) -> tuple[float, float, float]:
    """This worker's growth in USS and in anonymous memory (MB) across ``get(refs[0])`` and a
    ``sum()`` that reads every page, and that sum (so the caller can check the read)."""
    import psutil

    get = importlib.import_module(module).get
    process = psutil.Process()
    uss, anon = process.memory_full_info().uss, _anonymous_bytes()
    value = get(refs[0])
    total = float(value.sum())
    uss_growth = process.memory_full_info().uss - uss
    anon_growth = _anonymous_bytes() - anon
    del value
    return uss_growth / 2**20, anon_growth / 2**20, total


def _anonymous_bytes() -> int:
    """``Anonymous:`` of /proc/self/smaps_rollup: private heap/stack pages, no file or shmem."""
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Anonymous: line in /proc/self/smaps_rollup")


# ---------------------------------------------------------------------------------------------
# Actor benchmarks (issue 4): plain classes, made actors by ``ray.remote(cls)`` in the
# contender (raylite or Ray), as ``@ray.remote`` on the class would.


class Counter:
    """The 1,000-actor benchmark's actor: state that each call changes."""

    def __init__(self) -> None:
        self.count = 0

    def incr(self) -> int:
        self.count += 1
        return self.count


class Pinger:
    """A plain (sync) actor: one call at a time on its thread."""

    def ping(self) -> None:
        return None


class AsyncPinger:
    """An async actor: its calls run on an event loop in the actor."""

    async def ping(self) -> None:
        return None
