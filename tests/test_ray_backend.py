"""The Ray runtime (``init(address=...)``): what only it does. The shared API suite runs on
it too (``test_api.py``, ``test_failures.py`` through the ``rl`` fixture)."""

from __future__ import annotations

import os
import pickle
import sys
import time

import pytest
from _helpers import RayHead, wait_until

import raylite
from raylite import _runtime
from raylite.exceptions import (
    ActorDiedError,
    GetTimeoutError,
    ObjectLostError,
    OwnerDiedError,
    RayActorError,
    RayError,
    RaySystemError,
    RayTaskError,
    TaskCancelledError,
    WorkerCrashedError,
)

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'raylite[ray]'")
translate = pytest.importorskip("raylite._ray.errors").translate


@raylite.remote
def double(x):
    return 2 * x


@raylite.remote
def env_var(name):
    return os.environ.get(name)


@raylite.remote
def runtime_inside():
    return type(_runtime.current()).__name__, raylite.get(double.remote(5))


@pytest.mark.parametrize(
    "ray_error, raylite_classes",
    [
        (lambda: ray.exceptions.GetTimeoutError("late"), [GetTimeoutError, TimeoutError]),
        (lambda: ray.exceptions.TaskCancelledError(), [TaskCancelledError]),
        (lambda: ray.exceptions.WorkerCrashedError(), [WorkerCrashedError]),
        (lambda: ray.exceptions.ActorDiedError(), [ActorDiedError, RayActorError]),
        (lambda: ray.exceptions.OwnerDiedError("ab", None, ""), [OwnerDiedError, ObjectLostError]),
        # Ray's names that raylite lacks: the nearest raylite class up Ray's hierarchy
        (lambda: ray.exceptions.ObjectFetchTimedOutError("ab", None, ""), [ObjectLostError]),
        (lambda: ray.exceptions.NodeDiedError("node gone"), [RayError]),
        (lambda: ray.exceptions.UnserializableException("Boom: text"), [RayTaskError]),
    ],
    ids=[
        "GetTimeoutError",
        "TaskCancelledError",
        "WorkerCrashedError",
        "ActorDiedError",
        "OwnerDiedError",
        "ObjectFetchTimedOutError",
        "NodeDiedError",
        "UnserializableException",
    ],  # fmt: skip
)
def test_rays_errors_are_raylites_too_keeping_rays_class_and_message(ray_error, raylite_classes):
    original = ray_error()
    err = translate(original)
    assert isinstance(err, type(original))
    for cls in raylite_classes:
        assert isinstance(err, cls)
    assert str(err) == str(original)
    again = pickle.loads(pickle.dumps(err))  # the combined class is made at run time
    assert type(again) is type(err) and str(again) == str(err)


def test_init_connects_and_shutdown_disconnects(ray_disconnected: RayHead):
    info = raylite.init(address=ray_disconnected.address)
    try:
        assert ray.is_initialized()
        assert info["address"] == ray_disconnected.address
        assert info["session"] == ray.get_runtime_context().get_job_id()
        assert raylite.get(double.remote(21)) == 42
    finally:
        raylite.shutdown()
    assert not ray.is_initialized()


def test_address_auto_finds_the_cluster(ray_disconnected: RayHead, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_disconnected.address)
    raylite.init(address="auto")
    try:
        assert raylite.get(double.remote(1)) == 2
    finally:
        raylite.shutdown()


def test_ray_client_address(ray_disconnected: RayHead):
    if ray_disconnected.client_address is None:
        pytest.skip("Ray Client needs ray[client]: pip install 'ray[client]'")
    try:
        raylite.init(address=ray_disconnected.client_address)
    except ConnectionAbortedError:
        # Ray's client proxy sometimes fails to start its per-client server on a loaded
        # machine ("Starting Ray client server failed"); that is Ray's, so try once more.
        raylite.init(address=ray_disconnected.client_address)
    try:
        ref = double.remote(4)
        assert isinstance(ref, raylite.ObjectRef)
        assert raylite.get(ref) == 8
        assert raylite.get(runtime_inside.remote()) == ("RayRuntime", 10)
    finally:
        raylite.shutdown()


def test_init_keywords_go_to_ray(ray_disconnected: RayHead):
    with pytest.raises(RuntimeError, match="Unknown keyword argument.*bogus"):
        raylite.init(address=ray_disconnected.address, bogus=1)
    assert not raylite.is_initialized()
    raylite.init(address=ray_disconnected.address, namespace="raylite-tests")
    try:
        assert ray.get_runtime_context().namespace == "raylite-tests"
    finally:
        raylite.shutdown()


def test_dashboard_options_go_to_ray_unchanged(ray_disconnected: RayHead, monkeypatch):
    seen: dict[str, object] = {}
    real_init = ray.init

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_init(*args, **kwargs)

    monkeypatch.setattr(ray, "init", spy)
    # Not loopback: raylite's own dashboard refuses it, Ray's decides for itself.
    info = raylite.init(
        address=ray_disconnected.address, include_dashboard=False, dashboard_host="0.0.0.0",
        dashboard_port=8300,
    )  # fmt: skip
    try:
        assert {k: seen[k] for k in ("include_dashboard", "dashboard_host", "dashboard_port")} == {
            "include_dashboard": False, "dashboard_host": "0.0.0.0", "dashboard_port": 8300,
        }  # fmt: skip
        assert info["dashboard_url"] is None  # the test head runs no dashboard
    finally:
        raylite.shutdown()


