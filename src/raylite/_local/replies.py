"""A worker's channel from the driver, read by whichever of its threads waits on it.

::

    driver ──socket──> the thread whose turn it is (one at a time, ``read_once``)
                         │ adopt(msg): fds taken in message order, by the reader
                         ├─ Get/Wait/StreamNext replies, ActorInfo ─> futures[req_id]: another
                         │                                 thread waits for it (set_result)
                         │                              or replies[req_id]: the main thread's
                         └─ anything else ─> inbox ─> the main thread handles it (its loop);
                            a task read by another thread while the main thread runs one:
                            back to the driver (divert), as the reader waits

Whoever waits reads: the main thread when it is idle or blocked in ``get``; a task's extra
thread (or an actor thread) waiting for its own reply while the main thread runs user code
and reads nothing. The others wait on ``_turn`` and are woken after each batch, for their
reply or for their turn. A dedicated reader thread would do the same at the cost of a
thread handoff for every task a worker receives (~30 µs here).
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
from collections import deque
from collections.abc import Callable

from .protocol import ActorInfo, Channel, GetReply, Message, StreamNextReply, WaitReply

__all__ = ["Replies"]


class Replies:
    """Turn-taking reads of ``chan`` and the routing of what they bring.

    Args:
        chan: the worker's channel to the driver.
        adopt: called on every message as it is read, in order (maps the fds it carries).
        main: the worker's main thread (its replies go to ``replies``).
        divert: ``divert(msg)`` for a message for the main thread that another thread
            read: True if it took care of it, else it goes to the inbox.
    """

    def __init__(
        self, chan: Channel, adopt: Callable[[Message], None], main: threading.Thread,
        divert: Callable[[Message], bool],
    ) -> None:  # fmt: skip
        self._chan = chan
        self._adopt = adopt
        self._main = main
        self._divert = divert
        self._turn_lock = threading.Lock()  # entered bare: no Python frame (see actor_host)
        self._turn = threading.Condition(self._turn_lock)
        self._reader: threading.Thread | None = None  # the thread reading now (guarded)
        self.eof = False  # the driver closed the channel
        self.futures: dict[int, concurrent.futures.Future[Message]] = {}  # other threads'
        self.replies: dict[int, Message] = {}  # {request id: reply} the main thread waits for
        self.inbox: deque[Message] = deque()  # for the main thread, in arrival order

    def expect(self, req_id: int) -> concurrent.futures.Future[Message]:
        """A future for the reply to ``req_id`` (call before sending the request)."""
        future: concurrent.futures.Future[Message] = concurrent.futures.Future()
        with self._turn_lock:
            self.futures[req_id] = future
        return future

    def read_once(self, ready: Callable[[], bool], block: bool = True) -> bool:
        """Returns once ``ready()``, or once this thread has read and routed one batch.

        Args:
            ready: what the caller waits for; checked after every batch anyone reads.
            block: wait for data (else read only what is there, and only if no other
                thread is reading).

        Returns:
            False if the driver closed the channel.
        """
        me = threading.current_thread()
        with self._turn_lock:
            while not ready() and not self.eof and self._reader is not None:
                if not block:
                    return True
                self._turn.wait()
            if self.eof:
                return False
            if ready():
                return True
            self._reader = me
        try:
            try:
                chunk = self._chan.read(0 if block else socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True
            if not chunk:
                self.eof = True
                return False
            self._route(self._chan.feed(chunk))
            return True
        finally:
            with self._turn_lock:
                self._reader = None
                self._turn.notify_all()

    def _route(self, msgs: list[Message]) -> None:
        by_main = threading.current_thread() is self._main
        for msg in msgs:
            self._adopt(msg)
            if isinstance(msg, (GetReply, WaitReply, ActorInfo, StreamNextReply)):
                req_id = msg.req_id
                with self._turn_lock:
                    future = self.futures.pop(req_id, None)
                    if future is None:
                        self.replies[req_id] = msg
                if future is not None:
                    future.set_result(msg)
            elif by_main or not self._divert(msg):
                self.inbox.append(msg)

    def take_inbox(self) -> list[Message]:
        """What arrived for the main thread, oldest first."""
        inbox = self.inbox
        return [inbox.popleft() for _ in range(len(inbox))]
