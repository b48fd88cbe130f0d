"""Ray 2.60's semantics where raylite used to differ (issue 12, section 2).

Each test runs on the local runtime and, where Ray behaves the same, on real Ray too (the
``rl`` fixture): the Ray run is the proof that the asserted behaviour is Ray's.
"""

from __future__ import annotations

import asyncio
import os
import sys

import numpy as np
import pytest
from _helpers import wait_until

import raylite
from raylite.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    ActorUnschedulableError,
    PendingTaskWarning,
    RayActorError,
    RayTaskError,
    TaskUnschedulableError,
    WorkerCrashedError,
)


@raylite.remote
def add(x, y=1, *, scale=1):
    return (x + y) * scale


class Base:
    inherited = "from Base"

    @classmethod
    def made_by(cls):
        return cls.__name__

    @staticmethod
    def double(x):
        return 2 * x


@raylite.remote
class Counter(Base):
    start = 10

    def __init__(self, step):
        self.n = self.start
        self.step = step

    def add(self, times, *, extra=0):
        self.n += self.step * times + extra
        return self.n

    def seen_from_inside(self):
        # The decorated name, used inside a method, is the actor class here too.
        return Counter.start, Counter.double(3), self.inherited, self.made_by()

    @staticmethod
    def static_value():
        return "static"

    def pid(self):
        return os.getpid()


# ---- .remote() checks arguments against the signature --------------------------------


def test_remote_checks_arguments_at_once(rl):
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        add.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        add.remote(1, 2, 3)
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'z'"):
        add.remote(1, z=3)
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        add.options(num_cpus=0.5).remote(y=2)
    assert rl.get([add.remote(1), add.remote(1, 2, scale=3), add.remote(x=2)]) == [2, 9, 3]


def test_actor_creation_and_method_calls_check_arguments(rl):
    with pytest.raises(TypeError, match="missing a required argument: 'step'"):
        Counter.remote()
    counter = Counter.remote(2)
    with pytest.raises(TypeError, match="missing a required argument: 'times'"):
        counter.add.remote()
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        counter.add.remote(1, bogus=1)
    with pytest.raises(TypeError, match="too many positional arguments"):
        counter.static_value.remote(1)
    assert rl.get(counter.add.remote(1, extra=1)) == 13


@pytest.mark.local_only("raylite's own prefix names the call; Ray's message has none")
def test_signature_errors_name_the_call(rl):
    with pytest.raises(TypeError, match=r"^add\.remote\(\): missing"):
        add.remote()
    with pytest.raises(TypeError, match=r"^Counter\.add\.remote\(\): missing"):
        Counter.remote(1).add.remote()


# ---- an actor class is a subclass of the user's class, as far as users see ------------


def test_actor_class_reaches_class_attributes_and_static_methods(rl):
    assert isinstance(Counter, Base)
    assert isinstance(Counter, rl.actor.ActorClass)
    assert Counter.start == 10 and Counter.inherited == "from Base"
    assert Counter.double(4) == 8
    assert Counter.static_value() == "static"
    assert Counter.made_by() == "ActorClass(Counter)"  # cls is the derived class, as Ray's
    assert Counter.options(name=None).start == 10
    counter = Counter.remote(1)
    assert rl.get(counter.seen_from_inside.remote()) == (10, 6, "from Base", "Counter")
    assert rl.get(counter.static_value.remote()) == "static"


def test_actor_class_survives_a_class_that_overrides_dunders(rl):
    @rl.remote
    class Odd(dict):
        def __eq__(self, other):
            return True

        __hash__ = None  # as Python makes it for a class that defines only __eq__

        def get_one(self):
            return 1

    @rl.remote
    def call_one(actor_class):  # the actor class travels to a worker and back
        return actor_class.__name__, actor_class.get_one()

    assert hash(Odd) == hash(Odd) and Odd != Counter
    assert rl.get(Odd.remote().get_one.remote()) == 1
    assert rl.get(call_one.remote(Odd)) == ("Odd", 1)


# ---- exit_actor, list_named_actors, register_serializer -------------------------------


