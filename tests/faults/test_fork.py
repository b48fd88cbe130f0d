"""A driver that forks after ``init``: the child must never touch the parent's runtime.

A forked child starts a session of its own on its first raylite call (as any process does),
cannot use the parent's refs (a clear error), and its exit, normal or not, leaves the
parent's session as it was: its control socket, its dashboard, its workers.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from _helpers import pid_alive, wait_until

import raylite
from raylite.exceptions import RaySystemError

pytestmark = pytest.mark.local_only("they fork the local runtime's driver")

DEADLINE_S = 60.0


@raylite.remote
def ident(x: str) -> str:
    return x


def test_forked_children_get_their_own_values_and_the_parent_its_own(fault):
    assert raylite.get(ident.remote("warm"), timeout=DEADLINE_S) == "warm"
    parent_ref = ident.remote("the parent's")
    start = time.monotonic()
    for round_ in range(3):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, never return into pytest
            code = 1
            try:
                os.close(r)
                values = raylite.get([ident.remote(f"CHILD-{i}") for i in range(3)], timeout=30)
                try:
                    raylite.get(parent_ref, timeout=5)
                    error = "no error"
                except RaySystemError as exc:
                    error = str(exc)
                raylite.shutdown()  # the child's own session
                os.write(w, json.dumps([values, error]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        try:
            mine = raylite.get([ident.remote(f"parent-{round_}-{i}") for i in range(3)],
                               timeout=30)  # fmt: skip
            assert mine == [f"parent-{round_}-{i}" for i in range(3)]
            if not select.select([r], [], [], DEADLINE_S)[0]:
                raise AssertionError(f"the forked child hung (no report in {DEADLINE_S} s)")
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            raise
        with os.fdopen(r) as pipe:
            values, error = json.loads(pipe.read() or "[null, null]")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
        assert values == ["CHILD-0", "CHILD-1", "CHILD-2"]
        assert "forked" in error and str(os.getpid()) in error, error
    assert raylite.get(parent_ref, timeout=DEADLINE_S) == "the parent's"
    fault.record("each its own values; the parent's ref refused in the child", since=start)


def _run_driver(script: str) -> tuple[str, float]:
    """Runs ``script`` as a driver; returns its stdout and how long it ran. Fails if it
    exits with an error or has not exited by the deadline (a hang)."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
            timeout=DEADLINE_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"the driver hung (killed after {DEADLINE_S} s): {exc.stdout!r} {exc.stderr!r}"
        ) from None
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, time.monotonic() - started


def test_a_child_exiting_normally_leaves_the_parents_session_and_dashboard(
    baseline, record_property
):
    out, took = _run_driver(
        """
        import os, sys, urllib.request
        import psutil
        import raylite
        from raylite import _runtime
        from raylite._local import session

        info = raylite.init(num_cpus=1, include_dashboard=True, dashboard_port=0)
        rt = _runtime.current()

        @raylite.remote
        def one():
            return 1

        raylite.get(one.remote())
        pid = os.fork()
        if pid == 0:
            raylite.get(one.remote())  # a session of its own
            sys.exit(0)  # a normal exit: atexit handlers run
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
        control = rt._session.control
        assert control.exists(), "the child removed the parent's control socket"
        assert session.request(control, {"op": "status"}, timeout=10)
        url = f"http://{info.dashboard_url}/"
        assert urllib.request.urlopen(url, timeout=10).status == 200
        assert raylite.get(one.remote()) == 1
        print(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)))
        """
    )
    pids = [int(p) for p in out.split()]
    assert pids, "the driver printed no worker pids"
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "the workers to exit")
    record_property("fault", ("", "the parent's session intact; both exit (whole run)", took, True))


def test_a_multiprocessing_fork_pool_whose_functions_call_raylite(baseline, record_property):
    out, took = _run_driver(
        """
        import multiprocessing as mp
        import raylite
        from raylite import _runtime

        raylite.init(num_cpus=2)

        @raylite.remote
        def square(x):
            return x * x

        def work(x):
            return raylite.get(square.remote(x), timeout=30), _runtime.current()._workers.zygote.pid

        with mp.get_context("fork").Pool(2) as pool:
            results = pool.map(work, range(4))
        print([value for value, _ in results])
        print(raylite.get(square.remote(5), timeout=30))
        print(" ".join(str(zygote) for _, zygote in results))
        """
    )
    lines = out.splitlines()
    assert lines[:2] == ["[0, 1, 4, 9]", "25"]
    zygotes = {int(p) for p in lines[2].split()}
    assert os.getpid() not in zygotes
    wait_until(lambda: not any(pid_alive(p) for p in zygotes), 10, "the pool's runtimes to end")
    record_property("fault", ("", "right values; every runtime ended (whole run)", took, True))
