"""Actors inside a worker process: each on threads (or an event loop) of its own.

::

    main thread (WorkerRuntime.serve)        actor threads
    ---------------------------------        -------------
    CreateActor -> HostedActor(...)  ──────> lane "default": __init__ first, then calls
    ActorCall   -> lane(group).put() ──────> lane threads: run the method, send TaskDone
    KillActor   -> HostedActor.stop()         (under the runtime's send lock)
    CancelTask  -> HostedActor.cancel(): a call not started leaves its lane, reported
                   cancelled at once; a running one is not interrupted

A *lane* is a FIFO served by up to ``limit`` threads: with one thread (the default) an
actor runs its calls one at a time in arrival order, which is submission order. Each
concurrency group is a lane of its own. An async actor gets an event loop thread per
concurrency group instead (the default group's runs ``__init__``), each with a semaphore
of the group's limit (default 1000, as Ray): a method that blocks its loop stalls only its
own group. Cancelling a running async call cancels its asyncio task.

Generator methods send each value as it is yielded (``WorkerRuntime.stream_item``), from
the lane thread or the event loop that runs them, ahead of the call's ``TaskDone``.

Many actors share a host process (actors that reserve no CPU/GPU are packed): they share
its module globals and its GIL, not their instances. One actor's long call does not stall
another's, since each has its own threads.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._actor import IntendedExit
from . import serialization as ser
from .protocol import DYNAMIC, ActorCall, ActorExited, ActorReady, CreateActor, TaskDone

if TYPE_CHECKING:
    from .worker import WorkerRuntime

__all__ = ["HostedActor"]

_ASYNC_DEFAULT_CONCURRENCY = 1000


class _Lane:
    """A FIFO of calls served by up to ``limit`` threads, started as needed."""

    def __init__(self, name: str, limit: int, run: Callable[[Any], None],
                 ready: threading.Event, idle: Callable[[], None],
                 ended: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.name = name
        self.limit = limit
        self._run = run
        self._ready = ready  # set once __init__ has run
        self._idle = idle  # called when the lane runs dry (flush replies)
        self._ended = ended  # called by each thread as it ends, once the lane is stopped
        self._queue: deque[Any] = deque()
        self._cond = threading.Condition()
        self._threads = 0
        self._busy = 0
        self._stopped = False

    def put(self, item: Any) -> None:
        with self._cond:
            self._queue.append(item)
            if self._busy + len(self._queue) > self._threads and self._threads < self.limit:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"actor-{self.name}", daemon=True).start()
            self._cond.notify()

    def drop(self, task_id: int) -> bool:
        """Removes call ``task_id`` if it waits here, not started; True if it did."""
        with self._cond:
            for item in self._queue:
                if not callable(item) and item.task_id == task_id:
                    self._queue.remove(item)
                    return True
        return False

    def stop(self) -> None:
        with self._cond:
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
            with self._cond:
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
                with self._cond:
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
        self._gpu_ids: list[str] | None = config.get("gpu_ids")
        # runtime_env={"env_vars": ...}: such an actor has a process of its own (dedicated)
        self._env: dict[str, str] = config.get("env_vars") or {}
        limit = config["max_concurrency"] or (_ASYNC_DEFAULT_CONCURRENCY if self._is_async else 1)
        groups: dict[str, int] = dict(config["groups"])
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
                    rt.flush_from_thread, self._thread_ended,
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

    def call(self, msg: ActorCall) -> None:
        if self.dead:  # it ended (exit_actor, kill) while this call was on its way: the
            return  # driver fails or retries the calls it sent, as for queued ones (stop)
        if self._loops:
            group = self._loops.get(msg.group) or self._loops[None]
            group.loop.call_soon_threadsafe(self._spawn_async, group, msg)
        else:
            (self._lanes.get(msg.group) or self._lanes[None]).put(msg)

    def cancel(self, task_id: int) -> bool:
        """Drops call ``task_id`` if it has not started; True if it did (the caller reports
        it cancelled). A running async call's asyncio task is cancelled: it reports itself.
        As in Ray, a running sync call is not interrupted (an actor has state)."""
        for group in self._loops.values():  # after the call's _spawn_async, if it came here
            group.loop.call_soon_threadsafe(self._cancel_async, task_id)
        return any(lane.drop(task_id) for lane in self._lanes.values())

    def _cancel_async(self, task_id: int) -> None:
        task = self._running.get(task_id)
        if task is not None:
            task.cancel()

    def stop(self) -> None:
        """Drops queued calls; a running one finishes and its result is not sent. The
        instance is let go at once (its loops end; the last lane thread drops it)."""
        self.dead = True
        for lane in self._lanes.values():
            lane.stop()
        for group in self._loops.values():
            group.stop()
        # Let the instance go now, and the lanes and loops (their threads hold them till
        # they end): nothing here may keep what the dead actor held alive.
        self.instance = None
        self._lanes, self._loops = {}, {}

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
        try:
            method = getattr(self.instance, msg.method)
            args, kwargs = self.rt.load_args(msg.args, msg.dep_positions, msg.dep_values)
            result = method(*args, **kwargs)
            del method, args, kwargs
            if msg.stream:
                result = self.rt.run_generator(name, msg.task_id, msg.stream, result)
            done = self.rt.pack_results(name, msg.task_id, msg.return_ids, result)
        except SystemExit as exc:
            self._exit(name, exc)
            return
        except BaseException as exc:
            done = TaskDone(msg.task_id, [], [], ser.dumps_error(name, exc, os.getpid()), 0.0), []
        finally:
            self.rt.set_context(label=self.class_name, actor_id=self.actor_id, current=None)
        if self.dead:  # killed meanwhile: nobody will read the results
            self.rt.drop_results(msg.return_ids, done[1])
        else:
            timed = done[0]._replace(start=start, duration=time.time() - start)
            self.rt.send_from_thread(timed, done[1], flush=False)

    def _spawn_async(self, group: _GroupLoop, msg: ActorCall) -> None:
        self.rt.set_context(label=self.class_name, actor_id=self.actor_id)  # this loop's thread
        task = group.loop.create_task(self._call_async(group, msg))
        self._running[msg.task_id] = task
        task.add_done_callback(lambda _: self._running.pop(msg.task_id, None))

    async def _call_async(self, group: _GroupLoop, msg: ActorCall) -> None:
        name = f"{self.class_name}.{msg.method}"
        start = time.time()
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
                done = self.rt.pack_results(name, msg.task_id, msg.return_ids, result)
        except asyncio.CancelledError:  # ray.cancel() of this call
            done = TaskDone(msg.task_id, [], [], ser.dumps_cancelled(msg.task_id), 0.0), []
        except SystemExit as exc:
            self._exit(name, exc)
            return
        except BaseException as exc:
            error = ser.dumps_error(name, exc, os.getpid())
            done = TaskDone(msg.task_id, [], [], error, 0.0), []
        done = done[0]._replace(start=start, duration=time.time() - start), done[1]
        if self.dead:  # killed meanwhile: nobody will read the results
            self.rt.drop_results(msg.return_ids, done[1])
        else:
            self.rt.send_from_thread(done[0], done[1], flush=False)
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
