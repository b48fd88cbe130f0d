"""raylite.util: ActorPool (order, completeness, submit/get_next, timeouts, pop_idle/push,
dead actors) and raylite.util.queue.Queue (across tasks and actors, blocking with
timeouts, batches, maxsize, async variants, shutdown).

The pool and the queue are built on actors, which run on the local runtime only for now:
those tests are marked local-only. The pool needs nothing of actors but ObjectRefs, so one
test runs it on every runtime with tasks as its members.
"""

from __future__ import annotations

import asyncio
import queue
import time
from pathlib import Path

import pytest

import raylite
from raylite.exceptions import ActorDiedError
from raylite.util import ActorPool
from raylite.util.queue import Empty, Full, Queue

actors_local_only = pytest.mark.local_only("raylite's actors are not wired to Ray yet")


@raylite.remote
class Doubler:
    def double(self, v):
        return 2 * v

    def double_when_open(self, v, gate):
        raylite.get(gate.wait.remote(), timeout=30)
        return 2 * v


@raylite.remote
class Gate:
    """Calls to ``wait`` return once ``open`` has been called: an event across processes."""

    def __init__(self):
        self.event = asyncio.Event()

    async def wait(self):
        await self.event.wait()
        return True

    async def open(self):
        self.event.set()
        return True


def _zero_waits_for(gate, refs):
    """fn for a pool: value 0's call finishes once ``gate`` opens; each ref lands in refs."""

    def fn(actor, v):
        refs[v] = actor.double_when_open.remote(v, gate) if v == 0 else actor.double.remote(v)
        return refs[v]

    return fn


@actors_local_only
def test_map_returns_results_in_submission_order(rl):
    pool = ActorPool([Doubler.remote() for _ in range(3)])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(20))) == [2 * v for v in range(20)]
    gate, refs = Gate.remote(), {}
    results = pool.map(_zero_waits_for(gate, refs), [0, 1, 2])
    raylite.wait([refs[1], refs[2]], num_returns=2, timeout=30)
    raylite.get(gate.open.remote())  # value 0 finishes last, and comes first all the same
    assert list(results) == [0, 2, 4]


@actors_local_only
def test_map_unordered_yields_every_result_as_it_finishes(rl):
    pool = ActorPool([Doubler.remote() for _ in range(3)])
    results = list(pool.map_unordered(lambda a, v: a.double.remote(v), range(50)))
    assert sorted(results) == [2 * v for v in range(50)]
    gate = Gate.remote()
    results = pool.map_unordered(_zero_waits_for(gate, {}), [0, 1])
    assert next(results) == 2  # value 1's result, although value 0 was submitted first
    raylite.get(gate.open.remote())
    assert list(results) == [0]


@actors_local_only
def test_map_discards_results_not_collected_from_earlier_submits(rl):
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.double.remote(v), 100)
    pool.submit(lambda a, v: a.double.remote(v), 200)  # waits for the only actor
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2])) == [2, 4]
    assert not pool.has_next() and pool.has_free()


@actors_local_only
def test_submit_and_get_next_interplay(rl):
    a = Doubler.remote()
    pool = ActorPool([a])
    assert pool.has_free() and not pool.has_next()
    for v in (1, 2, 3):
        pool.submit(lambda actor, v: actor.double.remote(v), v)
    assert pool.has_next() and not pool.has_free()  # busy, two values wait in the backlog
    assert pool.pop_idle() is None
    assert [pool.get_next(), pool.get_next()] == [2, 4]
    assert pool.get_next_unordered() == 6
    assert not pool.has_next() and pool.has_free()
    with pytest.raises(StopIteration, match="No more results"):
        pool.get_next()
    with pytest.raises(StopIteration, match="No more results"):
        pool.get_next_unordered()


@actors_local_only
def test_get_next_refuses_after_get_next_unordered_took_the_later_results(rl):
    gate = Gate.remote()
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    pool.submit(lambda a, v: a.double_when_open.remote(v, gate), 1)  # index 0, blocked
    pool.submit(lambda a, v: a.double.remote(v), 2)  # index 1
    assert pool.get_next_unordered(timeout=30) == 4
    with pytest.raises(ValueError, match=r"not allowed to call get_next\(\) after"):
        pool.get_next()
    raylite.get(gate.open.remote())
    assert pool.get_next_unordered(timeout=30) == 2


