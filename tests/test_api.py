"""The public API on every runtime (the ``rl`` fixture): Ray's names, semantics and errors.

Tests marked ``local_only`` check what only the local runtime does or shows this way; each
says why.
"""

from __future__ import annotations

import asyncio
import inspect
import os

import pytest

import raylite
from raylite.exceptions import (
    GetTimeoutError,
    PendingTaskWarning,
    RayTaskError,
    TaskUnschedulableError,
)


@raylite.remote
def double(x):
    return 2 * x


@raylite.remote
def add(a, b=0):
    return a + b


@raylite.remote
def whoami():
    return os.getpid()


@raylite.remote
def sleep_then(seconds, value):
    import time

    time.sleep(seconds)
    return value


def test_remote_function_returns_refs_and_get_returns_values(rl):
    ref = double.remote(21)
    assert isinstance(ref, raylite.ObjectRef)
    assert raylite.get(ref) == 42
    assert raylite.get([double.remote(i) for i in range(10)]) == [2 * i for i in range(10)]


def test_tasks_run_in_other_processes(rl):
    pids = set(raylite.get([whoami.remote() for _ in range(20)]))
    assert os.getpid() not in pids


def test_closures_lambdas_and_main_functions_ship_by_value(rl):
    offset = 7
    f = raylite.remote(lambda x: x + offset)
    assert raylite.get(f.remote(1)) == 8

    def local_helper(x):
        return x * 3

    g = raylite.remote(lambda x: local_helper(x))
    assert raylite.get(g.remote(2)) == 6


def test_put_get_and_ref_arguments_are_resolved(rl):
    data = {"a": [1, 2, 3]}
    ref = raylite.put(data)
    assert raylite.get(ref) == data
    assert raylite.get(add.remote(raylite.put(1), b=raylite.put(2))) == 3
    # a chain: the second task waits for the first
    assert raylite.get(double.remote(double.remote(5))) == 20


def test_plain_and_ref_arguments_mixed_in_one_burst(rl):
    ten = raylite.put(10)
    refs = []
    for i in range(40):  # scalar-only calls (the fast path) between calls with refs
        refs += [add.remote(i, 1), add.remote(i, ten), add.remote(i, b=ten), add.remote(a=i)]
    expected = [v for i in range(40) for v in (i + 1, i + 10, i + 10, i)]
    assert raylite.get(refs) == expected


def test_refs_nested_in_containers_stay_refs(rl):
    @raylite.remote
    def inspect_arg(xs):
        return [type(x).__name__ for x in xs], raylite.get(xs)

    inner = raylite.put(5)
    names, values = raylite.get(inspect_arg.remote([inner, inner]))
    assert names == ["ObjectRef", "ObjectRef"]
    assert values == [5, 5]


def test_put_of_an_object_ref_is_refused(rl):
    with pytest.raises(TypeError, match="wrap the ObjectRef in a list"):
        raylite.put(raylite.put(1))


def test_num_returns(rl):
    @raylite.remote(num_returns=3)
    def three():
        return 1, 2, 3

    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert raylite.get(refs) == [1, 2, 3]

    @raylite.remote(num_returns=0)
    def nothing():
        return None

    assert nothing.remote() is None
    with pytest.raises(ValueError, match="num_returns=2"):
        raylite.get(three.options(num_returns=2).remote()[0])


def test_wait_semantics(rl):
    fast = [double.remote(i) for i in range(3)]
    slow = sleep_then.remote(30, "late")
    ready, not_ready = raylite.wait(fast + [slow], num_returns=3, timeout=20)
    assert ready == fast and not_ready == [slow]
    ready, not_ready = raylite.wait([slow], timeout=0.05)
    assert ready == [] and not_ready == [slow]
    raylite.cancel(slow, force=True)


def test_wait_validates_arguments(rl):
    ref = raylite.put(1)
    with pytest.raises(ValueError, match="unique"):
        raylite.wait([ref, ref])
    with pytest.raises(ValueError, match="num_returns"):
        raylite.wait([ref], num_returns=2)
    with pytest.raises(TypeError, match="list of ObjectRef"):
        raylite.wait(ref)  # type: ignore[arg-type]


