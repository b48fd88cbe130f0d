"""The live dashboard (``init(include_dashboard=True)``): its JSON endpoints over plain HTTP,
its guards (loopback only, GET only, ports), and the page itself in a real headless chromium:
it loads, shows a running task, and updates as the task finishes and an actor appears."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import struct
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from _helpers import chromium_page, live_children, missing_browser, wait_until

import raylite

pytestmark = pytest.mark.local_only("the embedded runtime's dashboard; Ray serves its own")


@pytest.fixture
def url() -> Iterator[str]:
    """The dashboard of a fresh runtime with 2 CPUs, on any free port."""
    info = raylite.init(num_cpus=2, include_dashboard=True, dashboard_port=0)
    try:
        assert info.dashboard_url == info["dashboard_url"]  # Ray's attribute, and dict-like
        yield "http://" + info["dashboard_url"]
    finally:
        raylite.shutdown()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.headers["Content-Type"] == "application/json"
        return json.load(reply)


@raylite.remote
def square(x: int) -> int:
    return x * x


@raylite.remote
def broken() -> None:
    raise ValueError("on purpose")


@raylite.remote
def hold_until_released(flag: str) -> int:
    import time

    deadline = time.monotonic() + 60  # never outlives a failed test for long
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


@raylite.remote
class Tally:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


def listening_ports() -> set[int]:
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


# ---- the JSON endpoints -----------------------------------------------------------------


def test_endpoints_show_the_runtime_state(url: str) -> None:
    assert raylite.get([square.remote(i) for i in range(3)]) == [0, 1, 4]
    with pytest.raises(ValueError):
        raylite.get(broken.remote())
    tally = Tally.remote()
    assert raylite.get(tally.add.remote()) == 1

    status = get_json(url + "/api/status")
    assert status["resources_total"] == raylite.cluster_resources()
    assert status["resources_total"]["CPU"] == 2.0
    assert status["driver_pid"] == os.getpid()
    assert status["tasks"] == {"FINISHED": 4, "FAILED": 1}  # 3 squares and 1 call; broken
    workers = get_json(url + "/api/workers")
    assert {w["worker_type"] for w in workers} >= {"DRIVER", "WORKER", "ACTOR_HOST"}
    assert all(w["memory_rss"] > 0 for w in workers)
    actors = get_json(url + "/api/actors")
    assert [(a["class_name"], a["state"]) for a in actors] == [("Tally", "ALIVE")]
    failed = get_json(url + "/api/tasks?state=FAILED")
    assert [(t["name"], t["error_type"]) for t in failed] == [("broken", "ValueError")]
    assert len(get_json(url + "/api/tasks?name=square&limit=2")) == 2
    assert get_json(url + "/api/summary")["cluster"]["summary"]["square"]["state_counts"] == {
        "FINISHED": 3
    }
    events = get_json(url + "/api/timeline")
    runs = [e for e in events if e["ph"] == "X"]
    assert sorted(e["name"] for e in runs) == ["Tally.add", "broken", *["square"] * 3]
    assert [e["args"]["failed"] for e in runs if e["name"] == "broken"] == [True]


def test_timeline_since_returns_only_what_ended_after(url: str) -> None:
    raylite.get(square.remote(1))
    first = [e for e in get_json(url + "/api/timeline") if e["ph"] == "X"]
    end_us = int(max(e["ts"] + e["dur"] for e in first)) + 2  # whole µs, past rounding
    raylite.get(square.remote(2))
    later = [e for e in get_json(url + f"/api/timeline?since={end_us}") if e["ph"] == "X"]
    assert len(later) == 1 and later[0]["ts"] + later[0]["dur"] > end_us
    newest = get_json(url + "/api/timeline?since=0&limit=1")  # and its process's name
    assert [e["ph"] for e in newest] == ["M", "X"] and newest[0]["pid"] == newest[1]["pid"]


def test_bad_requests_are_answered_with_what_is_wrong(url: str) -> None:
    raylite.get(square.remote(1))  # a task to filter
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "/api/tasks?colour=red", timeout=10)
    assert err.value.code == 400 and "Cannot filter on 'colour'" in json.load(err.value)["error"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "/api/tasks?limit=-1", timeout=10)
    assert err.value.code == 400 and "limit" in json.load(err.value)["error"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "/api/secrets", timeout=10)
    assert err.value.code == 404 and "/api/status" in json.load(err.value)["error"]


def test_only_get_from_a_loopback_host_is_served(url: str) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/api/status")
        assert conn.getresponse().status == 501  # http.server: unsupported method
        conn.close()
        # A page of another site reaching us through DNS rebinding sends its own host name.
        conn.request("GET", "/api/status", headers={"Host": f"evil.example:{port}"})
        assert conn.getresponse().status == 403
        conn.close()
        # Compared exactly: a name that only starts like a loopback one is someone else's.
        for bad in (f"127.0.0.1.evil.com:{port}", f"localhost.evil.com:{port}", "127.0.0.1",
                    f"127.0.0.1:{int(port) + 1}", f"[::1].evil.com:{port}"):  # fmt: skip
            conn.request("GET", "/api/status", headers={"Host": bad})
            assert conn.getresponse().status == 403, bad
            conn.close()
        for good in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            conn.request("GET", "/api/status", headers={"Host": good})
            assert conn.getresponse().status == 200, good
            conn.close()
    finally:
        conn.close()


def test_the_page_is_served_self_contained(url: str) -> None:
    with urllib.request.urlopen(url + "/", timeout=10) as reply:
        page = reply.read().decode()
        assert reply.headers["Content-Type"].startswith("text/html")
    assert "<canvas" in page and "/api/status" in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline


# ---- options and guards -----------------------------------------------------------------


def test_no_dashboard_and_no_port_unless_asked() -> None:
    info = raylite.init(num_cpus=1)
    try:
        assert info["dashboard_url"] is None and info.dashboard_url is None
        assert listening_ports() == set()
    finally:
        raylite.shutdown()


def test_the_dashboard_port_closes_at_shutdown(url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    assert port in listening_ports()
    raylite.shutdown()
    assert port not in listening_ports()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_non_loopback_host_is_refused() -> None:
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="no authentication.*SSH tunnel"):
            raylite.init(include_dashboard=True, dashboard_host=host)
        assert not raylite.is_initialized()


def test_a_busy_port_is_a_clear_error_and_leaves_nothing_running() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}: the port is in use.*dashboard_port"):
            raylite.init(num_cpus=1, include_dashboard=True, dashboard_port=port)
    assert not raylite.is_initialized()
    wait_until(lambda: not live_children(), 10, "the failed init's workers to exit")


def test_the_default_port_moves_on_when_8265_is_busy() -> None:
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 8265))
        except OSError:
            pass  # busy already: what the test needs
        info = raylite.init(num_cpus=1, include_dashboard=True)
        try:
            port = int(info["dashboard_url"].rsplit(":", 1)[1])
            assert 8265 < port < 8265 + 20
            assert get_json(f"http://{info['dashboard_url']}/api/status")["resources_total"]
        finally:
            raylite.shutdown()


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"dashboard_port": 70000}, ValueError, "dashboard_port must be a port number"),
        ({"dashboard_port": "8265"}, ValueError, "dashboard_port must be a port number"),
        ({"include_dashboard": "yes"}, TypeError, "include_dashboard must be True, False"),
        ({"local_mode": True}, ValueError, "local_mode=True runs every task inline"),
    ],
)
def test_bad_dashboard_options(options: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        raylite.init(**{"include_dashboard": True, **options})
    assert not raylite.is_initialized()


# ---- the page, in a real browser --------------------------------------------------------


@pytest.fixture
def browser_ready() -> None:
    why = missing_browser()
    if why is None:
        return
    if os.environ.get("RAYLITE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"RAYLITE_REQUIRE_BROWSER=1 but the browser test cannot run: {why}")
    pytest.skip(f"no headless browser: {why}")


def test_the_page_shows_a_running_task_and_updates(
    browser_ready: None, url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    flag = tmp_path / "release"
    held = hold_until_released.remote(str(flag))
    with chromium_page() as page:
        page.goto(url + "/")
        # It loads and shows the task running, with a row per worker process.
        running = page.locator('#running tr[data-name="hold_until_released"]')
        expect(running).to_be_visible(timeout=15_000)
        expect(page.locator('#task-counts tr[data-state="RUNNING"] .n')).to_have_text("1")
        expect(page.locator("#workers tr[data-pid]")).to_have_count(3)
        expect(page.locator("#resources")).to_contain_text("1 / 2")

        # It updates: the task finishes, shows in the task stream, and an actor appears.
        flag.touch()
        raylite.get(held, timeout=30)
        expect(running).to_have_count(0, timeout=10_000)
        expect(page.locator('#task-counts tr[data-state="FINISHED"] .n')).to_have_text("1")
        expect(page.locator('#stream-legend [data-name="hold_until_released"]')).to_be_visible()
        with pytest.raises(ValueError):
            raylite.get(broken.remote())
        expect(page.locator('#stream-legend [data-failed="1"]')).to_have_text("1 failed")
        tally = Tally.remote()
        raylite.get(tally.add.remote())
        expect(page.locator('#actors tr[data-class="Tally"][data-state="ALIVE"]')).to_be_visible(
            timeout=10_000
        )

        # The Timeline tab draws every finished task, in place of the Live panels.
        expect(page.locator("#timeline")).to_be_hidden()
        page.click("#tab-timeline")
        expect(page.locator("#live")).to_be_hidden()
        expect(page.locator("#timeline")).to_be_visible()
        # a row per process and actor: hold_until_released and broken may share a worker
        info = page.locator("#tl-info")
        expect(info).to_have_text(re.compile(r"^3 tasks on [23] rows$"), timeout=10_000)
        expect(page.locator('#tl-legend [data-name="Tally.add"]')).to_be_visible()
        assert page.locator("#tl").get_attribute("data-bars") == "3"


def test_a_link_to_the_timeline_tab_opens_it_and_follows_the_run(
    browser_ready: None, url: str
) -> None:
    from playwright.sync_api import expect

    raylite.get(square.remote(2))
    with chromium_page() as page:
        page.goto(url + "/#timeline")
        expect(page.locator("#timeline")).to_be_visible()
        expect(page.locator("#live")).to_be_hidden()
        info = page.locator("#tl-info")
        expect(info).to_have_text(re.compile(r"^1 tasks on 1 rows$"), timeout=10_000)
        assert page.locator("#tl").get_attribute("data-bars") == "1"  # drawn, not just counted
        assert page.locator("#tl").bounding_box()["width"] > 600  # across the page
        # Tasks that finish while the tab is open appear without a reload.
        raylite.get([square.remote(i) for i in range(3)])
        expect(info).to_have_text(re.compile(r"^4 tasks on "), timeout=15_000)
        # Back to Live: the address follows, and the Timeline is hidden again.
        page.click("#tab-live")
        expect(page.locator("#live")).to_be_visible()
        expect(page.locator("#timeline")).to_be_hidden()
        assert not page.evaluate("location.hash")


def _handler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request" in t.name]


def test_connections_open_at_shutdown_end_quietly(url: str, capfd: pytest.CaptureFixture[str]) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    socks = []
    for _ in range(3):  # each mid-request: its handler waits for the end of the headers
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
        socks.append(s)
    wait_until(lambda: len(_handler_threads()) >= 3, 10, "the server to take the connections")
    raylite.shutdown()
    for s in socks:  # the browser finishes its request and goes away at once (RST)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            s.sendall(b"\r\n")
        except OSError:
            pass  # hung up on already
        s.close()
    wait_until(lambda: not _handler_threads(), 10, "the dashboard's connections to end")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err