@actors_local_only
def test_failed_call_raises_from_get_next_and_frees_its_actor(rl):
    @raylite.remote
    class Picky:
        def check(self, v):
            if v < 0:
                raise ValueError(f"negative: {v}")
            return v

    pool = ActorPool([Picky.remote()])
    pool.submit(lambda a, v: a.check.remote(v), -1)
    with pytest.raises(ValueError, match="negative: -1"):
        pool.get_next(timeout=30)
    assert pool.has_free()
    assert list(pool.map(lambda a, v: a.check.remote(v), [3, 4])) == [3, 4]


@actors_local_only
def test_get_next_timeout_leaves_the_call_or_ignores_it(rl):
    gate = Gate.remote()
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.double_when_open.remote(v, gate), 5)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="Timed out waiting for result") as info:
        pool.get_next(timeout=0.1)
    assert time.monotonic() - start < 10
    assert type(info.value) is TimeoutError  # Ray's pool raises the builtin one
    assert pool.has_next()  # still there: ask again
    raylite.get(gate.open.remote())
    assert pool.get_next(timeout=30) == 10

    never = Gate.remote()
    pool.submit(lambda a, v: a.double_when_open.remote(v, never), 6)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=0, ignore_if_timedout=True)
    assert not pool.has_next() and pool.has_free()  # the actor is back in the pool
    with pytest.raises(StopIteration):
        pool.get_next()


@actors_local_only
def test_get_next_unordered_timeout_leaves_the_calls_or_ignores_the_oldest(rl):
    gate = Gate.remote()
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    pool.submit(lambda a, v: a.double_when_open.remote(v, gate), 1)
    pool.submit(lambda a, v: a.double_when_open.remote(v, gate), 2)
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        pool.get_next_unordered(timeout=0.1)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next_unordered(timeout=0, ignore_if_timedout=True)  # gives up value 1
    assert pool.has_free()
    raylite.get(gate.open.remote())
    assert pool.get_next_unordered(timeout=30) == 4
    assert not pool.has_next()


@actors_local_only
def test_pop_idle_and_push(rl):
    a1, a2 = Doubler.remote(), Doubler.remote()
    pool = ActorPool([a1])
    pool.submit(lambda a, v: a.double.remote(v), 1)
    assert pool.pop_idle() is None  # a1 is busy
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a1)  # busy in this pool
    assert pool.get_next(timeout=30) == 2
    assert pool.pop_idle() == a1
    assert pool.pop_idle() is None and not pool.has_free()  # the pool is empty now

    pool.submit(lambda a, v: a.double.remote(v), 3)  # no actor: waits in the backlog
    assert not pool.has_next()  # as in Ray: nothing is running yet
    assert len(pool._pending_submits) == 1  # Ray's attribute, which Ray's own tests read
    pool.push(a2)  # takes the waiting value at once
    assert len(pool._pending_submits) == 0
    assert pool.has_next() and pool.get_next(timeout=30) == 6
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a2)  # idle in this pool
    pool.push(a1)
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), [1, 2])) == [2, 4]


@actors_local_only
def test_a_dead_actor_leaves_the_pool(rl):
    dead, alive = Doubler.remote(), Doubler.remote()
    raylite.kill(dead)
    pool = ActorPool([alive, dead])  # submit takes the last idle actor first: `dead`
    pool.submit(lambda a, v: a.double.remote(v), 1)
    with pytest.raises(ActorDiedError):
        pool.get_next(timeout=30)
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3])) == [2, 4, 6]
    assert pool.pop_idle() == alive and pool.pop_idle() is None


@actors_local_only
def test_fn_must_return_an_object_ref(rl):
    a = Doubler.remote()
    pool = ActorPool([a])
    with pytest.raises(TypeError, match=r"must return the call's ObjectRef.*got int 2"):
        pool.submit(lambda actor, v: 2 * v, 1)  # forgot .remote()
    assert pool.has_free() and not pool.has_next()  # the actor was not lost
    pool.submit(lambda actor, v: actor.double.remote(v), 1)
    assert pool.get_next(timeout=30) == 2