def test_get_timeout(rl):
    ref = sleep_then.remote(30, None)
    with pytest.raises(GetTimeoutError) as info:
        raylite.get(ref, timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    raylite.cancel(ref, force=True)


def test_get_rejects_non_refs(rl):
    for bad in (42, {"a": 1}, "ref"):
        with pytest.raises(ValueError, match="must either be an ObjectRef or a list"):
            raylite.get(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a list of ObjectRef"):
        raylite.wait([raylite.put(1), 2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="expected a list of ObjectRef"):
        raylite.get([raylite.put(1), 2])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="timeout"):
        raylite.get(raylite.put(1), timeout=-1)


def test_object_ref_is_hashable_comparable_printable(rl):
    a = raylite.put(1)
    b = raylite.put(1)
    assert a != b and a == a and len({a, b, a}) == 2
    assert repr(a).startswith("ObjectRef(") and len(a.hex()) == 56
    assert a.binary() == bytes.fromhex(a.hex())


def test_object_ref_future_and_await(rl):
    assert double.remote(4).future().result(timeout=20) == 8

    async def main():
        return await double.remote(5), await asyncio.gather(double.remote(1), double.remote(2))

    assert asyncio.run(main()) == (10, [2, 4])


def test_task_exception_is_both_ray_task_error_and_the_users_class(rl):
    class CustomError(Exception):
        pass

    @raylite.remote
    def fail():
        raise CustomError("boom")

    with pytest.raises(CustomError) as info:
        raylite.get(fail.remote())
    assert isinstance(info.value, RayTaskError)
    text = str(info.value)
    assert "boom" in text and "in fail" in text  # the remote traceback's frame
    with pytest.raises(RayTaskError):
        raylite.get(fail.remote())


class NeedsTwoArgs(Exception):
    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code


def test_user_exception_with_its_own_init_signature(rl):
    @raylite.remote
    def fail():
        raise NeedsTwoArgs(404, "missing")

    # Such an exception pickles but cannot be rebuilt (pickle calls NeedsTwoArgs(msg)), so
    # it arrives as a RayTaskError carrying the remote traceback's text.
    with pytest.raises(RayTaskError, match="NeedsTwoArgs: 404: missing"):
        raylite.get(fail.remote())


def test_errors_propagate_through_dependent_tasks(rl):
    @raylite.remote
    def fail():
        raise KeyError("first")

    with pytest.raises(KeyError, match="first"):
        raylite.get(double.remote(fail.remote()))


def test_calling_a_remote_function_directly_says_use_remote(rl):
    with pytest.raises(TypeError, match=r"try 'double.remote\(\)'"):
        double(1)


def test_unknown_and_bad_options_are_named():
    with pytest.raises(ValueError, match="Invalid option keyword 'num_cpu'"):
        raylite.remote(num_cpu=1)
    with pytest.raises(ValueError, match="num_cpus must be a finite number >= 0"):
        double.options(num_cpus=-1)
    with pytest.raises(ValueError, match="num_gpus must be a finite number"):
        double.options(num_gpus=float("nan"))
    with pytest.raises(TypeError, match="The type of keyword 'max_retries' must be"):
        double.options(max_retries="3")
    with pytest.raises(ValueError, match="Use the 'num_cpus'"):
        double.options(resources={"CPU": 1})
    with pytest.raises(TypeError, match="@raylite.remote"):
        raylite.remote(double, num_cpus=1)
    # Options only a cluster honours pass here: the runtime that runs the task decides.
    assert double.options(placement_group="pg").function_name == "double"


@pytest.mark.local_only("Ray honours these options")
def test_cluster_only_options_are_refused_by_the_local_runtime_at_remote(rl):
    with pytest.raises(ValueError, match="it takes a PlacementGroup from raylite.util"):
        double.options(placement_group="pg").remote(1)
    with pytest.raises(ValueError, match="label selectors pick among a cluster's nodes"):
        double.options(label_selector={"zone": "a"}).remote(1)
    with pytest.raises(ValueError, match=r"runtime_env=.*raylite.init\(address=...\)"):
        double.options(runtime_env={"pip": ["requests"]}).remote(1)


def test_scheduling_strategy_default_and_spread_are_accepted(rl):
    assert raylite.get(double.options(scheduling_strategy="SPREAD").remote(1)) == 2


def test_init_errors():
    with pytest.raises(RuntimeError, match="Unknown keyword argument"):
        raylite.init(num_cpu=2)
    with pytest.raises(ValueError, match="num_cpus"):
        raylite.init(num_cpus=-2)
    raylite.init(num_cpus=1)
    try:
        with pytest.raises(RuntimeError, match="ignore_reinit_error"):
            raylite.init()
        raylite.init(ignore_reinit_error=True)
    finally:
        raylite.shutdown()
    assert not raylite.is_initialized()


@pytest.mark.local_only("Ray queues an infeasible task (a cluster may grow) and warns")
def test_infeasible_request_warns_and_fails_at_get(rl):
    with pytest.warns(PendingTaskWarning, match="num_cpus=3 but this runtime has 2 CPUs"):
        too_big = double.options(num_cpus=3).remote(1)
    with pytest.warns(PendingTaskWarning, match="resource 'db'"):
        no_db = double.options(resources={"db": 1}).remote(1)
    assert raylite.get(double.remote(2)) == 4  # the program goes on
    with pytest.raises(TaskUnschedulableError, match="num_cpus=3 but this runtime has 2 CPUs"):
        raylite.get(too_big)
    with pytest.raises(TaskUnschedulableError, match="resource 'db'"):
        raylite.get(no_db)


def test_cluster_resources_report(rl):
    assert raylite.cluster_resources()["CPU"] == 2
    assert 0 <= raylite.available_resources()["CPU"] <= 2


@pytest.mark.local_only("Ray reports resources freed by earlier tests with a delay")
def test_available_resources_when_idle(rl):
    assert raylite.available_resources()["CPU"] == 2


def test_runtime_context_in_driver_and_task(rl):
    ctx = raylite.get_runtime_context()
    assert ctx.get_task_id() is None

    @raylite.remote
    def my_task_id():
        return raylite.get_runtime_context().get_task_id()

    task_id = raylite.get(my_task_id.remote())
    assert isinstance(task_id, str) and int(task_id, 16) > 0  # hex (Ray's ids are shorter)


def test_auto_init_on_first_use():
    assert not raylite.is_initialized()
    try:
        assert raylite.get(double.remote(2)) == 4
        assert raylite.is_initialized()
    finally:
        raylite.shutdown()


def test_use_after_shutdown_says_call_init(rl):
    ref = raylite.put(1)
    raylite.shutdown()
    raylite.init(num_cpus=2)  # the fixture shuts this one down
    with pytest.raises(raylite.exceptions.RaySystemError, match="earlier raylite session"):
        raylite.get(ref)


def test_worker_output_is_prefixed_with_task_name_and_pid(capfd):
    raylite.init(num_cpus=1)
    try:

        @raylite.remote
        def chatty():
            print("hello from a task")
            return os.getpid()

        pid = raylite.get(chatty.remote())
    finally:
        raylite.shutdown()
    out = capfd.readouterr().out
    assert f"(chatty pid={pid}) hello from a task" in out


def test_local_mode_runs_inline():
    raylite.init(local_mode=True)
    try:
        assert raylite.get(whoami.remote()) == os.getpid()
        assert raylite.get(double.remote(raylite.put(3))) == 6

        @raylite.remote
        def fail():
            raise ValueError("inline")

        with pytest.raises(ValueError, match="inline"):
            raylite.get(fail.remote())
    finally:
        raylite.shutdown()


def test_public_names_match_ray():
    for name in [
        "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel",
        "available_resources", "cluster_resources", "get_runtime_context", "get_gpu_ids",
        "ObjectRef",
    ]:  # fmt: skip
        assert name in raylite.__all__ and hasattr(raylite, name)
    params = inspect.signature(raylite.get).parameters
    assert list(params) == ["object_refs", "timeout"]
    params = inspect.signature(raylite.wait).parameters
    assert list(params) == ["ray_waitables", "num_returns", "timeout", "fetch_local"]
    params = inspect.signature(raylite.cancel).parameters
    assert list(params) == ["ray_waitable", "force", "recursive"]
    for name in [
        "RayError", "RayTaskError", "GetTimeoutError", "WorkerCrashedError",
        "TaskCancelledError", "ObjectLostError", "ObjectStoreFullError", "RayActorError",
        "ActorDiedError",
    ]:  # fmt: skip
        assert issubclass(getattr(raylite.exceptions, name), raylite.exceptions.RayError)
