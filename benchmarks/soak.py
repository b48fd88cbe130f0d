"""Load and soak (issue 8): a million tiny tasks, 100,000 actor calls and 10,000 puts/gets
of 1 MB in one ``init``, with memory that stays flat and a store that ends empty.

Usage: ``python benchmarks/soak.py [--scale 1.0] [--warmup 100000] [--cpus 2]``
(``make soak``). ``--scale 1.0`` is the issue's numbers; ``tests/test_soak.py`` runs the same
code at ``--scale 0.05`` in every CI run. Exit status 0: flat and empty; 1: not (each
problem is printed).

The three loads run one after another in one runtime::

    warm-up   N no-op tasks, unmeasured: fills bounded buffers (task history, pooled
              segments, the allocator's arenas) before the first checkpoint
    tasks     1,000,000 x noop(i) -> i, in waves of 10,000 refs (submit a wave, get it)
    actors    100,000 calls of Counter.add on 8 actors, in waves of 10,000
    store     10,000 x put(1 MB) + get in the driver (every 10th also read by a task),
              each ref dropped before the next put; then the store must hold nothing

Each load takes 11 checkpoints (at 0%, 10%, ..., 100% of its operations). A checkpoint
samples the USS of the driver (after ``gc.collect()``) and of every worker process (psutil),
and the store's books (``raylite.util.state.list_objects``): how many objects are alive and
their bytes.

Flat means: from a load's midpoint (50%) to its end, the driver grows by less than
:data:`DRIVER_SLACK` and each worker alive at both by less than :data:`WORKER_SLACK`.
Comparing the second half only lets bounded buffers fill in the first half. The slack is
above the noise measured here: CPython's allocator keeps partly used arenas and malloc keeps
freed pages, so the driver's USS wanders by up to ~6 MB between checkpoints (16-23 MB in
``make soak``) and a worker's by ~1 MB, with no leak at all. A leak of ~20 bytes per task
over the second half of a million tasks (10 MB) fails the driver check.

One bounded growth shows on purpose: the driver's task history (the newest 100,000 finished
tasks and calls, ``RAYLITE_TASK_HISTORY``) holds task records after the warm-up, and the
actor load replaces them with larger call records: ~+0.6 MB per 10,000 calls until 100,000
calls (measured: flat from 100,000 to 300,000 calls), ~3 MB in the load's second half.

Why here and not in ``tests/``: it is a measuring run (rates, a table, minutes at full
scale), like the other scripts in ``benchmarks/``; the test imports :func:`run_soak`.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

import psutil

import raylite
from raylite.util.state import list_objects

MB = 1024 * 1024
DRIVER_SLACK = 10 * MB
WORKER_SLACK = 5 * MB

TASKS = 1_000_000
ACTOR_CALLS = 100_000
PUTS = 10_000
WAVE = 10_000  # refs alive at once: the driver never holds a million
ACTORS = 8
CHECKPOINTS = 10  # after the start: one per 10% of a load
PUT_SIZE = 1 * MB
TASK_READS_EVERY = 10  # every 10th put is also read by a task (a worker maps and unmaps it)


def noop(i: int) -> int:
    return i


def byte_sum(blob: bytes) -> int:
    """What a worker reads of a put: its first and last bytes, so it maps the segment."""
    return blob[0] + blob[-1]


class Counter:
    """An actor that counts its calls; every call returns the count so far."""

    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


class SoakError(RuntimeError):
    """A load returned wrong values: the soak's memory numbers would mean nothing."""


@dataclass(frozen=True)
class Checkpoint:
    """Memory and store books after ``done`` operations of a load."""

    done: int
    driver_uss: int  # bytes
    workers_uss: dict[int, int]  # {pid: bytes}
    store_bytes: int  # bytes of the objects alive (their shared memory and pickles)
    store_objects: int  # objects alive in the driver's books (actors' own ids not counted)


