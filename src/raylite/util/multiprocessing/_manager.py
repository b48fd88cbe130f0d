"""The engine of ``Pool``: its worker actors and the one thread that feeds them.

::

    user thread ── Pool.map/apply/imap ─ Job ──┐
                   Pool.close/terminate ───────┤
                                               v
    raylite's thread ── call finished ──> inbox (SimpleQueue) ──> manager thread (one per Pool)
      (future done)  │                                           │ owns jobs, procs, calls
                     │                                           │ pump: pack chunks into calls
                     │   PoolProcess actor (a process each) <── run(func, star, chunks)
                     │   initializer once; returns (seconds, [(ok, values | (exc, traceback))])
                     │                                           │
                     └─ results without callbacks ─┐             │ results with callbacks
    user thread <── result.get()/next() <── _set_chunk (results.py) <┘

Only the manager thread reads or changes the jobs, the processes and the calls in flight;
everyone else talks to it through its inbox, so none of that state needs a lock. The one
shortcut: a result that runs no user code gets its chunks' outcomes on raylite's thread as
soon as the call's reply is in (one thread hop less before ``get`` returns).

How work is packed: a *chunk* is what ``multiprocessing`` calls a task (``chunksize``
items, failing together, counted by ``maxtasksperchild``); each call carries one or more
chunks of one job. How many is learnt: the first calls of a job carry one chunk (unless
its function's speed is known from earlier jobs, ``SPEEDS``); once a call reports how long
its chunks took, the next ones carry as many as fit in
``TARGET_CALL_S`` (never more than a fair share of what is left), so ``imap(f, items)`` of
tiny tasks with the default ``chunksize=1`` costs a few calls, not one per item, while slow
tasks still go one chunk per call, to whichever process is free.

A process gets a call when it has none in flight, or a second one (``DEPTH``: queued
behind the first, so it does not sit idle while the driver hears back) only when the call
it is running is expected to end soon and is not late. Expected from the function's speed,
else from the pool's recent calls; with neither (a pool's first calls) nothing is queued.
So the first slow item holds no quick work hostage behind it, as with
``multiprocessing``'s shared queue; once calls were quick, one call may wait behind a
call that turns out slow.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import traceback
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ... import _runtime
from ...exceptions import ActorDiedError, ActorUnavailableError
from ._results import RemoteTraceback

__all__ = ["DEPTH", "SPEEDS", "TARGET_CALL_S", "Manager", "PoolProcess", "chunked"]

_log = logging.getLogger(__name__)

DEPTH = 2
"""Calls in flight per process at most: one running, one waiting behind it."""
MEMORY = 64
"""How many functions' speeds the pools remember."""
LATE_S = 0.001
"""A call running this much past twice its expected time is late (no call queued behind)."""
TARGET_CALL_S = 0.01
"""How long a call packing several chunks should take; ~1% of it is a call's overhead."""


class Sink(Protocol):
    """Where a job's chunk outcomes go (``AsyncResult`` or an ``imap`` iterator).

    ``direct``: it runs no user code on delivery, so raylite's thread may deliver to it.
    """

    direct: bool

    def _set_chunk(self, index: int, ok: bool, value: Any) -> None: ...


class PoolProcess:
    """One process of a pool (an actor reserving a CPU, hence a process of its own)."""

    def __init__(self, initializer: Callable[..., object] | None, initargs: Sequence[Any]):
        if initializer is not None:
            initializer(*initargs)

    def run(
        self, func: Callable[..., Any], star: bool, chunks: list[Iterable[Any]]
    ) -> tuple[float, list[tuple[bool, Any]]]:
        """Runs each chunk's items through ``func``; a chunk stops at its first exception.

        Returns:
            ``(seconds spent, [(True, [values]) | (False, (exception, traceback text))])``.
        """
        start = time.perf_counter()
        outcomes: list[tuple[bool, Any]] = []
        for items in chunks:
            try:
                values = list(itertools.starmap(func, items) if star else map(func, items))
            except Exception as exc:
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                outcomes.append((False, (exc, f'\n"""\n{text}"""')))
            else:
                outcomes.append((True, values))
        return time.perf_counter() - start, outcomes


