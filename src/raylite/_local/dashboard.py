"""The live dashboard: one page and a few JSON endpoints, served by the driver on loopback.

::

    browser (dashboard.html, polls every second)
      ── GET /                       ──> the page (package data, no CDN: works offline)
      ── GET /api/status             ──> StateView.status()   resources, store, task counts
      ── GET /api/<kind>?k=v&limit=N ──> StateView.<kind>()   workers, actors, tasks, objects,
                                                               filtered (k=v) as list_<kind>()
      ── GET /api/summary            ──> summarize(StateView.tasks())
      ── GET /api/timeline?since=us&limit=N ──> StateView.timeline(since): what ended after
                                                ``since`` (the task stream asks for that)
    DashboardServer: ThreadingHTTPServer on thread "raylite-dashboard" (serve_forever), one
      short-lived daemon thread per request, one request at a time in the StateView (its CPU
      readings compare two calls). It holds only a weakref to the runtime's StateView, whose
      methods copy under the runtime's lock and build the JSON without it.
      Owner: LocalRuntime, which starts it last in ``__init__`` and closes it in ``shutdown``.

What one poll of the page costs the driver (2-core machine, measured): ~12 ms with 1,000
finished tasks recorded, ~34 ms with 100,000, plus the JSON of the tasks that ended since
the last poll: live tasks are built as records, finished ones only counted or cut by time.

Security: there is no authentication, so the server binds to a loopback address only
(anything else is refused at ``init``), answers GET only (other methods get 501), answers
only requests whose ``Host`` header is exactly ``127.0.0.1``, ``localhost``, ``[::1]`` or
the address it listens on, with its port (a web page cannot reach it through DNS
rebinding, whose host names are the attacker's: ``127.0.0.1.evil.com`` is refused too), and sends JSON of the runtime's state: it never unpickles,
evaluates or stores anything a request carries. To look from another machine, tunnel:
``ssh -L 8265:127.0.0.1:8265 user@host``.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import sys
import threading
import weakref
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .state import filter_records, summarize

if TYPE_CHECKING:
    from .state import StateView

__all__ = ["DEFAULT_PORT", "DashboardServer", "check_host"]

DEFAULT_PORT = 8265  # Ray's
_PORT_TRIES = 20  # with the default port busy, try this many after it (as Ray does)
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_ROUTES = ("status", "summary", "timeline", "tasks", "actors", "objects", "workers")
_TIMELINE_LIMIT = 20_000  # events per /api/timeline answer unless ?limit= says otherwise


def check_host(host: str) -> None:
    """Refuses a ``dashboard_host`` that is not a loopback address.

    Raises:
        ValueError: ``host`` is not loopback (the message says why and what to do).
    """
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"dashboard_host={host!r} is not a loopback address. raylite's dashboard has no "
                "authentication, so it only listens on this machine: use dashboard_host="
                "'127.0.0.1' (the default), and from another machine reach it through an SSH "
                "tunnel: ssh -L 8265:127.0.0.1:8265 user@this-host."
            )


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck browser connection never holds up shutdown
    request_queue_size = 16

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: set[socket.socket] = set()  # accepted connections not yet closed
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self._open_lock:
            self._open.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def hang_up(self) -> None:
        """Ends every open connection: their handlers see EOF and return."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the browser went away (or shutdown hung up on it): nothing to report
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class DashboardServer:
    """Serves the dashboard of a runtime at ``http://host:port`` until ``close()``.

    Args:
        view: the runtime's state view; held weakly, so the server never keeps it alive.
        host: a loopback address (see ``check_host``).
        port: the port; ``None`` for 8265 or, if that is busy, the next free one (as Ray
            does); ``0`` for any free port.

    Raises:
        ValueError: ``host`` is not loopback.
        OSError: ``port`` (given explicitly) is in use; the message names the fix.
    """

    def __init__(self, view: StateView, host: str = "127.0.0.1", port: int | None = None):
        check_host(host)
        bind_host = "127.0.0.1" if host == "localhost" else host.strip("[]")
        server_cls = _Server6 if ":" in bind_host else _Server
        hosts: set[str] = set()  # the Host headers served: filled in once the port is known
        self._server = _bind(server_cls, bind_host, port, _handler(weakref.ref(view), hosts))
        self.port: int = self._server.server_address[1]
        shown = f"[{bind_host}]" if ":" in bind_host else bind_host
        hosts.update(f"{name}:{self.port}" for name in (*_LOOPBACK_NAMES, shown))
        self.url = f"{shown}:{self.port}"  # Ray's dashboard_url has no scheme either
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="raylite-dashboard", daemon=True,
        )  # fmt: skip
        self._thread.start()

    def forget_after_fork(self) -> None:
        """In a child forked from the driver: closes this process's copy of the listening
        socket (a shutdown() here would stop the driver's server too)."""
        self._server.socket.close()

    def close(self) -> None:
        """Stops serving, hangs up on open connections and closes the listening socket."""
        self._server.shutdown()  # returns once serve_forever has
        self._server.server_close()
        self._server.hang_up()
        self._thread.join(timeout=5)


