"""The driver's object table: every object's value, lifetime and waiters.

::

    writers (lock held)                       readers
    -------------------                       -------
    new() -> Entry(payload=None)              add_waiter(): hit() as objects get ready
    store(): payload (+ Shm) -> ready,        readable(): what load_value needs, here
             wakes waiters                    wire(): the value as it travels to a worker
    hold()/decref(): lifetime counts          take(): a worker's value, its fd adopted
    make_room(): the store is full: spill the least recently read or stored objects
                 that nothing uses now to the spill folder (``spill.py``)

An entry lives while its refcount is positive: one per live ObjectRef in the driver, one
per worker that borrows it, one per pending task that uses it, one per stored value that
contains it. Freeing an entry frees what it contains, and its segment (``store.py``): the
workers that map it are told to ``Forget`` it through the ``forget`` callback.

Spilling: a spilled object's ``Shm`` is its spill file (mapped like a segment, under a
fresh negative key: ``_spill_keys`` leads back to the object); its memory segment is
released like a freed object's. It is read from the file, zero-copy through the page
cache, until it is freed, which closes the file (and so deletes it).

Not thread-safe: the runtime calls it with its lock held. ``ObjectRef.__del__`` runs
anywhere, so its releases are queued (``releases``) and applied by :meth:`drain`.
"""

from __future__ import annotations

import errno
import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast

from ..exceptions import ObjectLostError, ObjectStoreFullError
from . import serialization as ser
from .env import prefault_bytes, spare_fraction
from .protocol import ShmValue, Value
from .spill import SpillDir
from .store import DRIVER, Layout, ObjectStore, Segment, Shm

__all__ = ["Entry", "ObjectTable", "Waiter", "lost"]

_PRUNE_AT = 16  # waiters on one object before add_waiter drops the fired ones


class Entry:
    """An object: its payload once ready, who waits for it, and how many hold it."""

    __slots__ = (
        "payload", "is_error", "refcount", "waiters", "contained", "task_id", "shm", "actor",
        "used",
    )  # fmt: skip

    def __init__(self, refcount: int, task_id: int = 0) -> None:
        self.actor = False  # its owner hears when it is freed: an actor id, a generator ref
        self.payload: bytes | None = None  # the pickle stream; its big buffers are in shm
        self.shm: Shm | None = None
        self.is_error = False
        self.refcount = refcount
        self.waiters: list[Waiter] | None = None
        # The ids its value holds refs to; mostly none: the shared empty tuple, not a list
        # per object (56 bytes, and one more object for the collector to count and walk:
        # its passes took ~30% of the driver's CPU in a burst of 20k tiny tasks).
        self.contained: Sequence[int] = ()
        self.task_id = task_id  # the task that produces it (0: put)
        self.used = 0  # tick of its last store or read: spilling picks the oldest first


class Waiter:
    """Counts down as objects become ready; fires once when it reaches zero: releases
    ``event`` (a thread blocked in get/wait) or calls ``callback``."""

    __slots__ = ("remaining", "event", "callback", "fired")

    def __init__(self, remaining: int, callback: Callable[[], None] | None = None) -> None:
        self.remaining = remaining
        self.callback = callback
        self.fired = False
        self.event: threading.Lock | None = None
        if callback is None:
            self.event = threading.Lock()
            self.event.acquire()

    def hit(self) -> None:
        self.remaining -= 1
        if self.remaining == 0 and not self.fired:
            self.fired = True
            if self.callback is not None:
                self.callback()
            else:
                assert self.event is not None
                self.event.release()


def lost(oid: int) -> ObjectLostError:
    return ObjectLostError(
        f"{oid:056x}",
        "It was freed (no ObjectRef to it was left), or belongs to an earlier raylite session "
        "(refs do not outlive raylite.shutdown()). Keep an ObjectRef while you need its value, "
        "and recompute values of an earlier session in this one.",
    )


