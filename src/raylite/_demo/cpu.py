"""The CPU-bound section: count primes in pure Python sequentially, on threads (one GIL),
on a ``multiprocessing.Pool`` and on raylite tasks (a GIL per worker process), each a few
times, and print the median wall times and their spread side by side.

The building blocks (:func:`make_chunks`, :func:`run_sequential`, :func:`run_threads`,
:func:`run_pool`, :func:`run_raylite`) take a work size, so a test runs each in a fraction
of a second with ``DemoConfig(cpus=2, scale=0.01)``.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TextIO

from .common import (
    NOISY,
    DemoConfig,
    Load,
    Run,
    bar,
    describe_load,
    format_table,
    get_with_bar,
    measure_load,
    noisy,
    plural,
    ratio,
    repeat_ways,
    speed_up,
)

__all__ = [
    "count_primes", "cpu_section", "make_chunks", "run_pool", "run_raylite", "run_sequential",
    "run_threads",
]  # fmt: skip

# The CPU workload: count the primes in [_FIRST, _FIRST + _NUMBERS * scale) by trial division.
# Starting far from zero makes equal-width chunks cost about the same (each ~0.3-0.4 s on a
# 2-core dev machine at scale 1), so no chunk is a straggler that hides the speed-up.
_FIRST = 10_000_000
_NUMBERS = 200_000
_MIN_CHUNKS = 8

Chunk = tuple[int, int]  # (lo, hi): a half-open range of integers to search for primes


def count_primes(lo: int, hi: int) -> int:
    """Counts the primes in ``[lo, hi)`` by trial division: slow on purpose, pure Python.

    Args:
        lo: First integer to test.
        hi: One past the last integer to test.

    Returns:
        How many primes lie in ``[lo, hi)``.

    Example:
        >>> count_primes(0, 100)
        25
    """
    count = 0
    for n in range(max(lo, 2), hi):
        if n < 4:
            count += 1
            continue
        if n % 2 == 0:
            continue
        divisor = 3
        while divisor * divisor <= n:
            if n % divisor == 0:
                break
            divisor += 2
        else:
            count += 1
    return count


def make_chunks(config: DemoConfig) -> list[Chunk]:
    """Splits the workload into equal ranges: at least 8, and at least two per CPU.

    Args:
        config: The CPU count (more CPUs, more chunks) and work scale.

    Returns:
        Adjacent ``(lo, hi)`` ranges covering ``[10_000_000, 10_000_000 + 200_000 * scale)``.
    """
    numbers = max(1, round(_NUMBERS * config.scale))
    n_chunks = min(numbers, max(_MIN_CHUNKS, 2 * config.cpus))
    bounds = [_FIRST + numbers * i // n_chunks for i in range(n_chunks + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def run_sequential(chunks: Sequence[Chunk]) -> Run:
    """Counts primes in every chunk, one after another, in this thread."""
    start = time.perf_counter()
    answer = sum(count_primes(lo, hi) for lo, hi in bar(chunks, "sequential", len(chunks)))
    return Run(answer=answer, seconds=time.perf_counter() - start)


def run_threads(chunks: Sequence[Chunk], threads: int) -> Run:
    """Counts primes with a pool of ``threads`` threads in this process (so under one GIL)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(count_primes, lo, hi) for lo, hi in chunks]
        answer = sum(f.result() for f in bar(as_completed(futures), "threads", len(futures)))
    return Run(answer=answer, seconds=time.perf_counter() - start)


def _count_chunk(chunk: Chunk) -> int:
    return count_primes(*chunk)


def run_pool(chunks: Sequence[Chunk], processes: int) -> Run:
    """Counts primes with a ``multiprocessing.Pool`` of ``processes`` processes (started and
    closed within the run: ``setup_seconds`` is the start)."""
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        setup = time.perf_counter() - start
        counts = pool.imap_unordered(_count_chunk, chunks)
        answer = sum(bar(counts, "multiprocessing.Pool", len(chunks)))
    return Run(answer=answer, seconds=time.perf_counter() - start, setup_seconds=setup)


def run_raylite(chunks: Sequence[Chunk], cpus: int) -> Run:
    """Counts primes with one raylite task per chunk on ``cpus`` worker processes.

    Starts raylite with ``raylite.init(num_cpus=cpus)`` and shuts it down afterwards; the time
    ``init`` takes is part of ``seconds`` and is also reported as ``setup_seconds``. On a
    terminal, a progress bar counts the tasks as they finish.

    Raises:
        RuntimeError: If raylite is already initialized in this process (``init`` refuses).
    """
    import raylite  # lazily: the rest of the demo runs without the runtime

    start = time.perf_counter()
    raylite.init(num_cpus=cpus)
    try:
        setup = time.perf_counter() - start
        remote_count_primes = raylite.remote(count_primes)
        refs = [remote_count_primes.remote(lo, hi) for lo, hi in chunks]
        answer = sum(get_with_bar(refs, "raylite tasks"))
        seconds = time.perf_counter() - start
    finally:
        raylite.shutdown()
    return Run(answer=answer, seconds=seconds, setup_seconds=setup)


