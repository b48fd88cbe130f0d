"""Wire messages between the driver and its workers, and how they are framed.

Each message is a typed, immutable record named by its role. They are ``NamedTuple``s
rather than the frozen slotted dataclasses STYLE.md suggests: the hot path makes and
parses several per task, and a frozen dataclass's ``__init__`` (``object.__setattr__`` per
field) cost ~9% of the driver's CPU in a tiny-task profile; a NamedTuple is built and
unpacked in C. On the wire a *batch* of messages is one frame::

    [u32 little-endian length][marshal.dumps([(tag, field, field, ...), ...])]

Senders queue messages and flush them as one frame (see ``Channel.flush``); receivers parse
every complete frame in what one ``recv`` returned. Fields are marshal-able (ints, floats,
str, bytes, None, lists/tuples/dicts of those): pickled payloads travel as ``bytes``.
marshal is not safe against hostile input; only the driver's own workers, on socketpairs the
driver made, ever reach these channels.

Values travel as ``Value``: either the pickle ``bytes`` of a small object, or, for one whose
buffers live in shared memory, ``(pickle_bytes, object_id, segment_size, spans,
fd_follows)``. When ``fd_follows`` is true the segment's file descriptor rides along with
the frame (SCM_RIGHTS, in the order the values appear in it): the receiver maps it once and
keeps the mapping until the driver sends ``Forget``.

Ids are ints: task ids, object ids and request ids, unique per driver session (workers
make ids of their own in a range of their own: see ``worker.WorkerRuntime``).
"""

from __future__ import annotations

import array
import marshal
import os
import socket
import struct
from collections import deque
from typing import Any, NamedTuple

__all__ = ["Channel", "decode", "encode"]

_LEN = struct.Struct("<I")
_MAX_FRAME = 1 << 31
MAX_FDS_PER_FRAME = 200  # the kernel passes at most 253 per message (SCM_MAX_FD)
_FDS_SPACE = socket.CMSG_SPACE(253 * 4)

# (payload, object id, segment size, [(offset, length)], fd follows)
ShmValue = tuple[bytes, int, int, list[tuple[int, int]], bool]
Value = bytes | ShmValue  # a small object's pickle, or a big one's ShmValue


Message = tuple  # every message is a NamedTuple; its class's ``TAG`` names it on the wire

_REGISTRY: list[type[Any]] = []


def _message(cls: type[Any]) -> type[Any]:
    cls.TAG = (len(_REGISTRY),)
    _REGISTRY.append(cls)
    return cls


# ---- driver -> worker -------------------------------------------------------------------


@_message
class FunctionDef(NamedTuple):
    """The pickled body of a function or class; sent once per process before its first use."""

    fn_id: int
    payload: bytes


@_message
class TaskRequest(NamedTuple):
    """Run ``fn_id`` on ``args`` and store the results under ``return_ids``.

    ``args`` pickles ``(args_tuple, kwargs_dict)`` with top-level ObjectRefs left out; each
    ``dep_positions[i]`` (an int index or a str keyword) receives ``dep_values[i]``.
    ``gpu_ids``: the GPUs the task may use (``CUDA_VISIBLE_DEVICES``); ``None`` when this
    runtime has no GPUs, so the environment is left alone.
    """

    task_id: int
    fn_id: int
    name: str
    args: Value
    dep_positions: list[Any]
    dep_values: list[Value]
    return_ids: list[int]
    gpu_ids: list[str] | None
    stream: int = 0  # NOT_STREAMED, STREAMING or DYNAMIC: see GeneratorItem


@_message
class CancelTask(NamedTuple):
    """Drop ``task_id`` if it has not started (sent before a SIGINT for a running one)."""

    task_id: int


@_message
class GetReply(NamedTuple):
    """Answer to ``GetRequest``: per object ``(is_error, payload)``; ``None`` on timeout."""

    req_id: int
    values: list[tuple[bool, Value]] | None


@_message
class Forget(NamedTuple):
    """These objects were freed: drop their mappings (memory returns once values built on
    them are gone too)."""

    oids: list[int]


@_message
class StreamNextReply(NamedTuple):
    """Answer to ``StreamNextRequest``: the next ref's id (now borrowed by the worker), or
    0 at the end of the stream."""

    req_id: int
    oid: int


@_message
class WaitReply(NamedTuple):
    """Answer to ``WaitRequest``: the ids that are ready."""

    req_id: int
    ready: list[int]


@_message
class CreateActor(NamedTuple):
    """Instantiate class ``fn_id`` with these arguments as actor ``actor_id`` (one thread, a
    thread pool or an event loop per ``config``, a pickled ``ActorConfig``)."""

    actor_id: int
    fn_id: int
    class_name: str
    args: Value
    dep_positions: list[Any]
    dep_values: list[Value]
    config: bytes


