"""Ray API names that Ray programs, libraries and Ray's own tests reach for beyond the
headline API: ``ObjectID``, ``f._remote(...)``, ``ref._on_completed(cb)``, and values Ray
accepts in a looser form (``object_store_memory=700e6``)."""

from __future__ import annotations

import sys
import threading

import pytest
from _helpers import wait_until

import raylite

pytestmark = pytest.mark.local_only("raylite's own spelling of Ray's names; Ray has them")


def test_object_id_is_ray_s_older_name_for_object_ref() -> None:
    assert raylite.ObjectID is raylite.ObjectRef


def test_remote_function_underscore_remote_takes_args_kwargs_and_options(rl: object) -> None:
    @raylite.remote
    def span(n: int, start: int = 0) -> list[int]:
        return list(range(start, start + n))

    assert raylite.get(span._remote(args=[2], kwargs={"start": 5})) == [5, 6]
    first, second = span._remote(args=[2], num_returns=2)
    assert raylite.get([first, second]) == [0, 1]
    assert span._remote([0], num_returns=0) is None
    assert raylite.get(span._remote(args=[1])) == [0]


def test_actor_underscore_remote_takes_args_kwargs_and_options(rl: object) -> None:
    @raylite.remote
    class Pair:
        def __init__(self, x: int, y: int = 0) -> None:
            self.x, self.y = x, y

        def both(self, a: int, b: int = 0) -> tuple[int, int, int, int]:
            return self.x, self.y, a, b

    pair = Pair._remote(args=[1], kwargs={"y": 2}, num_cpus=0)
    refs = pair.both._remote(args=["a"], kwargs={"b": "b"}, num_returns=4)
    assert raylite.get(refs) == [1, 2, "a", "b"]
    assert raylite.get(pair.both._remote(args=[3])) == (1, 2, 3, 0)


def test_on_completed_gets_the_value_or_the_error_and_then_drops_the_callback(
    rl: object,
) -> None:
    seen: list[object] = []
    arrived = threading.Event()

    def callback(value: object) -> None:
        seen.append(value)
        arrived.set()

    @raylite.remote
    def fail() -> None:
        raise ValueError("boom")

    before = sys.getrefcount(callback)
    ref = raylite.put(41)
    ref._on_completed(callback)
    assert arrived.wait(30)
    assert seen == [41]
    wait_until(lambda: sys.getrefcount(callback) == before, 10, "the callback to be dropped")

    arrived.clear()
    ref = fail.remote()
    ref._on_completed(callback)
    assert arrived.wait(30)
    assert isinstance(seen[1], raylite.exceptions.RayTaskError)
    assert isinstance(seen[1], ValueError)


def test_on_completed_callback_that_raises_is_logged_not_propagated(
    rl: object, caplog: pytest.LogCaptureFixture
) -> None:
    done = threading.Event()

    def callback(value: object) -> None:
        done.set()
        raise RuntimeError("callback trouble")

    before = sys.getrefcount(callback)
    raylite.put(1)._on_completed(callback)
    assert done.wait(30)
    wait_until(lambda: "callback trouble" in caplog.text, 10, "the callback's error in the log")
    # dropped even though the log keeps the record (no traceback object in it)
    wait_until(lambda: sys.getrefcount(callback) == before, 10, "the callback to be dropped")
    assert raylite.get(raylite.put(2)) == 2  # raylite goes on


def test_object_store_memory_takes_an_integral_float_as_ray_does() -> None:
    raylite.init(num_cpus=1, object_store_memory=64e6)
    try:
        assert raylite.cluster_resources()["object_store_memory"] == 64_000_000
    finally:
        raylite.shutdown()
    with pytest.raises(ValueError, match="object_store_memory must be a positive number"):
        raylite.init(num_cpus=1, object_store_memory=1.5)


def test_ray_ready_and_ray_call_are_builtin_actor_methods(rl: object) -> None:
    @raylite.remote
    class Store:
        def __init__(self) -> None:
            self.items: list[int] = []

        def add(self, x: int) -> int:
            self.items.append(x)
            return len(self.items)

    store = Store.remote()
    assert raylite.get(store.__ray_ready__.remote(), timeout=60) is True
    store.add.remote(1)
    # __ray_call__ runs a function on the instance, in call order after add(1)
    assert raylite.get(store.__ray_call__.remote(lambda self, k: self.items * k, 2)) == [1, 1]
    assert raylite.get(Store.options(name="named_store").remote().__ray_ready__.remote())
    assert Store._cls.__name__ == "Store" and Store._cls.__qualname__ == Store.__qualname__


def test_builtin_actor_methods_in_thread_and_inline_actors() -> None:
    @raylite.remote
    class Pinger:
        def ping(self) -> str:
            return "pong"

    for kwargs in ({"local_mode": True}, {}):
        raylite.init(num_cpus=1, **kwargs)
        try:
            actor = Pinger.remote()
            assert raylite.get(actor.__ray_ready__.remote(), timeout=60) is True
            assert raylite.get(actor.__ray_call__.remote(lambda self: self.ping())) == "pong"
        finally:
            raylite.shutdown()


def test_an_actor_whose_class_cannot_be_derived_from_still_runs(rl: object) -> None:
    class Final:
        def __init_subclass__(cls, **kwargs: object) -> None:
            raise TypeError("Final cannot be subclassed")

        def value(self) -> int:
            return 7

    actor = raylite.remote(Final).remote()
    assert raylite.get(actor.value.remote(), timeout=60) == 7


def test_deriving_from_an_actor_class_is_refused_as_in_ray() -> None:
    from raylite.actor import ActorClassInheritanceException

    class Plain:
        pass

    @raylite.remote
    class Base(Plain):
        pass

    with pytest.raises(ActorClassInheritanceException, match="subclass 'Derived' of actor cl"):

        class Derived(Base):  # type: ignore[misc,valid-type]
            pass

    assert issubclass(ActorClassInheritanceException, TypeError)
    with pytest.raises(TypeError, match="cannot be instantiated directly"):
        Base()


def test_runtime_env_class_is_the_dict_of_its_given_fields() -> None:
    from raylite.runtime_env import RuntimeEnv

    env = RuntimeEnv(env_vars={"A": "1"}, pip=None)
    assert isinstance(env, dict) and env == {"env_vars": {"A": "1"}}
    assert env.env_vars() == {"A": "1"} and RuntimeEnv().env_vars() == {}
    assert RuntimeEnv(working_dir=".", plugin_x=3) == {"working_dir": ".", "plugin_x": 3}


def test_ray_terminate_ends_the_actor_after_earlier_calls(rl: object) -> None:
    @raylite.remote
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def add(self) -> int:
            self.n += 1
            return self.n

    counter = Counter.remote()
    earlier = [counter.add.remote() for _ in range(3)]
    end = counter.__ray_terminate__.remote()
    assert raylite.get(earlier, timeout=60) == [1, 2, 3]
    with pytest.raises(raylite.exceptions.RayActorError):
        raylite.get(end, timeout=60)
    with pytest.raises(raylite.exceptions.RayActorError):
        raylite.get(counter.add.remote(), timeout=60)


def test_runtime_env_class_sets_env_vars_of_a_task(rl: object) -> None:
    import os

    from raylite.runtime_env import RuntimeEnv

    @raylite.remote
    def read(name: str) -> str | None:
        return os.environ.get(name)

    env = RuntimeEnv(env_vars={"RAYLITE_TEST_RUNTIME_ENV": "set"})
    assert raylite.get(read.options(runtime_env=env).remote("RAYLITE_TEST_RUNTIME_ENV")) == "set"
