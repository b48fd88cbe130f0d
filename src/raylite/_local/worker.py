"""The loop inside a worker process, and the runtime that tasks see there.

::

    driver --TaskRequest/FunctionDef/CancelTask/GetReply/WaitReply--> socket --> serve()
    serve(): queue <- receive(); run the oldest task; results -> out queue
    driver <--TasksDone/TaskDone/SubmitTask/PutObject/GetRequest/RefOps/...--- flush() <-- out
                                                    queue (a run of plain replies: one TasksDone)

The main thread does everything: it reads the socket only when its queue is empty (or,
between short tasks, every millisecond to see cancellations), and flushes replies when it is
about to wait or once a millisecond, so a burst of tiny tasks travels as a few large frames.
While it runs user code, a thread of that code (or an actor thread) that waits for a reply
reads the socket itself: reading takes turns (``replies.Replies``), and what another thread
reads for the main thread waits in an inbox for its next look.

Inside a task, ``raylite.get``/``put``/``wait``/``.remote()`` go to the driver through
``WorkerRuntime``. A ``get`` that has to wait hands the worker's queued tasks back to the
driver (they may be the very children it waits for) and returns any that arrive meanwhile.

Cancel: the driver writes the task id into the slot and sends SIGUSR1; the handler raises
``CancelInterrupt`` into the task unless a frame is in hand (then it lands once the frame
is), also while the task waits in a nested ``get``. A process the task forks never comes
back to this loop: when the task's function returns or raises there, it exits.

ObjectRefs that come alive here are *borrowed*: the driver is told before any later message
(so before the task that brought them in reports done), and told again when the last copy
here dies. The driver keeps a borrowed object alive until then, or until this process dies.
"""

from __future__ import annotations

import concurrent.futures
import faulthandler
import io
import itertools
import mmap
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
import types
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, cast

from .. import _runtime
from .._actor import ActorHandle, IntendedExit, exit_outside_actor
from .._object_ref import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator
from ..exceptions import GetTimeoutError, RaySystemError, TaskCancelledError
from . import serialization as ser
from .actor_host import Follower, HostedActor
from .protocol import (
    CANCEL_AT,
    DYNAMIC,
    ID_BITS,
    RUNNING_AT,
    SLOT_SIZE,
    STREAMING,
    ActorCall,
    ActorInfo,
    CancelRequest,
    CancelTask,
    Channel,
    CreateActor,
    CreateActorRequest,
    Forget,
    FunctionDef,
    GeneratorItem,
    GetActorRequest,
    GetReply,
    GetRequest,
    KillActor,
    KillActorRequest,
    Message,
    PutObject,
    RefOps,
    ShmValue,
    StreamNextReply,
    StreamNextRequest,
    SubmitActorCall,
    SubmitTask,
    TaskDone,
    TaskRequest,
    TasksReturned,
    Unblocked,
    Value,
    WaitReply,
    WaitRequest,
    check_inband,
    read_slot,
    write_slot,
)
from .replies import Replies
from .store import Mappings, Segment, layout_of, write_segment

if TYPE_CHECKING:
    from .._actor import ActorClass
    from .._options import ActorOptions, MethodOptions, TaskOptions
    from .._remote_function import RemoteFunction

__all__ = [
    "CANCEL_SIGNAL", "WorkerRuntime", "n_refs", "stream_mode", "worker_main",
]  # fmt: skip

CANCEL_SIGNAL = signal.SIGUSR1

_POLL_SECONDS = 0.001
_DRIVER_GONE = "raylite's driver is gone (it exited or was killed): this worker stops."
_DRIVER_ONLY = (
    "{} can be called from the driver only (the process that called raylite.init()), not "
    "inside a task or actor: call it there, or use `raylite list tasks` from a shell."
)


def worker_main(wid: int, sock: socket.socket, config: dict[str, Any], slot_fd: int) -> None:
    """Entry point of a worker process (called in the child by the zygote)."""
    slot = mmap.mmap(slot_fd, SLOT_SIZE)
    os.close(slot_fd)
    rt = WorkerRuntime(wid, sock, config, slot)
    signal.signal(CANCEL_SIGNAL, rt.on_cancel_signal)
    _runtime.set_current(rt)
    sys.stdout = _PrefixedStream(1, rt, _open_log(config, "out"))
    err_log = _open_log(config, "err")
    sys.stderr = _PrefixedStream(2, rt, err_log)
    if err_log is not None and faulthandler.is_enabled():
        # Inherited from a driver run with faulthandler on (pytest, -X faulthandler): a
        # task's segfault would dump its 50-line trace into the driver's console, mid-output.
        # It goes to this worker's log (`raylite logs worker-<pid>.err`); the crash itself
        # reaches the caller as WorkerCrashedError.
        faulthandler.enable(file=err_log, all_threads=True)
    try:
        rt.serve()
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()


def _open_log(config: dict[str, Any], which: str) -> int | None:
    """This worker's log file in the session folder (``worker-<pid>.out|.err``), or None if
    it cannot be opened (output then goes to the console only)."""
    log_dir = config.get("log_dir")
    if not log_dir:
        return None
    path = os.path.join(log_dir, f"worker-{os.getpid()}.{which}")
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError:
        return None