@_message
class ActorCall(NamedTuple):
    """Call ``method`` of actor ``actor_id``; results under ``return_ids`` (a ``TaskDone``)."""

    task_id: int
    actor_id: int
    method: str
    args: Value
    dep_positions: list[Any]
    dep_values: list[Value]
    return_ids: list[int]
    group: str | None
    stream: int = 0  # as TaskRequest.stream


@_message
class ActorInfo(NamedTuple):
    """Answer to ``CreateActorRequest``/``GetActorRequest``: the actor's id and pickled
    ``ActorMeta``, or the pickled error."""

    req_id: int
    actor_id: int
    meta: bytes
    error: bytes | None


@_message
class KillActor(NamedTuple):
    """Stop actor ``actor_id``: drop its queued calls (a running one finishes, unheard)."""

    actor_id: int


# ---- worker -> driver -------------------------------------------------------------------


@_message
class TaskDone(NamedTuple):
    """A task finished: ``results`` per return id, or one pickled error in ``error``.
    It ran ``duration`` seconds from ``start`` (epoch seconds; 0 if it never started)."""

    task_id: int
    results: list[Value]
    contained: list[list[int]]
    error: bytes | None
    duration: float
    start: float = 0.0


# How a generator task's values travel (TaskRequest.stream, ActorCall.stream).
NOT_STREAMED = 0  # the task's return value(s) come in its TaskDone
STREAMING = 1  # each yielded value comes as a GeneratorItem, flushed as it is yielded
DYNAMIC = 2  # the same, then the TaskDone's value is a DynamicObjectRefGenerator of them


@_message
class GeneratorItem(NamedTuple):
    """The ``nth`` value (from 0) a generator task yielded, stored under ``oid``; sent
    before the task's ``TaskDone``. ``is_error``: ``value`` is the pickled error a dynamic
    generator raised (its last item)."""

    task_id: int
    nth: int
    oid: int
    value: Value
    contained: list[int]
    is_error: bool


@_message
class StreamNextRequest(NamedTuple):
    """``next()`` on an ObjectRefGenerator inside a worker (answered by ``StreamNextReply``)."""

    req_id: int
    gen_oid: int


@_message
class SubmitTask(NamedTuple):
    """A task submitted from inside a worker (nested task)."""

    task_id: int
    fn_id: int
    name: str
    options: bytes
    args: Value
    dep_positions: list[Any]
    dep_ids: list[int]
    contained: list[int]
    return_ids: list[int]


@_message
class PutObject(NamedTuple):
    """``put`` from inside a worker."""

    oid: int
    value: Value
    contained: list[int]


@_message
class GetRequest(NamedTuple):
    """``get`` from inside a worker; the worker gives its CPU back while it waits."""

    req_id: int
    oids: list[int]
    timeout: float | None


@_message
class WaitRequest(NamedTuple):
    """``wait`` from inside a worker."""

    req_id: int
    oids: list[int]
    num_returns: int
    timeout: float | None


@_message
class TasksReturned(NamedTuple):
    """Queued tasks the worker will not run (it is blocked): schedule them elsewhere."""

    task_ids: list[int]


@_message
class Unblocked(NamedTuple):
    """The worker's ``get``/``wait`` returned: it runs again and takes its CPU back."""


@_message
class RefOps(NamedTuple):
    """ObjectRefs that came to life (``borrow``) or died (``release``) in the worker, and
    forgotten segments whose last mapping there is gone (``unmapped``)."""

    borrow: list[int]
    release: list[int]
    unmapped: list[int]


@_message
class CreateActorRequest(NamedTuple):
    """``Cls.remote()`` inside a worker (answered by ``ActorInfo``)."""

    req_id: int
    fn_id: int
    meta: bytes
    options: bytes
    args: Value
    dep_positions: list[Any]
    dep_ids: list[int]
    contained: list[int]


@_message
class GetActorRequest(NamedTuple):
    """``get_actor()`` inside a worker (answered by ``ActorInfo``)."""

    req_id: int
    name: str
    namespace: str | None


@_message
class SubmitActorCall(NamedTuple):
    """``handle.method.remote()`` inside a worker; results under ``return_ids``."""

    actor_id: int
    method: str
    options: bytes
    args: Value
    dep_positions: list[Any]
    dep_ids: list[int]
    contained: list[int]
    return_ids: list[int]


@_message
class KillActorRequest(NamedTuple):
    """``kill()`` inside a worker."""

    actor_id: int
    no_restart: bool


@_message
class ActorExited(NamedTuple):
    """A method of actor ``actor_id`` called ``exit_actor()`` or ``sys.exit()``: the actor
    ends (restarted if ``restart`` and its ``max_restarts`` allow); ``reason`` says why."""

    actor_id: int
    restart: bool
    reason: str


@_message
class ActorReady(NamedTuple):
    """Actor ``actor_id`` was created, or its ``__init__`` raised ``error``."""

    actor_id: int
    error: bytes | None


