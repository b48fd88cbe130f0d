"""Actors inside a worker process: each on threads (or an event loop) of its own.

::

    main thread (WorkerRuntime.serve)        actor threads
    ---------------------------------        -------------
    CreateActor -> HostedActor(...)  ──────> lane "default": __init__ first, then calls
    ActorCall   -> lane(group).put() ──────> lane threads: run the method, send TaskDone
                   (the host's only actor,    (under the runtime's send lock)
                   one call at a time: the
                   main thread runs it after
                   the batch, run_inline)     follower: reads and handles in the main
                                              thread's stead while it runs such a call
                                              for over FOLLOW_AFTER_S (seen
                                              within _IDLE_PAUSE_MAX_S)
    ActorCall   -> batch per group ────────> async: one call_soon_threadsafe per batch
    KillActor   -> HostedActor.stop()
    CancelTask  -> HostedActor.cancel(): a call not started leaves its lane, reported
                   cancelled at once; a running one is not interrupted

A *lane* is a FIFO served by up to ``limit`` threads: with one thread (the default) an
actor runs its calls one at a time in arrival order, which is submission order. Each
concurrency group is a lane of its own. An async actor gets an event loop thread per
concurrency group instead (the default group's runs ``__init__``), each with a semaphore
of the group's limit (default 1000, as Ray): a method that blocks its loop stalls only its
own group. Cancelling a running async call cancels its asyncio task.

A host serving one actor whose calls run one at a time (no concurrency groups, not async,
``max_concurrency=1``) runs them on its main thread, the one that read them: the hand-off
to a lane thread was most of such a call's cost in the host. The call holds the lane's one
slot (``next_inline``), so its lane thread runs nothing meanwhile. A long call delays no
message: the ``Follower`` reads after ``FOLLOW_AFTER_S``, handling what comes (a new actor
packed here, a kill, a cancel) as the main thread would; calls it reads wait in the lane.

Generator methods send each value as it is yielded (``WorkerRuntime.stream_item``), from
the thread or the event loop that runs them, ahead of the call's ``TaskDone``.

Many actors share a host process (actors that reserve no CPU/GPU are packed): they share
its module globals and its GIL, not their instances. One actor's long call does not stall
another's, since each has its own threads.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._actor import IntendedExit
from . import serialization as ser
from .protocol import DYNAMIC, ActorCall, ActorExited, ActorReady, CreateActor, TaskDone, Value

if TYPE_CHECKING:
    from .worker import WorkerRuntime

__all__ = ["HostedActor"]

_ASYNC_DEFAULT_CONCURRENCY = 1000
FOLLOW_AFTER_S = 0.001  # a call run by the reading thread this long: the follower reads
# Found between calls, the follower looks again after twice its last pause, up to this: a
# long call is seen within it, and a host serving sync calls (idle between them) is not
# woken 1,000 times a second (sync round trips, load ~11: host CPU 95 -> 70 us per call
# with a 20 ms pause).
_IDLE_PAUSE_MAX_S = 0.008
_COLD_AFTER_S = 0.5  # no such call this long: the follower sleeps until the next one


def limit_of(config: dict[str, Any]) -> int:
    """How many calls of the default group an actor with ``config`` runs at once."""
    return int(config["max_concurrency"] or (_ASYNC_DEFAULT_CONCURRENCY if config["is_async"] else 1))


class _Lane:
    """A FIFO of calls served by up to ``limit`` threads, started as needed; or, for a
    lane ``by_reader``, by the host's reading thread alone (``next_inline``)."""

    def __init__(self, name: str, limit: int, run: Callable[[Any], None],
                 ready: threading.Event, idle: Callable[[], None],
                 ended: Callable[[], None] | None = None, by_reader: bool = False,
                 ) -> None:  # fmt: skip
        self.name = name
        self.limit = limit
        self._run = run
        self._ready = ready  # set once __init__ has run
        self._idle = idle  # called when the lane runs dry (flush replies)
        self._ended = ended  # called by each thread as it ends, once the lane is stopped
        self._by_reader = by_reader
        self._queue: deque[Any] = deque()
        # Entered as the bare lock: `with` on a C lock runs no Python frame, on a Condition
        # it runs two (timeit here, loaded: 0.58 vs 1.21 us; 4 sections per inline call).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._threads = 0
        self._busy = 0
        self._stopped = False

    def put(self, item: Any) -> None:
        with self._lock:
            self._queue.append(item)
            if self._by_reader:
                return
            if self._busy + len(self._queue) > self._threads and self._threads < self.limit:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"actor-{self.name}", daemon=True).start()
            self._cond.notify()

    def next_inline(self) -> Any:
        """The next item of a ``by_reader`` lane for the caller to run (then call
        ``inline_done``); None if none waits, or the caller runs one already (nested)."""
        with self._lock:
            if self._busy or not self._queue or self._stopped:
                return None
            self._busy = 1
            return self._queue.popleft()

    def inline_done(self) -> None:
        with self._lock:
            self._busy = 0

    def drop(self, task_id: int) -> bool:
        """Removes call ``task_id`` if it waits here, not started; True if it did."""
        with self._lock:
            for item in self._queue:
                if not callable(item) and item.task_id == task_id:
                    self._queue.remove(item)
                    return True
        return False

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()

    def _serve(self) -> None:
        try:
            self._serve_calls()
        finally:
            if self._ended is not None:
                self._ended()

    def _serve_calls(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                item = self._queue.popleft()
                self._busy += 1
            try:
                if callable(item):  # the actor's creation: first in the default lane
                    item()
                else:
                    self._ready.wait()  # calls in other lanes or threads wait for it
                    self._run(item)
            finally:
                with self._lock:
                    self._busy -= 1
                    dry = not self._queue
            if dry:
                self._idle()


class HostedActor:
    """One actor instance in this process and the threads that run its calls."""

    def __init__(self, rt: WorkerRuntime, msg: CreateActor, config: dict[str, Any]) -> None:
        self.rt = rt
        self.actor_id = msg.actor_id
        self.class_name = msg.class_name
        self.instance: Any = None
        self.dead = False
        self._ready = threading.Event()
        self._is_async = bool(config["is_async"])
        limit = limit_of(config)
        groups: dict[str, int] = dict(config["groups"])
        # The host's only actor, one call at a time: its main thread (the reader) runs the
        # actor's __init__ and calls, for the actor's life (see run_inline).
        self.inline = not self._is_async and not groups and limit == 1 and rt.may_inline()
        self._batches: dict[_GroupLoop, list[ActorCall]] = {}  # async calls read, not yet sent
        self._gpu_ids: list[str] | None = config.get("gpu_ids")
        # runtime_env={"env_vars": ...}: such an actor has a process of its own (dedicated)
        self._env: dict[str, str] = config.get("env_vars") or {}
        self._loops: dict[str | None, _GroupLoop] = {}
        self._lanes: dict[str | None, _Lane] = {}
        self._running: dict[int, asyncio.Task[None]] = {}  # {task id: async call} (loops)
        if self._is_async:
            for group, n in [(None, limit), *groups.items()]:
                name = f"{self.class_name}.{group or 'default'}"
                self._loops[group] = _GroupLoop(name, n, rt, self._thread_ended)
        else:
            for group, n in [(None, limit), *groups.items()]:
                self._lanes[group] = _Lane(
                    f"{self.class_name}.{group or 'default'}", n, self._call, self._ready,
                    rt.flush_from_thread, self._thread_ended, self.inline,
                )  # fmt: skip
        create = lambda: self._create(msg)  # noqa: E731
        if self._loops:
            self._loops[None].loop.call_soon_threadsafe(create)
        else:
            self._lanes[None].put(create)

    # ---- life ---------------------------------------------------------------------------

    def _create(self, msg: CreateActor) -> None:
        self.rt.set_context(label=self.class_name, actor_id=self.actor_id)
        if self._gpu_ids is not None:  # a dedicated actor: the process is its own
            self.rt.assign_gpus(self._gpu_ids)
        os.environ.update(self._env)
        error = None
        try:
            cls = self.rt.function(msg.fn_id)
            args, kwargs = self.rt.load_args(msg.args, msg.dep_positions, msg.dep_values)
            self.instance = cls(*args, **kwargs)
        except BaseException as exc:
            error = ser.dumps_error(f"{self.class_name}.__init__", exc, os.getpid())
            self.dead = True
        self.rt.send_from_thread(ActorReady(self.actor_id, error))
        self._ready.set()

    def call(self, msg: ActorCall) -> bool:
        """Takes a call the host read; True if it waits for ``dispatch`` (at the end of the
        batch it came in): an async call, or one the reading thread runs."""
        if self.dead:  # it ended (exit_actor, kill) while this call was on its way: the
            return False  # driver fails or retries the calls it sent, as for queued ones (stop)
        if self._loops:  # the loop is woken once per batch, not per call (a pipe write each)
            group = self._loops.get(msg.group) or self._loops[None]
            self._batches.setdefault(group, []).append(msg)
            return True
        (self._lanes.get(msg.group) or self._lanes[None]).put(msg)
        return self.inline

    def dispatch(self) -> bool:
        """Sends the batch's async calls to their loops; True if calls wait for
        ``run_inline`` (called under the host's handling lock, as ``call`` is)."""
        self._send_batches()
        return self.inline

    def _send_batches(self) -> None:
        if not self._batches:  # a sync actor's batch (no dict swapped per batch)
            return
        batches, self._batches = self._batches, {}
        for group, msgs in batches.items():
            group.loop.call_soon_threadsafe(self._spawn_batch, group, msgs)

    def run_inline(self, follower: Follower) -> None:
        """Runs the queued ``__init__`` and calls of an ``inline`` actor on this thread, the
        host's main thread: no hand-off to a lane thread (whose wake-up was 77% of a host's
        time per sync call). Meanwhile ``follower`` reads for the host once one runs long.
        The next calls may come while one runs (read by the follower): they are run too."""
        lane = self._lanes.get(None)
        while lane is not None:
            item = lane.next_inline()
            if item is None:
                return
            follower.started()
            try:
                if callable(item):  # the actor's creation
                    item()
                else:
                    self._call(item)
            finally:
                lane.inline_done()
                follower.ended()
            if self.dead:  # collect what the instance held, once its last call is over
                self._thread_ended()

    def cancel(self, task_id: int) -> bool:
        """Drops call ``task_id`` if it has not started; True if it did (the caller reports
        it cancelled). A running async call's asyncio task is cancelled: it reports itself.
        As in Ray, a running sync call is not interrupted (an actor has state)."""
        self._send_batches()  # the call may wait in this batch: its task must exist first
        for group in self._loops.values():  # after the call's _spawn_batch, if it came here
            group.loop.call_soon_threadsafe(self._cancel_async, group, task_id)
        return any(lane.drop(task_id) for lane in self._lanes.values())

    def _cancel_async(self, group: _GroupLoop, task_id: int) -> None:
        """On ``group``'s loop: cancels call ``task_id`` if it is one of that loop's (an
        asyncio task is cancelled only from its own loop's thread)."""
        task = self._running.get(task_id)
        if task is None or task.get_loop() is not group.loop:
            return
        del self._running[task_id]
        task.cancel()
        # A task cancelled before its first step never runs its body, whose except clause
        # reports the cancellation: without this, nothing would answer the call.
        task.add_done_callback(lambda t: self._report_unstarted(group, task_id, t))

    def _report_unstarted(self, group: _GroupLoop, task_id: int, task: asyncio.Task[None]) -> None:
        if task.cancelled() and not self.dead:
            done = TaskDone(task_id, [], [], ser.dumps_cancelled(task_id), 0.0)
            self.rt.send_from_thread(done, [], flush=False)
            group.flush_soon()

    def stop(self) -> None:
        """Drops queued calls; a running one finishes and its result is not sent. The
        instance is let go at once (its loops end; the last lane thread drops it)."""
        self.dead = True
        self._batches = {}
        for lane in self._lanes.values():
            lane.stop()
        for group in self._loops.values():
            group.stop()
        # Let the instance go now, and the lanes and loops (their threads hold them till
        # they end): nothing here may keep what the dead actor held alive.
        self.instance = None
        self._lanes, self._loops = {}, {}
        if self.inline:  # no lane thread will end: collect now (and after a running call)
            self._thread_ended()

    def _thread_ended(self) -> None:
        """A thread of this stopped actor ended: collect what the instance held (it may
        sit in a reference cycle, and an idle host allocates too little to ever run the
        collector), and tell the driver what that released (refs, mappings)."""
        gc.collect()
        self.rt.flush_from_thread()

    def _exit(self, name: str, exc: SystemExit) -> None:
        """``exit_actor()`` or ``sys.exit()`` in method ``name``: the actor ends, as in Ray
        (where it is its process's exit). Its calls not yet started are dropped here; the
        driver fails them and the one that exited (or restarts the actor: ``sys.exit()`` is
        an unexpected exit, ``exit_actor()`` an intended one)."""
        intended = isinstance(exc, IntendedExit)
        if intended:
            reason = f"{name}() called exit_actor() (exit type INTENDED_USER_EXIT, as Ray names it)"
        else:
            reason = (
                f"{name}() raised SystemExit({exc.code!r}) (sys.exit() ends an actor, as in "
                "Ray; to end it on purpose call raylite.actor.exit_actor())"
            )
        if not self.dead:
            self.rt.send_from_thread(ActorExited(self.actor_id, not intended, reason))
        self.stop()

    # ---- calls --------------------------------------------------------------------------

    def _call(self, msg: ActorCall) -> None:
        if self.dead:
            return
        self.rt.set_context(label=self.class_name, actor_id=self.actor_id, current=msg)
        name = f"{self.class_name}.{msg.method}"
        start = time.time()
        results: list[Value] = []
        contained: list[list[int]] = []
        fds: list[int] = []  # segments of big results, sent with the TaskDone
        error: bytes | None = None
        try:
            method = getattr(self.instance, msg.method)
            args, kwargs = self.rt.load_args(msg.args, msg.dep_positions, msg.dep_values)
            result = method(*args, **kwargs)
            del method, args, kwargs
            if msg.stream:
                result = self.rt.run_generator(name, msg.task_id, msg.stream, result)
            results, contained, fds = self.rt.results_of(name, msg.return_ids, result)
        except SystemExit as exc:
            self._exit(name, exc)
            return
        except BaseException as exc:
            error = ser.dumps_error(name, exc, os.getpid())
        finally:
            self.rt.set_context(label=self.class_name, actor_id=self.actor_id, current=None)
        if self.dead:  # killed meanwhile: nobody will read the results
            self.rt.drop_results(msg.return_ids, fds)
        else:
            done = TaskDone(msg.task_id, results, contained, error, time.time() - start, start)
            self.rt.send_from_thread(done, fds, flush=False)

    def _spawn_batch(self, group: _GroupLoop, msgs: list[ActorCall]) -> None:
        """Starts the calls of one batch as tasks of ``group``'s loop (on that loop)."""
        self.rt.set_context(label=self.class_name, actor_id=self.actor_id)  # this loop's thread
        create_task = group.loop.create_task
        running = self._running
        for msg in msgs:
            running[msg.task_id] = create_task(self._call_async(group, msg))

    async def _call_async(self, group: _GroupLoop, msg: ActorCall) -> None:
        name = f"{self.class_name}.{msg.method}"
        start = time.time()
        results: list[Value] = []
        contained: list[list[int]] = []
        fds: list[int] = []  # segments of big results, sent with the TaskDone
        error: bytes | None = None
        try:
            async with group.semaphore:
                if not self._ready.is_set():  # __init__ runs on the default group's loop
                    await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
                if self.dead:
                    return
                start = time.time()
                method = getattr(self.instance, msg.method)
                args, kwargs = self.rt.load_args(msg.args, msg.dep_positions, msg.dep_values)
                result = method(*args, **kwargs)
                del args, kwargs
                if msg.stream and inspect.isasyncgen(result):
                    result = await self._stream_async(name, msg, result)
                elif msg.stream:
                    result = self.rt.run_generator(name, msg.task_id, msg.stream, result)
                elif inspect.isawaitable(result):
                    result = await result
                results, contained, fds = self.rt.results_of(name, msg.return_ids, result)
        except asyncio.CancelledError:  # ray.cancel() of this call
            error = ser.dumps_cancelled(msg.task_id)
        except SystemExit as exc:
            self._exit(name, exc)
            return
        except BaseException as exc:
            error = ser.dumps_error(name, exc, os.getpid())
        self._running.pop(msg.task_id, None)  # (a dead actor's calls: dropped with it)
        if self.dead:  # killed meanwhile: nobody will read the results
            self.rt.drop_results(msg.return_ids, fds)
        else:
            done = TaskDone(msg.task_id, results, contained, error, time.time() - start, start)
            self.rt.send_from_thread(done, fds, flush=False)
            group.flush_soon()

    async def _stream_async(self, name: str, msg: ActorCall, agen: Any) -> Any:
        """``WorkerRuntime.run_generator`` for an async generator method."""
        oids: list[int] = []
        rt = self.rt
        try:
            async for value in agen:
                oids.append(rt.stream_item(name, msg.task_id, len(oids), value, msg.stream))
        except Exception as exc:
            if msg.stream != DYNAMIC:
                raise
            error = ser.dumps_error(name, exc, os.getpid())
            oids.append(rt.stream_item(name, msg.task_id, len(oids), error, DYNAMIC, True))
        return rt.end_stream(msg.stream, oids)


class _GroupLoop:
    """The event loop thread of one concurrency group of an async actor."""

    def __init__(
        self, name: str, limit: int, rt: WorkerRuntime, ended: Callable[[], None]
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.semaphore = asyncio.Semaphore(limit)
        self._rt = rt
        self._ended = ended
        self._flush_scheduled = False
        threading.Thread(target=self._run, name=f"actor-{name}", daemon=True).start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()  # creation is scheduled first, so it runs before calls
        finally:  # stopped: the actor is dead; end its calls so their frames let go
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                gather = asyncio.gather(*pending, return_exceptions=True)
                self.loop.run_until_complete(gather)
            self.loop.close()
            self._ended()

    def flush_soon(self) -> None:
        """One flush per burst of finished calls (called on the loop)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._rt.flush_from_thread()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class Follower:
    """Reads the host's socket while its main thread runs an ``inline`` actor's call (or
    ``__init__``) for longer than ``FOLLOW_AFTER_S``, so a long call delays no message: a
    new actor packed onto the host, a ``KillActor``, a ``CancelTask`` of a queued call.

    Its thread looks every ``FOLLOW_AFTER_S`` while it finds a call running (the main
    thread only stores when a call started: no wake-up per call), less often while it
    finds none (doubling its pause up to ``_IDLE_PAUSE_MAX_S``), and sleeps on an event
    once none came for ``_COLD_AFTER_S``. It handles a batch only while that call runs, under
    ``handling``; the main thread marks the call's end under it too, so a batch handled
    by the follower is complete (its calls queued) before the main thread looks for more.

    Args:
        read: ``Replies.read_once``: reads a batch in turns with the host's other readers.
        handle: handles what was read (the host's inbox), ``handling`` held.
        flush: sends the replies that handling queued.
        handling: the host's lock around handling what was read.
        paused: True while the main thread waits for a reply and reads itself.
    """

    def __init__(
        self, read: Callable[[Callable[[], bool]], bool], handle: Callable[[], object],
        flush: Callable[[], None], handling: threading.Lock, paused: Callable[[], bool],
    ) -> None:  # fmt: skip
        self.running = False  # the main thread runs a call (main writes)
        self._since = 0.0  # when it started (perf_counter)
        self._read = read
        self._handle = handle
        self._flush = flush
        self._handling = handling
        self._paused = paused
        self._cold = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def started(self) -> None:
        """The main thread starts running a call."""
        self._since = time.perf_counter()
        self.running = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="raylite-follower", daemon=True)
            self._thread.start()
        elif self._cold:
            self._wake.set()

    def ended(self) -> None:
        with self._handling:
            self.running = False

    def _run(self) -> None:
        try:
            self._watch()
        except BaseException:  # a bug: say so, and let the next inline call start another
            print("raylite: the host's follower thread failed:", file=sys.stderr)
            traceback.print_exc()
            self._thread = None

    def _watch(self) -> None:
        seen = 0.0  # the start of the last call seen
        pause = FOLLOW_AFTER_S
        while True:
            time.sleep(pause)
            since, now = self._since, time.perf_counter()
            if not self.running:
                pause = min(2 * pause, _IDLE_PAUSE_MAX_S)
                if since == seen and now - since > _COLD_AFTER_S:
                    self._wake.clear()  # before _cold: a call started after this sets it
                    self._cold = True
                    if not self.running:
                        self._wake.wait()
                    self._cold = False
                    pause = FOLLOW_AFTER_S
                seen = since
                continue
            seen = since
            pause = FOLLOW_AFTER_S
            if now - since < FOLLOW_AFTER_S or self._paused():
                continue
            if not self._follow(since):
                return  # the driver is gone: the main thread ends the process

    def _follow(self, since: float) -> bool:
        """Reads and handles batches while the call that started at ``since`` runs (and
        the main thread does not read itself); False once the driver closed the channel."""
        done = lambda: not self.running or self._since != since or self._paused()  # noqa: E731
        while not done():
            if not self._read(done):
                return False
            with self._handling:
                if done():  # the call ended meanwhile: the main thread handles the batch
                    return True
                self._handle()
            self._flush()
        return True
