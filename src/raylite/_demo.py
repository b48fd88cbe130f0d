"""The ``raylite demo`` command: why CPU-bound Python needs processes, not threads.

The demo is a list of sections (:data:`SECTIONS`). Each section is a function
``section(config, out)`` that runs its own workload and prints its own table to ``out``::

    run_demo(config, out)
      -> cpu_section(config, out)     sequential vs threads vs raylite tasks
      -> ...                          (later: I/O-bound work on threads, actors)

To add a section, write one such function and append it to :data:`SECTIONS`.

The building blocks (:func:`make_chunks`, :func:`run_sequential`, :func:`run_threads`,
:func:`run_raylite`, :func:`format_table`) are small and take a work size, so a test can run
each of them in a fraction of a second with ``DemoConfig(cpus=2, scale=0.01)``.

``raylite`` itself is imported only inside :func:`run_raylite`: the other sections and
building blocks never need the runtime.

Example:
    >>> from raylite._demo import DemoConfig, run_demo
    >>> run_demo(DemoConfig(cpus=2, scale=0.1))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TextIO

# The CPU workload: count the primes in [_FIRST, _FIRST + _NUMBERS * scale) by trial division.
# Starting far from zero makes equal-width chunks cost about the same (each ~0.3-0.4 s on a
# 2-core dev machine at scale 1), so no chunk is a straggler that hides the speed-up.
_FIRST = 10_000_000
_NUMBERS = 200_000
_MIN_CHUNKS = 8


class DemoError(RuntimeError):
    """The demo's ways of computing one answer disagreed, so its timings mean nothing."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """What the demo runs on and how much work it does.

    Args:
        cpus: Worker threads and raylite CPUs to use (``num_cpus`` for ``raylite.init``).
        scale: Work size multiplier: 1.0 is the full demo (a few seconds per row on 2 cores);
            0.01 is a quick run for tests.

    Raises:
        ValueError: If ``cpus`` is below 1 or ``scale`` is not a finite number above 0.
    """

    cpus: int
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise ValueError(f"cpus={self.cpus!r}: the demo needs at least 1 CPU, e.g. cpus=2.")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(
                f"scale={self.scale!r}: the work size multiplier must be a finite number above 0, "
                "e.g. 1.0 for the full demo or 0.1 for a quick run."
            )

    @classmethod
    def for_this_machine(cls, scale: float = 1.0) -> DemoConfig:
        """Returns a config using every CPU of this machine (``os.cpu_count()``)."""
        return cls(cpus=os.cpu_count() or 1, scale=scale)


@dataclass(frozen=True, slots=True)
class Run:
    """The outcome of one way of doing the workload.

    Attributes:
        answer: The workload's result (here: how many primes were found).
        seconds: Wall time for the whole way, setup included.
        setup_seconds: The part of ``seconds`` spent before any work ran (e.g. ``init``).
    """

    answer: int
    seconds: float
    setup_seconds: float = 0.0


Chunk = tuple[int, int]  # (lo, hi): a half-open range of integers to search for primes
Section = Callable[[DemoConfig, TextIO], None]


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
    answer = sum(count_primes(lo, hi) for lo, hi in chunks)
    return Run(answer=answer, seconds=time.perf_counter() - start)


def run_threads(chunks: Sequence[Chunk], threads: int) -> Run:
    """Counts primes with a pool of ``threads`` threads in this process (so under one GIL)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        answer = sum(pool.map(count_primes, *zip(*chunks, strict=True)))
    return Run(answer=answer, seconds=time.perf_counter() - start)