@dataclass
class Load:
    """One load's operations, wall time and checkpoints."""

    name: str
    unit: str  # "tasks", "calls", "puts"
    ops: int
    seconds: float = 0.0
    checkpoints: list[Checkpoint] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SoakReport:
    """What :func:`run_soak` measured: the loads, and the store's books at the end."""

    loads: list[Load]
    store_after: Checkpoint


@dataclass(frozen=True)
class SoakConfig:
    """How much load to run.

    Args:
        scale: Multiplies the issue's counts (1.0: 1,000,000 tasks, 100,000 actor calls,
            10,000 puts); each load runs at least 10 operations.
        warmup: Unmeasured no-op tasks before the first checkpoint (not scaled: bounded
            buffers have a fixed size).
        cpus: ``num_cpus`` for ``raylite.init``.
    """

    scale: float = 1.0
    warmup: int = 100_000
    cpus: int = 2

    def count(self, full: int) -> int:
        return max(CHECKPOINTS, round(full * self.scale))


# ---- sampling ------------------------------------------------------------------------------


def _uss(process: psutil.Process) -> int | None:
    try:
        return int(process.memory_full_info().uss)
    except psutil.Error:  # exited between listing and reading
        return None


def worker_processes(before: set[int]) -> list[psutil.Process]:
    """raylite's workers and actor hosts: live descendants of the driver's children that
    were not there before ``init`` (those children are raylite's zygote: it forks them)."""
    found = []
    for child in psutil.Process().children():
        if child.pid in before:
            continue
        try:
            found.extend(p for p in child.children(recursive=True) if p.status() != "zombie")
        except psutil.Error:
            continue
    return found


def store_books() -> tuple[int, int]:
    """``(bytes, count)`` of the objects the driver holds, from the state API.

    Objects that stand for actors (``reference_type`` ``ACTOR_HANDLE``: their handles hold
    them) are not counted: they are the actors' ids, not stored values.
    """
    objects = list_objects(filters=[("reference_type", "=", "LOCAL_REFERENCE")], limit=10**9)
    return sum(o.object_size for o in objects), len(objects)


def checkpoint(done: int, before: set[int]) -> Checkpoint:
    gc.collect()  # cyclic garbage is not a leak: count what a collection would keep
    workers = {p.pid: _uss(p) for p in worker_processes(before)}
    used, objects = store_books()
    return Checkpoint(
        done=done,
        driver_uss=_uss(psutil.Process()) or 0,
        workers_uss={pid: uss for pid, uss in workers.items() if uss is not None},
        store_bytes=used,
        store_objects=objects,
    )


