"""Bad input: each kind gets an error of the right type whose message names the problem and
the fix. Tests that take ``rl`` run on the local runtime and on real Ray (then they assert
what both say); ``local_only`` ones check raylite's own behaviour and say why.

Kinds tested in other files, not repeated here:

| bad input                                  | test                                         |
|--------------------------------------------|----------------------------------------------|
| unpicklable argument / result              | test_failures.py::test_unpicklable_*         |
| unknown option name, bad option value      | test_api.py::test_unknown_and_bad_options_*  |
| ``get``/``wait`` of non-refs, bad timeout  | test_api.py::test_get_rejects_non_refs, ...  |
| ``get`` of a ref from an earlier ``init``  | test_api.py::test_use_after_shutdown_*       |
| ``init`` twice, unknown ``init`` keyword   | test_api.py::test_init_errors                |
| ``put``/result over the store's capacity   | test_store.py::test_capacity_is_enforced_*,  |
|                                            | test_results_that_do_not_fit_*               |
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import psutil
import pytest
from _helpers import live_children

import raylite
from raylite.exceptions import (
    ActorDiedError,
    ObjectLostError,
    ObjectStoreFullError,
    RaySystemError,
    RayTaskError,
)

MB = 1024 * 1024


@raylite.remote
def ident(x):
    return x


@raylite.remote
class Counter:
    def add(self, n):
        return n + 1


# ---- options and resources ------------------------------------------------------------------


@pytest.mark.parametrize(
    "init_kwargs, error, words",
    [
        ({"num_cpus": float("nan")}, ValueError, "num_cpus must be a finite number >= 0, got nan"),
        ({"num_gpus": float("inf")}, ValueError, "num_gpus must be a finite number >= 0, got inf"),
        ({"num_cpus": "2"}, TypeError, "num_cpus must be a number, got str '2'"),
        ({"resources": {"db": -1}}, ValueError, "resources['db'] must be a finite number >= 0"),
        ({"resources": {"db": float("nan")}}, ValueError, "resources['db'] must be a finite"),
        ({"resources": {"CPU": 2}}, ValueError, "Use the 'num_cpus' and 'num_gpus' keyword"),
        ({"resources": ["db"]}, TypeError, "resources must be a dict of resource name to amount"),
        ({"object_store_memory": -5}, ValueError, "object_store_memory must be a positive"),
    ],
)
def test_bad_init_resources_are_named(init_kwargs, error, words):
    with pytest.raises(error) as info:
        raylite.init(**init_kwargs)
    assert words in str(info.value)
    assert not raylite.is_initialized()


@pytest.mark.parametrize(
    "options, error, words",
    [
        ({"num_cpus": float("nan")}, ValueError, "num_cpus must be a finite number >= 0"),
        ({"num_gpus": -0.5}, ValueError, "num_gpus must be a finite number >= 0, got -0.5"),
        ({"resources": {"db": float("-inf")}}, ValueError, "resources['db'] must be a finite"),
        ({"resources": {"": 1}}, TypeError, "resources keys must be non-empty strings"),
        ({"num_returns": -1}, ValueError, "The keyword 'num_returns' only accepts None, a "
         "non-negative integer, 'streaming' (for generators), or 'dynamic'; got -1"),
        ({"num_returns": 0.5}, TypeError, "The type of keyword 'num_returns' must be (<class "
         "'int'>, <class 'str'>, <class 'NoneType'>), but received type <class 'float'>"),
        ({"max_retries": 1.5}, TypeError, "The type of keyword 'max_retries' must be (<class "
         "'int'>, <class 'NoneType'>), but received type <class 'float'> (1.5)"),
        ({"max_retries": -2}, ValueError, "The keyword 'max_retries' only accepts None, 0, -1 "
         "or a positive integer, where -1 represents infinity; got -2"),
        ({"max_calls": -1}, ValueError, "The keyword 'max_calls' only accepts None, 0 or a "
         "positive integer; got -1"),
        ({"num_gpus": 0.00001}, ValueError, "The precision of the fractional quantity of "
         "resource num_gpus cannot go beyond 0.0001"),
        ({"resources": {"db": 1e-7}}, ValueError, "quantity of resource db cannot go beyond"),
        ({"retry_exceptions": "yes"}, TypeError, "retry_exceptions must be a bool or a list"),
        ({"executor": "gpu"}, ValueError, "executor must be 'process' (CPU-bound work) or"),
    ],
)  # fmt: skip
def test_bad_task_options_name_the_option_and_what_is_allowed(options, error, words):
    with pytest.raises(error) as info:
        ident.options(**options)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "options, error, words",
    [
        ({"max_concurency": 2}, ValueError, "Invalid option keyword 'max_concurency' for actors. "
         "Valid ones are allow_out_of_order_execution, concurrency_groups"),
        ({"max_restarts": "x"}, TypeError, "The type of keyword 'max_restarts' must be (<class "
         "'int'>, <class 'NoneType'>), but received type <class 'str'> ('x')"),
        ({"max_task_retries": -3}, ValueError, "The keyword 'max_task_retries' only accepts "
         "None, 0, -1 or a positive integer, where -1 represents infinity; got -3"),
        ({"max_concurrency": 0}, ValueError, "The keyword 'max_concurrency' only accepts None "
         "or an integer >= 1; got 0"),
        ({"num_cpus": 1e-5}, ValueError, "The precision of the fractional quantity of resource "
         "num_cpus cannot go beyond 0.0001"),
        ({"lifetime": "forever"}, ValueError, "lifetime must be None, 'detached' or"),
        ({"concurrency_groups": {"io": 0}}, TypeError, "concurrency_groups must be a dict of"),
        ({"num_cpus": float("nan")}, ValueError, "num_cpus must be a finite number >= 0"),
    ],
)  # fmt: skip
def test_bad_actor_options_name_the_option_and_what_is_allowed(options, error, words):
    with pytest.raises(error) as info:
        Counter.options(**options)
    assert words in str(info.value)


def test_bad_method_options_and_decorator_misuse_show_the_right_form():
    with pytest.raises(ValueError, match="'num_return' for actor methods. Valid ones are"):
        raylite.method(num_return=2)
    with pytest.raises(TypeError, match=r"keyword arguments only, e\.g\. '@raylite\.method\("):
        raylite.method(2)
    with pytest.raises(TypeError, match=r"for example '@raylite\.remote\(num_cpus=1\)'"):
        raylite.remote(5)
    with pytest.raises(TypeError, match="no arguments and no parentheses"):

        @raylite.remote()  # parentheses and no option: Ray rejects it too
        class Empty:
            pass


@pytest.mark.parametrize(
    "name, value, allowed",
    [
        ("RAYLITE_MAX_WORKERS", "lots", "a whole number >= 1"),
        ("RAYLITE_PENDING_WARNING_S", "soon", "a number >= 0"),
        ("RAYLITE_PENDING_WARNING_S", "nan", "a number >= 0"),
        ("RAYLITE_TASK_HISTORY", "-1", "a whole number >= 0"),
    ],
)
def test_a_bad_environment_variable_is_named_and_leaves_nothing(
    monkeypatch, tmp_path, name, value, allowed
):
    monkeypatch.setenv(name, value)
    root = Path(tempfile.mkdtemp(prefix="rl-"))  # short: a socket's path lives under it
    try:
        with pytest.raises(ValueError, match=f"{name} must be {allowed}.*{value!r}: fix or unset it"):
            raylite.init(num_cpus=1, _temp_dir=str(root))
        assert not raylite.is_initialized()
        assert list(root.glob("session_*")) == []  # no empty session folder
        assert live_children() == []  # and no zygote, zombie or not
        assert psutil.Process().children() == []
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- values -----------------------------------------------------------------------------


@pytest.mark.local_only("Ray spills an argument over its store's capacity to disk")
def test_argument_bigger_than_the_store_fails_at_remote_and_the_store_still_works():
    np = pytest.importorskip("numpy")
    raylite.init(num_cpus=1, object_store_memory=20 * MB)
    try:
        with pytest.raises(ObjectStoreFullError) as info:
            ident.remote(np.zeros(30 * MB, dtype=np.uint8))
        text = str(info.value)
        assert "the arguments of ident()" in text and "31.5 MB" in text
        assert "raylite.init(object_store_memory=<bytes>)" in text
        small = np.arange(10)
        assert (raylite.get(ident.remote(small)) == small).all()
    finally:
        raylite.shutdown()


# ---- sessions -----------------------------------------------------------------------------


@pytest.mark.local_only("a Ray cluster outlives shutdown(), and so do its refs and actors")
def test_refs_and_actors_of_an_earlier_session_say_so_and_what_to_do():
    raylite.init(num_cpus=1)
    old_ref = raylite.put(1)
    old_actor = Counter.remote()
    assert raylite.get(old_actor.add.remote(1)) == 2
    raylite.shutdown()
    raylite.init(num_cpus=1)
    try:
        for call in (lambda: raylite.wait([old_ref]), lambda: raylite.cancel(old_ref)):
            with pytest.raises(RaySystemError, match="earlier raylite session.*raylite.init"):
                call()
        with pytest.raises(ObjectLostError, match="earlier raylite session.*recompute"):
            raylite.get(ident.remote(old_ref), timeout=30)  # as an argument of a new task
        with pytest.raises(ActorDiedError, match=r"earlier raylite session.*create the actor"):
            raylite.get(old_actor.add.remote(1), timeout=30)
    finally:
        raylite.shutdown()


def test_api_after_shutdown_starts_a_new_session_as_ray_does():
    raylite.init(num_cpus=1)
    raylite.shutdown()
    try:
        assert raylite.get(raylite.put("again")) == "again"  # Ray auto-initializes too
        assert raylite.is_initialized()
    finally:
        raylite.shutdown()


def test_init_inside_a_task_is_a_reinit(rl):
    @raylite.remote
    def init_again(ignore):
        raylite.init(ignore_reinit_error=ignore)
        return "ok"

    assert raylite.get(init_again.remote(True), timeout=60) == "ok"
    with pytest.raises(RuntimeError) as info:
        raylite.get(init_again.remote(False), timeout=60)
    assert isinstance(info.value, RayTaskError)
    assert "init twice by accident" in str(info.value)
    assert "ignore_reinit_error=True" in str(info.value)


def test_unpicklable_value_in_put_names_the_cause(rl):
    with pytest.raises(TypeError) as info:
        raylite.put(threading.Lock())
    assert "cannot pickle '_thread.lock' object" in str(info.value)


@pytest.mark.local_only("Ray's message names no fix")
@pytest.mark.parametrize("where", ["driver", "task", "local_mode"])
def test_unpicklable_value_in_put_names_the_fix_everywhere(where):
    @raylite.remote
    def put_a_lock():
        return raylite.put(threading.Lock())

    raylite.init(num_cpus=1, local_mode=where == "local_mode")
    try:
        with pytest.raises(TypeError) as info:
            if where == "task":
                raylite.get(put_a_lock.remote(), timeout=30)
            else:
                raylite.put(threading.Lock())
        text = str(info.value)
        assert "Could not serialize the value passed to put(): " in text
        assert "cannot pickle '_thread.lock' object" in text
        assert "create them where they are used" in text
    finally:
        raylite.shutdown()


def test_unpicklable_result_of_a_thread_task_names_the_fix():
    @raylite.remote(executor="thread")
    def make_lock():
        return threading.Lock()

    raylite.init(num_cpus=1)
    try:
        with pytest.raises(TypeError, match=r"return value of make_lock\(\).*Return picklable"):
            raylite.get(make_lock.remote(), timeout=30)
    finally:
        raylite.shutdown()


# ---- unbounded recursion in nested tasks ----------------------------------------------------


@raylite.remote
def recurse(n):
    return raylite.get(recurse.remote(n + 1))


@raylite.remote
def countdown(n):
    return "done" if n == 0 else raylite.get(countdown.remote(n - 1))


@raylite.remote
def parent_of(x):
    return raylite.get(ident.remote(x)) + 1


@raylite.remote
def fib(n):
    if n < 2:
        return n
    return sum(raylite.get([fib.remote(n - 1), fib.remote(n - 2)]))


class _PeakChildren:
    """Samples this process's live descendants on a thread, keeping the peak count."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, len(live_children()))

    def __enter__(self) -> _PeakChildren:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.local_only("Ray starts a worker per blocked task until memory runs out")
