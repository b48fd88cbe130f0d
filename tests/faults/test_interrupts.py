"""Interrupts that land inside raylite's own code: Ctrl-C, a signal handler that calls
``shutdown()``, an object's ``__del__`` that calls ``.remote()`` from inside raylite.

Each is injected deterministically: a tracer follows the bytecode of the driver's API
methods and fires at a chosen instant where CPython runs signal handlers (``Inject``), so
every such instant is tried, not the lucky few a timer would hit. The cases that used to deadlock the process run in a child process with a
deadline, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import dis
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from _helpers import pid_alive, wait_until

import raylite
from raylite import _runtime
from raylite._local.runtime import LocalRuntime
from raylite._local.waits import Waits

pytestmark = pytest.mark.local_only("they interrupt the local runtime's own code")

CHILD_DEADLINE_S = 60.0


def _codes(fn: Any) -> set[types.CodeType]:
    """``fn``'s code and that of every function defined inside it."""
    out: set[types.CodeType] = set()
    stack = [fn.__code__]
    while stack:
        code = stack.pop()
        out.add(code)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return out


# CPython runs pending signal handlers (and so raises KeyboardInterrupt) only at these
# instants of a frame: its first instruction, at the end of a call instruction, at the end
# of a backward jump. Elsewhere (between BEFORE_WITH and the block, say) none can land.
# A tracer raises before an instruction, so "at the end of a call" is injected before the
# next one, where that is handled alike (the same exception handler covers both).
_CALLS = {"CALL", "CALL_FUNCTION_EX"}
_BACKWARD = {op for op in dis.opname if op.startswith(("JUMP_BACKWARD", "POP_JUMP_BACKWARD"))}


def _handler(code: types.CodeType, offset: int) -> int | None:
    """Where an exception raised at ``offset`` of ``code`` goes (None: out of the frame)."""
    for entry in dis._parse_exception_table(code):  # type: ignore[attr-defined]
        if entry.start <= offset < entry.end:
            return int(entry.target)
    return None


