"""The I/O-bound section: fetch pages from a slow local HTTP server sequentially, on a
thread pool, as raylite thread tasks and as raylite process tasks.

The section owns one thread, the slow HTTP server's (:func:`slow_server`)::

    driver: fetch(url) ------ TCP 127.0.0.1:PORT ------> "raylite-demo-http" thread
      sequential, thread pool,                            (serve_forever), one handler
      raylite thread tasks        <----- page bytes ----  thread per request: sleeps
    worker process: fetch(url)                            ~50 ms, then answers /page/N
      raylite process tasks

It is started after ``raylite.init`` (the zygote must be forked before any thread of
ours exists, see ``_local/pool.py``) and stopped, always, before the section ends.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import urlsplit

from .common import (
    NOISY,
    DemoConfig,
    DemoError,
    Run,
    bar,
    format_table,
    get_with_bar,
    noisy,
    plural,
    repeat_ways,
    speed_up,
)

__all__ = ["SlowServer", "fetch", "io_section", "page_body", "slow_server"]


# The I/O workload: fetch _PAGES * scale pages from a local server that waits _DELAY_S before
# each answer (a slow service); threads and the "http" resource allow _HTTP_SLOTS at once.
_PAGES = 40
_DELAY_S = 0.05
_HTTP_SLOTS = 16


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


class _Way:
    """One way of fetching every page: a run per call (answer: a digest of the bodies),
    keeping the most requests the server saw at once during its runs."""

    def __init__(self, server: SlowServer, fetch_all: Callable[[], list[bytes]]) -> None:
        self._server = server
        self._fetch_all = fetch_all
        self.peak = 0

    def __call__(self) -> Run:
        self._server.take_peak()
        start = time.perf_counter()
        bodies = self._fetch_all()
        seconds = time.perf_counter() - start
        self.peak = max(self.peak, self._server.take_peak())
        return Run(answer=_digest(bodies), seconds=seconds)


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
    print(f"I/O-bound Python on {plural(n, 'CPU')}", file=out)
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
                    return list(bar(pool.map(fetch, urls), "threads", len(urls)))

            runners = {
                "sequential": _Way(server, lambda: [fetch(u) for u in bar(urls, "sequential")]),
                "threads": _Way(server, on_threads),
                "raylite thread tasks": _Way(server, lambda: get_with_bar(
                    [fetch_in_thread.remote(u) for u in urls], "thread tasks")),
                "raylite process tasks": _Way(server, lambda: get_with_bar(
                    [fetch_in_process.remote(u) for u in urls], "process tasks")),
            }  # fmt: skip
            timed = repeat_ways(dict(runners), config.repeats, out, work="fetching the pages")
    finally:
        raylite.shutdown()
    base = timed["sequential"]

    ways = [  # (row label, way, why)
        ("sequential", "sequential", f"one at a time: {pages} waits of {wait} in a row"),
        (f"threads ({plural(_HTTP_SLOTS, 'thread')})", "threads",
         "waits overlap: waiting on I/O releases the GIL"),
        ("raylite thread tasks", "raylite thread tasks",
         f"threads here, no pickling; capped by resource http={_HTTP_SLOTS}"),
        (f"raylite process tasks ({plural(n, 'CPU')})", "raylite process tasks",
         f"capped by num_cpus={n}; a hop to a worker process each"),
    ]  # fmt: skip
    rows = [
        [label, f"{timed[way].seconds:.2f} s", timed[way].spread(), speed_up(base, timed[way]),
         str(runners[way].peak), why]
        for label, way, why in ways
    ]  # fmt: skip
    size = sum(len(page_body(i)) for i in range(pages))
    print(file=out)
    header = ["way", "wall (median)", "spread", "speed-up", "at once", "why"]
    print(format_table(header, rows, "<>>>><"), file=out)
    print(file=out)
    print("  at once: the most requests the server was answering at the same time", file=out)
    if noisy(timed.values()):
        print(NOISY, file=out)
    print(f"  answer: {pages} pages, {size:,} bytes, the same bytes all four ways", file=out)