def run_raylite(chunks: Sequence[Chunk], cpus: int) -> Run:
    """Counts primes with one raylite task per chunk on ``cpus`` worker processes.

    Starts raylite with ``raylite.init(num_cpus=cpus)`` and shuts it down afterwards; the time
    ``init`` takes is part of ``seconds`` and is also reported as ``setup_seconds``.

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
        answer = sum(raylite.get(refs))
        seconds = time.perf_counter() - start
    finally:
        raylite.shutdown()
    return Run(answer=answer, seconds=seconds, setup_seconds=setup)


def check_same_answer(runs: dict[str, Run]) -> int:
    """Returns the answer all runs agree on.

    Args:
        runs: ``{way: Run}`` for each way the workload was done.

    Raises:
        DemoError: If the runs disagree, naming each way's answer.
    """
    answers = {run.answer for run in runs.values()}
    if len(answers) != 1:
        detail = ", ".join(f"{way}: {run.answer}" for way, run in runs.items())
        raise DemoError(
            f"the ways of counting primes disagree ({detail}); the same function on the same "
            "ranges must give one answer, so a task's result was lost, duplicated or "
            "mis-ordered: this is a bug in raylite, please report it."
        )
    return answers.pop()


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """Lays out a plain-text table with aligned columns.

    Args:
        header: Column titles.
        rows: One sequence of cell strings per row, as long as ``header``.
        align: One character per column: ``<`` (left) or ``>`` (right).

    Returns:
        The table as lines joined by newlines, header first, with trailing spaces stripped.

    Raises:
        ValueError: If ``align`` or a row does not have one entry per column.

    Example:
        >>> print(format_table(["way", "wall"], [["a", "1.0 s"], ["bb", "10.0 s"]], "<>"))
        way    wall
        a     1.0 s
        bb   10.0 s
    """
    if len(align) != len(header) or set(align) - {"<", ">"}:
        raise ValueError(
            f"align={align!r}: give one '<' or '>' per column ({len(header)} columns)."
        )
    for row in rows:
        if len(row) != len(header):
            raise ValueError(
                f"row {list(row)!r} has {len(row)} cells; the header has {len(header)}."
            )
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _plural(count: int, word: str) -> str:
    """Returns e.g. ``"1 CPU"`` or ``"2 CPUs"``; ``word`` must form its plural with "s"/"es"."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word}{'es' if word.endswith('s') else 's'}"


def _speed_up(baseline: Run, run: Run) -> str:
    return f"{baseline.seconds / run.seconds:.2f}x" if run.seconds > 0 else "-"


def _threads_why() -> str:
    # Free-threaded builds (PEP 703, Python 3.13t) can run with the GIL off; say so honestly.
    gil_enabled: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    if gil_enabled is not None and not gil_enabled():
        return "this Python runs without a GIL, so threads run bytecode in parallel too"
    return "the GIL lets only one thread run Python bytecode at a time"


def cpu_section(config: DemoConfig, out: TextIO) -> None:
    """Times CPU-bound pure Python sequentially, on threads and on raylite tasks; prints a table.

    Args:
        config: CPUs to use and work scale.
        out: Where to print the table.

    Raises:
        DemoError: If the three ways do not find the same number of primes.
    """
    chunks = make_chunks(config)
    first, last = chunks[0][0], chunks[-1][1]
    n = config.cpus
    print(f"CPU-bound Python on {_plural(n, 'CPU')}", file=out)
    print(
        f"  count primes in [{first:,}, {last:,}) by trial division, "
        f"in {len(chunks)} chunks of ~{(last - first) // len(chunks):,} numbers",
        file=out,
    )
    # Each way takes seconds: say which one runs, so a slow step is not mistaken for a hang.
    print("  running: sequential", end="", file=out, flush=True)
    sequential = run_sequential(chunks)
    print(", threads", end="", file=out, flush=True)
    threads = run_threads(chunks, n)
    print(", raylite tasks", end="", file=out, flush=True)
    tasks = run_raylite(chunks, n)
    print(", done", file=out)
    answer = check_same_answer(
        {"sequential": sequential, "threads": threads, "raylite tasks": tasks}
    )
    rows = [
        ["sequential", f"{sequential.seconds:.2f} s", "1.00x", "one thread, one core"],
        [
            f"threads ({_plural(n, 'thread')})",
            f"{threads.seconds:.2f} s",
            _speed_up(sequential, threads),
            _threads_why(),
        ],
        [
            f"raylite tasks ({_plural(n, 'CPU')})",
            f"{tasks.seconds:.2f} s",
            _speed_up(sequential, tasks),
            f"{_plural(n, 'worker process')}, each with its own GIL: real parallelism",
        ],
        [
            "  of which init()",
            f"{tasks.setup_seconds:.2f} s",
            "",
            "starting the worker processes, paid once per program",
        ],
    ]
    print(file=out)
    print(format_table(["way", "wall", "speed-up", "why"], rows, "<>><"), file=out)
    print(file=out)
    print(f"  answer: {answer:,} primes, the same all three ways", file=out)


SECTIONS: list[Section] = [cpu_section]


def run_demo(config: DemoConfig, out: TextIO | None = None) -> None:
    """Runs every section of the demo in order, each printing its own table.

    Args:
        config: CPUs to use and work scale.
        out: Where to print; ``sys.stdout`` by default.

    Raises:
        DemoError: If a section's ways of computing one answer disagree.
    """
    stream = sys.stdout if out is None else out
    print(
        f"raylite demo: threads vs processes for Python code (scale {config.scale:g})", file=stream
    )
    for section in SECTIONS:
        print(file=stream)
        section(config, stream)
