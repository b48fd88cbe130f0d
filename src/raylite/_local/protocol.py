"""Wire messages between the driver and its workers, and how they are framed.

Each message is a typed, immutable record named by its role. They are ``NamedTuple``s
rather than the frozen slotted dataclasses STYLE.md suggests: the hot path makes and
parses several per task, and a frozen dataclass's ``__init__`` (``object.__setattr__`` per
field) cost ~9% of the driver's CPU in a tiny-task profile; a NamedTuple is built and
unpacked in C. On the wire a *batch* of messages is one frame::

    [u64 little-endian length][u32 check][marshal.dumps([(tag, field, field, ...), ...], 2)]

The check (the length's low 32 bits xor a constant) tells frames from stray bytes: a task
that writes to a file descriptor it does not own (the worker's socket) is caught at the
next frame, and only that worker is lost (``ConnectionError`` from ``Channel.feed``).

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
make ids of their own in a range of their own: see ``ID_BITS``). Besides the socket, each
worker shares a 32-byte slot of memory with the driver (``write_slot``/``read_slot``): the
task to interrupt, and the task to blame if the worker dies.
"""

from __future__ import annotations

import array
import marshal
import mmap
import os
import resource
import socket
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = [
    "CANCEL_AT", "ID_BITS", "RUNNING_AT", "SLOT_SIZE", "read_slot", "write_slot",
    "MAX_INBAND_BYTES", "Channel", "FdsDropped", "check_inband", "decode", "encode",
    "open_files_limit_reached", "raise_open_files_limit", "recv_with_fds",
]  # fmt: skip

# A value's pickled in-band bytes travel in one marshal'ed string: marshal refuses one of
# 2 GiB or more. Larger values fail with a clear error instead (see ``check_inband``).
MAX_INBAND_BYTES = (1 << 31) - (1 << 20)
_HEADER = struct.Struct("<QI")
_CHECK = 0x726C6974  # "rlit"
MAX_FDS_PER_FRAME = 200  # the kernel passes at most 253 per message (SCM_MAX_FD)
_FDS_SPACE = socket.CMSG_SPACE(253 * 4)
# Bytes asked of one ``recvmsg``. Python allocates that much per call and shrinks it to what
# came: at 1 MiB, malloc serves it with mmap + mremap + munmap on every read (~25 µs, and TLB
# shootdowns on the other threads; shared/perf-study.md, E1); 64 KiB stays on the heap. A
# bigger frame simply takes several reads.
_READ_SIZE = 1 << 16
# The socket module's flags are IntFlags: ``0 | MSG_CMSG_CLOEXEC`` or ``flags & MSG_CTRUNC``
# runs enum's Python ``__ror__``/``__rand__`` (~2 µs each, two per read on each side of a
# round trip); as plain ints they are one machine operation.
_CMSG_CLOEXEC = int(socket.MSG_CMSG_CLOEXEC)
_CTRUNC = int(socket.MSG_CTRUNC)

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
    dep_positions: Sequence[Any]
    dep_values: list[Value]
    return_ids: Sequence[int]
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


@_message
class TasksDone(NamedTuple):
    """Tasks that each returned one small value holding no refs (the common reply), as
    columns: one message for a run of them, not a ``TaskDone`` each (``Channel.queue_done``
    appends to the one last queued). Entry ``i`` is ``TaskDone(task_ids[i], [results[i]],
    [[]], None, durations[i], starts[i])``."""

    task_ids: list[int]
    results: list[bytes]
    durations: list[float]
    starts: list[float]


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


class FdsDropped(ConnectionError):
    """File descriptors sent with a message were dropped (this process has no room for
    them): the channel cannot be trusted any more."""


# A worker's slot, shared memory with the driver: the task id the driver wants interrupted
# (at CANCEL_AT), then the task id the worker runs now, or ran last while its reply may still
# be unsent (at RUNNING_AT; 0 once its replies are flushed), which tells the driver which
# task to blame when the worker dies (see worker.py). Each holds any id there is: see ID_BITS.
_ID_BYTES = 16
CANCEL_AT = 0
RUNNING_AT = _ID_BYTES
SLOT_SIZE = 2 * _ID_BYTES
# Ids made in worker w are w << ID_BITS | n with 0 < n < 2**ID_BITS; the driver's are below
# 2**ID_BITS. Worker w is the driver's w-th spawn. Neither count can reach 2**64 (584 years
# at a billion a second), so every id fits the slot's 128 bits.
ID_BITS = 64


_HALVES = struct.Struct("<QQ")  # an id's low and high 64 bits
_LOW = (1 << 64) - 1


