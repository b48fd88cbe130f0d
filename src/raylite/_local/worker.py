"""The loop inside a worker process, and the runtime that tasks see there.

::

    driver --TaskRequest/FunctionDef/CancelTask/GetReply/WaitReply--> socket --> serve()
    serve(): queue <- receive(); run the oldest task; results -> out queue
    driver <--TaskDone/SubmitTask/PutObject/GetRequest/RefOps/...--- flush() <-- out queue

One thread does everything: it reads the socket only when its queue is empty (or, between
short tasks, every millisecond to see cancellations), and flushes replies when it is about to
wait or once a millisecond, so a burst of tiny tasks travels as a few large frames.

Inside a task, ``raylite.get``/``put``/``wait``/``.remote()`` go to the driver through
``WorkerRuntime``. A ``get`` that has to wait hands the worker's queued tasks back to the
driver (they may be the very children it waits for) and returns any that arrive meanwhile.

ObjectRefs that come alive here are *borrowed*: the driver is told before any later message
(so before the task that brought them in reports done), and told again when the last copy
here dies. The driver keeps a borrowed object alive until then, or until this process dies.
"""

from __future__ import annotations

import concurrent.futures
import io
import itertools
import mmap
import os
import signal
import socket
import struct
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from .. import _runtime
from .._object_ref import ObjectRef
from ..exceptions import GetTimeoutError, TaskCancelledError
from . import serialization as ser
from .protocol import (
    CancelRequest,
    CancelTask,
    Channel,
    Forget,
    FunctionDef,
    GetReply,
    GetRequest,
    Message,
    PutObject,
    RefOps,
    ShmValue,
    SubmitTask,
    TaskDone,
    TaskRequest,
    TasksReturned,
    Unblocked,
    Value,
    WaitReply,
    WaitRequest,
)
from .store import Mappings, Segment, layout_of, write_segment

if TYPE_CHECKING:
    from .._options import TaskOptions
    from .._remote_function import RemoteFunction

__all__ = ["CANCEL_SIGNAL", "CANCEL_SLOT", "ID_BITS", "WorkerRuntime", "worker_main"]

CANCEL_SIGNAL = signal.SIGUSR1
CANCEL_SLOT = struct.Struct("<q")  # the task id the driver wants interrupted
ID_BITS = 44  # ids made in worker w are (w + 1) << ID_BITS | n; the driver's are below 2**44
_POLL_SECONDS = 0.001


def worker_main(wid: int, sock: socket.socket, config: dict[str, Any], slot_fd: int) -> None:
    """Entry point of a worker process (called in the child by the zygote)."""
    slot = mmap.mmap(slot_fd, CANCEL_SLOT.size)
    os.close(slot_fd)
    rt = WorkerRuntime(wid, sock, config, slot)
    signal.signal(CANCEL_SIGNAL, rt.on_cancel_signal)
    _runtime.set_current(rt)
    sys.stdout = _PrefixedStream(1, rt)
    sys.stderr = _PrefixedStream(2, rt)
    try:
        rt.serve()
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()


