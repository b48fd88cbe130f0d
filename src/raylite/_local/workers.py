"""The driver's worker set: its worker processes, their channels, their births and deaths.

::

    runtime ── spawn() ── Zygote.spawn(wid, socket, cancel slot) ──> zygote ── fork ──> worker
                 │ a Worker (channel + slot) waits in ``new`` until register_new() (I/O
                 │ thread) adds its socket to the selector; messages queued meanwhile wait
    zygote events, read by the runtime's I/O step:
        ("started", wid, pid) ──> started(): the pid is known; a doomed worker is killed
        ("exited", pid, status) ──> exited(): the Worker, for the runtime to drain and bury
    runtime ── Worker.chan.queue(msg); dirty.add(w) ──> flush_dirty() / flush_now(): a
        full socket keeps the rest; watch_writable() has select report when it drains
    runtime ── kill(w) ──> SIGKILL (at once, or once its pid is known)
    runtime ── remove(w) ──> its channel and cancel slot closed; the task it was running

The runtime owns the set and decides what a birth or death means (the scheduler, retries);
the set only keeps the books of the processes and their channels. Not thread-safe: every
method runs with the runtime's lock held, but ``close`` and ``forget_after_fork``, which run
once nothing else does.
"""

from __future__ import annotations

import itertools
import mmap
import os
import selectors
import signal
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, overload

from .pool import Zygote
from .protocol import RUNNING_AT, SLOT_SIZE, Channel, Forget, read_slot

__all__ = ["Worker", "WorkerSet", "signal_pid"]

_T = TypeVar("_T")


class Worker:
    """The driver's view of one worker process."""

    __slots__ = (
        "wid", "pid", "chan", "cancel_slot", "known_fns", "borrows", "mapped", "gone", "doomed",
        "waits", "cause",
    )  # fmt: skip

    def __init__(self, wid: int, chan: Channel, cancel_slot: mmap.mmap) -> None:
        self.wid = wid
        self.pid = 0
        self.chan = chan
        self.cancel_slot = cancel_slot  # shared with the worker: see worker.on_cancel_signal
        self.known_fns: set[int] = set()
        self.borrows: set[int] = set()
        self.mapped: set[int] = set()  # objects whose segment it maps (until Forget)
        self.gone = False
        self.doomed = False  # to be killed as soon as it has a pid
        self.cause: str | None = None  # why the driver killed it, when it did
        # {request id: object ids it waits for, or None if it may wake on its own (timeout)}
        self.waits: dict[int, list[int] | None] = {}


