"""Fixtures of the fault suite: each case injects one failure, checks what the user sees,
records how long it took to surface, and proves nothing leaked.

``fault`` wraps the ``rl`` fixture (a fresh runtime, 2 CPUs; the root conftest runs it on
the local runtime and on Ray). On the local runtime it checks, after the test:

- in the session (before shutdown): ``available_resources() == cluster_resources()``; the
  object store's books are back to 0 bytes with nothing waiting to be unmapped; the driver
  holds no object memfd but the pooled ones and the spares (``spares.py``), and no live
  worker holds any; the driver holds one cancel slot per live worker (a dead worker's fds
  were closed);
- after shutdown: this process holds no fd, child process or ``/dev/shm`` entry it did not
  hold before ``init``.

Every check waits (cleanup is asynchronous) against a deadline. On Ray only the outcome is
checked: Ray's processes and resource views are Ray's.

A case records its rows as the user property ``("fault", (case, outcome, seconds,
leaks_checked))``; ``pytest tests/faults`` ends with the table of them all: outcome, time
from the injection to the error at ``get`` (or to the outcome), leaks.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _helpers import LeakBaseline, live_children, memfds, wait_until

import raylite
from raylite import _runtime

DETECT_DEADLINE_S = 30.0  # no hang: generous, the cases take well under a second


class Fault:
    """One test's injected failures: ``expect`` gets a ref that must fail, and records the
    outcome and the time from the injection to the error at ``get``."""

    def __init__(self, item: pytest.Item, stamp_path: str, local: bool) -> None:
        self.item = item
        self.stamp_path = stamp_path  # where a task writes when it injected (``stamp``)
        self.local = local

    def injected_at(self) -> float:
        """When the last task that called ``stamp(fault.stamp_path)`` injected its failure."""
        with open(self.stamp_path) as f:
            return float(f.read())

    def expect(
        self, error: type[BaseException], ref: Any, *, match: str | None = None,
        since: float | None = None, case: str = "",
    ) -> BaseException:  # fmt: skip
        """``get(ref)`` must raise ``error`` (within the deadline); records the outcome and
        the time since ``since`` (default: the task's stamp). Returns the error."""
        with pytest.raises(error, match=match) as info:
            raylite.get(ref, timeout=DETECT_DEADLINE_S)
        self.record(type(info.value).__name__, since, case)
        return info.value

    def record(self, outcome: str, since: float | None = None, case: str = "") -> None:
        """Adds a row to the suite's table: ``case`` (default: the test's id), ``outcome``,
        and seconds from ``since`` (default: the task's stamp) to now."""
        now = time.monotonic()
        start = self.injected_at() if since is None else since
        self.item.user_properties.append(("fault", (case, outcome, now - start, self.local)))

    def assert_released(self, timeout: float = 10.0) -> None:
        """Resources, shared memory and worker fds are all back (local runtime)."""
        # The test's refs and handles are gone, but a caught exception's traceback may
        # hold its frame (and them) in a cycle until the collector runs.
        gc.collect()
        wait_until(
            lambda: raylite.available_resources() == raylite.cluster_resources(),
            timeout,
            "available_resources() back to cluster_resources()",
        )
        rt: Any = _runtime.current()  # the LocalRuntime: its books are what we check
        problems: list[str] = []

        def settled() -> bool:
            problems[:] = _store_and_worker_problems(rt)
            return not problems

        try:
            wait_until(settled, timeout, "shared memory and worker fds to be released")
        except AssertionError:
            raise AssertionError(f"leaked in the session: {problems}") from None


def _store_and_worker_problems(rt: Any) -> list[str]:
    with rt._lock:
        books = rt._objs.books
        live, freed, pooled = books.live, len(books._freed), len(books.pool._free)
        pooled += books.spares.held  # pre-faulted for the next big put, like pooled ones
        zygote = rt._workers.zygote.pid
    out = []
    if live or freed:
        out.append(f"store books: {live} bytes live, {freed} freed segments still mapped")
    held = len(memfds())
    if held != pooled:
        out.append(f"the driver holds {held} object memfds, {pooled} of them pooled")
    workers = live_children(zygote)
    for p in workers:
        if memfds(p.pid):
            out.append(f"worker {p.pid} holds object memfds {memfds(p.pid)}")
    slots = len(memfds(name="raylite-cancel-slot"))
    if slots != len(workers):
        out.append(f"the driver holds {slots} workers' cancel slots, {len(workers)} live")
    return out


def _on_local(request: pytest.FixtureRequest) -> bool:
    callspec = getattr(request.node, "callspec", None)
    return callspec is None or callspec.params.get("rl", "local") == "local"


@pytest.fixture
def baseline(request: pytest.FixtureRequest) -> Iterator[LeakBaseline | None]:
    """What this process holds before the test starts a runtime; after the test (and its
    shutdown) it must hold no more (local runtime only)."""
    if not _on_local(request):
        yield None
        return
    base = LeakBaseline.take()
    yield base
    base.assert_back()


@pytest.fixture
def fault(
    baseline: LeakBaseline | None, rl: object, request: pytest.FixtureRequest, tmp_path: Any
) -> Iterator[Fault]:
    """A fresh runtime (``rl``) for one fault case, checked for leaks after the test."""
    f = Fault(request.node, str(tmp_path / "injected-at"), local=baseline is not None)
    yield f
    if f.local:
        f.assert_released()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The table of cases: outcome, time to detect, leaks (from the teardown checks)."""
    rows: list[tuple[str, str, float, bool]] = []
    leaked: dict[str, bool] = {}
    for reports in terminalreporter.stats.values():
        for rep in reports:
            when = getattr(rep, "when", None)
            if when == "teardown":
                leaked[rep.nodeid] = rep.failed
            if when == "call":
                for key, value in rep.user_properties:
                    if key != "fault":
                        continue
                    case, outcome, seconds, checked = value
                    name = rep.nodeid.split("::")[-1] + (f" [{case}]" if case else "")
                    rows.append((rep.nodeid, f"{name}: {outcome}", seconds, checked))
    if not rows:
        return
    terminalreporter.section("fault cases: outcome, time to detect, leaks")
    for nodeid, what, seconds, checked in rows:
        leaks = "LEAKED (see the teardown error)" if leaked.get(nodeid) else "none"
        if not checked:
            leaks = "not checked (Ray's processes)"
        terminalreporter.write_line(f"{what:<100} {seconds * 1000:8.1f} ms  leaks: {leaks}")
