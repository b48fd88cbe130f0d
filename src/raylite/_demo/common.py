"""What every section of the demo shares: its config, its errors, a way's timing, the
answer check, the table, and how a section says which way runs now.

A way that takes seconds says so on a line of its own (:func:`step`), so a slow step is
not mistaken for a hang; a way that waits on many raylite refs also draws a progress bar
(:func:`get_with_bar`: count, rate, ETA) on stderr while it runs, on a terminal only, and
clears it when done, so piped output and the tables stay clean.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

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


Section = Callable[[DemoConfig, TextIO], None]


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


def speed_up(baseline: Run, run: Run) -> str:
    return f"{baseline.seconds / run.seconds:.2f}x" if run.seconds > 0 else "-"


def step(out: TextIO, way: str) -> None:
    """Says that ``way`` runs now: each takes seconds, and a silent one looks like a hang."""
    print(f"  running: {way}", file=out, flush=True)


def get_with_bar(refs: Sequence[ObjectRef], desc: str) -> list[Any]:
    """``raylite.get(refs)`` behind a progress bar on stderr, drawn on a terminal only and
    cleared when done (``raylite.util.progress``)."""
    from ..util import progress  # lazily: the building blocks run without the runtime

    return progress(refs, desc=f"  {desc}", disable=None, leave=False)