@_message
class CancelRequest(NamedTuple):
    """``cancel`` from inside a worker."""

    oid: int
    force: bool
    recursive: bool


def encode(messages: list[Message]) -> bytes:
    """One frame holding ``messages``."""
    body = marshal.dumps([m.TAG + m for m in messages])  # type: ignore[attr-defined]
    return _LEN.pack(len(body)) + body


def decode(body: bytes | memoryview) -> list[Message]:
    """The messages of one frame's body."""
    new = tuple.__new__
    return [new(_REGISTRY[t[0]], t[1:]) for t in marshal.loads(body)]


class Channel:
    """One end of a driver<->worker socketpair: queue, flush and parse frames, pass fds.

    Not thread-safe: each side has exactly one thread that sends or receives on it at a time
    (the driver serialises its senders with the runtime lock).
    """

    __slots__ = ("sock", "_out", "_out_fds", "_out_owned", "_chunks", "_inbuf", "in_fds")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._out: list[Message] = []  # queued, not yet encoded
        self._out_fds: list[int] = []  # fds for the frame being queued
        self._out_owned: list[int] = []  # of those, the ones to close once sent
        # encoded frames not yet (fully) sent: [view of unsent bytes, fds, owned fds]
        self._chunks: deque[list[Any]] = deque()
        self._inbuf = bytearray()
        self.in_fds: deque[int] = deque()  # received fds, taken in order by the messages

    def queue(self, msg: Message, fds: list[int] | None = None, owned: bool = False) -> bool:
        """Queues ``msg`` with the ``fds`` it announces (closed once sent if ``owned``);
        returns True when the queue was empty before."""
        self._out.append(msg)
        if fds:
            self._out_fds.extend(fds)
            if owned:
                self._out_owned.extend(fds)
            if len(self._out_fds) >= MAX_FDS_PER_FRAME:
                self._seal()
        return len(self._out) == 1

    def _seal(self) -> None:
        if self._out:
            data = encode(self._out)
            self._chunks.append([memoryview(data), self._out_fds, self._out_owned])
            self._out, self._out_fds, self._out_owned = [], [], []

    @property
    def has_output(self) -> bool:
        return bool(self._out) or bool(self._chunks)

    def flush(self, blocking: bool = True) -> bool:
        """Sends what is queued; returns True when everything has been sent.

        A non-blocking flush sends what the socket takes now and keeps the rest.
        """
        self._seal()
        chunks = self._chunks
        while chunks:
            chunk = chunks[0]
            view, fds = chunk[0], chunk[1]
            try:
                if fds:
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    n = self.sock.sendmsg([view], rights)
                    for fd in chunk[2]:  # the receiver has its own copies now
                        os.close(fd)
                    chunk[1] = chunk[2] = []
                elif blocking:
                    self.sock.sendall(view)
                    n = len(view)
                else:
                    n = self.sock.send(view)
            except (BlockingIOError, InterruptedError):
                return False
            if n < len(view):
                chunk[0] = view[n:]
                if not blocking:
                    return False
            else:
                chunks.popleft()
        return True

    def read(self, flags: int = 0) -> bytes:
        """One ``recvmsg``: the bytes (``b""`` at end of stream); fds go to ``in_fds``."""
        # Not socket.recv_fds: Python 3.11's ignores its flags (MSG_DONTWAIT would block).
        data, ancdata, msg_flags, _ = self.sock.recvmsg(1 << 20, _FDS_SPACE, flags)
        for level, kind, raw in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
                self.in_fds.extend(fds)
        if msg_flags & socket.MSG_CTRUNC:
            raise ConnectionError("file descriptors were dropped in transit (MSG_CTRUNC)")
        return data

    def receive(self) -> list[Message] | None:
        """Reads what is available (blocks if the socket does); ``None`` at end of stream."""
        chunk = self.read()
        if not chunk:
            return None
        return self.feed(chunk)

    def close(self) -> None:
        """Closes the socket and every fd still held for sending or receiving."""
        for chunk in self._chunks:
            for fd in chunk[2]:
                os.close(fd)
        for fd in self._out_owned:
            os.close(fd)
        while self.in_fds:
            os.close(self.in_fds.popleft())
        self._chunks.clear()
        self._out_owned = []
        self.sock.close()

    def feed(self, chunk: bytes) -> list[Message]:
        """Parses complete frames out of received bytes."""
        buf = self._inbuf
        buf += chunk
        out: list[Message] = []
        pos, end = 0, len(buf)
        with memoryview(buf) as view:
            while end - pos >= 4:
                (n,) = _LEN.unpack_from(view, pos)
                if n > _MAX_FRAME:
                    raise ConnectionError(f"corrupt frame length {n}")
                if end - pos - 4 < n:
                    break
                out.extend(decode(view[pos + 4 : pos + 4 + n]))
                pos += 4 + n
        if pos:
            del buf[:pos]
        return out