def test_local_mode_cannot_run_on_a_cluster():
    with pytest.raises(ValueError, match="local_mode=True .* cannot be combined"):
        raylite.init(address="auto", local_mode=True)
    assert not raylite.is_initialized()


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    with pytest.raises(ImportError, match=r"pip install 'raylite\[ray\]'"):
        raylite.init(address="auto")
    assert not raylite.is_initialized()


def test_raylite_follows_a_connection_the_program_opened(ray_connected: RayHead):
    assert not raylite.is_initialized()
    assert raylite.get(double.remote(3)) == 6  # no raylite.init(): Ray serves it
    assert type(_runtime.current()).__name__ == "RayRuntime"
    raylite.shutdown()
    assert ray.is_initialized()  # the program's connection, left open


def test_refs_are_rays_own(ray_connected: RayHead):
    raylite.init(address=ray_connected.address)
    try:
        ref = double.remote(2)
        assert isinstance(ref, ray.ObjectRef) and isinstance(ref, raylite.ObjectRef)
        assert ray.get(ref) == 4
        assert raylite.get(ray.put(5)) == 5

        @ray.remote
        def plus_one(x):
            return x + 1

        assert raylite.get(plus_one.remote(ref)) == 5  # Ray resolves raylite's refs itself
    finally:
        raylite.shutdown()


def test_tasks_run_raylite_on_ray_inside_workers(rl_ray):
    assert raylite.get(runtime_inside.remote()) == ("RayRuntime", 10)


def test_errors_are_raylites_and_rays(rl_ray):
    @raylite.remote
    def fail():
        raise ValueError("boom")

    @raylite.remote
    def slow():
        time.sleep(30)

    with pytest.raises(ValueError, match="boom") as info:
        raylite.get(fail.remote())
    assert isinstance(info.value, RayTaskError)
    assert isinstance(info.value, ray.exceptions.RayTaskError)

    ref = slow.remote()
    with pytest.raises(GetTimeoutError) as timeout:
        raylite.get(ref, timeout=0.05)
    assert isinstance(timeout.value, ray.exceptions.GetTimeoutError)
    raylite.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError) as cancelled:
        raylite.get(ref, timeout=30)
    assert isinstance(cancelled.value, ray.exceptions.TaskCancelledError)


def test_cancel_interrupts_a_running_task(rl_ray, tmp_path):
    started = tmp_path / "started"

    @raylite.remote
    def spin(path):
        open(path, "w").close()
        while True:
            time.sleep(0.01)

    ref = spin.remote(str(started))
    wait_until(started.exists, 60, "the task to start")
    raylite.cancel(ref)
    with pytest.raises(TaskCancelledError):
        raylite.get(ref, timeout=30)


def test_cluster_only_options_are_honoured(rl_ray):
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    vars_env = {"env_vars": {"RAYLITE_TEST_VAR": "set on the cluster"}}
    assert raylite.get(env_var.options(runtime_env=vars_env).remote("RAYLITE_TEST_VAR")) == (
        "set on the cluster"
    )
    assert raylite.get(double.options(memory=10**6, scheduling_strategy="SPREAD").remote(1)) == 2

    pg = ray.util.placement_group([{"CPU": 1}])
    try:
        assert raylite.get(pg.ready(), timeout=30)
        strategy = PlacementGroupSchedulingStrategy(pg)
        assert raylite.get(double.options(scheduling_strategy=strategy).remote(4)) == 8
    finally:
        ray.util.remove_placement_group(pg)


@raylite.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def add(self, k=1):
        self.n += k
        return self.n

    @raylite.method(num_returns=2)
    def pair(self):
        return self.n, -self.n


def test_actors_are_rays_own(rl_ray):
    counter = Counter.remote(10)
    assert isinstance(counter, raylite.ActorHandle)
    assert isinstance(counter, ray.actor.ActorHandle)
    assert raylite.get([counter.add.remote() for _ in range(3)]) == [11, 12, 13]
    assert raylite.get(counter.pair.remote()) == [13, -13]  # @raylite.method, given to Ray

    named = Counter.options(name="raylite-test-counter").remote()
    assert raylite.get(raylite.get_actor("raylite-test-counter").add.remote(2)) == 2
    raylite.kill(named)

    def dead() -> bool:  # Ray's kill takes effect a moment later: a call may still land
        try:
            raylite.get(named.add.remote(), timeout=30)
        except ActorDiedError:
            return True
        return False

    wait_until(dead, 30, "the killed actor to refuse calls")


def test_thread_executor_is_refused_on_ray(rl_ray):
    with pytest.raises(ValueError, match="executor='thread' of double.* only raylite's local"):
        double.options(executor="thread").remote(1)


def test_a_ref_from_a_local_session_is_refused_by_name(ray_connected: RayHead):
    raylite.init(num_cpus=1)
    local_ref = raylite.put(1)
    raylite.shutdown()
    raylite.init(address=ray_connected.address)
    try:
        with pytest.raises(RaySystemError, match="earlier raylite session"):
            raylite.get(local_ref)
    finally:
        raylite.shutdown()


@pytest.fixture
def rl_ray(ray_connected: RayHead):
    """raylite on the session's Ray head only (for what the local runtime does not do)."""
    raylite.init(address=ray_connected.address)
    yield raylite
    raylite.shutdown()