class WorkerRuntime:
    """The runtime of a worker process: runs tasks, forwards API calls to the driver."""

    def __init__(
        self, wid: int, sock: socket.socket, config: dict[str, Any], cancel_slot: mmap.mmap
    ) -> None:
        self.wid = wid
        self.cancel_slot = cancel_slot  # the driver writes the id of a task to interrupt
        self.config = config
        self.chan = Channel(sock)
        self.gpu_ids: list[str] = []
        self._tls = threading.local()  # per thread: current task or call, label, actor id
        self._lock = threading.RLock()  # serialises senders (actor threads) and ref counts
        self._main = threading.current_thread()
        self._actors: dict[int, HostedActor] = {}
        self._handling = threading.Lock()  # one thread at a time handles what was read
        self._inbound = Replies(self.chan, self._adopt_msg, self._main, self._divert)
        self._helper: threading.Thread | None = None  # reads for futures: see future()
        self._main_idle = False  # the main thread waits for messages (so it reads them)
        self._ids = itertools.count((wid << ID_BITS) + 1)
        self._fns: dict[int, Any] = {}  # {fn id: function, or its pickled body until first use}
        self._driver_fns: set[int] = set()  # fn ids the driver has the body of
        self._queue: deque[TaskRequest] = deque()
        self._local_refs: dict[int, int] = {}  # {object id: live ObjectRefs here}
        self._borrow: list[int] = []
        self._release: list[int] = []
        self._unmapped: list[int] = []  # appended by Mappings' finalizers (any thread)
        self._maps = Mappings(self._unmapped.append)
        self._last_poll = 0.0
        self._blocked = False  # the main thread waits for a reply (see _blocking_request)
        self._running = False  # the main thread runs a task (the user's code)
        self._waits = 0  # requests whose replies are awaited, by any thread
        self._blamed = 0  # the task id at RUNNING_AT of the slot
        self._forked = False  # this is a process a task forked, not the worker itself
        self.interruptible = False  # running the user's code: a cancel may interrupt it
        self.in_io = False  # inside a send or receive that a cancel must not cut in two
        self.interrupt_pending = False
        # Reads while the main thread runs an actor's call itself (see HostedActor.run_inline)
        self._follower = Follower(
            self._inbound.read_once, lambda: self._handle(self._inbound.take_inbox()),
            self.flush_from_thread, self._handling, lambda: self._blocked,
        )  # fmt: skip

    # ---- per-thread context -------------------------------------------------------------

    @property
    def current(self) -> TaskRequest | ActorCall | None:
        """The task or actor call this thread runs, if any."""
        return getattr(self._tls, "current", None)

    @current.setter
    def current(self, value: TaskRequest | ActorCall | None) -> None:
        self._tls.current = value

    @property
    def label(self) -> str:
        """What this thread's output lines are prefixed with: the task or actor name."""
        task = self.current
        if type(task) is TaskRequest:
            return task.name
        return getattr(self._tls, "label", "worker")

    def set_context(
        self, label: str, actor_id: int, current: TaskRequest | ActorCall | None = None
    ) -> None:
        self._tls.label = label
        self._tls.actor_id = actor_id
        self._tls.current = current

    # ---- the loop -----------------------------------------------------------------------

    def serve(self) -> None:
        """Runs tasks until the driver closes the socket."""
        inbound = self._inbound
        while True:
            if inbound.inbox:
                self._handle_inbox()
            with self._lock:  # other threads hand queued tasks back: see _request_from_thread
                req = self._queue.popleft() if self._queue else None
                self._running = req is not None
            if req is None:
                self._flush()
                self._replies_sent()
                self._main_idle = True
                try:
                    if not inbound.read_once(lambda: bool(inbound.inbox)):
                        return
                finally:
                    self._main_idle = False
                self._last_poll = time.perf_counter()
                continue
            if inbound.futures:  # other threads wait for replies: see future()
                self._start_helper()
            try:
                self._run(req)
            except KeyboardInterrupt:  # a cancel that landed while _run handled an error
                self._out(TaskDone(req.task_id, [], [], ser.dumps_cancelled(req.task_id), 0.0))
            finally:
                self._running = False
            if time.perf_counter() - self._last_poll > _POLL_SECONDS:
                self._flush()
                self._replies_sent()
                self._poll()

    def _replies_sent(self) -> None:
        """Every finished task's reply is flushed: the last one is no more to blame if this
        process dies now (until then, a reply lost with the process counts as its run)."""
        if self._blamed:
            self._blamed = 0
            write_slot(self.cancel_slot, RUNNING_AT, 0)

    def _poll(self) -> None:
        """Reads whatever the driver sent meanwhile, without waiting."""
        self._last_poll = time.perf_counter()
        if not self._inbound.read_once(lambda: False, block=False):
            raise SystemExit(0)  # the driver is gone
        self._handle_inbox()

    def _adopt_msg(self, msg: Message) -> None:
        """Maps the segments whose fds ``msg`` brought (in message order: as it is read)."""
        if isinstance(msg, (TaskRequest, ActorCall, CreateActor)):
            if type(msg.args) is tuple:  # in shared memory (most calls' are bytes)
                self._adopt(msg.args)
            for value in msg.dep_values:
                self._adopt(value)
        elif type(msg) is GetReply:
            for _, value in msg.values or ():
                self._adopt(value)

    def _handle_inbox(self) -> None:
        """Handles what the driver sent (fds already adopted, replies routed): the main
        thread, or the follower while the main thread runs an actor's call. The main thread
        then runs the calls queued for it, unless it waits for a reply (inside one of them,
        whose calls it runs after the call's end: ``run_inline`` goes on)."""
        with self._handling:
            due = self._handle(self._inbound.take_inbox())
        if due and threading.current_thread() is self._main and not self._blocked:
            for actor in due:
                actor.run_inline(self._follower)

    def may_inline(self) -> bool:
        """Whether an actor created now may run on this thread, which reads its calls: the
        main thread, idle, of a process that hosts no other actor."""
        return (
            not self._actors and threading.current_thread() is self._main
            and not self._follower.running
        )  # fmt: skip

    def _handle(self, msgs: list[Message]) -> list[HostedActor]:
        """Handles ``msgs`` (``_handling`` held); returns the actors whose calls wait for
        the main thread."""
        due: list[HostedActor] = []  # actors with calls taken in this batch (see call())
        for msg in msgs:
            if type(msg) is TaskRequest:
                if self._blocked:
                    self._out(TasksReturned([msg.task_id]))
                else:
                    self._queue.append(msg)
            elif type(msg) is FunctionDef:
                self._fns[msg.fn_id] = msg.payload
                self._driver_fns.add(msg.fn_id)
            elif type(msg) is ActorCall:
                actor = self._actors.get(msg.actor_id)
                if actor is not None and actor.call(msg) and actor not in due:
                    due.append(actor)
            elif type(msg) is CreateActor:
                created = HostedActor(self, msg, ser.loads(msg.config))
                self._actors[msg.actor_id] = created
                if created.inline:
                    due.append(created)
            elif type(msg) is KillActor:
                hosted = self._actors.pop(msg.actor_id, None)
                if hosted is not None:
                    hosted.stop()
            elif type(msg) is CancelTask:
                self._cancel_queued(msg.task_id)
            elif type(msg) is Forget:
                for oid in msg.oids:
                    self._maps.forget(oid)
        return [actor for actor in due if actor.dispatch()]

    def _adopt(self, value: Value) -> None:
        if type(value) is tuple and value[4]:
            self._maps.adopt(value[1], self.chan.in_fds.popleft(), value[2])

    def assign_gpus(self, gpu_ids: list[str]) -> None:
        """Makes ``gpu_ids`` this process's GPUs (``CUDA_VISIBLE_DEVICES``, ``get_gpu_ids``).

        Set before the user's code runs. As in Ray, a CUDA library initialised by an earlier
        task of this process keeps the devices it saw then.
        """
        if gpu_ids != self.gpu_ids:
            self.gpu_ids = gpu_ids
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)

    def function(self, fn_id: int) -> Any:
        """The function or class ``fn_id`` (unpickled on first use)."""
        fn = self._fns[fn_id]
        if type(fn) is bytes:
            fn = self._fns[fn_id] = ser.loads(fn)
        return fn

    def load_args(
        self, args: Value, positions: Sequence[Any], dep_values: list[Value]
    ) -> tuple[Sequence[Any], dict[str, Any]]:
        """A call's ``(args, kwargs)``, top-level refs resolved, big buffers zero-copy."""
        if type(args) is bytes:
            if not dep_values:  # the common case: plain arguments, nothing to place
                return ser.loads_args(args, positions, [])
            return ser.loads_args(args, positions, [self._load(v) for v in dep_values])
        values = [self._load(v) for v in dep_values]
        payload, oid, _, spans, _ = cast(ShmValue, args)
        return ser.loads_args(payload, positions, values, self._maps.buffers(oid, spans))

    def results_of(
        self, name: str, return_ids: Sequence[int], result: Any
    ) -> tuple[list[Value], list[list[int]], list[int]]:
        """``result`` as a ``TaskDone``'s ``results`` and ``contained`` (split per
        ``return_ids``), and the fds of the segments its big values went to.

        Raises:
            TypeError, ValueError: the result does not split or pickle (fds closed).
        """
        if len(return_ids) == 1:
            payload = ser.dumps_plain(result)  # the common case: a small builtin value
            if payload is not None:
                check_inband(f"The result of {name}()", payload)
                return [payload], [[]], []
        results: list[Value] = []
        contained: list[list[int]] = []
        fds: list[int] = []
        try:
            for oid, value in zip(
                return_ids, split_returns(name, len(return_ids), result), strict=True
            ):
                s = ser.serialize_result(name, value)
                wire, new_fds = self._value_of(oid, s, f"The result of {name}()", keep=True)
                fds += new_fds
                results.append(wire)
                contained.append(s.contained)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return results, contained, fds

    def run_generator(self, name: str, task_id: int, mode: int, gen: Any) -> Any:
        """Iterates what a generator task returned, sending each value to the driver as it
        comes (``GeneratorItem``); returns the task's own value: None when ``STREAMING``, a
        ``DynamicObjectRefGenerator`` of the values' refs when ``DYNAMIC`` (an error the
        generator raises is then its last item, as in Ray; when streaming it is the task's
        error, raised here)."""
        oids: list[int] = []
        try:
            for value in gen:
                oids.append(self.stream_item(name, task_id, len(oids), value, mode))
        except Exception as exc:
            if mode != DYNAMIC:
                raise
            error = ser.dumps_error(name, exc, os.getpid())
            oids.append(self.stream_item(name, task_id, len(oids), error, mode, is_error=True))
        return self.end_stream(mode, oids)

    @staticmethod
    def end_stream(mode: int, oids: list[int]) -> Any:
        """A generator task's own value once its values ``oids`` went out: None when
        ``STREAMING``, a ``DynamicObjectRefGenerator`` of their refs when ``DYNAMIC``."""
        if mode == STREAMING:
            return None
        return DynamicObjectRefGenerator([ObjectRef(oid, None) for oid in oids])

    def stream_item(
        self, name: str, task_id: int, index: int, value: Any, mode: int, is_error: bool = False
    ) -> int:
        """Sends the ``index``-th value of generator task ``task_id`` (from any thread);
        flushed at once when streaming, so the driver sees it as it is yielded. Returns the
        value's object id. ``is_error``: ``value`` is a pickled error."""
        oid = next(self._ids)
        wire: Value
        fds: list[int]
        if is_error:
            wire, fds, contained = value, [], []
        else:
            s = ser.serialize_result(name, value)
            wire, fds = self._value_of(oid, s, f"A value yielded by {name}()", keep=True)
            contained = s.contained
        item = GeneratorItem(task_id, index, oid, wire, contained, is_error)
        self.send_from_thread(item, fds, flush=mode == STREAMING)
        return oid

    def drop_results(self, return_ids: Sequence[int], fds: list[int]) -> None:
        """Frees what ``results_of`` made for results that will never be sent (the call's
        actor was killed meanwhile): the segments' fds and this process's mappings."""
        for fd in fds:
            os.close(fd)
        for oid in return_ids:
            self._maps.forget(oid)

    def send_from_thread(
        self, msg: Message, fds: list[int] | None = None, flush: bool = True
    ) -> None:
        """Sends from any thread (actor threads): queued, and flushed unless told not to."""
        with self._lock:
            self._out(msg, fds)
            if flush:
                self._flush()

    def flush_from_thread(self) -> None:
        with self._lock:
            self._flush()

    def _load(self, value: Value, is_error: bool = False) -> Any:
        """The value (or raises the error) that ``value`` carries, zero-copy for buffers."""
        if type(value) is bytes:
            return ser.load_value(value, is_error)
        payload, oid, _, spans, _ = cast(ShmValue, value)
        return ser.load_value(payload, is_error, self._maps.buffers(oid, spans))

    def _value_of(
        self, oid: int, s: ser.Serialized, what: str, keep: bool = False
    ) -> tuple[Value, list[int]]:
        """``s`` as a wire value: buffers written to a new segment whose fd travels along;
        with ``keep`` (a result or put, under its own id) this process keeps the mapping
        until the driver says ``Forget``.

        Raises:
            ValueError: ``s`` is too large for a message (``what`` names it).
        """
        check_inband(what, s.payload)
        if not s.buffers:
            return s.payload, []
        layout = layout_of(s.buffers)
        segment = Segment.create(layout.size)
        try:
            mapping = write_segment(segment, layout, s.buffers, keep)
        except BaseException:
            segment.close()
            raise
        if mapping is not None:
            self._maps.adopt_mapping(oid, mapping)
        return (s.payload, oid, layout.size, layout.spans, True), [segment.fd]

    def _cancel_queued(self, task_id: int) -> None:
        with self._lock:
            req = next((r for r in self._queue if r.task_id == task_id), None)
            if req is not None:
                self._queue.remove(req)
                error = ser.dumps_cancelled(task_id)
                self._out(TaskDone(task_id, [], [], error, 0.0))
                return
        if any(actor.cancel(task_id) for actor in self._actors.values()):  # an actor call
            self._out(TaskDone(task_id, [], [], ser.dumps_cancelled(task_id), 0.0))

    def on_cancel_signal(self, signum: int, frame: Any) -> None:
        """SIGUSR1: the driver wrote a task id into the slot, then signalled. Interrupt the
        user's code only if it runs that very task (it may have finished, and another
        started, since)."""
        if self.interruptible and self._cancel_requested():
            if self.in_io:
                self.interrupt_pending = True  # never cut a frame in two
            else:
                raise CancelInterrupt

    def _cancel_requested(self) -> bool:
        task = self.current
        return task is not None and read_slot(self.cancel_slot, CANCEL_AT) == task.task_id

    def _run(self, req: TaskRequest) -> None:
        """Runs one task and queues its ``TaskDone``. Per task only what must be: the slot
        names it (the driver blames it if this process dies), a cancel sent before it got
        here is honoured, args load, the call, results pack, and one ``TaskDone``."""
        task_id = req.task_id
        tls = self._tls
        tls.current = req  # for context(), output prefixes and the cancel handler
        started = time.time()  # for the history; the duration from the monotonic clock
        start = time.perf_counter()
        results: list[Value] = []
        contained: list[list[int]] = []
        error: bytes | None = None
        fds: list[int] = []  # segments of big results, sent with TaskDone
        try:
            self._blamed = task_id
            write_slot(self.cancel_slot, RUNNING_AT, task_id)
            self.interruptible = True
            if read_slot(self.cancel_slot, CANCEL_AT) == task_id:  # cancelled on its way
                raise CancelInterrupt
            if req.gpu_ids is not None:
                self.assign_gpus(req.gpu_ids)
            fn = self.function(req.fn_id)
            args, kwargs = self.load_args(req.args, req.dep_positions, req.dep_values)
            result = fn(*args, **kwargs)
            del args, kwargs
            if req.stream:
                result = self.run_generator(req.name, task_id, req.stream, result)
            self.interruptible = False
            results, contained, fds = self.results_of(req.name, req.return_ids, result)
        except CancelInterrupt:
            results, contained, error = [], [], ser.dumps_cancelled(task_id)
        except SystemExit as exc:
            self._exit_process(exc)
        except BaseException as exc:  # the user's error travels to whoever calls get()
            self.interruptible = False
            if self._forked:
                _exit_forked_child(exc)
            if isinstance(exc, KeyboardInterrupt):  # the task's own: cancelled, as Ray says,
                exc = _cancelled_by(task_id, exc)  # with its traceback
            results, contained = [], []
            error = ser.dumps_error(req.name, exc, os.getpid())
        finally:
            self.interruptible = False
            self.interrupt_pending = False
            tls.current = None
        if self._forked:
            _exit_forked_child(None)
        duration = time.perf_counter() - start
        if error is None and not fds and len(results) == 1 and not contained[0]:
            self._out_done(task_id, cast(bytes, results[0]), duration, started)
            return
        self._out(TaskDone(task_id, results, contained, error, duration, started), fds)

    def _exit_process(self, exc: SystemExit) -> NoReturn:
        """``sys.exit()`` in a task is its worker exiting, as in Ray: the replies of tasks
        done before it go out, then the process ends with the code given; the driver sees
        it die running this task (retried per ``max_retries``, else ``WorkerCrashedError``)."""
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        try:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            self._flush()
        except OSError:
            pass  # the driver is gone: nothing to tell
        os._exit(code)

    # ---- sending ------------------------------------------------------------------------

    def _out(self, msg: Message, fds: list[int] | None = None) -> None:
        """Queues ``msg`` (and the fds it carries, closed here once sent) behind any borrow
        notice it depends on."""
        with self._lock:
            if self._borrow:
                self._queue_ref_ops()
            self.chan.queue(msg, fds, owned=True)

    def _out_done(self, task_id: int, result: bytes, duration: float, start: float) -> None:
        """``_out`` of the common reply, one small value holding no refs: an entry of the
        ``TasksDone`` queued last (``Channel.queue_done``), not a ``TaskDone`` of its own
        (per task: no message tuple and three lists fewer to build, encode and decode)."""
        with self._lock:
            if self._borrow:
                self._queue_ref_ops()
            self.chan.queue_done(task_id, result, duration, start)

    def _queue_ref_ops(self) -> None:
        borrow, self._borrow = self._borrow, []
        release, self._release = self._release, []
        unmapped, self._unmapped[:] = list(self._unmapped), []
        self.chan.queue(RefOps(borrow, release, unmapped))

    def _flush(self) -> None:
        with self._lock:
            if self._release or self._borrow or self._unmapped:
                self._queue_ref_ops()
            if threading.current_thread() is not self._main:  # cancels interrupt main only:
                self.chan.flush()  # in_io and a pending interrupt are the main thread's
                return
            self.in_io = True
            try:
                self.chan.flush()
            finally:
                self._io_done()

    def _io_done(self) -> None:
        self.in_io = False
        if self.interrupt_pending and self.interruptible:
            self.interrupt_pending = False
            raise CancelInterrupt  # a cancel that arrived mid-I/O

    def _send(self, msg: Message) -> None:
        self._out(msg)
        self._flush()

    def _new_ref(self, oid: int) -> ObjectRef:
        with self._lock:
            self._local_refs[oid] = self._local_refs.get(oid, 0) + 1
        return ObjectRef(oid, self)

    # ---- the Runtime interface (calls made by tasks) ------------------------------------

    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any], opts: TaskOptions
    ) -> list[ObjectRef]:
        if fn._fn_id not in self._driver_fns:
            self._out(FunctionDef(fn._fn_id, ser.dumps_function(fn._function)))
            self._driver_fns.add(fn._fn_id)
            # The driver now counts this process as knowing the function: it must.
            self._fns.setdefault(fn._fn_id, fn._function)
        s, positions, dep_ids, args_value, fds = self._pack(fn.function_name, args, kwargs)
        pickled_opts = opts.derived("pickled", lambda: ser.dumps(opts)[0])
        task_id = next(self._ids)
        return_ids = [next(self._ids) for _ in range(n_refs(opts.num_returns))]
        msg = SubmitTask(
            task_id, fn._fn_id, fn.function_name, pickled_opts, args_value, positions, dep_ids,
            s.contained, return_ids,
        )  # fmt: skip
        self._out(msg, fds)
        self._flush()
        return self._refs_of(return_ids, opts.num_returns)

    def _refs_of(self, return_ids: list[int], num_returns: int | str) -> list[Any]:
        """The refs a call gives its caller: an ObjectRefGenerator for a streaming one."""
        refs = [self._new_ref(oid) for oid in return_ids]
        if num_returns == "streaming":
            return [ObjectRefGenerator(refs[0], self)]
        return refs

    def stream_next(self, gen_oid: int) -> ObjectRef | None:
        reply = self._blocking_request(StreamNextRequest(next(self._ids), gen_oid))
        assert type(reply) is StreamNextReply
        return self._new_ref(reply.oid) if reply.oid else None

    def stream_future(self, gen_oid: int) -> concurrent.futures.Future[ObjectRef | None]:
        if threading.current_thread() is self._main:
            raise NotImplementedError(
                "`async for` over an ObjectRefGenerator is not available inside process "
                "tasks (only in actors); iterate it with a plain `for` there."
            )
        out: concurrent.futures.Future[ObjectRef | None] = concurrent.futures.Future()

        def resolve(reply: concurrent.futures.Future[Message]) -> None:
            msg = reply.result()
            assert type(msg) is StreamNextReply
            out.set_result(self._new_ref(msg.oid) if msg.oid else None)

        request = StreamNextRequest(next(self._ids), gen_oid)
        self._request_from_thread(request).add_done_callback(resolve)
        return out

    def stream_status(self, gen_oid: int) -> tuple[bool, bool]:
        raise NotImplementedError(
            "ObjectRefGenerator.is_finished() and next_ready() can be called in the driver "
            "only; inside a task or actor, iterate the generator (next() ends it)."
        )

    def put(self, value: Any) -> ObjectRef:
        try:
            s = ser.serialize(value)
        except ser.SerializationError as exc:
            raise ser.put_error(exc) from None
        oid = next(self._ids)
        wire, fds = self._value_of(oid, s, "The value passed to put()", keep=True)
        self._out(PutObject(oid, wire, s.contained), fds)
        self._flush()
        return self._new_ref(oid)

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        req_id = next(self._ids)
        reply = self._blocking_request(GetRequest(req_id, [r._id for r in refs], timeout))
        assert type(reply) is GetReply
        if reply.values is None:
            raise GetTimeoutError(f"Get timed out: some object(s) not ready after {timeout} s.")
        return [self._load(value, is_error) for is_error, value in reply.values]

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        if any(type(r) is ObjectRefGenerator for r in refs):
            raise NotImplementedError(
                "wait() on an ObjectRefGenerator works in the driver only; inside a task or "
                "actor, iterate the generator (next() waits for its next ref)."
            )
        req_id = next(self._ids)
        oids = [r._id for r in refs]
        reply = self._blocking_request(WaitRequest(req_id, oids, num_returns, timeout))
        assert type(reply) is WaitReply
        ready = set(reply.ready)
        done = [r for r in refs if r._id in ready][:num_returns]
        taken = {r._id for r in done}
        return done, [r for r in refs if r._id not in taken]

    def _blocking_request(self, request: Any, fds: list[int] | None = None) -> Message:
        """Sends ``request`` and waits for its reply, handing queued tasks back meanwhile."""
        if threading.current_thread() is not self._main:
            future = self._request_from_thread(request, fds)
            while not future.done():  # read, in turns with the others (see replies.py)
                if not self._inbound.read_once(future.done):
                    raise RaySystemError(_DRIVER_GONE)
            return future.result()
        inbound = self._inbound
        with self._lock:
            self._waits += 1
            self._out(request, fds)
            self._hand_back_queued()
        self._flush()
        self._blocked = True
        readable = select.poll()
        readable.register(self.chan.sock, select.POLLIN)
        try:
            while request.req_id not in inbound.replies:
                # Wait outside in_io, so a cancel's KeyboardInterrupt lands here, with nothing
                # half read; briefly, as another thread may read the reply for us meanwhile.
                if not inbound.inbox and not readable.poll(50):
                    continue
                self.in_io = True
                try:
                    if not inbound.read_once(lambda: request.req_id in inbound.replies
                                             or bool(inbound.inbox)):  # fmt: skip
                        raise SystemExit(0)  # the driver is gone
                    self._handle_inbox()
                    with self._lock:  # tasks handed back by _handle must reach the driver
                        self.chan.flush()  # now: they may be what this request waits for
                finally:
                    self._io_done()
        finally:
            self._blocked = False
            self._wait_done()
        return inbound.replies.pop(request.req_id)

    def _hand_back_queued(self) -> None:
        """Returns the queued tasks to the driver: they would wait behind a task that
        waits, and may be what it waits for (lock held)."""
        if self._queue:
            self._out(TasksReturned([t.task_id for t in self._queue]))
            self._queue.clear()

    def _wait_done(self) -> None:
        """A reply came: once none is awaited any more, the driver hears this process runs
        again (it lent its CPU meanwhile: every request counts as a wait there)."""
        with self._lock:
            self._waits -= 1
            if self._waits == 0:
                self._out(Unblocked())
                self._flush()

    def _divert(self, msg: Message) -> bool:
        """A message another thread read for the main thread: a task that arrives while
        the main thread runs one goes back to the driver at once, since this thread waits
        (see _hand_back_queued); anything else goes to the main thread's inbox."""
        if type(msg) is TaskRequest and self._running:
            self.send_from_thread(TasksReturned([msg.task_id]))
            return True
        return False

    def _request_from_thread(
        self, request: Any, fds: list[int] | None = None
    ) -> concurrent.futures.Future[Message]:
        """Another thread's request: the returned future gets the reply from whichever
        thread reads it (the caller itself, if it waits, see _blocking_request)."""
        future = self._inbound.expect(request.req_id)
        with self._lock:
            self._waits += 1
            self._out(request, fds)
            if self._running:  # the main thread's task runs on: tasks queued behind it wait
                self._hand_back_queued()
            self._flush()
        future.add_done_callback(lambda _: self._wait_done())
        return future

    def _start_helper(self) -> None:
        """Starts a thread that reads for the futures other threads wait on, unless one
        runs: while the main thread runs user code, nobody else may read for them."""
        if self._helper is not None and self._helper.is_alive():
            return
        self._helper = threading.Thread(target=self._help, name="raylite-replies", daemon=True)
        self._helper.start()

    def _help(self) -> None:
        inbound = self._inbound
        while inbound.futures and inbound.read_once(lambda: not inbound.futures):
            pass

    def create_actor(
        self, cls: ActorClass, args: tuple[Any, ...], kwargs: dict[str, Any], opts: ActorOptions
    ) -> ActorHandle:
        if cls._cls_id not in self._driver_fns:
            self._out(FunctionDef(cls._cls_id, ser.dumps_function(cls._cls)))
            self._driver_fns.add(cls._cls_id)
            self._fns.setdefault(cls._cls_id, cls._cls)
        s, positions, dep_ids, args_value, fds = self._pack(cls.__name__, args, kwargs)
        msg = CreateActorRequest(
            next(self._ids), cls._cls_id, ser.dumps(cls._meta)[0], ser.dumps(opts)[0],
            args_value, positions, dep_ids, s.contained,
        )  # fmt: skip
        return self._actor_handle(self._blocking_request(msg, fds))

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle:
        return self._actor_handle(
            self._blocking_request(GetActorRequest(next(self._ids), name, namespace))
        )

    def _actor_handle(self, reply: Message) -> ActorHandle:
        assert type(reply) is ActorInfo
        if reply.error is not None:
            raise ser.loads(reply.error)
        return ActorHandle(self._new_ref(reply.actor_id), ser.loads(reply.meta))

    def submit_actor_call(
        self, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        opts: MethodOptions,
    ) -> list[ObjectRef]:  # fmt: skip
        name = f"{handle._meta.class_name}.{method}"
        s, positions, dep_ids, args_value, fds = self._pack(name, args, kwargs)
        return_ids = [next(self._ids) for _ in range(n_refs(opts.num_returns))]
        msg = SubmitActorCall(
            handle._actor_id, method, ser.dumps(opts)[0], args_value, positions, dep_ids,
            s.contained, return_ids,
        )  # fmt: skip
        self.send_from_thread(msg, fds)
        return self._refs_of(return_ids, opts.num_returns)

    def kill_actor(self, handle: ActorHandle, no_restart: bool) -> None:
        self.send_from_thread(KillActorRequest(handle._actor_id, no_restart))

    def _pack(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[ser.Serialized, list[int | str], list[int], Value, list[int]]:
        """A call's arguments, pickled, with big buffers in a segment of their own."""
        try:
            s, positions, dep_ids = ser.dumps_args(args, kwargs)
        except ser.SerializationError as exc:
            raise _argument_error(name, exc) from None
        args_value, fds = self._value_of(next(self._ids), s, f"The arguments of {name}.remote()")
        return s, positions, dep_ids, args_value, fds

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self._send(CancelRequest(ref._id, force, recursive))

    def list_named_actors(self, all_namespaces: bool) -> list[tuple[str, str]]:
        raise NotImplementedError(_DRIVER_ONLY.format("list_named_actors()"))

    def exit_actor(self) -> NoReturn:
        if getattr(self._tls, "actor_id", None) is None:  # a task, not an actor method
            raise exit_outside_actor()
        raise IntendedExit("exit_actor() is called.")  # see HostedActor._exit

    def create_placement_group(
        self, bundles: list[dict[str, float]], strategy: str, name: str
    ) -> Any:
        raise NotImplementedError(_DRIVER_ONLY.format("placement_group()"))

    def placement_group_ready(self, pg: Any) -> ObjectRef:
        raise NotImplementedError(_DRIVER_ONLY.format("PlacementGroup.ready()/.wait()"))

    def remove_placement_group(self, pg: Any) -> None:
        raise NotImplementedError(_DRIVER_ONLY.format("remove_placement_group()"))

    def placement_group_table(self, pg: Any) -> dict[str, Any]:
        raise NotImplementedError(_DRIVER_ONLY.format("placement_group_table()"))

    def available_resources(self) -> dict[str, float]:
        raise NotImplementedError("available_resources() can be called from the driver only.")

    def cluster_resources(self) -> dict[str, float]:
        raise NotImplementedError("cluster_resources() can be called from the driver only.")

    def timeline(self) -> list[dict[str, Any]]:
        raise NotImplementedError(_DRIVER_ONLY.format("timeline()"))

    def list_state(
        self, kind: str, filters: list[tuple[str, str, Any]] | None, limit: int | None,
        detail: bool,
    ) -> list[dict[str, Any]]:  # fmt: skip
        raise NotImplementedError(_DRIVER_ONLY.format(f"list_{kind}()"))

    def summarize_tasks(self) -> dict[str, Any]:
        raise NotImplementedError(_DRIVER_ONLY.format("summarize_tasks()"))

    def context(self) -> dict[str, Any]:
        task = self.current
        return {
            "worker_id": self.wid,
            "task_id": None if task is None else task.task_id,
            "task_name": None if task is None else self.label,
            "actor_id": getattr(self._tls, "actor_id", None),
            "pid": os.getpid(),
            "session": self.config.get("session"),
            "gpu_ids": self.gpu_ids,
        }

    def shutdown(self) -> None:
        raise RuntimeError("shutdown() can be called from the driver only, not inside a task.")

    def forget_after_fork(self) -> None:
        """A child forked inside a task: its raylite calls start a session of its own
        (``_runtime``); this copy is never used again, and the task's function returning
        here ends the child (see ``_run``)."""
        self._forked = True  # told at the fork: cheaper than a getpid() per task

    def add_ref(self, oid: int) -> None:
        with self._lock:
            n = self._local_refs.get(oid, 0)
            self._local_refs[oid] = n + 1
            if n == 0:
                self._borrow.append(oid)

    def release(self, oid: int) -> None:
        with self._lock:
            n = self._local_refs.get(oid, 0) - 1
            if n > 0:
                self._local_refs[oid] = n
            else:
                self._local_refs.pop(oid, None)
                self._release.append(oid)

    def future(self, oid: int) -> concurrent.futures.Future[Any]:
        if threading.current_thread() is self._main:
            raise NotImplementedError(
                "ObjectRef.future() and `await ref` are not available inside process tasks "
                "(only in actors); use raylite.get(ref) there."
            )
        out: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.add_ref(oid)  # the future keeps the object alive until it resolves

        def resolve(reply: concurrent.futures.Future[Message]) -> None:
            msg = reply.result()
            assert type(msg) is GetReply and msg.values is not None
            try:
                if not out.set_running_or_notify_cancel():  # cancelled: a timed-out await
                    return
                try:
                    value = self._load(msg.values[0][1], msg.values[0][0])
                except BaseException as exc:  # the task's error, or the value cannot be read
                    out.set_exception(exc)
                    return
                out.set_result(value)
            finally:
                self.release(oid)

        self._request_from_thread(GetRequest(next(self._ids), [oid], None)).add_done_callback(
            resolve
        )
        if not self._main_idle:  # the main thread runs a task: it reads nothing meanwhile
            self._start_helper()
        return out


def n_refs(num_returns: int | str) -> int:
    """How many return ids a call with ``num_returns`` has: a generator call has one (its
    completion, which its ObjectRefGenerator holds; or the DynamicObjectRefGenerator)."""
    return 1 if isinstance(num_returns, str) else num_returns


def stream_mode(num_returns: int | str) -> int:
    """The wire's ``stream`` value (protocol.STREAMING, ...) for ``num_returns``."""
    return STREAMING if num_returns == "streaming" else DYNAMIC if num_returns == "dynamic" else 0


def _exit_forked_child(exc: BaseException | None) -> NoReturn:
    """Ends a process that a task forked, which came back here from the task's function: it
    must never go on as the worker (the worker's socket is its parent's). It exits as a
    Python program would: 0 when the function returned, ``SystemExit``'s code, else 1 with
    the traceback on stderr."""
    code = 0
    if isinstance(exc, SystemExit):
        if isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:
            print(exc.code, file=sys.stderr)
            code = 1
    elif exc is not None:
        traceback.print_exception(exc)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


class CancelInterrupt(KeyboardInterrupt):
    """Raised into a task's code by ``cancel()`` (a KeyboardInterrupt, as in Ray, so that
    ``finally`` blocks run); a KeyboardInterrupt the task raises itself is not one."""


def _cancelled_by(task_id: int, exc: KeyboardInterrupt) -> TaskCancelledError:
    """The error of a task that raised KeyboardInterrupt itself, keeping its traceback."""
    error = TaskCancelledError(f"{task_id:056x}")
    return error.with_traceback(exc.__traceback__)


def split_returns(name: str, n: int, result: Any) -> list[Any]:
    """``result`` as ``n`` values (``num_returns``), or a ValueError that says why not."""
    if n == 1 and not isinstance(result, types.GeneratorType):
        return [result]
    if n == 0:
        return []
    try:
        values = list(result)
    except TypeError:
        values = None
    if values is None or len(values) != n:
        got = "a non-sequence" if values is None else f"{len(values)} values"
        raise ValueError(
            f"Task {name}() returned {got}, but num_returns={n}: return a tuple or list "
            f"of exactly {n} values, or change num_returns."
        )
    return values


def _argument_error(name: str, exc: Exception) -> TypeError:
    return TypeError(
        f"Could not serialize the arguments of {name}.remote(): {exc}. Pass picklable data, "
        "or create the object inside the task."
    )


class _PrefixedStream(io.TextIOBase):
    """stdout/stderr of a worker: whole lines, each prefixed ``(task_name pid=123)``, to the
    console and, when there is one, to the worker's log file (``log_fd``, owned here: the
    process exits with it open)."""

    def __init__(self, fd: int, rt: WorkerRuntime, log_fd: int | None = None) -> None:
        self._fd = fd
        self._log_fd = log_fd
        self._rt = rt
        self._partial = ""
        self._pid = os.getpid()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        text = self._partial + s
        lines = text.split("\n")
        self._partial = lines.pop()
        if lines:
            prefix = f"({self._rt.label} pid={self._pid}) "
            out = "".join(prefix + line + "\n" for line in lines).encode(errors="replace")
            _write_all(self._fd, out)
            if self._log_fd is not None:
                _write_all(self._log_fd, out)
        return len(s)

    def flush(self) -> None:
        if self._partial:
            self.write("\n")

    def fileno(self) -> int:
        return self._fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return  # the console is gone; output is best effort
        view = view[n:]