def test_unbounded_recursion_fails_clearly_with_the_process_count_bounded(monkeypatch):
    monkeypatch.setenv("RAYLITE_MAX_WORKERS", "12")
    raylite.init(num_cpus=2)
    try:
        with _PeakChildren() as children, pytest.raises(RecursionError) as info:
            raylite.get(recurse.remote(0), timeout=60)
        assert isinstance(info.value, RayTaskError)
        text = str(info.value)  # the deepest task failed with it, each parent re-raised it
        assert "RecursionError: Task recurse() (nested 12 deep) cannot start" in text
        assert "all 12 worker processes raylite may run are blocked in get()" in text
        assert "unbounded recursion in nested tasks" in text
        assert "RAYLITE_MAX_WORKERS (now 12)" in text
        assert children.peak <= 12 + 1  # the workers and their zygote
        assert raylite.get(countdown.remote(3), timeout=30) == "done"  # it recovers
    finally:
        raylite.shutdown()


@raylite.remote(executor="thread")
def recurse_on_threads(n):
    return raylite.get(recurse_on_threads.remote(n + 1))


@raylite.remote(executor="thread")
def wait_inside(refs):
    return raylite.get(refs[0])


@raylite.remote
def sleep_then(seconds, value):
    import time

    time.sleep(seconds)
    return value


