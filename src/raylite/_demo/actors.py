"""The actors section: the seed's counter actor (its bug reported, then fixed), and 1,000
cheap actors packed onto a few worker processes."""

from __future__ import annotations

import textwrap
import time
from typing import TextIO

from .common import DemoConfig, DemoError, format_table, get_with_bar

__all__ = ["Test", "actors_section"]

# The actors: the seed's counter, _COUNTERS actors called _CALLS times each; then
# _CHEAP_ACTORS * scale actors called twice each.
_COUNTERS = 4
_CALLS = 5
_CHEAP_ACTORS = 1_000


class Test:
    """The seed's actor, fixed: a counter whose ``add`` counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def add(self) -> int:
        """Counts one more call; returns the count so far."""
        self.count += 1
        return self.count


def _seed_test_class() -> type:
    """The seed's actor class as it was written, with its bug: ``add`` lacks ``self``."""

    class Test:
        def __init__(self) -> None:
            self.count = 0

        def add():  # type: ignore[misc]  # the seed's bug, on purpose: no `self`
            return 1

    return Test


def _worker_processes(before: set[int]) -> int:
    """raylite's live worker processes: descendants of the driver's children that were not
    there before ``init`` (the zygote, the fork server: it forks every worker and actor host).

    Args:
        before: PIDs of this process's direct children just before ``raylite.init``.
    """
    import psutil

    count = 0
    for child in psutil.Process().children():
        if child.pid in before:
            continue
        try:
            descendants = child.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for process in descendants:
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    count += 1
            except psutil.NoSuchProcess:
                pass
    return count


def _seed_bug_message() -> str:
    """What raylite says about the seed's ``def add():`` (at decoration, creation or call).

    Raises:
        DemoError: If raylite accepts the method without a word.
    """
    import raylite  # lazily: the building blocks run without the runtime

    try:
        buggy = raylite.remote(_seed_test_class()).remote()
        buggy.add.remote()
    except TypeError as error:
        return f"TypeError: {error}"
    raise DemoError(
        "an actor method declared without 'self' was accepted; raylite should reject it and "
        "name the fix: this is a bug in raylite, please report it."
    )


def actors_section(config: DemoConfig, out: TextIO) -> None:
    """Runs the seed's counter actor (its bug reported, then fixed) and many cheap actors.

    Args:
        config: CPUs to use and work scale (the number of cheap actors).
        out: Where to print the table.

    Raises:
        DemoError: If raylite accepts the seed's bug, or an actor's counts are not 1, 2, ...
    """
    import psutil

    import raylite  # lazily: the building blocks run without the runtime

    many = max(2, round(_CHEAP_ACTORS * config.scale))
    print(f"Actors: the seed's stateful counter, then {many:,} cheap ones", file=out)
    before = {child.pid for child in psutil.Process().children()}
    raylite.init(num_cpus=config.cpus)
    try:
        message = _seed_bug_message()
        print("  the seed's class declares `def add():`, without self; raylite says:", file=out)
        print(textwrap.fill(message, 96, initial_indent="    ", subsequent_indent="    "), file=out)

        counter = raylite.remote(Test)
        start = time.perf_counter()
        counters = [counter.remote() for _ in range(_COUNTERS)]
        counts = raylite.get([c.add.remote() for c in counters for _ in range(_CALLS)])
        seed_seconds = time.perf_counter() - start
        expected = list(range(1, _CALLS + 1)) * _COUNTERS
        if counts != expected:
            raise DemoError(
                f"{_COUNTERS} counters called {_CALLS} times each counted {counts}, not "
                f"{expected}: this is a bug in raylite, please report it."
            )

        start = time.perf_counter()
        actors = [counter.remote() for _ in range(many)]
        first = get_with_bar([a.add.remote() for a in actors], "first calls")
        second = get_with_bar([a.add.remote() for a in actors], "second calls")
        many_seconds = time.perf_counter() - start
        if first != [1] * many or second != [2] * many:
            raise DemoError(
                f"{many} fresh counters counted {first[:3]}... then {second[:3]}..., not 1 "
                "then 2 each: this is a bug in raylite, please report it."
            )
        workers = _worker_processes(before)
    finally:
        raylite.shutdown()
    rows = [
        [f"{_COUNTERS} x Test", f"{_CALLS} each", f"{seed_seconds:.2f} s", f"1..{_CALLS} each"],
        [f"{many:,} x Test", "2 each", f"{many_seconds:.2f} s", "1, 2 each"],
    ]
    print("  fixed, `def add(self):` runs, each actor keeping its own count:", file=out)
    print(file=out)
    print(format_table(["actors", "calls", "wall", "counts"], rows, "<<><"), file=out)
    print(file=out)
    print(
        f"  worker processes: {workers} for the {many:,} actors (psutil): actors that reserve "
        "no CPU",
        file=out,
    )
    print("    share a few host processes, so an actor costs no process of its own", file=out)
    print(
        "  Ray: a process per actor, ~0.5-1 s and ~40 MB each (this project's benchmarks)",
        file=out,
    )
    print(f"  answer: all {_COUNTERS + many:,} counters counted as expected", file=out)
