"""What every section of the demo shares: its config, its errors, a way's timings (run
``repeats`` times: median and spread), how busy the machine is, the answer check, the
table, and how a section says which way runs now.

A way that takes seconds says so on a line of its own (:func:`step`), so a slow step is
not mistaken for a hang, and draws a progress bar while it runs (:func:`bar` for work of
its own, :func:`get_with_bar` for raylite refs: count, rate, ETA) on stderr, on a terminal
only, cleared when done, so piped output and the tables stay clean.
"""

from __future__ import annotations

import math
import os
import statistics
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

if TYPE_CHECKING:
    from .._object_ref import ObjectRef


class DemoError(RuntimeError):
    """The demo's ways of computing one answer disagreed, so its timings mean nothing."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """What the demo runs on and how much work it does.

    Args:
        cpus: Worker threads and raylite CPUs to use (``num_cpus`` for ``raylite.init``).
        scale: Work size multiplier: 1.0 is the full demo (a few seconds per row on 2 cores);
            0.01 is a quick run for tests.
        repeats: How many times each way runs; the tables show the median and the spread.
        cache_dir: Where the load-once section keeps the database it makes on its first run
            (None: ``$XDG_CACHE_HOME/raylite``, else ``~/.cache/raylite``).

    Raises:
        ValueError: If ``cpus`` or ``repeats`` is below 1 or ``scale`` is not a finite
            number above 0.
    """

    cpus: int
    scale: float = 1.0
    repeats: int = 3
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise ValueError(f"cpus={self.cpus!r}: the demo needs at least 1 CPU, e.g. cpus=2.")
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats!r}: run each way at least once, e.g. 3.")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(
                f"scale={self.scale!r}: the work size multiplier must be a finite number above 0, "
                "e.g. 1.0 for the full demo or 0.1 for a quick run."
            )

    @classmethod
    def for_this_machine(cls, scale: float = 1.0) -> DemoConfig:
        """Returns a config using every CPU of this machine (``os.cpu_count()``)."""
        return cls(cpus=os.cpu_count() or 1, scale=scale)

    def cache(self) -> Path:
        """The folder for data the demo makes once and keeps (see ``cache_dir``)."""
        if self.cache_dir is not None:
            return self.cache_dir
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "raylite"


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


Section = Callable[[DemoConfig, TextIO], None]


@dataclass(frozen=True, slots=True)
class Timed:
    """One way, run ``repeats`` times: every run, and the numbers a table shows.

    Attributes:
        runs: Each run, in order.
    """

    runs: tuple[Run, ...]

    @property
    def answer(self) -> int:
        """The answer every run agreed on (checked by :func:`repeat`)."""
        return self.runs[0].answer

    @property
    def seconds(self) -> float:
        """The median wall time."""
        return statistics.median(run.seconds for run in self.runs)

    @property
    def setup_seconds(self) -> float:
        return statistics.median(run.setup_seconds for run in self.runs)

    def spread(self) -> str:
        """The fastest and slowest run, e.g. ``"1.02-1.31 s"``; ``"-"`` for a single run."""
        if len(self.runs) == 1:
            return "-"
        times = [run.seconds for run in self.runs]
        return f"{min(times):.2f}-{max(times):.2f} s"


def repeat_ways(
    ways: dict[str, Callable[[], Run]], times: int, out: TextIO, work: str = "counting primes"
) -> dict[str, Timed]:
    """Runs every way ``times`` times, in rounds (each way once per round), so that a change
    in the machine's load slows every way alike instead of the one that ran then.

    Args:
        ways: ``{way: run}``, in the order to run them each round.
        times: Rounds.
        out: Where to say which way runs now (:func:`step`).
        work: The workload in words, for the error message.

    Returns:
        ``{way: Timed}``, in the order of ``ways``.

    Raises:
        DemoError: If two runs, of one way or of two, do not give the same answer.
    """
    runs: dict[str, list[Run]] = {way: [] for way in ways}
    for round_ in range(1, times + 1):
        for way, run in ways.items():
            step(out, way if times == 1 else f"{way} (round {round_} of {times})")
            runs[way].append(run())
    check_same_answer(
        {f"{way} (run {i})": r for way, rs in runs.items() for i, r in enumerate(rs, 1)}, work
    )
    return {way: Timed(tuple(rs)) for way, rs in runs.items()}


def noisy(timed: Iterable[Timed]) -> bool:
    """Whether some way's slowest run took over 1.5 times its fastest: the load changed."""
    return any(
        max(r.seconds for r in t.runs) > 1.5 * min(r.seconds for r in t.runs) for t in timed
    )