@pytest.mark.local_only("the thread executor is raylite's own")
def test_unbounded_recursion_of_thread_tasks_fails_clearly():
    raylite.init(num_cpus=2)
    try:
        threads_before = threading.active_count()
        with pytest.raises(RecursionError) as info:
            raylite.get(recurse_on_threads.remote(0), timeout=60)
        assert isinstance(info.value, RayTaskError)
        text = str(info.value)
        assert "RecursionError: Thread task recurse_on_threads() cannot start: all 64 " in text
        assert "unbounded recursion in nested tasks" in text
        assert threading.active_count() <= threads_before + 64
        # More thread tasks than threads, all waiting on a process task: not a stall.
        gate = sleep_then.remote(0.5, "open")
        assert raylite.get([wait_inside.remote([gate]) for _ in range(70)], timeout=60) == [
            "open"
        ] * 70
    finally:
        raylite.shutdown()


@raylite.remote
class Slow:
    def work(self, seconds, value):
        import time

        time.sleep(seconds)
        return value


@raylite.remote
def ask(actor, value):
    return raylite.get(actor.work.remote(0.5, value))


@pytest.mark.local_only("the worker cap is raylite's")
def test_more_tasks_waiting_on_an_actor_than_the_cap_all_finish(monkeypatch):
    # Every worker blocks on the actor while tasks wait for a worker, for longer than the
    # stall check's two looks: not a stall, since the actor wakes them one by one.
    monkeypatch.setenv("RAYLITE_MAX_WORKERS", "3")
    raylite.init(num_cpus=2)
    try:
        slow = Slow.remote()
        assert raylite.get([ask.remote(slow, i) for i in range(10)], timeout=60) == list(range(10))
    finally:
        raylite.shutdown()


@pytest.mark.local_only("on Ray each blocked task gets a process: tens of seconds on 2 cores")
def test_deep_and_wide_nested_programs_still_work_on_two_cpus(rl):
    with _PeakChildren() as children:
        assert raylite.get(countdown.remote(30), timeout=60) == "done"
        assert raylite.get(fib.remote(12), timeout=60) == 144
        # 200 parents, each waiting on a child: children go first, so the parents queued
        # behind them never all hold a process at once (FIFO order hung at 64 workers).
        assert raylite.get([parent_of.remote(i) for i in range(200)], timeout=60) == [
            i + 1 for i in range(200)
        ]
    assert children.peak <= 64 + 1
