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

Ids are ints: task ids, object ids and request ids, unique per driver session (workers
make ids of their own in a range of their own: see ``worker.WorkerRuntime``).
"""

from __future__ import annotations

import marshal
import socket
import struct
from typing import Any, NamedTuple

__all__ = ["Channel", "decode", "encode"]

_LEN = struct.Struct("<I")
_MAX_FRAME = 1 << 31


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
    """

    task_id: int
    fn_id: int
    name: str
    args: bytes
    dep_positions: list[Any]
    dep_values: list[bytes]
    return_ids: list[int]


@_message
class CancelTask(NamedTuple):
    """Drop ``task_id`` if it has not started (sent before a SIGINT for a running one)."""

    task_id: int


@_message
class GetReply(NamedTuple):
    """Answer to ``GetRequest``: per object ``(is_error, payload)``; ``None`` on timeout."""

    req_id: int
    values: list[tuple[bool, bytes]] | None


@_message
class WaitReply(NamedTuple):
    """Answer to ``WaitRequest``: the ids that are ready."""

    req_id: int
    ready: list[int]


# ---- worker -> driver -------------------------------------------------------------------


@_message
class TaskDone(NamedTuple):
    """A task finished: ``results`` per return id, or one pickled error in ``error``."""

    task_id: int
    results: list[bytes]
    contained: list[list[int]]
    error: bytes | None
    duration: float


@_message
class SubmitTask(NamedTuple):
    """A task submitted from inside a worker (nested task)."""

    task_id: int
    fn_id: int
    name: str
    options: bytes
    args: bytes
    dep_positions: list[Any]
    dep_ids: list[int]
    contained: list[int]
    return_ids: list[int]


@_message
class PutObject(NamedTuple):
    """``put`` from inside a worker."""

    oid: int
    payload: bytes
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
    """ObjectRefs that came to life (``borrow``) or died (``release``) in the worker."""

    borrow: list[int]
    release: list[int]


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
    """One end of a driver<->worker socketpair: queue, flush and parse frames.

    Not thread-safe: each side has exactly one thread that sends or receives on it at a time
    (the driver serialises its senders with the runtime lock).
    """

    __slots__ = ("sock", "_out", "_pending", "_inbuf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._out: list[Message] = []  # queued, not yet encoded
        self._pending = b""  # encoded, not yet sent (non-blocking senders only)
        self._inbuf = bytearray()

    def queue(self, msg: Message) -> bool:
        """Queues ``msg``; returns True when the queue was empty before."""
        self._out.append(msg)
        return len(self._out) == 1

    @property
    def has_output(self) -> bool:
        return bool(self._out) or bool(self._pending)

    def flush(self, blocking: bool = True) -> bool:
        """Sends what is queued; returns True when everything has been sent.

        A non-blocking flush sends what the socket takes now and keeps the rest.
        """
        if self._out:
            self._pending += encode(self._out)
            self._out = []
        if not self._pending:
            return True
        if blocking:
            self.sock.sendall(self._pending)
            self._pending = b""
            return True
        try:
            n = self.sock.send(self._pending)
        except (BlockingIOError, InterruptedError):
            return False
        self._pending = self._pending[n:]
        return not self._pending

    def send(self, msg: Message) -> None:
        """Queues ``msg`` and flushes (blocking)."""
        self._out.append(msg)
        self.flush()

    def receive(self) -> list[Message] | None:
        """Reads what is available (blocks if the socket does); ``None`` at end of stream."""
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            return None
        return self.feed(chunk)

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