def test_exit_actor_ends_the_actor_for_good(rl):
    @rl.remote(max_restarts=2)
    class Leaver:
        def leave(self):
            rl.actor.exit_actor()

        def ping(self):
            return "pong"

    actor = Leaver.remote()
    assert rl.get(actor.ping.remote()) == "pong"
    with pytest.raises(ActorDiedError, match="INTENDED_USER_EXIT"):  # Ray's name for it
        rl.get(actor.leave.remote())
    with pytest.raises(RayActorError):  # not restarted, whatever max_restarts says
        rl.get(actor.ping.remote())
    with pytest.raises(TypeError, match="exit_actor"):
        rl.actor.exit_actor()  # the driver is no actor


def test_exit_actor_in_an_async_actor(rl):
    @rl.remote
    class AsyncLeaver:
        async def leave(self):
            rl.actor.exit_actor()

    with pytest.raises(ActorDiedError):
        rl.get(AsyncLeaver.remote().leave.remote())


@pytest.mark.local_only("raylite's host processes: actors packed in one process")
def test_calls_on_their_way_to_an_exiting_actor_leave_its_host_process_alone():
    @raylite.remote
    class Leaver:
        def __init__(self, exit_after):
            self.left = exit_after
            self.event = asyncio.Event()

        async def leave_when_told(self):
            await self.event.wait()
            raylite.actor.exit_actor()

        def ping(self):
            self.left -= 1
            if self.left == 0:
                self.event.set()
            return os.getpid()

    @raylite.remote
    class Stayer:
        def ping(self):
            return os.getpid()

    raylite.init(num_cpus=1)  # one host process for packed actors: both live in it
    try:
        stayer, leaver = Stayer.remote(), Leaver.remote(500)
        host = raylite.get(stayer.ping.remote())
        end = leaver.leave_when_told.remote()
        # more calls than are sent at once: some reach the host after the actor ended
        pings = [leaver.ping.remote() for _ in range(2000)]
        with pytest.raises(ActorDiedError, match="INTENDED_USER_EXIT"):
            raylite.get([end, *pings], timeout=60)
        assert raylite.get(stayer.ping.remote(), timeout=60) == host  # the host lives on
    finally:
        raylite.shutdown()


def test_list_named_actors_in_ray_shapes(rl):
    @rl.remote
    class Named:
        def ready(self):
            return True

    mine = Named.options(name="semantics-a").remote()
    theirs = Named.options(name="semantics-b", namespace="elsewhere").remote()
    rl.get([mine.ready.remote(), theirs.ready.remote()])
    assert "semantics-a" in rl.util.list_named_actors()
    assert "semantics-b" not in rl.util.list_named_actors()
    everywhere = rl.util.list_named_actors(all_namespaces=True)
    assert {"name": "semantics-b", "namespace": "elsewhere"} in everywhere
    assert all(set(entry) == {"name", "namespace"} for entry in everywhere)
    rl.kill(mine)
    wait_until(lambda: "semantics-a" not in rl.util.list_named_actors(), 30, "the name to go")


class Unpicklable:
    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        raise TypeError("Unpicklable holds a socket")


@raylite.remote
def read_value(obj):
    return type(obj).__name__, obj.value


@pytest.mark.local_only("on a Ray cluster, call Ray's own ray.util.register_serializer")
def test_register_serializer_round_trips_across_processes(rl):
    rl.util.register_serializer(
        Unpicklable, serializer=lambda obj: obj.value, deserializer=lambda v: Unpicklable(v * 10)
    )
    try:
        assert rl.get(read_value.remote(Unpicklable(1))) == ("Unpicklable", 10)  # in a worker
        assert rl.get(rl.put(Unpicklable(2))).value == 20
    finally:
        rl.util.deregister_serializer(Unpicklable)
    with pytest.raises(TypeError, match="Unpicklable holds a socket"):
        rl.put(Unpicklable(3))
    rl.util.deregister_serializer(Unpicklable)  # twice: nothing happens


# ---- sys.exit() ends the actor (restarted if allowed) or the task's worker -----------


