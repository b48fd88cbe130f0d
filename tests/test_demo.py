"""``raylite demo``: every section at a tiny scale, checked on what a user sees; and the slow
HTTP server of the I/O section, which must stop however its section ends."""

from __future__ import annotations

import io
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

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


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The demo's cache folder (its SQLite table), in a temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "raylite"


def _row(out: str, way: str) -> str:
    found = re.search(rf"^{re.escape(way)}.*$", out, re.MULTILINE)
    assert found, f"no row {way!r} in:\n{out}"
    return found.group(0)


def test_every_section_at_a_tiny_scale(no_runtime, cache, capsys):
    assert main(["demo", "--scale", "0.05", "--cpus", "2", "--repeats", "2"]) == 0
    out, err = capsys.readouterr()
    assert "task/s" not in err and "step/s" not in err  # no bars where stderr is no terminal
    words = " ".join(out.split())  # the error message is wrapped over lines

    # How busy the machine is, measured before anything runs.
    assert re.search(r"this machine: \d+ CPUs?, [\d.]+ of them busy", out)

    # The four sections, in order, each with its "same answer" check.
    headings = [
        "CPU-bound Python on 2 CPUs",
        "I/O-bound Python on 2 CPUs",
        "Load once, share with all: a 10 MB table from SQLite",
        "Actors: the seed's stateful counter, then 50 cheap ones",
    ]
    assert [out.index(h) for h in headings] == sorted(out.index(h) for h in headings)
    assert "primes, the same all four ways" in out
    assert re.search(r"answer: 2 pages, [\d,]+ bytes, the same bytes all four ways", out)
    assert "answer: the same best rows all three ways (8 queries)" in out
    assert "answer: all 54 counters counted as expected" in out

    # The CPU table: median and spread of 2 runs per way, a Pool row, and no claim of
    # parallelism the numbers do not show.
    for way in ("sequential", "threads (2 threads)", "multiprocessing.Pool (2)",
                "raylite tasks (2 CPUs)"):  # fmt: skip
        row = _row(out, way)
        assert re.search(r"\d\.\d\d s +\d\.\d\d-\d\.\d\d s +\d\.\d\dx", row), row
        speed = float(re.search(r"(\d+\.\d\d)x", row).group(1))
        if speed < 1.3:  # e.g. on a loaded machine
            assert "ran in parallel" not in row, row

    # The load-once table: the table made once in the cache, and a worker that maps the
    # shared table holds less memory of its own than one that loaded a copy.
    assert (cache / "demo-embeddings-20000x128.sqlite").is_file()
    assert f"into {cache}" in out
    uss = {
        way: int(re.search(r"(-?[\d,]+) MB  ", _row(out, way)).group(1).replace(",", ""))
        for way in ("put once, share the ref", "load in every task")
    }  # fmt: skip
    assert uss["put once, share the ref"] < 3 <= 9 <= uss["load in every task"], uss  # 10 MB

    # The I/O table: a row per way.
    for way in ("sequential", "threads (16 threads)", "raylite thread tasks", "raylite process"):
        assert re.search(r"\d\.\d\d s +\d\.\d\d-\d\.\d\d s", _row(out, way)), way

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


def test_every_step_draws_a_progress_bar_on_a_terminal_and_clears_it(no_runtime, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    out = io.StringIO()
    _demo.cpu_section(_demo.DemoConfig(cpus=2, scale=0.01, repeats=1), out)
    drawn = terminal.getvalue()
    for way in ("sequential", "threads", "multiprocessing.Pool", "raylite tasks"):
        assert re.search(rf"{way}: +\d+%\|.*\| \d/8 ", drawn), (way, drawn)  # 8 chunks
    assert drawn.endswith("\r") and drawn.split("\r")[-2].strip() == ""  # cleared when done
    assert "running: raylite tasks" in out.getvalue() and "task/s" not in out.getvalue()


def test_a_loaded_machine_is_named_and_parallelism_is_claimed_only_when_measured():
    from raylite._demo.common import Load, describe_load
    from raylite._demo.cpu import _processes_why

    idle, busy = Load(cpus=2, busy=0.1), Load(cpus=2, busy=1.8)
    assert len(describe_load(idle, 2)) == 1
    assert "the machine is loaded" in " ".join(describe_load(busy, 2))
    assert "in parallel" in _processes_why(2, 1.9, idle)
    assert "little room" in _processes_why(2, 0.22, busy)
    assert "ran in parallel" not in _processes_why(2, 0.8, idle)


def test_the_table_is_made_once_and_loaded_through_any_source(tmp_path):
    np = pytest.importorskip("numpy")
    from raylite._demo.load_once import SQLiteSource, load_table, make_database

    path = tmp_path / "t.sqlite"
    make_database(path, rows=25_000, dim=4)
    assert not list(tmp_path.glob("*.partial"))  # written aside, then renamed
    table = load_table(SQLiteSource(path), dim=4)
    assert table.shape == (25_000, 4) and table.dtype == np.float32
    assert np.array_equal(table[:3], np.random.default_rng(0).random((3, 4), dtype=np.float32))

    class Pages:  # e.g. a search engine's scroll API: any count() + batches() will do
        def count(self):
            return 3

        def batches(self, size):
            yield np.ones((2, 4), np.float32)
            yield np.zeros((1, 4), np.float32)

    assert load_table(Pages(), dim=4).sum() == 8


def test_the_load_once_section_reuses_the_table_it_made(no_runtime, cache):
    config = _demo.DemoConfig(cpus=1, scale=0.005, repeats=1)
    first, second = io.StringIO(), io.StringIO()
    _demo.load_once_section(config, first)
    _demo.load_once_section(config, second)
    assert "making the table, once" in first.getvalue()
    assert "made on an earlier run" in second.getvalue()
    assert "making the table" not in second.getvalue()


def test_bad_repeats_say_what_is_allowed():
    with pytest.raises(ValueError, match="repeats=0: run each way at least once"):
        _demo.DemoConfig(cpus=2, repeats=0)


def test_make_demo_installs_only_what_the_demo_needs(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("no make here; CI has it")
    root = Path(__file__).resolve().parent.parent
    venv = tmp_path / "venv"  # a fresh clone's: nothing installed yet

    def plan(target: str) -> str:
        return subprocess.run(
            ["make", "-n", target, f"VENV={venv}"], cwd=root, capture_output=True, text=True,
            check=True, timeout=60,
        ).stdout  # fmt: skip

    demo = plan("demo")
    assert "-e '.[numpy]'" in demo and "[dev" not in demo and "--upgrade pip" not in demo
    assert demo.index("installing raylite and numpy") < demo.index("pip install")
    assert "-e '.[dev]'" in plan("test")  # the tests keep their toolchain