class WorkerSet(Mapping[int, Worker]):
    """The live workers by id (a read-only mapping), and what starts, flushes and ends them.

    Args:
        zygote: the process that forks the workers (forked before any thread of ours).
        sel: the I/O thread's selector; the set registers its workers' sockets there.
        wake: makes the I/O thread run a step soon (any thread; never blocks).
        on_io_thread: whether the caller is the I/O thread (which flushes on its own).
        spawn_config: what every worker is started with (session, log folder).
        gpu_ids: a worker id's GPU indices as the scheduler leased them; None: no GPUs.
    """

    def __init__(
        self, *, zygote: Zygote, sel: selectors.BaseSelector, wake: Callable[[], None],
        on_io_thread: Callable[[], bool], spawn_config: dict[str, Any],
        gpu_ids: Callable[[int], list[int]] | None,
    ) -> None:  # fmt: skip
        self.zygote = zygote
        self._sel = sel
        self._wake = wake
        self._on_io_thread = on_io_thread
        self._spawn_config = spawn_config
        self._gpu_ids = gpu_ids
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self._visible_gpus = [d.strip() for d in visible.split(",")] if visible else []
        self._wids = itertools.count(1)  # worker ids: one per spawn (see protocol.ID_BITS)
        self._by_wid: dict[int, Worker] = {}
        self._by_pid: dict[int, Worker] = {}
        self._new: list[Worker] = []  # spawned, their sockets not yet in the selector
        self.dirty: set[Worker] = set()  # output queued on their channels
        self._want_write: set[Worker] = set()  # their sockets watched for writability

    def __getitem__(self, wid: int) -> Worker:
        return self._by_wid[wid]

    def __iter__(self) -> Iterator[int]:
        return iter(self._by_wid)

    def __len__(self) -> int:
        return len(self._by_wid)

    def __contains__(self, wid: object) -> bool:  # the dict's own: on the hot path
        return wid in self._by_wid

    @overload
    def get(self, wid: int, /) -> Worker | None: ...
    @overload
    def get(self, wid: int, /, default: Worker | _T) -> Worker | _T: ...
    def get(self, wid: int, /, default: object = None) -> object:  # likewise
        return self._by_wid.get(wid, default)

    def spawn(self) -> Worker:
        """Asks the zygote for a worker; messages queued to it wait in its socket until it
        runs. Raises OSError if the zygote cannot be reached."""
        wid = next(self._wids)
        ours, theirs = socket.socketpair()
        slot_fd = os.memfd_create("raylite-cancel-slot", os.MFD_CLOEXEC)
        try:
            os.ftruncate(slot_fd, SLOT_SIZE)
            slot = mmap.mmap(slot_fd, SLOT_SIZE)
            self.zygote.spawn(wid, theirs.fileno(), slot_fd, self._spawn_config)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(slot_fd)
        ours.setblocking(False)
        w = Worker(wid, Channel(ours), slot)
        self._by_wid[wid] = w
        self._new.append(w)
        self._wake()  # the I/O thread registers it
        return w

    def register_new(self) -> None:
        """Adds the sockets of the workers spawned since the last call to the selector."""
        for w in self._new:
            self._sel.register(w.chan.sock, selectors.EVENT_READ, w)
        self._new.clear()

    def started(self, wid: int, pid: int) -> Worker | None:
        """The zygote reports worker ``wid`` runs as ``pid``: the worker, ready for work, or
        None (unknown, or doomed: then it is killed now)."""
        born = self._by_wid.get(wid)
        if born is None:
            return None
        born.pid = pid
        self._by_pid[pid] = born
        if born.doomed:
            signal_pid(pid, signal.SIGKILL)
            return None
        return born

    def exited(self, pid: int) -> Worker | None:
        """The zygote reports ``pid`` exited: its worker, if it was one of ours."""
        return self._by_pid.pop(pid, None)

    def kill(self, w: Worker, cause: str | None = None) -> None:
        """SIGKILLs ``w`` (now, or once it has a pid); its death is handled as any. With a
        ``cause`` (its channel failed) it is no more listened to; its task's error names it."""
        if cause is not None and w.cause is None:
            w.cause = cause
            self.unwatch(w)
        if w.pid:
            signal_pid(w.pid, signal.SIGKILL)
        else:
            w.doomed = True

    def unwatch(self, w: Worker) -> None:
        """Stops listening to ``w``'s socket (it closed, failed or died)."""
        try:
            self._sel.unregister(w.chan.sock)
        except (KeyError, ValueError):
            pass

    def remove(self, w: Worker) -> int | None:
        """Forgets a dead worker and frees its channel and cancel slot.

        Returns:
            The id of the task it was running (0: none), or None if it was removed already.
        """
        if self._by_wid.pop(w.wid, None) is None:
            return None
        self.dirty.discard(w)
        w.gone = True
        self.unwatch(w)
        w.chan.close()
        running = read_slot(w.cancel_slot, RUNNING_AT)
        w.cancel_slot.close()
        return running

    def flush_dirty(self) -> None:
        """Sends what is queued for every worker, as far as their sockets take it."""
        for w in list(self.dirty):
            self.flush_now(w)

    def flush_now(self, w: Worker) -> None:
        """Sends what is queued for ``w``; what a full socket refuses is left to the I/O
        thread, which is woken to wait for the socket to drain."""
        try:
            if w.chan.flush(blocking=False):
                self.dirty.discard(w)
                return
        except OSError:  # the worker is dying; its exit event will follow
            self.dirty.discard(w)
            return
        self.dirty.add(w)
        if not self._on_io_thread() and w not in self._want_write:
            self._wake()

    def watch_writable(self) -> None:
        """Has select report the sockets that refused output once they drain, and stop
        reporting those that have (the I/O thread, after its flush)."""
        for w in self.dirty ^ self._want_write:
            if not w.gone:
                write = selectors.EVENT_WRITE if w in self.dirty else 0
                self._sel.modify(w.chan.sock, selectors.EVENT_READ | write, w)
        self._want_write = {w for w in self.dirty if not w.gone}

    def forget(self, wid: int, oid: int) -> None:
        """Tells worker ``wid`` to unmap object ``oid``'s segment (now: an idle worker would
        keep the memory mapped until its next batch)."""
        w = self._by_wid.get(wid)
        if w is not None:
            w.chan.queue(Forget([oid]))
            self.flush_now(w)

    def gpu_ids(self, wid: int) -> list[str] | None:
        """The GPU ids worker ``wid``'s lease holds, as CUDA names them (through the
        driver's own ``CUDA_VISIBLE_DEVICES``); None when this runtime has no GPUs."""
        if self._gpu_ids is None:
            return None
        return [
            self._visible_gpus[i] if i < len(self._visible_gpus) else str(i)
            for i in self._gpu_ids(wid)
        ]

    def close(self) -> None:
        """Closes the driver's ends of the workers' channels and slots (see Zygote.close)."""
        for w in list(self._by_wid.values()) + self._new:
            w.chan.close()
            w.cancel_slot.close()

    def forget_after_fork(self) -> None:
        """In a forked child: closes this copy's channels and the zygote's socket, so that
        they see EOF when the driver closes its own."""
        for w in [*self._by_wid.values(), *self._new]:
            w.chan.close()
        self.zygote.sock.close()


def signal_pid(pid: int, sig: int) -> None:
    """Sends ``sig`` to ``pid`` unless it is 0 (not started) or gone already."""
    if pid:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