@actors_local_only
def test_calls_with_several_returns(rl):
    @raylite.remote
    class Splitter:
        @raylite.method(num_returns=2)
        def split(self, v):
            return v, -v

    pool = ActorPool([Splitter.remote(), Splitter.remote()])
    assert list(pool.map(lambda a, v: a.split.remote(v), [1, 2])) == [[1, -1], [2, -2]]
    assert sorted(pool.map_unordered(lambda a, v: a.split.remote(v), [3])) == [[3, -3]]


@raylite.remote
def double_when_file_exists(v, path):
    deadline = time.monotonic() + 30
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return 2 * v


@raylite.remote
def double_task(v):
    return 2 * v


def test_pool_of_tasks_on_every_runtime(rl, tmp_path):
    """The pool only needs fn to return ObjectRefs: with tasks behind it, it runs on Ray."""
    pool = ActorPool(["slot-a", "slot-b"])  # members fn knows how to use
    assert list(pool.map(lambda _, v: double_task.remote(v), range(8))) == [2 * v for v in range(8)]
    assert sorted(pool.map_unordered(lambda _, v: double_task.remote(v), range(8))) == [
        2 * v for v in range(8)
    ]
    flag = tmp_path / "go"
    pool.submit(lambda _, v: double_when_file_exists.remote(v, str(flag)), 21)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.1)
    flag.touch()
    assert pool.get_next(timeout=60) == 42


@raylite.remote
def produce(q, items):
    for item in items:
        q.put(item, timeout=30)
    return len(items)


@raylite.remote
def consume(q, n):
    return [q.get(timeout=30) for _ in range(n)]


@raylite.remote
def get_one(q):
    return q.get()


@actors_local_only
def test_queue_is_fifo_and_reports_its_size(rl):
    q = Queue()
    for i in range(10):
        q.put(i)
    assert (q.qsize(), q.size(), len(q), q.empty(), q.full()) == (10, 10, 10, False, False)
    assert [q.get() for _ in range(10)] == list(range(10))
    assert q.empty() and q.qsize() == 0


@actors_local_only
def test_queue_between_producer_and_consumer_tasks(rl):
    q = Queue(maxsize=2)  # the producer blocks on a full queue until the consumer takes
    items = list(range(100))
    produced, consumed = produce.remote(q, items), consume.remote(q, len(items))
    assert raylite.get([produced, consumed], timeout=60) == [100, items]
    assert q.empty()


@actors_local_only
def test_queue_between_the_driver_and_an_actor(rl):
    @raylite.remote
    class Worker:
        def __init__(self, jobs, results):
            self.jobs, self.results = jobs, results

        def run(self, n):
            for _ in range(n):
                self.results.put(self.jobs.get(timeout=30) ** 2)
            return n

    jobs, results = Queue(), Queue()
    w = Worker.remote(jobs, results)
    done = w.run.remote(5)
    jobs.put_nowait_batch(range(5))
    assert [results.get(timeout=30) for _ in range(5)] == [0, 1, 4, 9, 16]
    assert raylite.get(done, timeout=30) == 5


@actors_local_only
def test_nonblocking_calls_raise_empty_and_full(rl):
    q = Queue(maxsize=1)
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):  # Ray's Empty and Full subclass the stdlib ones
        q.get(block=False)
    q.put_nowait("a")
    assert q.full()
    with pytest.raises(Full, match="full"):
        q.put_nowait("b")
    with pytest.raises(queue.Full):
        q.put("b", block=False, timeout=-1)  # timeout means nothing without block
    assert q.get_nowait() == "a"