def test_sys_exit_in_an_actor_method_ends_that_actor(rl):
    @rl.remote
    class Exiter:
        def exit(self):
            sys.exit(3)

        def ping(self):
            return "pong"

    actor = Exiter.remote()
    with pytest.raises(RayActorError):
        rl.get(actor.exit.remote())
    with pytest.raises(RayActorError):
        rl.get(actor.ping.remote())


def test_sys_exit_in_an_actor_with_restarts_left_restarts_it(rl):
    @rl.remote(max_restarts=1, num_cpus=0.1)
    class Exiter:
        def exit(self):
            sys.exit(3)

        def pid(self):
            return os.getpid()

    actor = Exiter.remote()
    first = rl.get(actor.pid.remote())
    with pytest.raises(ActorUnavailableError):
        rl.get(actor.exit.remote())

    def restarted() -> bool:  # in a new process
        try:
            return bool(rl.get(actor.pid.remote(), timeout=60) != first)
        except ActorUnavailableError:  # Ray: a call made while it restarts may fail so
            return False

    wait_until(restarted, 90, "the actor to restart")


def test_sys_exit_in_a_task_is_the_worker_exiting(rl):
    @rl.remote(max_retries=0)
    def leave():
        sys.exit(2)

    with pytest.raises(WorkerCrashedError):
        rl.get(leave.remote())
    assert rl.get(add.remote(1)) == 2  # the program goes on, and so does the pool


@pytest.mark.local_only("raylite names the exit code and the likely cause")
def test_sys_exit_in_a_task_names_the_exit_code(rl):
    @rl.remote(max_retries=0)
    def leave():
        sys.exit(2)

    with pytest.raises(WorkerCrashedError, match=r"exit code 2.*sys\.exit\(\)"):
        rl.get(leave.remote())


@pytest.mark.local_only("Ray has no thread executor")
def test_sys_exit_in_a_thread_task_does_not_exit_the_driver(rl):
    @rl.remote(executor="thread")
    def leave():
        sys.exit(0)

    with pytest.raises(RayTaskError, match="SystemExit") as info:
        rl.get(leave.remote())
    assert not isinstance(info.value, SystemExit)


# ---- ExceptionGroup -------------------------------------------------------------------