def chunked(items: Iterable[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in pieces of ``size``: slices of a sequence (a ``range`` stays a ``range``),
    tuples drawn from any other iterable."""
    if isinstance(items, Sequence):
        return (items[i : i + size] for i in range(0, len(items), size))
    it = iter(items)
    return iter(lambda: tuple(itertools.islice(it, size)), ())


@dataclass(eq=False, slots=True)
class Job:
    """One ``map``/``apply``/``imap`` call: its chunks, drawn lazily, and where they go."""

    sink: Sink
    func: Callable[..., Any]
    star: bool
    chunks: Iterator[Sequence[Any]]
    chunksize: int
    total: int | None  # chunks in all, if known up front (None: imap over an iterator)
    on_length: Callable[[int], None] | None = None  # told the count once drawn (total None)
    taken: int = 0  # chunks drawn so far
    done: bool = False  # no chunk left to draw
    item_s: float | None = None  # seconds per item: measured, or learnt from earlier jobs

    def take(self, limit: int) -> list[tuple[int, Sequence[Any]]]:
        """Up to ``limit`` chunks ``[(index, items)]``; an exception of the iterable is
        delivered at its position, and ends the job."""
        out = []
        try:
            for items in itertools.islice(self.chunks, limit):
                out.append((self.taken, items))
                self.taken += 1
        except Exception as exc:
            self.sink._set_chunk(self.taken, False, exc)
            self.taken += 1
            self.done = True
        if len(out) < limit:
            self.done = True
        if self.done and self.on_length is not None:
            self.on_length(self.taken)
        return out

    def abandon(self, error: Exception) -> None:
        """Fails every chunk not drawn yet with ``error`` (the pool stopped)."""
        if self.done:
            return
        if self.total is None:  # an iterator, maybe endless: one error ends the iteration
            self.sink._set_chunk(self.taken, False, error)
            self.taken += 1
        else:
            for index in range(self.taken, self.total):
                self.sink._set_chunk(index, False, error)
            self.taken = self.total
        self.done = True
        if self.on_length is not None:
            self.on_length(self.taken)

    def per_call(self, slots: int) -> int:
        """How many chunks the next call should carry, ``slots`` calls being free."""
        if self.item_s is None:
            return 1
        by_time = max(1, int(TARGET_CALL_S / max(self.item_s * self.chunksize, 1e-9)))
        if self.total is None:
            return by_time
        fair = -(-(self.total - self.taken) // max(1, slots))
        return max(1, min(by_time, fair))

    def observe(self, seconds: float, items: int) -> None:
        sample = seconds / max(1, items)
        self.item_s = sample if self.item_s is None else (self.item_s + sample) / 2


class _Speeds:
    """{function: seconds per item} of the newest ``MEMORY`` functions, for every pool: a
    job of a function seen before is packed and pipelined from its first call (one round
    trip, not two), also in a new pool (joblib makes one per ``Parallel`` call).

    Only plain functions are remembered: they are small to hold (a key is held, so never
    reused), whereas a closure, a partial or a callable object may hold big data (joblib's
    batches do).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # several pools' manager threads
        self._item_s: dict[Callable[..., Any], float] = {}

    def get(self, func: Callable[..., Any]) -> float | None:
        if not _plain(func):
            return None
        with self._lock:
            return self._item_s.get(func)

    def learn(self, func: Callable[..., Any], item_s: float) -> None:
        if not _plain(func):
            return
        with self._lock:
            self._item_s.pop(func, None)
            self._item_s[func] = item_s
            if len(self._item_s) > MEMORY:
                del self._item_s[next(iter(self._item_s))]


def _plain(func: Callable[..., Any]) -> bool:
    """A builtin, or a function without a closure (which could hold big data)."""
    if isinstance(func, types.FunctionType):
        return func.__closure__ is None
    return isinstance(func, types.BuiltinFunctionType)


SPEEDS = _Speeds()


@dataclass(eq=False, slots=True)
class _Proc:
    """A pool process as the manager sees it."""

    actor: Any  # ActorHandle of PoolProcess
    # Calls sent, not finished, oldest first (an actor runs them in order):
    # [(time sent, expected seconds or None if unknown)]
    inflight: deque[tuple[float, float | None]] = field(default_factory=deque)
    assigned: int = 0  # chunks sent (maxtasksperchild counts these)

    def has_room(self, now: float) -> bool:
        """No call in flight, or room for one more behind calls that will end soon."""
        if len(self.inflight) >= DEPTH:
            return False
        return all(
            expected is not None and now - sent < 2 * expected + LATE_S
            for sent, expected in self.inflight
        )


@dataclass(eq=False, slots=True)
class _Call:
    proc: _Proc
    job: Job
    chunks: list[tuple[int, Sequence[Any]]]
    items: int


def _deliver(call: _Call, future: Any) -> None:
    """Hands each chunk of a finished call its outcome (or the call's failure)."""
    sink = call.job.sink
    try:
        _, outcomes = future.result()
    except Exception as exc:  # the process died, or a result would not pickle
        for index, _ in call.chunks:
            sink._set_chunk(index, False, exc)
        return
    for (index, _), (ok, value) in zip(call.chunks, outcomes, strict=True):
        if not ok:
            error, text = value
            error.__cause__ = RemoteTraceback(text)
            value = error
        sink._set_chunk(index, ok, value)


@dataclass(frozen=True, slots=True)
class _Submit:
    job: Job


@dataclass(frozen=True, slots=True)
class _Done:
    call: _Call
    future: Any  # concurrent.futures.Future of the call's result


@dataclass(frozen=True, slots=True)
class _Close:
    pass


@dataclass(frozen=True, slots=True)
class _Terminate:
    reason: str


_Event = _Submit | _Done | _Close | _Terminate


@dataclass(eq=False)
class Manager:
    """The pool's processes and work, owned by its own thread (see the module docstring).

    ``new_actor()`` starts one ``PoolProcess`` actor. ``max_tasks`` is
    ``maxtasksperchild`` (None: no limit).
    """

    processes: int
    new_actor: Callable[[], Any]
    max_tasks: int | None
    session: str  # the raylite session's job id, where the actors live
    _inbox: queue.SimpleQueue[_Event] = field(default_factory=queue.SimpleQueue)
    _procs: list[_Proc] = field(default_factory=list)
    _jobs: deque[Job] = field(default_factory=deque)
    _calls: set[_Call] = field(default_factory=set)
    _recent_call_s: float | None = None  # running average of calls' durations in the workers
    _closing: bool = False
    broken: str | None = None  # why the manager stopped, if it did before close/terminate
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self._procs = [_Proc(self.new_actor()) for _ in range(self.processes)]
        self.thread = threading.Thread(target=self._run, name="raylite-pool-manager", daemon=True)
        self.thread.start()

    # -- called from other threads: only these touch the inbox ----------------------------

    def submit(self, job: Job) -> None:
        self._inbox.put(_Submit(job))

    def close(self) -> None:
        self._inbox.put(_Close())

    def terminate(self, reason: str) -> None:
        self._inbox.put(_Terminate(reason))

    # -- the manager thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._step(self._inbox.get()):
                pass
        except BaseException as exc:
            self.broken = f"the pool's manager thread failed: {exc!r}"
            _log.exception("raylite Pool: the manager thread failed; the pool is closed")
            self._stop(self.broken)

    def _step(self, event: _Event) -> bool:
        """Handles one event; False once the pool is finished."""
        if isinstance(event, _Submit):
            self._jobs.append(event.job)
            event.job.item_s = SPEEDS.get(event.job.func)
        elif isinstance(event, _Done):
            self._finished(event.call, event.future)
        elif isinstance(event, _Close):
            self._closing = True
        else:
            self._stop(event.reason)
            return False
        self._pump()
        if self._closing and not self._jobs and not self._calls:
            self._stop("")  # drained: end the processes now, so join() sees them gone
            return False
        return True

    def _pump(self) -> None:
        """Sends work to each process with room, the least busy first."""
        while self._jobs:
            now = time.monotonic()
            free = [p for p in self._procs if p.has_room(now)]
            if not free:
                return
            proc = min(free, key=lambda p: len(p.inflight))
            job = self._jobs[0]
            limit = job.per_call(len(free))
            if self.max_tasks is not None:
                limit = min(limit, self.max_tasks - proc.assigned)
            chunks = job.take(limit)
            if job.done:
                self._jobs.popleft()
            if chunks:
                self._send(proc, job, chunks)

    def _send(self, proc: _Proc, job: Job, chunks: list[tuple[int, Sequence[Any]]]) -> None:
        items = sum(len(c) for _, c in chunks)
        call = _Call(proc, job, chunks, items)
        try:
            if not self._in_session():
                raise RuntimeError(
                    "raylite was shut down while this Pool was open: close the pool "
                    "before raylite.shutdown(), or make a new Pool"
                )
            ref = proc.actor.run.remote(job.func, job.star, [items for _, items in chunks])
        except Exception as exc:  # unpicklable function or items, or no runtime
            for index, _ in chunks:
                job.sink._set_chunk(index, False, exc)
            return
        # A job of unknown speed is expected to take what the pool's recent calls took
        # (joblib submits each batch as its own apply_async; they are alike).
        expected = self._recent_call_s if job.item_s is None else job.item_s * items
        proc.inflight.append((time.monotonic(), expected))
        proc.assigned += len(chunks)
        self._calls.add(call)
        if self.max_tasks is not None and proc.assigned >= self.max_tasks:
            self._replace(proc)  # retired: it ends once its calls are done (last handle)
        ref.future().add_done_callback(lambda f: self._done(call, f))

    def _done(self, call: _Call, future: Any) -> None:
        """On raylite's thread: a call finished. A result that runs no user code gets its
        outcomes here, one thread hop sooner; the manager does the rest."""
        if call.job.sink.direct:
            _deliver(call, future)
        self._inbox.put(_Done(call, future))

    def _finished(self, call: _Call, future: Any) -> None:
        self._calls.discard(call)
        call.proc.inflight.popleft()
        if not call.job.sink.direct:
            _deliver(call, future)
        error = future.exception()
        if error is None:
            seconds = future.result()[0]
            call.job.observe(seconds, call.items)
            recent = self._recent_call_s
            self._recent_call_s = seconds if recent is None else (recent + seconds) / 2
            SPEEDS.learn(call.job.func, call.job.item_s or 0.0)
        elif isinstance(error, (ActorDiedError, ActorUnavailableError)):
            self._replace(call.proc)

    def _session(self) -> _runtime.Runtime | None:
        """The runtime the pool's actors live in, if it is still up (a handle used in a
        later session would name another actor). Never starts one: this thread must not
        auto-init a session while, or after, the user shuts raylite down."""
        rt = _runtime.current_or_none()
        if rt is None or str(rt.context()["session"]) != self.session:
            return None
        return rt

    def _in_session(self) -> bool:
        return self._session() is not None

    def _replace(self, proc: _Proc) -> None:
        if proc in self._procs and self._in_session():
            self._procs[self._procs.index(proc)] = _Proc(self.new_actor())

    def _stop(self, reason: str) -> None:
        """Ends the processes; fails what was not done with ``reason`` (if any is left)."""
        error = RuntimeError(f"the Pool stopped before this task ran: {reason}")
        for call in self._calls:
            for index, _ in call.chunks:
                call.job.sink._set_chunk(index, False, error)
        for job in self._jobs:
            job.abandon(error)
        self._calls.clear()
        self._jobs.clear()
        rt = self._session()
        if rt is not None:  # else its actors died with their session
            for proc in self._procs:
                try:
                    rt.kill_actor(proc.actor, True)
                except Exception:  # already dead (its runtime went away)
                    pass
        self._procs.clear()