NOISY = (
    "  the runs of one way differ by more than 1.5x: other programs' load changed while the "
    "demo ran,\n  so trust the medians less than usual"
)


@dataclass(frozen=True, slots=True)
class Load:
    """How busy this machine was just before the demo ran.

    Attributes:
        cpus: This machine's logical CPUs.
        busy: CPUs' worth of work other programs were doing (0.0 to ``cpus``), measured
            over a short window.
    """

    cpus: int
    busy: float

    @property
    def free(self) -> float:
        """CPUs' worth of idle time left for the demo."""
        return max(self.cpus - self.busy, 0.0)

    def loaded(self, wanted: int) -> bool:
        """Whether less than ``wanted`` CPUs (less 0.3 for noise) are free for the demo."""
        return self.free < min(wanted, self.cpus) - 0.3


def measure_load(seconds: float = 0.5) -> Load:
    """Measures how much CPU other programs use now, over ``seconds`` (psutil)."""
    import psutil

    busy_percent = psutil.cpu_percent(interval=seconds)  # of all CPUs together
    cpus = psutil.cpu_count() or 1
    return Load(cpus=cpus, busy=cpus * busy_percent / 100)


def describe_load(load: Load, wanted: int, when: str = "just now") -> list[str]:
    """Lines that say how busy the machine is (``when``: e.g. "after the runs"), and what
    that does to the numbers."""
    line = (
        f"this machine: {plural(load.cpus, 'CPU')}, {load.busy:.1f} of them busy with other "
        f"programs {when} ({load.free:.1f} free)"
    )
    if not load.loaded(wanted):
        return [line]
    warning = (
        f"the machine is loaded: the demo wants {plural(wanted, 'CPU')}, so the parallel ways "
        "get less than that and their speed-ups come out low; run it again on an idle machine "
        "to see the full effect"
    )
    return [line, *textwrap.wrap(warning, 92, initial_indent="  ", subsequent_indent="  ")]


T = TypeVar("T")


def bar(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """``items`` behind a progress bar on stderr: drawn on a terminal only, cleared when done."""
    from tqdm.auto import tqdm  # lazily: ~0.1 s to import

    # No monitor thread: raylite.init forks its zygote later, best done with no thread alive.
    tqdm.monitor_interval = 0
    return iter(tqdm(items, desc=f"  {desc}", total=total, disable=None, leave=False, unit="step"))


def check_same_answer(runs: dict[str, Run], work: str = "counting primes") -> int:
    """Returns the answer all runs agree on.

    Args:
        runs: ``{way: Run}`` for each way the workload was done.
        work: The workload in words, for the error message (e.g. ``"fetching the pages"``).

    Raises:
        DemoError: If the runs disagree, naming each way's answer.
    """
    answers = {run.answer for run in runs.values()}
    if len(answers) != 1:
        detail = ", ".join(f"{way}: {run.answer}" for way, run in runs.items())
        raise DemoError(
            f"the ways of {work} disagree ({detail}); the same function on the same "
            "inputs must give one answer, so a task's result was lost, duplicated or "
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


def plural(count: int, word: str) -> str:
    """Returns e.g. ``"1 CPU"`` or ``"2 CPUs"``; ``word`` must form its plural with "s"/"es"."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word}{'es' if word.endswith('s') else 's'}"


def speed_up(baseline: Run | Timed, run: Run | Timed) -> str:
    return f"{baseline.seconds / run.seconds:.2f}x" if run.seconds > 0 else "-"


def ratio(baseline: Run | Timed, run: Run | Timed) -> float:
    return baseline.seconds / run.seconds if run.seconds > 0 else 0.0


def step(out: TextIO, way: str) -> None:
    """Says that ``way`` runs now: each takes seconds, and a silent one looks like a hang."""
    print(f"  running: {way}", file=out, flush=True)


def get_with_bar(refs: Sequence[ObjectRef], desc: str) -> list[Any]:
    """``raylite.get(refs)`` behind a progress bar on stderr, drawn on a terminal only and
    cleared when done (``raylite.util.progress``)."""
    from ..util import progress  # lazily: the building blocks run without the runtime

    return progress(refs, desc=f"  {desc}", disable=None, leave=False)