# ``except*`` is Python 3.11 syntax: compiled at run time, so this module imports on 3.10.
_EXCEPT_STAR = """
def catch(get):
    caught = []
    try:
        get()
    except* ValueError as group:
        caught.append(("value", [str(e) for e in group.exceptions]))
    except* KeyError as group:
        caught.append(("key", [str(e) for e in group.exceptions]))
    return caught
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is Python 3.11+")
def test_exception_group_from_a_task_works_with_except_star(rl):
    @rl.remote
    def fail_many():
        raise ExceptionGroup("several", [ValueError("a"), KeyError("b")])  # noqa: F821

    namespace: dict[str, object] = {}
    exec(compile(_EXCEPT_STAR, "<except-star>", "exec"), namespace)
    ref = fail_many.remote()
    assert namespace["catch"](lambda: rl.get(ref)) == [("value", ["a"]), ("key", ["'b'"])]
    with pytest.raises(RayTaskError) as info:
        rl.get(ref)
    assert isinstance(info.value, ExceptionGroup)  # noqa: F821
    assert info.value.message == "several" and len(info.value.exceptions) == 2


# ---- @remote on async def; functions over Ray's size limit ---------------------------


def test_remote_on_async_def_is_refused_as_ray_does(rl):
    async def coro():
        return 1

    with pytest.raises(ValueError, match="'async def' should not be used for remote tasks"):
        rl.remote(coro)


@pytest.mark.local_only("the size limit is set by an environment variable read by Ray at start")
def test_a_function_over_the_size_limit_fails_at_remote(rl, monkeypatch):
    monkeypatch.setenv("FUNCTION_SIZE_ERROR_THRESHOLD", str(1_000_000))
    captured = os.urandom(2_000_000)

    @rl.remote
    def big():
        return len(captured)

    with pytest.raises(ValueError, match=r"The remote function .*big is too large \(1 MiB > "
                                         r"FUNCTION_SIZE_ERROR_THRESHOLD=0 MiB\)"):  # fmt: skip
        big.remote()

    @rl.remote
    class Big:
        data = captured

    with pytest.raises(ValueError, match="The actor Big is too large"):
        Big.remote()


def test_local_mode_refuses_the_same_sizes(monkeypatch):
    monkeypatch.setenv("FUNCTION_SIZE_ERROR_THRESHOLD", str(1_000_000))
    captured = os.urandom(2_000_000)

    @raylite.remote
    def big():
        return len(captured)

    @raylite.remote
    class Big:
        data = captured

    @raylite.remote
    def small():
        return 1

    raylite.init(local_mode=True)
    try:
        with pytest.raises(ValueError, match=r"The remote function .*big is too large"):
            big.remote()
        with pytest.raises(ValueError, match="The actor Big is too large"):
            Big.remote()
        assert raylite.get(small.remote()) == 1
    finally:
        raylite.shutdown()


# ---- objects --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 100, 100_000])
def test_contiguous_arrays_come_back_read_only_at_any_size(rl, size):
    @rl.remote
    def writable(array):
        return array.flags.writeable

    array = np.arange(size, dtype=np.float64)
    assert not rl.get(rl.put(array)).flags.writeable
    assert not rl.get(writable.remote(array))
    assert not rl.get(rl.put({"nested": array}))["nested"].flags.writeable


def test_non_contiguous_arrays_come_back_writable_as_in_ray(rl):
    strided = np.zeros((300, 300))[:, ::2]
    copy = rl.get(rl.put(strided))
    assert copy.flags.writeable and copy.shape == strided.shape
    copy[0, 0] = 1.0  # a copy: the original is untouched
    assert strided[0, 0] == 0.0


def test_wait_on_no_refs_returns_two_empty_lists(rl):
    assert rl.wait([]) == ([], [])
    assert rl.wait([], num_returns=3, timeout=0) == ([], [])
    ref = rl.put(1)
    with pytest.raises(ValueError, match="num_returns cannot be greater"):
        rl.wait([ref], num_returns=2)
    with pytest.raises(ValueError, match="Invalid number of objects to return 0"):
        rl.wait([ref], num_returns=0)


# ---- a request larger than this machine ----------------------------------------------


@pytest.mark.local_only("Ray queues an infeasible task (a cluster may grow) and never fails it")
def test_a_task_larger_than_the_machine_warns_and_fails_at_get(rl):
    with pytest.warns(PendingTaskWarning, match="num_cpus=3 but this runtime has 2 CPUs"):
        too_big = add.options(num_cpus=3).remote(1)
    assert rl.get(add.remote(2)) == 3  # the program keeps running
    with pytest.raises(TaskUnschedulableError, match="num_cpus=3"):
        rl.get(too_big)


@pytest.mark.local_only("Ray queues an infeasible actor (a cluster may grow) and never fails it")
def test_an_actor_larger_than_the_machine_warns_and_its_calls_fail(rl):
    with pytest.warns(PendingTaskWarning, match="num_cpus=3"):
        actor = Counter.options(num_cpus=3).remote(1)
    with pytest.raises(ActorUnschedulableError, match="Actor Counter can never be placed"):
        rl.get(actor.add.remote(1))


def _split_first_argument(invoke):
    # Ray's caller-side hook: gets the call's (args, kwargs), returns what .remote() returns.
    def invocation(args, kwargs):
        return invoke([args[0], args[0]], {}), kwargs

    return invocation


def _summing(method):
    def execution(self, b, c):
        return method(self, b + c)

    execution.__ray_invocation_decorator__ = _split_first_argument
    return execution


@raylite.remote
class Decorated:
    @_summing
    def plus_one(self, x):
        return x + 1


def test_an_invocation_decorator_wraps_the_callers_side_of_each_call(rl):
    actor = Decorated.remote()
    ref, extra = actor.plus_one.remote(3, kwarg=3)
    assert isinstance(ref, raylite.ObjectRef)
    assert extra == {"kwarg": 3}
    assert raylite.get(ref) == 7  # (3 + 3) + 1, run by the actor
    ref, _ = actor.plus_one.options(name="again").remote(4)
    assert raylite.get(ref) == 9