def _threads_why(speed: float) -> str:
    # Free-threaded builds (PEP 703, Python 3.13t) can run with the GIL off; say so honestly.
    gil_enabled: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    if gil_enabled is not None and not gil_enabled():
        return "this Python runs without a GIL, so threads run bytecode in parallel too"
    if speed >= 1.3:  # one GIL: this can only be the machine's load changing between runs
        return "one GIL, so no faster in truth: the sequential runs met more load"
    return "the GIL lets only one thread run Python bytecode at a time"


def _processes_why(n: int, speed: float, load: Load) -> str:
    """Why processes ran as fast as they did: only claims parallelism the numbers show."""
    processes = plural(n, "process")
    if n == 1:
        return "1 process: nothing to run in parallel with"
    if speed >= 1.3:
        return f"{processes}, each with its own GIL: they ran in parallel"
    if load.loaded(n):
        return (
            f"{processes}, but other programs left ~{load.free:.1f} CPUs free: "
            "little room to run in parallel"
        )
    return f"{processes}, yet no faster this time: other programs may have taken the CPUs"


def cpu_section(config: DemoConfig, out: TextIO) -> None:
    """Times CPU-bound pure Python sequentially, on threads, on a ``multiprocessing.Pool``
    and on raylite tasks, each ``config.repeats`` times; prints a table of medians.

    Args:
        config: CPUs to use, work scale and repeats.
        out: Where to print the table.

    Raises:
        DemoError: If the ways (or two runs of one way) do not find the same number of primes.
    """
    chunks = make_chunks(config)
    first, last = chunks[0][0], chunks[-1][1]
    n = config.cpus
    print(f"CPU-bound Python on {plural(n, 'CPU')}", file=out)
    print(
        f"  count primes in [{first:,}, {last:,}) by trial division, "
        f"in {len(chunks)} chunks of ~{(last - first) // len(chunks):,} numbers; "
        f"each way {plural(config.repeats, 'time')}",
        file=out,
    )
    load = measure_load()
    for line in describe_load(load, n):
        print(f"  {line}", file=out)
    ways = repeat_ways(
        {
            "sequential": lambda: run_sequential(chunks),
            "threads": lambda: run_threads(chunks, n),
            "multiprocessing.Pool": lambda: run_pool(chunks, n),
            "raylite tasks": lambda: run_raylite(chunks, n),
        },
        config.repeats,
        out,
    )
    after = measure_load()  # the load may have changed while the ways ran: take the worse
    if after.busy > load.busy + 0.3:
        load = after
        for line in describe_load(load, n, when="after the runs"):
            print(f"  {line}", file=out)
    sequential, threads = ways["sequential"], ways["threads"]
    pool, tasks = ways["multiprocessing.Pool"], ways["raylite tasks"]
    answer = sequential.answer
    rows = [
        ["sequential", f"{sequential.seconds:.2f} s", sequential.spread(), "1.00x",
         "one thread, one core"],
        [f"threads ({plural(n, 'thread')})", f"{threads.seconds:.2f} s", threads.spread(),
         speed_up(sequential, threads), _threads_why(ratio(sequential, threads))],
        [f"multiprocessing.Pool ({n})", f"{pool.seconds:.2f} s", pool.spread(),
         speed_up(sequential, pool), _processes_why(n, ratio(sequential, pool), load)],
        ["  of which starting it", f"{pool.setup_seconds:.2f} s", "", "",
         "forking the pool's processes, each run"],
        [f"raylite tasks ({plural(n, 'CPU')})", f"{tasks.seconds:.2f} s", tasks.spread(),
         speed_up(sequential, tasks), _processes_why(n, ratio(sequential, tasks), load)],
        ["  of which init()", f"{tasks.setup_seconds:.2f} s", "", "",
         "starting the worker processes, paid once per program"],
    ]  # fmt: skip
    print(file=out)
    header = ["way", "wall (median)", "spread", "speed-up", "why"]
    print(format_table(header, rows, "<>>><"), file=out)
    print(file=out)
    if noisy(ways.values()):
        print(NOISY, file=out)
    print(f"  answer: {answer:,} primes, the same all four ways", file=out)