class Inject:
    """Calls ``action`` at the ``n``-th instant where a signal handler could run, in frames
    of ``codes`` on this thread (see ``_CALLS``), once."""

    def __init__(
        self, codes: Iterable[types.CodeType], action: Callable[[], None], n: int
    ) -> None:
        self.codes = set(codes)
        self.action = action
        self.n = n
        self.seen = 0
        self.fired = False
        # {frame: (the last instruction run there, its offset)}
        self._previous: dict[types.FrameType, tuple[str, int] | None] = {}

    def __enter__(self) -> Inject:
        sys.settrace(self._call)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)

    def _call(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code not in self.codes or self.fired:
            return None
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        self._previous[frame] = None
        return self._opcode

    def _opcode(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if self.fired:
            return None
        if event != "opcode":
            return self._opcode
        previous = self._previous.get(frame)
        code, offset = frame.f_code, frame.f_lasti
        self._previous[frame] = (dis.opname[code.co_code[offset]], offset)
        if previous is None or (
            (previous[0] in _CALLS or previous[0] in _BACKWARD)
            and _handler(code, previous[1]) == _handler(code, offset)
        ):
            self.seen += 1
            if self.seen == self.n:
                self.fired = True
                self.action()
        return self._opcode


def _raise_interrupt() -> None:
    raise KeyboardInterrupt


def _lock_free(rt: Any) -> bool:
    """Whether another thread can take the runtime's lock (within 5 s)."""
    got: list[bool] = []

    def probe() -> None:
        ok = rt._lock.acquire(timeout=5)
        if ok:
            rt._lock.release()
        got.append(ok)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return got[0]


@raylite.remote
def one() -> int:
    return 1


@raylite.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


OPERATIONS: dict[str, tuple[list[str], Callable[[dict[str, Any]], object]]] = {
    # name: (the methods interrupted, of LocalRuntime or Waits, the call that runs them)
    "remote": (["submit_task", "_run_call"], lambda ctx: one.remote()),
    "actor call": (["submit_actor_call", "_run_call"], lambda ctx: ctx["actor"].add.remote()),
    "put": (["put"], lambda ctx: raylite.put(b"x")),
    "get": (["get", "_wait_for"], lambda ctx: raylite.get(ctx["ready"])),
    "wait": (["wait", "_wait_for"], lambda ctx: raylite.wait([ctx["ready"]], timeout=0)),
    "cancel": (["cancel"], lambda ctx: raylite.cancel(ctx["ready"])),
    "future": (["future"], lambda ctx: ctx["ready"].future()),
}


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the injection reads Python 3.11's exception tables"
)
@pytest.mark.parametrize("op", list(OPERATIONS))
def test_ctrl_c_at_any_instant_of_a_call_leaves_the_runtime_usable(fault, op):
    methods, call = OPERATIONS[op]
    rt = _runtime.current()
    codes = set().union(*(_codes(getattr(owner, m)) for m in methods
                          for owner in (LocalRuntime, Waits) if m in vars(owner)))  # fmt: skip
    ctx = {"ready": one.remote(), "actor": Counter.remote()}
    raylite.get([ctx["ready"], ctx["actor"].add.remote()], timeout=30)
    start = time.monotonic()
    held_after: list[int] = []
    n = 0
    while True:
        n += 1
        inject = Inject(codes, _raise_interrupt, n)
        try:
            with inject:
                call(ctx)
        except KeyboardInterrupt:
            pass
        if not inject.fired:  # the call ran to its end without reaching bytecode n
            break
        if not _lock_free(rt):
            held_after.append(n)
            rt._lock.release()  # ours (this thread's): free it so the test can go on
    assert n > 5, "the tracer saw too few instants: it did not trace the call"
    assert not held_after, (
        f"an interrupt at instant(s) {held_after} of {n - 1} left the runtime's lock held"
    )
    assert raylite.get(one.remote(), timeout=30) == 1
    fault.record(f"lock free after each of {n - 1} interrupts", since=start)


class _Run(types.SimpleNamespace):
    returncode: int
    stdout: str
    stderr: str
    started: float  # time.monotonic() at the start
    took: float  # seconds


def _run_child(script: str) -> _Run:
    """Runs ``script`` as a driver of its own; fails if it has not exited by the deadline."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
            timeout=CHILD_DEADLINE_S,
        )  # fmt: skip
        return _Run(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr,
                    started=started, took=time.monotonic() - started)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"the driver hung (killed after {CHILD_DEADLINE_S} s); its output:\n"
            f"{exc.stdout!r}\n{exc.stderr!r}"
        ) from None


# Fires at the first bytecode of LocalRuntime.submit_task (or a function inside it) that
# runs while this thread holds the runtime's lock: inside the section, for sure.
_INSIDE_A_SECTION = """
import sys, types
from raylite import _runtime
from raylite._local.runtime import LocalRuntime

def codes(fn):
    out, stack = set(), [fn.__code__]
    while stack:
        code = stack.pop()
        out.add(code)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return out

def held_here(lock):
    return lock._is_owned() if hasattr(lock, "_is_owned") else lock.locked()

def inside_a_section(action):
    rt = _runtime.current()
    targets = set().union(*(codes(getattr(LocalRuntime, m))
                            for m in ("submit_task", "_run_call") if m in vars(LocalRuntime)))
    fired = []
    def opcode(frame, event, arg):
        if not fired and event == "opcode" and held_here(rt._lock):
            fired.append(True)
            action()
        return None if fired else opcode
    def call(frame, event, arg):
        if fired or frame.f_code not in targets:
            return None
        frame.f_trace_opcodes = True
        return opcode
    sys.settrace(call)
    return fired
"""


def test_del_that_calls_remote_inside_raylite_runs_its_task(baseline, record_property):
    result = _run_child(
        _INSIDE_A_SECTION
        + """
import raylite
raylite.init(num_cpus=1)

@raylite.remote
def double(x):
    return 2 * x

made = []

class Resource:
    def __del__(self):
        made.append(double.remote(21))  # as a __del__ that releases a remote resource

held = [Resource()]
fired = inside_a_section(held.clear)  # the last reference goes while raylite holds its lock
ref = double.remote(1)
sys.settrace(None)
assert fired, "the section was never entered"
print(raylite.get([ref] + made, timeout=30))
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[2, 42]"
    record_property("fault", ("", "the __del__'s task ran (whole driver run)", result.took, True))


def test_sigterm_handler_that_calls_shutdown_inside_raylite_exits_cleanly(
    baseline, record_property
):
    result = _run_child(
        _INSIDE_A_SECTION
        + """
import os, signal
import psutil
import raylite
raylite.init(num_cpus=1)

@raylite.remote
def one():
    return 1

raylite.get(one.remote())
print(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)), flush=True)

def on_sigterm(signum, frame):
    raylite.shutdown()
    sys.exit(3)

signal.signal(signal.SIGTERM, on_sigterm)
# The handler runs at the next bytecode: inside the section, with raylite's lock held.
fired = inside_a_section(lambda: os.kill(os.getpid(), signal.SIGTERM))
one.remote()
print("the handler did not run")
"""
    )
    assert result.returncode == 3, result.stdout + result.stderr
    pids = [int(p) for p in result.stdout.split("\n")[0].split()]
    assert pids, "the driver printed no worker pids"
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "the workers to exit")
    took = time.monotonic() - result.started
    record_property("fault", ("", "exit code 3, every process gone (whole run)", took, True))


def test_a_program_going_on_after_a_handlers_shutdown_starts_afresh(baseline, record_property):
    result = _run_child(
        _INSIDE_A_SECTION
        + """
import os, signal
import psutil
import raylite
raylite.init(num_cpus=1)

@raylite.remote
def one():
    return 1

raylite.get(one.remote())
old = _runtime.current()
signal.signal(signal.SIGUSR2, lambda signum, frame: raylite.shutdown())  # and goes on
fired = inside_a_section(lambda: os.kill(os.getpid(), signal.SIGUSR2))
one.remote()  # the handler runs in this call, with raylite's lock held
sys.settrace(None)
assert fired
assert raylite.get(one.remote(), timeout=30) == 1  # a new session, once the old is down
assert _runtime.current() is not old
print("old zygote gone:", not psutil.pid_exists(old._workers.zygote.pid))
raylite.shutdown()
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "old zygote gone: True"
    record_property("fault", ("", "a new session after the old one is down (whole run)",
                              result.took, True))  # fmt: skip