def _bind(
    server_cls: type[_Server], host: str, port: int | None,
    handler: type[BaseHTTPRequestHandler],
) -> _Server:  # fmt: skip
    ports = [port] if port is not None else range(DEFAULT_PORT, DEFAULT_PORT + _PORT_TRIES)
    for p in ports:
        try:
            return server_cls((host, p), handler)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    if port is None:
        raise OSError(
            errno.EADDRINUSE,
            f"The dashboard found no free port in {DEFAULT_PORT}-{DEFAULT_PORT + _PORT_TRIES - 1} "
            f"on {host}: pass init(dashboard_port=0) to take any free port.",
        )
    raise OSError(
        errno.EADDRINUSE,
        f"The dashboard cannot listen on {host}:{port}: the port is in use (another raylite "
        f"or Ray dashboard?). Pass another init(dashboard_port=...), or 0 for any free port.",
    )


def _page() -> bytes:
    return resources.files(__package__).joinpath("dashboard.html").read_bytes()


def _handler(
    state: weakref.ref[StateView], hosts: set[str]
) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``state`` (http.server makes one per request) that
    serves only requests whose ``Host`` header is one of ``hosts`` (``name:port``)."""
    # StateView measures CPU between two calls per process: one reader at a time.
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "raylite-dashboard"
        timeout = 10  # a client that sends nothing does not hold its thread for long

        def do_GET(self) -> None:
            if self.headers.get("Host", "").lower() not in hosts:
                self._send(403, {"error": f"Host header is not one of {sorted(hosts)}"})
                return
            url = urlsplit(self.path)
            if url.path in ("/", "/index.html"):
                self._send_bytes(200, _page(), "text/html; charset=utf-8")
                return
            view = state()
            if view is None:
                self._send(503, {"error": "raylite was shut down: this dashboard is gone"})
                return
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                with lock:
                    body = _answer(view, url.path, query)
            except _NotFound as exc:
                self._send(404, {"error": str(exc)})
            except ValueError as exc:
                self._send(400, {"error": str(exc)})
            except Exception as exc:  # the browser shows it; the driver goes on
                self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
            else:
                self._send(200, body)

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body, default=str).encode()
            self._send_bytes(code, data, "application/json")

        def _send_bytes(self, code: int, data: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per poll would flood the user's console

    return Handler


class _NotFound(Exception):
    pass


def _answer(view: StateView, path: str, query: dict[str, str]) -> Any:
    """The JSON body of ``/api/<route>?<query>``.

    Raises:
        _NotFound: no such route.
        ValueError: a bad query value (the message names it).
    """
    route = path.removeprefix("/api/")
    limit = _int_arg(query.pop("limit", None), "limit")
    if route == "status":
        return view.status()
    if route == "summary":
        return summarize(view.tasks())
    if route == "timeline":
        since_us = _int_arg(query.get("since"), "since") or 0
        events = view.timeline(since=since_us / 1e6)
        spans = [e for e in events if e["ph"] == "X"][-(limit or _TIMELINE_LIMIT) :]
        pids = {e["pid"] for e in spans}
        return [e for e in events if e["ph"] == "M" and e["pid"] in pids] + spans
    if route == "tasks":
        # Finished tasks cannot match a filter on a live state: skip building them.
        finished = query.get("state") in (None, "FINISHED", "FAILED")
        return filter_records(view.tasks(finished), _filters(query), limit)
    if route in ("actors", "objects", "workers"):
        return filter_records(getattr(view, route)(), _filters(query), limit)
    raise _NotFound(
        f"no such page {path!r}: the page is /, the endpoints are "
        + ", ".join(f"/api/{name}" for name in _ROUTES)
    )


def _filters(query: dict[str, str]) -> list[tuple[str, str, Any]]:
    return [(key, "=", value) for key, value in query.items()]


def _int_arg(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(float(value))
    except (ValueError, OverflowError):
        number = -1
    if number < 0:
        raise ValueError(f"?{name}= takes a number >= 0, got {value!r}")
    return number
