"""The ``raylite demo`` command: threads vs processes for Python code, then actors.

The demo is a list of sections (:data:`SECTIONS`). Each section is a function
``section(config, out)`` that runs its own workload and prints its own table to ``out``::

    run_demo(config, out)
      -> cpu_section(config, out)     CPU-bound: sequential vs threads vs raylite tasks
      -> io_section(config, out)      I/O-bound: sequential vs threads vs raylite thread
                                      and process tasks, against a slow local HTTP server
      -> actors_section(config, out)  the seed's counter actor (its bug, then fixed), and
                                      1,000 cheap actors on a few processes

To add a section, write one such function and append it to :data:`SECTIONS`. A section that
uses raylite initializes it once and shuts it down in ``finally``.

The I/O section owns one thread, the slow HTTP server's (:func:`slow_server`)::

    driver: fetch(url) ------ TCP 127.0.0.1:PORT ------> "raylite-demo-http" thread
      sequential, thread pool,                            (serve_forever), one handler
      raylite thread tasks        <----- page bytes ----  thread per request: sleeps
    worker process: fetch(url)                            ~50 ms, then answers /page/N
      raylite process tasks

It is started after ``raylite.init`` (the zygote must be forked before any thread of
ours exists, see ``_local/pool.py``) and stopped, always, before the section ends.

The building blocks (:func:`make_chunks`, :func:`run_sequential`, :func:`run_threads`,
:func:`run_raylite`, :func:`fetch`, :func:`slow_server`, :func:`format_table`) are small and
take a work size, so a test can run each of them in a fraction of a second with
``DemoConfig(cpus=2, scale=0.01)``.

``raylite`` itself is imported only inside the functions that start it: the building
blocks never need the runtime.

Example:
    >>> from raylite._demo import DemoConfig, run_demo
    >>> run_demo(DemoConfig(cpus=2, scale=0.1))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import urlsplit

# The CPU workload: count the primes in [_FIRST, _FIRST + _NUMBERS * scale) by trial division.
# Starting far from zero makes equal-width chunks cost about the same (each ~0.3-0.4 s on a
# 2-core dev machine at scale 1), so no chunk is a straggler that hides the speed-up.
_FIRST = 10_000_000
_NUMBERS = 200_000
_MIN_CHUNKS = 8

# The I/O workload: fetch _PAGES * scale pages from a local server that waits _DELAY_S before
# each answer (a slow service); threads and the "http" resource allow _HTTP_SLOTS at once.
_PAGES = 40
_DELAY_S = 0.05
_HTTP_SLOTS = 16

# The actors: the seed's counter, _COUNTERS actors called _CALLS times each; then
# _CHEAP_ACTORS * scale actors called twice each.
_COUNTERS = 4
_CALLS = 5
_CHEAP_ACTORS = 1_000


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


def page_body(n: int) -> bytes:
    """The page the slow server answers for ``/page/<n>``: ~2 KB, different for each ``n``."""
    return f"page {n}\n".encode() + hashlib.sha256(str(n).encode()).hexdigest().encode() * 32


class SlowServer(ThreadingHTTPServer):
    """A slow HTTP service: a thread per request (so waits overlap), none kept alive after
    the server closes; it counts how many requests it serves at once.

    Made and run by :func:`slow_server`; ``url`` is its base URL.
    """

    daemon_threads = True
    # Up to _HTTP_SLOTS clients connect at once: the default backlog of 5 could drop some of
    # their connection requests, which the client's kernel retries only after ~1 s.
    request_queue_size = 128

    def __init__(self, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _SlowHandler)
        self.delay_s = delay_s
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._lock = threading.Lock()  # guards the two counts, written by handler threads
        self._active = 0  # requests being served now
        self._peak = 0  # the most served at once since take_peak() last ran

    def take_peak(self) -> int:
        """Returns the most requests served at once since the last call, and starts over."""
        with self._lock:
            peak, self._peak = self._peak, self._active
        return peak

    def serving(self, delta: int) -> None:
        """Counts a request in (``+1``) or out (``-1``)."""
        with self._lock:
            self._active += delta
            self._peak = max(self._peak, self._active)


class _SlowHandler(BaseHTTPRequestHandler):
    """Answers ``GET /page/<n>`` with :func:`page_body` after the server's ``delay_s``."""

    server: SlowServer

    def do_GET(self) -> None:  # the name http.server calls
        prefix = "/page/"
        number = self.path[len(prefix) :]
        if not (self.path.startswith(prefix) and number.isdigit()):
            self.send_error(404, "the demo server serves /page/<n> only")
            return
        self.server.serving(+1)
        try:
            time.sleep(self.server.delay_s)
        finally:
            self.server.serving(-1)
        body = page_body(int(number))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Logs nothing: the demo prints its own table, not one line per request."""


@contextmanager
def slow_server(delay_s: float = _DELAY_S) -> Iterator[SlowServer]:
    """Runs a slow HTTP service on 127.0.0.1, on a port the OS picks, in a daemon thread.

    Each ``GET /page/<n>`` is answered with :func:`page_body` after ``delay_s`` seconds, in a
    thread of its own, so concurrent requests wait concurrently. The server is stopped and its
    socket closed when the ``with`` block ends, however it ends.

    Args:
        delay_s: Seconds each request waits before its answer (a slow service's latency).

    Yields:
        The running server; ``server.url`` is e.g. ``"http://127.0.0.1:43615"``.

    Example:
        >>> with slow_server(0.01) as server:
        ...     fetch(f"{server.url}/page/3") == page_body(3)
        True
    """
    server = SlowServer(delay_s)
    # A short poll interval: shutdown() waits for serve_forever to notice, up to one interval.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="raylite-demo-http"
    )
    thread.daemon = True
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fetch(url: str) -> bytes:
    """GETs ``url`` (plain HTTP, no proxy) and returns the body.

    Raises:
        DemoError: If the server answers anything but 200 OK.
        OSError: If the server cannot be reached within 10 s.
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise DemoError(f"GET {url} answered {response.status} {response.reason}, not 200 OK.")
    return body


def _digest(bodies: Sequence[bytes]) -> int:
    """A 64-bit fingerprint of the bodies, in order (so a swapped or lost page changes it)."""
    hasher = hashlib.blake2b(digest_size=8)
    for body in bodies:
        hasher.update(len(body).to_bytes(8, "big"))
        hasher.update(body)
    return int.from_bytes(hasher.digest(), "big")


def _timed_fetch(server: SlowServer, fetch_all: Callable[[], list[bytes]]) -> tuple[Run, int]:
    """Runs one way of fetching every page; returns its Run (answer: a digest of the bodies)
    and the most requests the server saw at once meanwhile."""
    server.take_peak()
    start = time.perf_counter()
    bodies = fetch_all()
    seconds = time.perf_counter() - start
    return Run(answer=_digest(bodies), seconds=seconds), server.take_peak()


def io_section(config: DemoConfig, out: TextIO) -> None:
    """Times I/O-bound work (slow HTTP requests) four ways; prints a table.

    The ways: sequentially; on a thread pool; as raylite thread tasks (``executor="thread"``,
    at most 16 at once through a custom resource ``"http"``); as raylite process tasks
    (limited by ``num_cpus``). raylite is initialized once, before the server starts.

    Args:
        config: CPUs to use and work scale (the number of pages).
        out: Where to print the table.

    Raises:
        DemoError: If the four ways do not fetch the same bytes.
    """
    import raylite  # lazily: the building blocks run without the runtime

    n = config.cpus
    pages = max(2, round(_PAGES * config.scale))
    wait = f"{_DELAY_S * 1000:.0f} ms"
    print(f"I/O-bound Python on {_plural(n, 'CPU')}", file=out)
    print(
        f"  fetch {pages} pages from a local HTTP server that answers each after {wait} "
        "(a slow service)",
        file=out,
    )
    raylite.init(num_cpus=n, resources={"http": _HTTP_SLOTS})
    try:
        # A thread task reserves no CPU; each holds one unit of "http", so 16 run at once.
        fetch_in_thread = raylite.remote(executor="thread", resources={"http": 1})(fetch)
        fetch_in_process = raylite.remote(fetch)  # 1 CPU each: num_cpus at once
        with slow_server(_DELAY_S) as server:
            urls = [f"{server.url}/page/{i}" for i in range(pages)]

            def on_threads() -> list[bytes]:
                with ThreadPoolExecutor(max_workers=_HTTP_SLOTS) as pool:
                    return list(pool.map(fetch, urls))

            print("  running: sequential", end="", file=out, flush=True)
            sequential = _timed_fetch(server, lambda: [fetch(url) for url in urls])
            print(", threads", end="", file=out, flush=True)
            threads = _timed_fetch(server, on_threads)
            print(", raylite thread tasks", end="", file=out, flush=True)
            thread_tasks = _timed_fetch(
                server, lambda: raylite.get([fetch_in_thread.remote(url) for url in urls])
            )
            print(", raylite process tasks", end="", file=out, flush=True)
            process_tasks = _timed_fetch(
                server, lambda: raylite.get([fetch_in_process.remote(url) for url in urls])
            )
            print(", done", file=out)
    finally:
        raylite.shutdown()
    check_same_answer(
        {
            "sequential": sequential[0],
            "threads": threads[0],
            "raylite thread tasks": thread_tasks[0],
            "raylite process tasks": process_tasks[0],
        },
        work="fetching the pages",
    )
    ways = [
        ("sequential", sequential, f"one at a time: {pages} waits of {wait} in a row"),
        (
            f"threads ({_plural(_HTTP_SLOTS, 'thread')})",
            threads,
            "waits overlap: waiting on I/O releases the GIL",
        ),
        (
            "raylite thread tasks",
            thread_tasks,
            f"threads here, no pickling; capped by resource http={_HTTP_SLOTS}",
        ),
        (
            f"raylite process tasks ({_plural(n, 'CPU')})",
            process_tasks,
            f"capped by num_cpus={n}; a hop to a worker process each",
        ),
    ]
    rows = [
        [way, f"{run.seconds:.2f} s", _speed_up(sequential[0], run), str(peak), why]
        for way, (run, peak), why in ways
    ]
    size = sum(len(page_body(i)) for i in range(pages))
    print(file=out)
    print(format_table(["way", "wall", "speed-up", "at once", "why"], rows, "<>>><"), file=out)
    print(file=out)
    print("  at once: the most requests the server was answering at the same time", file=out)
    print(f"  answer: {pages} pages, {size:,} bytes, the same bytes all four ways", file=out)


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
        first = raylite.get([a.add.remote() for a in actors])
        second = raylite.get([a.add.remote() for a in actors])
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


SECTIONS: list[Section] = [cpu_section, io_section, actors_section]


def run_demo(config: DemoConfig, out: TextIO | None = None) -> None:
    """Runs every section of the demo in order, each printing its own table.

    Args:
        config: CPUs to use and work scale.
        out: Where to print; ``sys.stdout`` by default.

    Raises:
        DemoError: If a section's ways of computing one answer disagree.
    """
    stream = sys.stdout if out is None else out
    title = "raylite demo: threads vs processes for Python code, then actors"
    print(f"{title} (scale {config.scale:g})", file=stream)
    for section in SECTIONS:
        print(file=stream)
        section(config, stream)