def write_slot(slot: mmap.mmap, at: int, task_id: int) -> None:
    """Writes ``task_id`` at ``at`` (``CANCEL_AT`` or ``RUNNING_AT``) of a worker's slot.

    Raises:
        struct.error: not an id raylite makes (they all fit).
    """
    _HALVES.pack_into(slot, at, task_id & _LOW, task_id >> 64)


def read_slot(slot: mmap.mmap, at: int) -> int:
    """The task id at ``at`` of a worker's slot (0: none)."""
    low, high = _HALVES.unpack_from(slot, at)
    return low | high << 64


def check_inband(what: str, payload: bytes) -> None:
    """Refuses a value whose pickled in-band bytes are too large for a message.

    Raises:
        ValueError: ``payload`` is larger than ``MAX_INBAND_BYTES``; the message says what
            goes out of band instead.
    """
    if len(payload) > MAX_INBAND_BYTES:
        raise ValueError(
            f"{what} pickles to {len(payload) / 2**30:,.2f} GiB of in-band data, more than "
            f"raylite can send in one message ({MAX_INBAND_BYTES / 2**30:,.2f} GiB). Data "
            "nested in lists, dicts or objects is pickled in-band; numpy arrays, bytearrays "
            "and top-level bytes go to shared memory instead, without this limit: return or "
            "pass the big parts as numpy arrays or top-level bytes, or in smaller pieces."
        )


def open_files_limit_reached() -> str:
    """What to tell the user when this process has no file descriptor left."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        f"the process reached its limit of open files (RLIMIT_NOFILE: `ulimit -n` is {soft}, "
        f"the hard limit {hard}; raylite.init() raises the first to the second). raylite "
        "holds a file descriptor for each object in shared memory (numpy arrays, large "
        "bytes): hold fewer such results at once (get them and drop their refs), or raise "
        "the hard limit (`ulimit -Hn`, /etc/security/limits.conf) before starting Python."
    )


def raise_open_files_limit() -> None:
    """Raises this process's soft limit of open files to its hard limit (workers inherit
    it), as the shared-memory objects each hold a file descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass  # a container may cap it lower: the limit's error then names it


def recv_with_fds(sock: socket.socket, size: int, flags: int = 0) -> tuple[bytes, list[int], int]:
    """One ``recvmsg``: ``(bytes, fds, msg_flags)``. The fds come close-on-exec, so a
    task's ``subprocess`` never inherits a channel or a segment."""
    # Not socket.recv_fds: Python 3.11's ignores its flags (MSG_DONTWAIT would block).
    data, ancdata, msg_flags, _ = sock.recvmsg(size, _FDS_SPACE, int(flags) | _CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, raw in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
    return data, fds.tolist(), msg_flags


# marshal's format version 2: no back-references. Versions 3+ look every object up in a
# hash table to share repeats; on real frames (TaskRequest/TaskDone batches of 1, 8 and 64)
# version 2 encoded 25-45% faster and decoded as fast or faster, for ~7% more bytes.
_MARSHAL_VERSION = 2


def encode(messages: list[Message]) -> bytes:
    """One frame holding ``messages``."""
    body = marshal.dumps([m.TAG + m for m in messages], _MARSHAL_VERSION)  # type: ignore[attr-defined]
    n = len(body)
    return _HEADER.pack(n, (n & 0xFFFFFFFF) ^ _CHECK) + body


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

    def queue_done(self, task_id: int, result: bytes, duration: float, start: float) -> None:
        """Queues a task's reply of one small value holding no refs: into the ``TasksDone``
        queued last if there is one (so the order of messages holds), else a new one."""
        out = self._out
        if out and type(out[-1]) is TasksDone:
            done = out[-1]
            done.task_ids.append(task_id)
            done.results.append(result)
            done.durations.append(duration)
            done.starts.append(start)
        else:
            out.append(TasksDone([task_id], [result], [duration], [start]))

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
        data, fds, msg_flags = recv_with_fds(self.sock, _READ_SIZE, flags)
        self.in_fds.extend(fds)
        if msg_flags & _CTRUNC:
            raise FdsDropped(
                f"file descriptors sent with it were dropped: {open_files_limit_reached()}"
            )
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
        head = _HEADER.size
        with memoryview(buf) as view:
            while end - pos >= head:
                n, check = _HEADER.unpack_from(view, pos)
                if check != (n & 0xFFFFFFFF) ^ _CHECK:
                    raise ConnectionError(f"bytes that are not a frame: {bytes(view[pos:pos + 16])!r}")
                if end - pos - head < n:
                    break
                try:
                    out.extend(decode(view[pos + head : pos + head + n]))
                except (ValueError, EOFError, TypeError, IndexError) as exc:
                    raise ConnectionError(f"a frame that does not decode ({exc})") from None
                pos += head + n
        if pos:
            del buf[:pos]
        return out