class ObjectTable:
    """Objects by id, with their lifetimes and shared-memory books.

    Args:
        capacity: ``object_store_memory`` in bytes.
        forget: ``forget(worker_id, key)`` tells a worker to drop its mapping of a released
            segment.
        actor_freed: ``actor_freed(oid)``: an entry flagged ``actor`` was freed (the last
            handle of an actor, or a generator's ref, is gone).
        spill_dir: where to spill objects when the store is full; None: never spill.
        busy: ``busy()``: ids of the objects workers may read now (never spilled: see
            ``LocalRuntime._busy_objects``).
    """

    def __init__(
        self,
        capacity: int,
        forget: Callable[[int, int], None],
        actor_freed: Callable[[int], None],
        spill_dir: SpillDir | None = None,
        busy: Callable[[], set[int]] = set,
    ) -> None:
        self.entries: dict[int, Entry] = {}
        spare_limit, prefault = int(capacity * spare_fraction()), prefault_bytes()
        if prefault > spare_limit:
            raise ValueError(
                f"RAYLITE_PREFAULT_BYTES ({prefault:,}) is more than spare segments may hold: "
                f"{spare_limit:,} bytes, RAYLITE_SPARE_FRACTION of object_store_memory "
                f"({capacity:,}). Lower it, or raise RAYLITE_SPARE_FRACTION or "
                "object_store_memory."
            )
        self.books = ObjectStore(capacity, spare_limit=spare_limit, prefault=prefault)
        self.releases: deque[int] = deque()  # queued by ObjectRefs: id to release, -id to add
        self._forget = forget
        self._actor_freed = actor_freed
        self._tick = 0  # bumped per store/read, for least-recently-used order
        self.spill_dir = spill_dir
        self._busy = busy
        self._spill_keys: dict[int, int] = {}  # {spill file's key (< 0): object id}
        self._new_key = itertools.count(-1, -1)
        self.spilled_bytes = 0  # bytes of objects in spill files now
        if spill_dir is not None:
            self.books.make_room = self.make_room

    def __getitem__(self, oid: int) -> Entry:
        return self.entries[oid]

    def __contains__(self, oid: int) -> bool:
        return oid in self.entries

    def get(self, oid: int) -> Entry | None:
        return self.entries.get(oid)

    def new(self, oid: int, refcount: int, task_id: int = 0) -> Entry:
        entry = self.entries[oid] = Entry(refcount, task_id)
        return entry

    # ---- lifetimes ----------------------------------------------------------------------

    def hold(self, oids: list[int]) -> None:
        """One more reference to each of ``oids``.

        Raises:
            ObjectLostError: one of them is gone (freed, or from another session).
        """
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is None:
                raise lost(oid)
            entry.refcount += 1

    def decref(self, oid: int) -> None:
        """One reference less; frees the object (and what it contains) at zero."""
        if oid < 0:  # an add_ref queued by ObjectRef unpickling
            entry = self.entries.get(-oid)
            if entry is not None:
                entry.refcount += 1
            return
        entry = self.entries.get(oid)
        if entry is None:
            return
        if entry.refcount > 1:  # the common cases first: others still hold it,
            entry.refcount -= 1
            return
        if not entry.contained and entry.shm is None and not entry.actor:
            del self.entries[oid]  # or a small value that holds nothing
            return
        stack = [oid]
        while stack:
            oid = stack.pop()
            entry = self.entries.get(oid)
            if entry is None:
                continue
            entry.refcount -= 1
            if entry.refcount <= 0:
                del self.entries[oid]
                stack.extend(entry.contained)
                if entry.shm is not None:
                    self._release(entry.shm)
                if entry.actor:
                    self._actor_freed(oid)

    def _release(self, shm: Shm) -> None:
        if shm.spilled:
            self._spill_keys.pop(shm.key, None)
            self.spilled_bytes -= shm.layout.size
        for wid in self.books.free(shm):
            self._forget(wid, shm.key)

    def drain(self) -> None:
        """Applies the queued releases and the driver's finished unmappings."""
        releases = self.releases
        while releases:
            self.decref(releases.popleft())
        if self.books.local_unmapped:
            self.books.drain_local()

    # ---- values -------------------------------------------------------------------------

    def store(
        self, oid: int, payload: bytes, is_error: bool, contained: Sequence[int],
        shm: Shm | None = None,
    ) -> bool:
        """Makes ``oid`` ready and wakes its waiters; False (and everything given dropped)
        if nobody wants it any more (freed, or already settled, e.g. cancelled)."""
        entry = self.entries.get(oid)
        if entry is None or entry.payload is not None:
            for inner in contained:
                self.decref(inner)
            if shm is not None:
                self.drop(shm)
            return False
        if shm is not None:
            shm.key = oid
            entry.shm = shm
        self._tick += 1
        entry.used = self._tick
        entry.payload = payload
        entry.is_error = is_error
        entry.contained = contained
        waiters, entry.waiters = entry.waiters, None
        if waiters:
            for waiter in waiters:
                waiter.hit()
        return True

    def drop(self, shm: Shm) -> None:
        """Discards a segment that was never stored; the worker that wrote and kept it
        (see ``take``) is told to forget it (a result nobody wants: a killed actor's)."""
        self.books.unreserve(shm.nbytes)
        shm.segment.close()
        for wid in shm.mapped_by:
            if wid != DRIVER:
                self._forget(wid, shm.key)

    def add_waiter(self, entries: list[Entry], waiter: Waiter) -> None:
        """Registers ``waiter`` on each of ``entries`` (objects not ready yet).

        Waiters that already fired (their ``wait`` timed out, or got its ``num_returns``
        from other objects) are dropped here once a list holds a few: else polling
        ``wait(timeout=)`` on a task that runs for hours would grow its entry's list by one
        waiter per call. Not on every call: that cost a third of a poll's time.
        """
        for entry in entries:
            waiters = entry.waiters
            if waiters is None:
                entry.waiters = [waiter]
                continue
            if len(waiters) >= _PRUNE_AT:
                waiters[:] = [w for w in waiters if not w.fired]
            waiters.append(waiter)

    def readable(self, oid: int) -> tuple[bytes, bool, list[memoryview] | None]:
        """What ``load_value`` needs to rebuild ready object ``oid`` in the driver."""
        entry = self.entries[oid]
        assert entry.payload is not None
        if entry.shm is None:
            return entry.payload, entry.is_error, None
        self._tick += 1
        entry.used = self._tick
        return entry.payload, entry.is_error, self.books.view(entry.shm)

    def wire(self, wid: int, mapped: set[int], oid: int, fds: list[int]) -> Value:
        """Ready object ``oid`` as a wire value for worker ``wid``: its segment's fd rides
        along (into ``fds``) the first time that worker sees it; the worker keeps it mapped
        (``mapped``) until told to forget it."""
        entry = self.entries[oid]
        shm = entry.shm
        assert entry.payload is not None
        if shm is None:
            return entry.payload
        self._tick += 1
        entry.used = self._tick
        follows = wid not in shm.mapped_by
        if follows:
            shm.mapped_by.add(wid)
            mapped.add(shm.key)
            fds.append(shm.segment.fd)
        return (entry.payload, shm.key, shm.layout.size, shm.layout.spans, follows)

    def wire_call(
        self, wid: int, mapped: set[int], args: bytes | int, dep_ids: Sequence[int]
    ) -> tuple[Value, list[Value], list[int]]:
        """A call's arguments (the pickle, or a hidden object's id) and its resolved refs
        as wire values for worker ``wid``, and the fds that must ride along."""
        if not dep_ids and type(args) is bytes:  # the common case: nothing to resolve
            return args, ser.NO_ITEMS, ser.NO_ITEMS  # shared, never changed
        fds: list[int] = []
        values = [self.wire(wid, mapped, oid, fds) for oid in dep_ids]
        args_value = args if isinstance(args, bytes) else self.wire(wid, mapped, args, fds)
        return args_value, values, fds

    def take(
        self,
        in_fds: deque[int],
        value: Value,
        what: str,
        keeper: tuple[int, set[int]] | None = None,
    ) -> tuple[bytes, Shm | None, bool]:
        """A worker's wire value as ``(payload, shm, is_error)``, adopting its fd from
        ``in_fds``; one that does not fit the store becomes an ObjectStoreFullError.

        ``keeper`` is ``(worker id, its mapped set)`` when the writing worker kept its
        mapping of the segment (results and puts: under the object's own id).
        """
        if type(value) is bytes:
            return value, None, False
        payload, oid, size, spans, follows = cast(ShmValue, value)
        assert follows, "a worker's new segment always carries its fd"
        segment = Segment(in_fds.popleft(), size)
        try:
            reserved, counted = self.books.reserve(size, what, self.holders)
        except ObjectStoreFullError as exc:
            segment.close()
            if keeper is not None:
                self._forget(keeper[0], oid)
            return ser.dumps(exc)[0], None, True
        if reserved is not None:
            self.books.pool.give(reserved)  # the worker's own segment is used instead
        shm = Shm(segment, Layout(size, spans), counted, what)
        if keeper is not None:  # mapped there under the object's id
            shm.key = oid
            shm.mapped_by.add(keeper[0])
            keeper[1].add(oid)
        return payload, shm, False

    def holders(self) -> str:
        """The biggest live objects, for ObjectStoreFullError's message."""
        big = sorted(
            (
                (e.shm.nbytes, oid, e.shm.origin)
                for oid, e in self.entries.items()
                if e.shm is not None and not e.shm.spilled
            ),
            reverse=True,
        )[:3]
        if not big:
            return ""
        listed = "; ".join(f"ObjectRef({oid:056x}): {n / 1e6:,.1f} MB, {o}" for n, oid, o in big)
        return f"The largest live objects: {listed}. "

    def worker_gone(self, wid: int, borrows: set[int], mapped: set[int]) -> None:
        """A worker died: drop its borrows and mappings (by key)."""
        for oid in borrows:
            self.decref(oid)
        for key in mapped:
            entry = self.entries.get(self._spill_keys.get(key, key))
            if entry is not None and entry.shm is not None and entry.shm.key == key:
                entry.shm.mapped_by.discard(wid)
            else:
                self.books.unmapped(key, wid)

    # ---- spilling -----------------------------------------------------------------------

    def make_room(self, need: int) -> str:
        """Spills the least recently used objects that nothing uses now until ``need``
        bytes are free (``ObjectStore.make_room``).

        Returns:
            "" once ``need`` bytes were freed, else why not (for ObjectStoreFullError).
        """
        assert self.spill_dir is not None
        busy = self._busy()
        victims = []  # [(last used, oid)]
        held = 0  # bytes that workers may read now
        for oid, e in self.entries.items():
            if e.shm is not None and not e.shm.spilled:
                if oid in busy:
                    held += e.shm.nbytes
                else:
                    victims.append((e.used, oid))
        victims.sort()
        freed = skipped = 0
        for _, oid in victims:
            if freed >= need:
                return ""
            entry = self.entries[oid]
            shm = entry.shm
            assert shm is not None
            if not self.books.unmap_here(shm):  # a value in the driver uses its memory
                skipped += shm.nbytes
                continue
            try:
                fd = self.spill_dir.write(shm.segment.fd, shm.layout.size)
            except OSError as exc:
                return (
                    f"Spilling to {self.spill_dir.path} failed too ({exc.strerror or exc}; "
                    f"{self.spilled_bytes / 1e6:,.1f} MB of objects are spilled there now): "
                    + ("free disk space, or " if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "")
                    + "pass a folder that works, e.g. raylite.init(object_spilling_directory="
                    "'/big/disk'). "
                )
            key = next(self._new_key)
            freed += shm.nbytes
            entry.shm, workers = self.books.spilled(shm, fd, key)
            self._spill_keys[key] = oid
            self.spilled_bytes += shm.layout.size
            for wid in workers:
                self._forget(wid, shm.key)
        if freed >= need:
            return ""
        return (
            f"Spilling to disk freed {freed / 1e6:,.1f} MB, not enough: the objects left in "
            f"memory are in use, so they cannot be spilled ({skipped / 1e6:,.1f} MB by values "
            f"in this process, such as arrays that get() returned; {held / 1e6:,.1f} MB by "
            "tasks and actors that run with them as arguments or hold ObjectRefs to them). "
        )

    def close(self) -> None:
        """Closes every segment and spill file (at shutdown), and the spill folder."""
        self.books.close([e.shm for e in self.entries.values() if e.shm is not None])
        if self.spill_dir is not None:
            self.spill_dir.close()
