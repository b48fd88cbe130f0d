"""``raylite demo``: every section at a tiny scale, checked on what a user sees; and the slow
HTTP server of the I/O section, which must stop however its section ends."""

from __future__ import annotations

import io
import re
import socket
import sys
import threading

import pytest
from _helpers import live_children, wait_until

import raylite
from raylite import _demo
from raylite.cli import main

pytestmark = pytest.mark.local_only("the demo runs the local runtime")


def _demo_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "raylite-demo-http"]


@pytest.fixture
def no_runtime():
    """raylite not running before the test, and nothing of it (or of the demo) left after."""
    assert not raylite.is_initialized(), "an earlier test left raylite initialized"
    yield
    assert not raylite.is_initialized(), "the demo left raylite initialized"
    wait_until(lambda: not live_children(), 10, "worker processes to exit after shutdown")
    assert not _demo_threads(), "the demo's HTTP server thread is still running"


def test_every_section_at_a_tiny_scale(no_runtime, capsys):
    assert main(["demo", "--scale", "0.05", "--cpus", "2"]) == 0
    out, err = capsys.readouterr()
    assert "task/s" not in err  # no progress bar where stderr is not a terminal
    words = " ".join(out.split())  # the error message is wrapped over lines

    # The three sections, in order, each with its "same answer" check.
    headings = [
        "CPU-bound Python on 2 CPUs",
        "I/O-bound Python on 2 CPUs",
        "Actors: the seed's stateful counter, then 50 cheap ones",
    ]
    assert [out.index(h) for h in headings] == sorted(out.index(h) for h in headings)
    assert "primes, the same all three ways" in out
    assert re.search(r"answer: 2 pages, [\d,]+ bytes, the same bytes all four ways", out)
    assert "answer: all 54 counters counted as expected" in out

    # The I/O table: a row per way.
    for way in ("sequential", "threads (16 threads)", "raylite thread tasks", "raylite process"):
        assert re.search(rf"^{re.escape(way)}.*\d\.\d\d s", out, re.MULTILINE), way

    # The seed's bug, reported clearly: which method, and the fix.
    assert "TypeError: Actor method Test.add() is declared without 'self'" in words
    assert "Declare it as 'def add(self, ...)'" in words

    # The cheap actors: a few worker processes, not one per actor.
    found = re.search(r"worker processes: (\d+) for the 50 actors", out)
    assert found, out
    assert 1 <= int(found.group(1)) <= 4


def test_slow_server_serves_pages_and_stops_when_its_block_raises(no_runtime):
    with pytest.raises(RuntimeError, match="the block failed"):
        with _demo.slow_server(0.001) as server:
            assert _demo.fetch(f"{server.url}/page/7") == _demo.page_body(7)
            with pytest.raises(_demo.DemoError, match="answered 404"):
                _demo.fetch(f"{server.url}/nothing-here")
            port = int(server.url.rsplit(":", 1)[1])
            raise RuntimeError("the block failed")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # refused: the server's socket is closed


def test_io_section_shuts_down_when_a_fetch_fails(no_runtime, monkeypatch):
    def unreachable(url: str) -> bytes:
        raise ConnectionRefusedError(f"{url}: connection refused")

    monkeypatch.setattr(_demo.io_bound, "fetch", unreachable)  # what io_section calls
    with pytest.raises(ConnectionRefusedError):
        _demo.io_section(_demo.DemoConfig(cpus=2, scale=0.05), io.StringIO())
    # The fixture checks that raylite, its workers and the server thread are gone.


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr is when a person runs the demo."""

    def isatty(self) -> bool:
        return True


def test_raylite_steps_draw_a_progress_bar_on_a_terminal_and_clear_it(no_runtime, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    out = io.StringIO()
    _demo.cpu_section(_demo.DemoConfig(cpus=2, scale=0.01), out)
    drawn = terminal.getvalue()
    assert re.search(r"raylite tasks: +\d+%\|.*\| \d/8 ", drawn), drawn  # 8 chunks, 8 tasks
    assert drawn.endswith("\r") and drawn.split("\r")[-2].strip() == ""  # cleared when done
    assert "running: raylite tasks" in out.getvalue() and "task/s" not in out.getvalue()