class WorkerRuntime:
    """The runtime of a worker process: runs tasks, forwards API calls to the driver."""

    def __init__(
        self, wid: int, sock: socket.socket, config: dict[str, Any], cancel_slot: mmap.mmap
    ) -> None:
        self.wid = wid
        self.cancel_slot = cancel_slot  # the driver writes the id of a task to interrupt
        self.config = config
        self.chan = Channel(sock)
        self.current: TaskRequest | None = None
        self._ids = itertools.count(((wid + 1) << ID_BITS) + 1)
        self._fns: dict[int, Any] = {}  # {fn id: function, or its pickled body until first use}
        self._driver_fns: set[int] = set()  # fn ids the driver has the body of
        self._queue: deque[TaskRequest] = deque()
        self._replies: dict[int, Message] = {}  # {request id: GetReply/WaitReply}
        self._local_refs: dict[int, int] = {}  # {object id: live ObjectRefs here}
        self._borrow: list[int] = []
        self._release: list[int] = []
        self._options_cache: dict[int, bytes] = {}  # {id(TaskOptions): pickled}
        self._unmapped: list[int] = []  # appended by Mappings' finalizers (any thread)
        self._maps = Mappings(self._unmapped.append)
        self._last_poll = 0.0
        self._blocked = False
        self.interruptible = False  # running the user's code: a cancel may interrupt it
        self.in_io = False  # inside a send or receive that a cancel must not cut in two
        self.interrupt_pending = False

    # ---- the loop -----------------------------------------------------------------------

    def serve(self) -> None:
        """Runs tasks until the driver closes the socket."""
        while True:
            if not self._queue:
                self._flush()
                msgs = self.chan.receive()
                if msgs is None:
                    return
                self._handle(msgs)
                self._last_poll = time.perf_counter()
                continue
            req = self._queue.popleft()
            try:
                self._run(req)
            except KeyboardInterrupt:  # a cancel that landed while _run handled an error
                self._out(TaskDone(req.task_id, [], [], _cancelled(req.task_id), 0.0))
            if time.perf_counter() - self._last_poll > _POLL_SECONDS:
                self._flush()
                self._poll()

    def _poll(self) -> None:
        """Reads whatever the driver sent meanwhile, without waiting."""
        self._last_poll = time.perf_counter()
        try:
            chunk = self.chan.read(socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        if not chunk:
            raise SystemExit(0)  # the driver is gone
        self._handle(self.chan.feed(chunk))

    def _handle(self, msgs: list[Message]) -> None:
        for msg in msgs:
            if type(msg) is TaskRequest:
                self._adopt(msg.args)  # fds come in message order: map them now
                for value in msg.dep_values:
                    self._adopt(value)
                if self._blocked:
                    self._out(TasksReturned([msg.task_id]))
                else:
                    self._queue.append(msg)
            elif type(msg) is FunctionDef:
                self._fns[msg.fn_id] = msg.payload
                self._driver_fns.add(msg.fn_id)
            elif type(msg) is GetReply:
                for _, value in msg.values or ():
                    self._adopt(value)
                self._replies[msg.req_id] = msg
            elif type(msg) is WaitReply:
                self._replies[msg.req_id] = msg
            elif type(msg) is CancelTask:
                self._cancel_queued(msg.task_id)
            elif type(msg) is Forget:
                for oid in msg.oids:
                    self._maps.forget(oid)

    def _adopt(self, value: Value) -> None:
        if type(value) is tuple and value[4]:
            self._maps.adopt(value[1], self.chan.in_fds.popleft(), value[2])

    def _load(self, value: Value, is_error: bool = False) -> Any:
        """The value (or raises the error) that ``value`` carries, zero-copy for buffers."""
        if type(value) is bytes:
            return ser.load_value(value, is_error)
        payload, oid, _, spans, _ = cast(ShmValue, value)
        return ser.load_value(payload, is_error, self._maps.buffers(oid, spans))

    def _value_of(self, oid: int, s: ser.Serialized) -> tuple[Value, list[int]]:
        """``s`` as a wire value: buffers written to a new segment whose fd travels along."""
        if not s.buffers:
            return s.payload, []
        layout = layout_of(s.buffers)
        segment = Segment.create(layout.size)
        try:
            write_segment(segment, layout, s.buffers)
        except BaseException:
            segment.close()
            raise
        return (s.payload, oid, layout.size, layout.spans, True), [segment.fd]

    def _cancel_queued(self, task_id: int) -> None:
        for req in self._queue:
            if req.task_id == task_id:
                self._queue.remove(req)
                error = _cancelled(task_id)
                self._out(TaskDone(task_id, [], [], error, 0.0))
                return

    def on_cancel_signal(self, signum: int, frame: Any) -> None:
        """SIGUSR1: the driver wrote a task id into the slot, then signalled. Interrupt the
        user's code only if it runs that very task (it may have finished, and another
        started, since)."""
        if self.interruptible and self._cancel_requested():
            if self.in_io:
                self.interrupt_pending = True  # never cut a frame in two
            else:
                raise KeyboardInterrupt

    def _cancel_requested(self) -> bool:
        task = self.current
        return task is not None and CANCEL_SLOT.unpack_from(self.cancel_slot)[0] == task.task_id

    def _run(self, req: TaskRequest) -> None:
        self.current = req
        start = time.perf_counter()
        error: bytes | None = None
        results: list[Value] = []
        contained: list[list[int]] = []
        fds: list[int] = []  # segments of big results, sent with TaskDone
        try:
            self.interruptible = True
            if self._cancel_requested():  # cancelled while on its way here
                raise KeyboardInterrupt
            fn = self._fns[req.fn_id]
            if type(fn) is bytes:
                fn = self._fns[req.fn_id] = ser.loads(fn)
            values = [self._load(v) for v in req.dep_values]
            if type(req.args) is bytes:
                args, kwargs = ser.loads_args(req.args, req.dep_positions, values)
            else:
                payload, oid, _, spans, _ = cast(ShmValue, req.args)
                buffers = self._maps.buffers(oid, spans)
                args, kwargs = ser.loads_args(payload, req.dep_positions, values, buffers)
            del values
            result = fn(*args, **kwargs)
            self.interruptible = False
            del args, kwargs
            for oid, value in zip(req.return_ids, _split_returns(req, result), strict=True):
                try:
                    s = ser.serialize(value)
                except ser.SerializationError as exc:
                    raise TypeError(
                        f"Could not serialize the return value of {req.name}(): {exc}. "
                        "Return picklable data, or build the object inside the caller."
                    ) from None
                wire, new_fds = self._value_of(oid, s)
                fds += new_fds
                results.append(wire)
                contained.append(s.contained)
        except KeyboardInterrupt:
            error = _cancelled(req.task_id)
        except BaseException as exc:  # the user's error travels to whoever calls get()
            self.interruptible = False
            error = ser.dumps_error(req.name, exc, os.getpid())
        finally:
            self.interruptible = False
            self.interrupt_pending = False
            self.current = None
        if error is not None:
            results, contained = [], []
            for fd in fds:
                os.close(fd)
            fds = []
        duration = time.perf_counter() - start
        self._out(TaskDone(req.task_id, results, contained, error, duration), fds)

    # ---- sending ------------------------------------------------------------------------

    def _out(self, msg: Message, fds: list[int] | None = None) -> None:
        """Queues ``msg`` (and the fds it carries, closed here once sent) behind any borrow
        notice it depends on."""
        if self._borrow:
            self._queue_ref_ops()
        self.chan.queue(msg, fds, owned=True)

    def _queue_ref_ops(self) -> None:
        borrow, self._borrow = self._borrow, []
        release, self._release = self._release, []
        unmapped, self._unmapped[:] = list(self._unmapped), []
        self.chan.queue(RefOps(borrow, release, unmapped))

    def _flush(self) -> None:
        if self._release or self._borrow or self._unmapped:
            self._queue_ref_ops()
        self.in_io = True
        try:
            self.chan.flush()
        finally:
            self._io_done()

    def _io_done(self) -> None:
        self.in_io = False
        if self.interrupt_pending and self.interruptible:
            self.interrupt_pending = False
            raise KeyboardInterrupt  # a cancel that arrived mid-I/O

    def _send(self, msg: Message) -> None:
        self._out(msg)
        self._flush()

    def _new_ref(self, oid: int) -> ObjectRef:
        self._local_refs[oid] = self._local_refs.get(oid, 0) + 1
        return ObjectRef(oid, self)

    # ---- the Runtime interface (calls made by tasks) ------------------------------------

    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any], opts: TaskOptions
    ) -> list[ObjectRef]:
        if fn._fn_id not in self._driver_fns:
            self._out(FunctionDef(fn._fn_id, ser.dumps_function(fn._function)))
            self._driver_fns.add(fn._fn_id)
        try:
            s, positions, dep_ids = ser.dumps_args(args, kwargs)
        except ser.SerializationError as exc:
            raise _argument_error(fn.function_name, exc) from None
        args_value, fds = self._value_of(next(self._ids), s)
        pickled_opts = self._options_cache.get(id(opts))
        if pickled_opts is None:
            pickled_opts = self._options_cache[id(opts)] = ser.dumps(opts)[0]
        task_id = next(self._ids)
        return_ids = [next(self._ids) for _ in range(opts.num_returns)]
        msg = SubmitTask(
            task_id, fn._fn_id, fn.function_name, pickled_opts, args_value, positions, dep_ids,
            s.contained, return_ids,
        )  # fmt: skip
        self._out(msg, fds)
        self._flush()
        return [self._new_ref(oid) for oid in return_ids]

    def put(self, value: Any) -> ObjectRef:
        s = ser.serialize(value)
        oid = next(self._ids)
        wire, fds = self._value_of(oid, s)
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
        req_id = next(self._ids)
        oids = [r._id for r in refs]
        reply = self._blocking_request(WaitRequest(req_id, oids, num_returns, timeout))
        assert type(reply) is WaitReply
        ready = set(reply.ready)
        done = [r for r in refs if r._id in ready][:num_returns]
        taken = {r._id for r in done}
        return done, [r for r in refs if r._id not in taken]

    def _blocking_request(self, request: GetRequest | WaitRequest) -> Message:
        """Sends ``request`` and waits for its reply, handing queued tasks back meanwhile."""
        self._out(request)
        if self._queue:
            self._out(TasksReturned([t.task_id for t in self._queue]))
            self._queue.clear()
        self._flush()
        self._blocked = True
        try:
            while request.req_id not in self._replies:
                self.in_io = True
                try:
                    msgs = self.chan.receive()
                    if msgs is None:
                        raise SystemExit(0)  # the driver is gone
                    self._handle(msgs)
                finally:
                    self._io_done()
        finally:
            self._blocked = False
            self._send(Unblocked())
        return self._replies.pop(request.req_id)

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self._send(CancelRequest(ref._id, force, recursive))

    def available_resources(self) -> dict[str, float]:
        raise NotImplementedError("available_resources() can be called from the driver only.")

    def cluster_resources(self) -> dict[str, float]:
        raise NotImplementedError("cluster_resources() can be called from the driver only.")

    def context(self) -> dict[str, Any]:
        task = self.current
        return {
            "worker_id": self.wid,
            "task_id": None if task is None else task.task_id,
            "task_name": None if task is None else task.name,
            "pid": os.getpid(),
            "session": self.config.get("session"),
            "gpu_ids": self.config.get("gpu_ids", []),
        }

    def shutdown(self) -> None:
        raise RuntimeError("shutdown() can be called from the driver only, not inside a task.")

    def add_ref(self, oid: int) -> None:
        n = self._local_refs.get(oid, 0)
        self._local_refs[oid] = n + 1
        if n == 0:
            self._borrow.append(oid)

    def release(self, oid: int) -> None:
        n = self._local_refs.get(oid, 0) - 1
        if n > 0:
            self._local_refs[oid] = n
        else:
            self._local_refs.pop(oid, None)
            self._release.append(oid)

    def future(self, oid: int) -> concurrent.futures.Future[Any]:
        raise NotImplementedError(
            "ObjectRef.future() and `await ref` are not available inside process tasks; "
            "use raylite.get(ref) there."
        )


def _cancelled(task_id: int) -> bytes:
    return ser.dumps(TaskCancelledError(f"{task_id:056x}"))[0]


def _split_returns(req: TaskRequest, result: Any) -> list[Any]:
    n = len(req.return_ids)
    if n == 1:
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
            f"Task {req.name}() returned {got}, but num_returns={n}: return a tuple or list "
            f"of exactly {n} values, or change num_returns."
        )
    return values


def _argument_error(name: str, exc: Exception) -> TypeError:
    return TypeError(
        f"Could not serialize the arguments of {name}.remote(): {exc}. Pass picklable data, "
        "or create the object inside the task."
    )


class _PrefixedStream(io.TextIOBase):
    """stdout/stderr of a worker: whole lines, each prefixed ``(task_name pid=123)``."""

    def __init__(self, fd: int, rt: WorkerRuntime) -> None:
        self._fd = fd
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
            task = self._rt.current
            prefix = f"({task.name if task else 'worker'} pid={self._pid}) "
            out = "".join(prefix + line + "\n" for line in lines)
            _write_all(self._fd, out.encode(errors="replace"))
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