def _marks(ops: int) -> Iterator[int]:
    """The operation counts at which to take checkpoints: 10%, 20%, ..., 100% of ``ops``."""
    return iter(ops * k // CHECKPOINTS for k in range(1, CHECKPOINTS + 1))


def _waves(ops: int) -> Iterator[tuple[int, int]]:
    """``(first, count)`` of each wave: at most :data:`WAVE` refs, ending on every mark."""
    first = 0
    for mark in _marks(ops):
        while first < mark:
            count = min(WAVE, mark - first)
            yield first, count
            first += count


# ---- the loads -----------------------------------------------------------------------------


def _run_waves(
    load: Load, before: set[int], wave: Callable[[int, int], None], on_done: Callable[[], None]
) -> None:
    load.checkpoints.append(checkpoint(0, before))
    marks = set(_marks(load.ops))
    start = time.perf_counter()
    paused = 0.0  # checkpoints take time: not the load's
    for first, count in _waves(load.ops):
        wave(first, count)
        if first + count in marks:
            on_done()
            pause = time.perf_counter()
            load.checkpoints.append(checkpoint(first + count, before))
            paused += time.perf_counter() - pause
    load.seconds = time.perf_counter() - start - paused


def tasks_load(ops: int, before: set[int], out: TextIO) -> Load:
    load = Load("tiny tasks", "tasks", ops)
    task = raylite.remote(noop)

    def wave(first: int, count: int) -> None:
        values = raylite.get([task.remote(i) for i in range(first, first + count)])
        if values != list(range(first, first + count)):
            raise SoakError(f"tasks {first}..{first + count - 1} returned other values")

    _run_waves(load, before, wave, lambda: print(".", end="", file=out, flush=True))
    return load


def actors_load(ops: int, before: set[int], out: TextIO) -> Load:
    load = Load("actor calls", "calls", ops)
    counters = [raylite.remote(Counter).remote() for _ in range(ACTORS)]
    counts = [0] * ACTORS

    def wave(first: int, count: int) -> None:
        refs = [counters[(first + k) % ACTORS].add.remote() for k in range(count)]
        for k, value in enumerate(raylite.get(refs)):
            actor = (first + k) % ACTORS
            counts[actor] += 1
            if value != counts[actor]:
                raise SoakError(f"actor {actor} counted {value}, not {counts[actor]}")

    _run_waves(load, before, wave, lambda: print(".", end="", file=out, flush=True))
    counters.clear()  # the last handles: the actors end before the store load
    return load


def store_load(ops: int, before: set[int], out: TextIO) -> Load:
    load = Load("put+get 1 MB", "puts", ops)
    reader = raylite.remote(byte_sum)
    blob = bytearray(os.urandom(PUT_SIZE))
    load.checkpoints.append(checkpoint(0, before))
    marks = set(_marks(ops))
    start = time.perf_counter()
    paused = 0.0
    for i in range(1, ops + 1):
        blob[0] = i % 256  # a different object each time
        ref = raylite.put(blob)
        value = raylite.get(ref)
        if len(value) != PUT_SIZE or value[0] != i % 256:
            raise SoakError(f"put #{i} came back as {len(value)} bytes starting {value[:1]!r}")
        if i % TASK_READS_EVERY == 0 and raylite.get(reader.remote(ref)) != value[0] + value[-1]:
            raise SoakError(f"a task read put #{i} wrong")
        del ref, value
        if i in marks:
            print(".", end="", file=out, flush=True)
            pause = time.perf_counter()
            load.checkpoints.append(checkpoint(i, before))
            paused += time.perf_counter() - pause
    load.seconds = time.perf_counter() - start - paused
    return load


def wait_for_empty_store(before: set[int], timeout: float = 10.0) -> Checkpoint:
    """Waits (``timeout`` s at most) until the store holds no bytes and no objects; returns
    the last checkpoint taken either way."""
    deadline = time.monotonic() + timeout
    while True:
        last = checkpoint(0, before)
        if (last.store_bytes, last.store_objects) == (0, 0) or time.monotonic() > deadline:
            return last
        time.sleep(0.05)  # released refs are applied by the runtime's I/O thread


def run_soak(config: SoakConfig, out: TextIO = sys.stdout) -> SoakReport:
    """Runs the three loads in one ``raylite.init``; see the module's docstring.

    Raises:
        SoakError: A task, actor call or get returned a wrong value.
    """
    before = {p.pid for p in psutil.Process().children()}
    raylite.init(num_cpus=config.cpus)
    try:
        print(f"warm-up: {config.warmup:,} tasks", file=out, flush=True)
        task = raylite.remote(noop)
        for first, count in _waves(config.warmup) if config.warmup else ():
            raylite.get([task.remote(i) for i in range(first, first + count)])
        loads = []
        for make, full in ((tasks_load, TASKS), (actors_load, ACTOR_CALLS), (store_load, PUTS)):
            ops = config.count(full)
            print(f"{make.__name__}: {ops:,} ", end="", file=out, flush=True)
            loads.append(make(ops, before, out))
            print(f" {loads[-1].seconds:.1f} s", file=out, flush=True)
        return SoakReport(loads=loads, store_after=wait_for_empty_store(before))
    finally:
        raylite.shutdown()


# ---- judging and reporting -----------------------------------------------------------------


def problems(report: SoakReport) -> list[str]:
    """Everything not flat or not empty, in words; an empty list means the soak passed."""
    found = []
    for load in report.loads:
        mid, end = load.checkpoints[len(load.checkpoints) // 2], load.checkpoints[-1]
        grew = end.driver_uss - mid.driver_uss
        if grew >= DRIVER_SLACK:
            found.append(
                f"{load.name}: the driver grew {grew / MB:.1f} MB from {mid.done:,} to "
                f"{end.done:,} {load.unit} (allowed: < {DRIVER_SLACK / MB:.0f} MB)"
            )
        for pid, uss in end.workers_uss.items():
            if pid in mid.workers_uss and uss - mid.workers_uss[pid] >= WORKER_SLACK:
                found.append(
                    f"{load.name}: worker {pid} grew {(uss - mid.workers_uss[pid]) / MB:.1f} MB "
                    f"from {mid.done:,} to {end.done:,} {load.unit} "
                    f"(allowed: < {WORKER_SLACK / MB:.0f} MB)"
                )
    after = report.store_after
    if after.store_bytes or after.store_objects:
        found.append(
            f"the store still holds {after.store_objects} objects, {after.store_bytes:,} bytes, "
            "after every ref was dropped (expected 0 and 0)"
        )
    return found


def _mb(n: int) -> str:
    return f"{n / MB:.1f}"


def format_report(report: SoakReport) -> str:
    """The rates, then one line per checkpoint: driver and worker USS, store books."""
    lines = [f"{'load':<14}{'ops':>11}{'wall s':>9}{'ops/s':>10}"]
    for load in report.loads:
        lines.append(f"{load.name:<14}{load.ops:>11,}{load.seconds:>9.1f}{load.rate:>10,.0f}")
    lines.append("")
    lines.append(
        f"{'load':<14}{'done':>11}{'driver MB':>11}{'workers':>8}{'worker MB (max)':>17}"
        f"{'store MB':>10}{'objects':>9}"
    )
    for load in report.loads:
        for c in load.checkpoints:
            most = max(c.workers_uss.values(), default=0)
            lines.append(
                f"{load.name:<14}{c.done:>11,}{_mb(c.driver_uss):>11}{len(c.workers_uss):>8}"
                f"{_mb(most):>17}{_mb(c.store_bytes):>10}{c.store_objects:>9}"
            )
    after = report.store_after
    lines.append(
        f"{'after all':<14}{'':>11}{_mb(after.driver_uss):>11}{len(after.workers_uss):>8}"
        f"{_mb(max(after.workers_uss.values(), default=0)):>17}{_mb(after.store_bytes):>10}"
        f"{after.store_objects:>9}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: the issue's counts")
    parser.add_argument("--warmup", type=int, default=100_000, help="unmeasured tasks first")
    parser.add_argument("--cpus", type=int, default=2, help="num_cpus for raylite.init")
    args = parser.parse_args(argv)
    if not (args.scale > 0 and math.isfinite(args.scale)) or args.warmup < 0 or args.cpus < 1:
        parser.error("--scale must be a number above 0, --warmup >= 0 and --cpus >= 1")
    start = time.perf_counter()
    report = run_soak(SoakConfig(scale=args.scale, warmup=args.warmup, cpus=args.cpus))
    print(format_report(report))
    print(f"\ntotal: {time.perf_counter() - start:.0f} s (checkpoints and warm-up included)")
    found = problems(report)
    for problem in found:
        print(f"NOT FLAT: {problem}", file=sys.stderr)
    if not found:
        print(
            f"flat: driver < {DRIVER_SLACK / MB:.0f} MB and each worker < "
            f"{WORKER_SLACK / MB:.0f} MB of growth over the second half of every load; "
            "the store is empty"
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