@actors_local_only
def test_blocking_calls_time_out_with_empty_and_full(rl):
    q = Queue(maxsize=1)
    start = time.monotonic()
    with pytest.raises(Empty, match="stayed empty"):
        q.get(timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 10
    q.put(1, timeout=0)  # room: a zero timeout does not refuse
    start = time.monotonic()
    with pytest.raises(Full, match="stayed full"):
        q.put(2, timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 10
    assert q.get(timeout=0) == 1  # an item is there: a zero timeout takes it
    for bad in (-1, "soon"):
        with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
            q.get(timeout=bad)
        with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
            q.put(1, timeout=bad)


@actors_local_only
def test_a_blocked_get_is_released_by_a_put(rl):
    q = Queue()
    waiting = get_one.remote(q)
    ready, _ = raylite.wait([waiting], timeout=0.2)
    assert not ready  # blocked in the queue's actor
    q.put("x")
    assert raylite.get(waiting, timeout=30) == "x"


@actors_local_only
def test_batch_variants_move_all_items_or_none(rl):
    q = Queue(maxsize=3)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full, match="Cannot add 2 items to queue of size 2 and maxsize 3"):
        q.put_nowait_batch([3, 4])
    assert q.qsize() == 2  # none of them went in
    q.put_nowait_batch(x for x in [3])  # any iterable
    with pytest.raises(Empty, match="Cannot get 4 items from queue of size 3"):
        q.get_nowait_batch(4)
    assert q.qsize() == 3  # none of them came out
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(1) == [3]
    with pytest.raises(TypeError, match="iterable"):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError, match="needs an int"):
        q.get_nowait_batch(1.0)
    with pytest.raises(ValueError, match="num_items >= 0"):
        q.get_nowait_batch(-1)


@actors_local_only
def test_unbounded_queue_takes_any_batch(rl):
    q = Queue()  # maxsize 0: no limit
    q.put_nowait_batch(range(1000))
    assert not q.full() and q.size() == 1000
    assert q.get_nowait_batch(1000) == list(range(1000))
    with pytest.raises(TypeError, match="must be an int"):
        Queue(maxsize=2.5)


@actors_local_only
def test_async_variants_in_a_coroutine_and_in_an_async_actor(rl):
    q = Queue(maxsize=1)

    async def roundtrip():
        await q.put_async("hello", timeout=5)
        with pytest.raises(Full):
            await q.put_async("again", block=False)
        item = await q.get_async(timeout=5)
        with pytest.raises(Empty):
            await q.get_async(timeout=0.05)
        return item

    assert asyncio.run(roundtrip()) == "hello"

    @raylite.remote
    class Relay:
        async def relay(self, source, sink):
            await sink.put_async(2 * await source.get_async(timeout=30))
            return True

    source, sink = Queue(), Queue()
    done = Relay.remote().relay.remote(source, sink)
    source.put(21)
    assert sink.get(timeout=30) == 42 and raylite.get(done, timeout=30)


@actors_local_only
def test_shutdown_ends_the_actor_and_fails_blocked_callers(rl):
    q = Queue()
    waiting = get_one.remote(q)
    ready, _ = raylite.wait([waiting], timeout=0.2)
    assert not ready
    q.shutdown(grace_period_s=1)
    with pytest.raises(ActorDiedError):
        raylite.get(waiting, timeout=30)
    with pytest.raises(RuntimeError, match="shut down"):
        q.put(1)
    q.shutdown()  # again: nothing to do

    forced = Queue()
    forced.put(1)
    forced.shutdown(force=True)
    with pytest.raises(RuntimeError, match="shut down"):
        forced.get_nowait()


@actors_local_only
def test_actor_options_reach_the_queue_actor(rl):
    q = Queue(actor_options={"name": "jobs", "num_cpus": 1})
    q.put("job")
    assert raylite.available_resources().get("CPU") == 1  # the actor holds its CPU
    same = raylite.get_actor("jobs")
    assert raylite.get(same.get_nowait.remote(), timeout=30) == "job"
    q.shutdown()
    with pytest.raises(ValueError, match="Invalid option keyword"):
        Queue(actor_options={"num_cpu": 1})


def test_queue_in_local_mode():
    raylite.init(local_mode=True)
    try:
        q = Queue()
        q.put(1)
        assert q.get(timeout=0) == 1
        for _ in range(2):
            with pytest.raises(Empty):
                q.get(timeout=0.01)
    finally:
        raylite.shutdown()
