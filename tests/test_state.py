"""Seeing the work: timeline(), the state API, the `raylite` commands that reach a running
driver through its control socket, the session folder and the worker logs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import wait_until

import raylite
from raylite._local.history import ACTOR_TASK, NORMAL_TASK, Done, History
from raylite.util.state import (
    list_actors,
    list_objects,
    list_tasks,
    list_workers,
    summarize_tasks,
)

pytestmark = pytest.mark.local_only("the local runtime's own books; Ray's need its dashboard")


@pytest.fixture
def rt() -> Iterator[object]:
    raylite.init(num_cpus=2)
    try:
        yield raylite._runtime.current()
    finally:
        raylite.shutdown()


@raylite.remote
def pid_after(seconds: float) -> int:
    import time

    time.sleep(seconds)
    return os.getpid()


@raylite.remote
def fails() -> None:
    raise KeyError("nope")


@raylite.remote
def wait_for_file(path: str) -> int:
    import time

    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


@raylite.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> int:
        self.n += 1
        return self.n

    def pid(self) -> int:
        return os.getpid()


def _cli(*args: str, session: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raylite", *args, "--session", session],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# ---- timeline ---------------------------------------------------------------------------


def test_timeline_file_holds_every_task_and_call_with_its_process(rt: object, tmp_path: Path):
    pids = raylite.get([pid_after.remote(0.05) for _ in range(4)])
    counter = Counter.remote()
    assert raylite.get([counter.inc.remote() for _ in range(3)]) == [1, 2, 3]
    actor_pid = raylite.get(counter.pid.remote())
    with pytest.raises(KeyError):
        raylite.get(fails.remote())

    path = tmp_path / "trace.json"
    assert raylite.timeline(str(path)) is None
    events = json.loads(path.read_text())
    runs = [e for e in events if e["ph"] == "X"]
    by_name: dict[str, list[dict]] = {}
    for e in runs:
        by_name.setdefault(e["name"], []).append(e)
    assert len(by_name["pid_after"]) == 4
    assert len(by_name["Counter.inc"]) == 3 and len(by_name["Counter.pid"]) == 1
    assert sorted(e["pid"] for e in by_name["pid_after"]) == sorted(pids)
    assert all(e["dur"] >= 0.05e6 for e in by_name["pid_after"])  # microseconds
    assert {e["pid"] for e in by_name["Counter.inc"]} == {actor_pid}
    assert by_name["fails"][0]["args"]["failed"] is True
    assert by_name["pid_after"][0]["args"]["failed"] is False
    labels = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
    assert set(labels) == {e["pid"] for e in runs}  # every process row is named
    assert raylite.timeline() == events  # without a file: the same events, returned


def test_timeline_in_local_mode_records_inline_tasks() -> None:
    raylite.init(local_mode=True)
    try:
        raylite.get([pid_after.remote(0) for _ in range(3)])
        events = [e for e in raylite.timeline() if e["ph"] == "X"]
        assert [e["name"] for e in events] == ["pid_after"] * 3
        assert {e["pid"] for e in events} == {os.getpid()}
        assert [t.state for t in list_tasks()] == ["FINISHED"] * 3
        with pytest.raises(ValueError, match="local_mode=True keeps no actors state"):
            list_actors()
    finally:
        raylite.shutdown()


def test_history_records_read_back_as_done_in_order() -> None:
    history = History(2)
    history.add((1, "f", NORMAL_TASK, 10, 0, 1.0, 2.0, None, 0, 0))  # the hot path's form
    history.add(Done(2, "g", ACTOR_TASK, 11, 7, 3.0, 4.0, b"err", 7))
    history.add((3, "h", NORMAL_TASK, 12, 0, 5.0, 6.0, None, 0, 1))
    assert history.records() == [
        Done(2, "g", ACTOR_TASK, 11, 7, 3.0, 4.0, b"err", 7, 0),
        Done(3, "h", NORMAL_TASK, 12, 0, 5.0, 6.0, None, 0, 1),
    ]
    assert history.records()[1].attempt == 1 and history.recorded == 3
    assert history.name_of(3) == "h" and history.name_of(1) is None  # 1 was dropped


def test_history_extended_by_a_batch_keeps_its_order_and_its_bound() -> None:
    history = History(3)
    history.add((1, "f", NORMAL_TASK, 10, 0, 1.0, 2.0, None, 0, 0))
    history.extend([(i, "g", NORMAL_TASK, 11, 0, 3.0, 4.0, None, 0, 0) for i in (2, 3, 4)])
    assert [d.task_id for d in history.records()] == [2, 3, 4] and history.recorded == 4
    off = History(0)
    off.extend([(5, "h", NORMAL_TASK, 12, 0, 5.0, 6.0, None, 0, 0)])
    assert off.records() == [] and off.recorded == 0


def test_history_keeps_the_newest_entries_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLITE_TASK_HISTORY", "5")
    raylite.init(num_cpus=2)
    try:
        refs = [pid_after.remote(0) for _ in range(20)]
        raylite.get(refs)
        finished = list_tasks(filters=[("state", "=", "FINISHED")], limit=1000)
        assert len(finished) == 5
        assert raylite._runtime.current().status()["tasks_recorded"] == 20
    finally:
        raylite.shutdown()


# ---- the state API ----------------------------------------------------------------------


def test_list_tasks_shows_running_waiting_and_finished(rt: object, tmp_path: Path) -> None:
    done_pid = raylite.get(pid_after.remote(0))
    flag = tmp_path / "go"
    held = [wait_for_file.remote(str(flag)) for _ in range(3)]  # 2 CPUs: one must wait
    wait_until(lambda: len(list_tasks(filters=[("state", "=", "RUNNING")])) == 2, 10,
               "two tasks to run")  # fmt: skip
    tasks = list_tasks()
    states = sorted(t.state for t in tasks if t.name == "wait_for_file")
    assert states == ["PENDING_NODE_ASSIGNMENT", "RUNNING", "RUNNING"]
    running = list_tasks(filters=[("state", "=", "RUNNING")])
    assert all(t.worker_pid and t.type == "NORMAL_TASK" for t in running)
    finished = [t for t in tasks if t.name == "pid_after"]
    assert [(t.state, t.worker_pid) for t in finished] == [("FINISHED", done_pid)]
    assert finished[0].end_time_ms >= finished[0].start_time_ms > 0
    assert len(list_tasks(limit=1)) == 1
    assert summarize_tasks()["cluster"]["summary"]["wait_for_file"]["state_counts"] == {
        "RUNNING": 2, "PENDING_NODE_ASSIGNMENT": 1,
    }  # fmt: skip
    flag.touch()
    raylite.get(held)
    counts = summarize_tasks()["cluster"]["summary"]["wait_for_file"]["state_counts"]
    assert counts == {"FINISHED": 3}


def test_failed_tasks_show_their_error(rt: object) -> None:
    with pytest.raises(KeyError):
        raylite.get(fails.remote())
    (failed,) = list_tasks(filters=[("state", "=", "FAILED")])
    assert failed.name == "fails" and failed.error_type == "KeyError"
    assert "nope" in failed.error_message


def test_bad_filters_say_what_is_allowed(rt: object) -> None:
    raylite.get(pid_after.remote(0))
    with pytest.raises(ValueError, match="Cannot filter on 'colour': the keys are .*state"):
        list_tasks(filters=[("colour", "=", "red")])
    with pytest.raises(ValueError, match="predicate '=' or '!='"):
        list_tasks(filters=[("state", "~", "RUNNING")])
    with pytest.raises(ValueError, match="limit must be a positive int"):
        list_tasks(limit=0)


def test_list_actors_and_their_calls(rt: object) -> None:
    counter = Counter.options(name="c1").remote()
    pid = raylite.get(counter.pid.remote())
    (actor,) = list_actors()
    assert (actor.class_name, actor.state, actor.name, actor.pid) == ("Counter", "ALIVE", "c1", pid)
    assert actor.placement == "packed"
    calls = list_tasks(filters=[("type", "=", "ACTOR_TASK")])
    assert [(c.name, c.state, c.actor_id) for c in calls] == [
        ("Counter.pid", "FINISHED", actor.actor_id)
    ]
    raylite.kill(counter)
    wait_until(lambda: [a.state for a in list_actors()] in ([], ["DEAD"]), 10, "actor death")


def test_an_actor_restarting_shows_restarting_then_alive(tmp_path: Path) -> None:
    # The actor holds the one "slot"; killed (with a restart), it gives the slot back and
    # a task waiting for it takes it first, so the actor waits to be placed again.
    raylite.init(num_cpus=2, resources={"slot": 1})
    try:
        counter = Counter.options(resources={"slot": 1}, max_restarts=-1).remote()
        assert raylite.get(counter.inc.remote()) == 1
        flag = tmp_path / "go"
        held = wait_for_file.options(resources={"slot": 1}).remote(str(flag))
        assert [a.state for a in list_actors()] == ["ALIVE"]
        raylite.kill(counter, no_restart=False)
        wait_until(lambda: len(list_tasks(filters=[("state", "=", "RUNNING")])) == 1, 10,
                   "the task to take the slot")  # fmt: skip
        assert [a.state for a in list_actors()] == ["RESTARTING"]
        flag.touch()
        raylite.get(held)
        assert raylite.get(counter.inc.remote()) == 1  # a fresh instance
        assert [a.state for a in list_actors()] == ["ALIVE"]
    finally:
        raylite.shutdown()


def test_list_objects_shows_sizes_and_shared_memory(rt: object) -> None:
    np = pytest.importorskip("numpy")
    big = raylite.put(np.zeros(1 << 20, dtype=np.uint8))
    small = raylite.put("hello")
    objects = {o.object_id: o for o in list_objects()}
    assert objects[big.hex()].object_size >= 1 << 20 and objects[big.hex()].in_shared_memory
    assert objects[small.hex()].object_size < 1000 and not objects[small.hex()].in_shared_memory
    assert objects[big.hex()].status == "READY"
    del big
    wait_until(lambda: len(list_objects()) == 1, 10, "the freed object to leave the list")


def test_list_workers_shows_processes_with_memory(rt: object) -> None:
    pids = set(raylite.get([pid_after.remote(0.05) for _ in range(4)]))
    workers = {w.pid: w for w in list_workers()}
    assert workers[os.getpid()].worker_type == "DRIVER"
    assert pids <= set(workers)
    assert all(w.memory_rss > 0 and w.cpu_percent is not None for w in workers.values())


@raylite.remote
def lists_inside() -> None:
    list_tasks()


def test_state_api_inside_a_task_says_where_to_call_it(rt: object) -> None:
    with pytest.raises(NotImplementedError, match="from the driver only"):
        raylite.get(lists_inside.remote())


# ---- the command line, through the control socket ---------------------------------------


def test_cli_reaches_the_running_driver(rt: object, tmp_path: Path) -> None:
    session = rt.session_dir  # type: ignore[attr-defined]
    counter = Counter.remote()
    raylite.get([counter.inc.remote(), pid_after.remote(0)])

    status = _cli("status", session=session)
    assert status.returncode == 0, status.stderr
    assert f"driver pid {os.getpid()}" in status.stdout and "/ 2 CPU" in status.stdout
    listed = _cli("list", "tasks", "--format", "json", "--filter", "type=NORMAL_TASK",
                  session=session)  # fmt: skip
    assert [t["name"] for t in json.loads(listed.stdout)] == ["pid_after"]
    table = _cli("list", "actors", session=session)
    assert "Counter" in table.stdout and "ALIVE" in table.stdout
    summary = _cli("summary", "tasks", session=session)
    assert "Counter.inc" in summary.stdout and "1 FINISHED" in summary.stdout
    trace = tmp_path / "t.json"
    assert _cli("timeline", str(trace), session=session).returncode == 0
    assert {e["name"] for e in json.loads(trace.read_text()) if e["ph"] == "X"} == {
        "Counter.inc", "pid_after",
    }  # fmt: skip


def test_too_long_a_temp_dir_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60)
    with pytest.raises(ValueError, match="too long for a Unix socket.*shorter init._temp_dir"):
        raylite.init(num_cpus=1, _temp_dir=str(deep))
    assert not raylite.is_initialized()
    assert list(deep.glob("session_*")) == []


def test_cli_without_a_driver_says_what_to_do(tmp_path: Path) -> None:
    out = _cli("status", session=str(tmp_path))
    assert out.returncode != 0 and "no running driver" in out.stderr
    assert "raylite.init()" in out.stderr


def test_cli_bad_filter_is_a_usage_error(rt: object) -> None:
    out = _cli("list", "tasks", "--filter", "state", session=rt.session_dir)  # type: ignore[attr-defined]
    assert out.returncode == 2 and "write key=value or key!=value" in out.stderr


# ---- the session folder: private, logs, cleanup -----------------------------------------


def test_session_folder_is_private_and_its_socket_goes_at_shutdown() -> None:
    raylite.init(num_cpus=1)
    session = Path(raylite._runtime.current().session_dir)  # type: ignore[attr-defined]
    try:
        assert stat.S_IMODE(session.stat().st_mode) == 0o700
        sock = session / "control.sock"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert (session.parent / "session_latest").resolve() == session.resolve()
    finally:
        raylite.shutdown()
    assert not sock.exists()
    assert (session / "logs").is_dir()  # the logs stay, for `raylite logs`


@pytest.mark.skipif(os.getuid() != 0, reason="acting as another user needs root")
def test_another_user_cannot_reach_the_control_socket(rt: object) -> None:
    sock = os.path.join(rt.session_dir, "control.sock")  # type: ignore[attr-defined]
    code = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({sock!r})\n"
        "except PermissionError:\n"
        "    sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


@raylite.remote
def shout(word: str) -> int:
    print(word)
    print(f"err:{word}", file=sys.stderr)
    return os.getpid()


def test_worker_output_lands_in_the_session_logs(rt: object) -> None:
    pid = raylite.get(shout.remote("marker-7f3a"))
    logs = Path(rt.session_dir) / "logs"  # type: ignore[attr-defined]
    out, err = logs / f"worker-{pid}.out", logs / f"worker-{pid}.err"
    wait_until(lambda: out.exists() and "marker-7f3a" in out.read_text(), 10, "the log line")
    assert f"(shout pid={pid}) marker-7f3a" in out.read_text()
    assert "err:marker-7f3a" in err.read_text()
    shown = _cli("logs", f"worker-{pid}.out", session=rt.session_dir)  # type: ignore[attr-defined]
    assert "marker-7f3a" in shown.stdout
    listing = _cli("logs", session=rt.session_dir)  # type: ignore[attr-defined]
    assert f"worker-{pid}.err" in listing.stdout


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder with a short path (a Unix socket's path has 107 bytes at most)."""
    path = Path(tempfile.mkdtemp(prefix="rl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_init_prunes_old_finished_sessions(short_tmp: Path) -> None:
    from raylite._local.session import KEEP

    tmp_path = short_tmp
    dead_pid = 2**22 + 12345  # above pid_max's default: no such process
    old = [tmp_path / f"session_2020-01-01_00-00-{i:02d}_000000_{dead_pid}" for i in range(15)]
    for p in old:
        (p / "logs").mkdir(parents=True)
        (p / "control.sock").touch()  # as a SIGKILLed driver leaves it
    raylite.init(num_cpus=1, _temp_dir=str(tmp_path))
    raylite.shutdown()
    left = sorted(p.name for p in tmp_path.glob("session_2020*"))
    assert left == [p.name for p in old[-KEEP:]]
    assert not any((tmp_path / name / "control.sock").exists() for name in left)


def test_a_process_that_inits_again_and_again_keeps_few_session_folders(short_tmp: Path):
    from raylite._local.session import KEEP

    for _ in range(KEEP + 3):
        raylite.init(num_cpus=1, _temp_dir=str(short_tmp))
        raylite.shutdown()
    assert len(list(short_tmp.glob("session_2*"))) == KEEP + 1  # the newest finished + last


def test_a_segfault_dump_goes_to_the_workers_log_not_the_console(short_tmp: Path) -> None:
    tmp_path = short_tmp
    # The driver runs with faulthandler on, as under pytest or `python -X faulthandler`.
    script = tmp_path / "crash.py"
    script.write_text(
        "import ctypes, raylite\n"
        f"raylite.init(num_cpus=1, _temp_dir={str(tmp_path)!r})\n"
        "@raylite.remote(max_retries=0)\n"
        "def crash():\n"
        "    ctypes.string_at(0)\n"
        "try:\n"
        "    raylite.get(crash.remote())\n"
        "except raylite.exceptions.WorkerCrashedError as error:\n"
        "    print('crashed:', error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(script)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "crashed:" in done.stdout and "SIGSEGV" in done.stdout, done.stdout + done.stderr
    assert "Fatal Python error" not in done.stderr, done.stderr
    dumps = [
        log for log in tmp_path.glob("session_latest/logs/worker-*.err")
        if "Fatal Python error: Segmentation fault" in log.read_text(errors="replace")
    ]  # fmt: skip
    assert len(dumps) == 1


def _driver(root: Path, release: Path) -> subprocess.Popen[str]:
    """A driver program in a process of its own, running until ``release`` exists."""
    code = (
        "import os, time, raylite\n"
        "raylite.init(num_cpus=1)\n"
        f"while not os.path.exists({str(release)!r}):\n"
        "    time.sleep(0.05)\n"
    )
    env = {**os.environ, "RAYLITE_TEMP_DIR": str(root)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, text=True)


def _cli_in(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAYLITE_TEMP_DIR": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "raylite", *args], capture_output=True, text=True, timeout=60,
        env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_cli_with_two_drivers_lists_them_and_asks_which(short_tmp: Path) -> None:
    from raylite._local.session import live_sessions

    first = _driver(short_tmp, short_tmp / "stop-first")
    second = _driver(short_tmp, short_tmp / "stop-second")
    try:
        wait_until(lambda: len(live_sessions(short_tmp)) == 2, 30, "both drivers to start")
        listed = _cli_in(short_tmp, "sessions")
        assert listed.returncode == 0, listed.stderr
        assert str(first.pid) in listed.stdout and str(second.pid) in listed.stdout
        assert "import os, time, raylite" in listed.stdout  # the command each one runs

        # Two live drivers: the CLI does not guess (stdin is no terminal, so it cannot ask).
        status = _cli_in(short_tmp, "status")
        assert status.returncode != 0 and "2 raylite drivers are running" in status.stderr
        assert "--session" in status.stderr and str(first.pid) in status.stderr

        chosen = next(p.name for p in live_sessions(short_tmp) if p.name.endswith(f"_{second.pid}"))
        status = _cli_in(short_tmp, "status", "--session", chosen)  # as `sessions` shows it
        assert f"driver pid {second.pid}" in status.stdout, status.stderr

        # The only live one is picked, whichever started last.
        (short_tmp / "stop-second").touch()
        second.wait(timeout=30)
        status = _cli_in(short_tmp, "status")
        assert status.returncode == 0, status.stderr
        assert f"driver pid {first.pid}" in status.stdout
    finally:
        (short_tmp / "stop-first").touch()
        (short_tmp / "stop-second").touch()
        for driver in (first, second):
            driver.wait(timeout=30)
    assert "no raylite driver is running" in _cli_in(short_tmp, "sessions").stdout


def test_get_actor_finds_an_actor_by_id_until_and_after_it_dies(rt: object) -> None:
    from raylite.util.state import get_actor

    @raylite.remote
    class Named:
        def ping(self) -> str:
            return "pong"

    actor = Named.remote()
    assert raylite.get(actor.ping.remote()) == "pong"
    (actor_id,) = [a.actor_id for a in list_actors() if a.class_name == "Named"]
    found = get_actor(actor_id)
    assert found is not None and found.state == "ALIVE" and found.class_name == "Named"
    raylite.kill(actor)
    dead = get_actor(actor_id)
    assert dead is not None and dead.state == "DEAD"
    assert get_actor("00" * 16) is None


def test_get_task_finds_a_finished_task_by_id(rt: object) -> None:
    from raylite.util.state import get_task, list_tasks

    ref = pid_after.remote(0)
    raylite.get(ref)
    task_id = next(t.task_id for t in list_tasks() if t.func_or_class_name.endswith("pid_after"))
    found = get_task(task_id)
    assert found is not None and found.state == "FINISHED"
    assert get_task("ff" * 16) is None
