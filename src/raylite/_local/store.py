"""Shared memory for large objects: one memfd per object, mapped read-only by readers.

::

    writer (driver put, or a worker's big result)      readers (driver get, tasks)
    ----------------------------------------------      ---------------------------
    Segment.create(size) -> memfd                        fd arrives once (SCM_RIGHTS) ->
    pwrite out-of-band buffers in (one copy)              Mappings.adopt(key, fd): mmap RO
    fd -> the driver, which owns it from then on          Mappings.buffers(key) -> views
                                                           pickle.loads(..., buffers=views)
    store full -> ObjectStore.make_room: least recently used objects are spilled to
    unnamed files (``spill.py``); a spilled object's "segment" is its file, mapped the same way

Why a memfd per object, not one arena with an allocator:

- Nothing to leak. A memfd has no name in ``/dev/shm``: the kernel frees it with its last fd
  and mapping, so a SIGKILLed driver or worker leaves nothing behind, and no sweep or
  ``resource_tracker`` is needed (cpython#82300 is what happens with named segments).
- No use-after-free. A numpy array a task built on a mapping keeps that mapping alive even
  after the object is freed: the pages live as long as someone maps them.
- Speed where it matters. Fresh shared pages cost an allocation each (~60-125 ms per
  100 MB here with ``pwrite``, 1.6-1.9x that through page faults or ``MAP_POPULATE``); a
  segment whose object was freed and whose every mapping is gone is *recycled*
  (``SegmentPool``), so the next put of that size is one copy into pages already there
  (~25-40 ms per 100 MB). The driver learns that a segment is unmapped everywhere from
  ``Mappings``' finalizers (``on_unmapped``), reported by workers in ``RefOps.unmapped``.

A put of a size not freed before can find its pages made too: after a big write the driver
asks a background thread for a *spare* segment of that size, pre-faulted off the caller's
path (``spares.py``), which the next write of that size takes as it would a pooled one
(``RAYLITE_PREFAULT_BYTES`` makes one at ``init``, for the first). Spares are bounded by
``RAYLITE_SPARE_FRACTION`` of the capacity, dropped first when room is needed, and closed
when no put took them for ``spares.IDLE_S``. The same thread closes the big segments the
store drops: freeing their pages takes time too.

Huge pages: where ``/sys/kernel/mm/transparent_hugepage/shmem_enabled`` is ``always`` or
``within_size``, the kernel backs memfds with them by itself (``pwrite`` and
``posix_fallocate`` alike); with ``advise`` only mappings that ask (``MADV_HUGEPAGE``) get
them, which these writes do not use; the development machine has ``never``, so that path
is unmeasured and not taken.

The driver keeps every segment's fd; readers keep a read-only mapping per segment until the
driver says ``Forget``. Processes map a segment under its *key*: its object's id, or a fresh
(negative) key once the object is spilled, so a late "unmapped" report about the object's
old segment never speaks for its spill file. Capacity (``object_store_memory``) counts live
objects plus the pool plus the spares; spilled objects count against nothing.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..exceptions import ObjectStoreFullError
from .spares import Spares

__all__ = [
    "DRIVER",
    "SPARE_MIN",
    "Layout",
    "Mappings",
    "ObjectStore",
    "Segment",
    "SegmentPool",
    "Shm",
    "layout_of",
    "memory_resources",
    "write_segment",
]

def memory_resources(object_store_memory: int | None) -> dict[str, float]:
    """The node's ``memory`` and ``object_store_memory`` resources, in bytes, as Ray reports
    them in ``cluster_resources()``: the store's capacity (``object_store_memory`` given to
    ``init``, else 30% of RAM) and the memory available now less that capacity.
    """
    import psutil  # lazily: `import raylite` does not pay for it

    memory = psutil.virtual_memory()
    store = object_store_memory or int(memory.total * 0.3)
    return {"memory": float(max(memory.available - store, 0)), "object_store_memory": float(store)}


ALIGN = 64  # buffers start on cache-line (and numpy-friendly) boundaries


class Layout(NamedTuple):
    """Where an object's out-of-band buffers sit in its segment."""

    size: int
    spans: list[tuple[int, int]]  # [(offset, length)] per buffer, in pickling order


def layout_of(buffers: Sequence[memoryview]) -> Layout:
    spans = []
    offset = 0
    for buf in buffers:
        spans.append((offset, buf.nbytes))
        offset += (buf.nbytes + ALIGN - 1) // ALIGN * ALIGN
    return Layout(max(offset, 1), spans)


# Writes smaller than this get no spare: fresh pages cost ~0.5 ms per MB more than existing
# ones here (benchmarks/put_fresh.py), too little to be worth memory held in advance.
SPARE_MIN = 4 << 20


def _new_fd(size: int) -> int:
    """An anonymous shared file of ``size`` bytes: a memfd, or an unlinked temp file."""
    try:
        fd = os.memfd_create("raylite-object", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux: the same semantics from an unlinked file
        where = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="raylite-", dir=where)
        os.unlink(path)
    try:
        os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        raise
    return fd


class Segment:
    """A shared file holding one object's buffers; whoever holds it must ``close`` it."""

    __slots__ = ("fd", "capacity")

    def __init__(self, fd: int, capacity: int) -> None:
        self.fd = fd
        self.capacity = capacity  # bytes the file holds (>= the object's size when recycled)

    @classmethod
    def create(cls, size: int) -> Segment:
        return cls(_new_fd(size), size)

    @classmethod
    def prefaulted(cls, size: int) -> Segment:
        """A new segment whose pages all exist: the kernel allocates them now
        (``posix_fallocate``; written with zeros where there is none), not while a put
        copies into it."""
        segment = cls.create(size)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(segment.fd, 0, size)
            else:  # macOS
                zeros = bytes(min(size, 1 << 20))
                for offset in range(0, size, len(zeros)):
                    os.pwrite(segment.fd, zeros[: size - offset], offset)
        except BaseException:
            segment.close()
            raise
        return segment

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_segment(
    segment: Segment, layout: Layout, buffers: Sequence[memoryview], keep: bool = False
) -> mmap.mmap | None:
    """Copies ``buffers`` into ``segment`` at ``layout`` with ``pwrite``.

    ``pwrite`` into a fresh memfd fills each new page as the kernel allocates it, where a
    copy through a mapping first takes a page fault (or ``MAP_POPULATE``, or
    ``MADV_POPULATE_WRITE``) that zeroes the page, then copies: measured here on 100 MB,
    ~60 ms against 105-130 ms (``benchmarks/put_fresh.py``). Into pages that exist already
    (a recycled segment) both are one memcpy.

    Returns:
        A read-only mapping if ``keep`` (for ``Mappings.adopt_mapping``; its pages are
        mapped when first read), else None. Keeping the writer's mapping costs nothing and
        keeps the pages mapped twice once a reader maps them, so neither process counts
        them as its own (USS).
    """
    for buf, (offset, length) in zip(buffers, layout.spans, strict=True):
        raw = buf.cast("B") if buf.format != "B" else buf
        done = 0
        while done < length:
            done += os.pwrite(segment.fd, raw[done:], offset + done)
    if keep:
        return mmap.mmap(segment.fd, layout.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    return None


class SegmentPool:
    """Segments of freed objects that nobody maps any more, kept for reuse.

    Args:
        limit: bytes the pool may keep at most.
        drop: closes a segment the pool does not keep (``Spares.retire`` for big ones).
    """

    def __init__(self, limit: int, *, drop: Callable[[Segment], None] = Segment.close) -> None:
        self.limit = limit
        self.bytes = 0
        self._free: list[Segment] = []
        self._drop = drop

    def _best(self, size: int) -> Segment | None:
        best = None
        for seg in self._free:
            if size <= seg.capacity <= 2 * size and (best is None or seg.capacity < best.capacity):
                best = seg
        return best

    def fits(self, size: int) -> bool:
        """True if :meth:`take` would find a segment for ``size`` bytes."""
        return self._best(size) is not None

    def take(self, size: int) -> Segment | None:
        """A pooled segment of at least ``size`` bytes and at most twice that, or None."""
        best = self._best(size)
        if best is not None:
            self._free.remove(best)
            self.bytes -= best.capacity
        return best

    def give(self, segment: Segment) -> None:
        """Keeps ``segment`` for reuse, dropping the oldest ones past ``limit``."""
        if segment.capacity > self.limit:
            self._drop(segment)
            return
        self._free.append(segment)
        self.bytes += segment.capacity
        self.trim(self.limit)

    def trim(self, keep: int) -> int:
        """Closes pooled segments (oldest first) until at most ``keep`` bytes stay pooled;
        returns the bytes released."""
        released = 0
        while self._free and self.bytes > keep:
            seg = self._free.pop(0)
            self.bytes -= seg.capacity
            released += seg.capacity
            self._drop(seg)
        return released

    def close(self) -> None:
        self.trim(0)


class Mappings:
    """This process's read-only mappings of segments, by object id.

    ``adopt`` maps an fd (and closes it); ``view`` serves zero-copy slices until ``forget``.
    A forgotten mapping lives on while values built on it do; ``on_unmapped(oid)`` is
    called (from the garbage collector, in any thread) once it is really gone.
    """

    def __init__(self, on_unmapped: Callable[[int], None]) -> None:
        self._maps: dict[int, memoryview] = {}  # {object id: read-only view of the mapping}
        self._on_unmapped = on_unmapped

    def __contains__(self, oid: int) -> bool:
        return oid in self._maps

    def adopt(self, oid: int, fd: int, size: int, close_fd: bool = True) -> None:
        try:
            if oid not in self._maps:
                m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
                weakref.finalize(m, self._on_unmapped, oid)
                self._maps[oid] = memoryview(m).toreadonly()
        finally:
            if close_fd:
                os.close(fd)

    def adopt_mapping(self, oid: int, m: mmap.mmap) -> None:
        """Keeps a writer's mapping as this process's (read-only) view of ``oid``."""
        weakref.finalize(m, self._on_unmapped, oid)
        self._maps[oid] = memoryview(m).toreadonly()

    def buffers(self, oid: int, spans: list[tuple[int, int]]) -> list[memoryview]:
        view = self._maps[oid]
        return [view[offset : offset + length] for offset, length in spans]

    def forget(self, oid: int) -> None:
        self._maps.pop(oid, None)

    def release(self, key: int) -> bool:
        """Unmaps ``key`` now, unless a value built on it still lives: then keeps it and
        returns False."""
        view = self._maps.pop(key, None)
        if view is None:
            return True
        m = view.obj
        assert isinstance(m, mmap.mmap)
        view.release()  # this view only: the values' views keep the mapping exported
        try:
            m.close()
        except BufferError:  # a value uses it: keep serving it
            self._maps[key] = memoryview(m).toreadonly()
            return False
        return True

    def clear(self) -> None:
        self._maps.clear()


DRIVER = 0  # the process id ``Shm.mapped_by`` uses for the driver itself


class Shm:
    """One object's segment (or spill file) in the driver's books, and who maps it."""

    __slots__ = ("segment", "layout", "nbytes", "origin", "mapped_by", "key", "spilled")

    def __init__(
        self, segment: Segment, layout: Layout, nbytes: int, origin: str, *, key: int = 0,
        spilled: bool = False,
    ) -> None:  # fmt: skip
        self.segment = segment
        self.layout = layout
        self.nbytes = nbytes  # bytes counted against capacity (the segment's size; 0 spilled)
        self.origin = origin  # for error messages: "put by the driver", "returned by f()"
        self.mapped_by: set[int] = set()  # worker ids, and DRIVER
        self.key = key  # what processes map it under: the object's id once stored (0 before)
        self.spilled = spilled  # the segment is a spill file (never pooled)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


class ObjectStore:
    """The driver's shared-memory books: capacity, the pool, segments still mapped.

    Not thread-safe: the runtime calls it with its lock held. Mapping counts come back
    asynchronously (finalizers, workers' ``RefOps.unmapped``) through :meth:`unmapped`.

    Args:
        capacity: ``object_store_memory``: bytes of live objects plus pooled segments.
        spare_limit: bytes that spares made ahead of big writes (:meth:`want_spare`) may
            hold; 0: no spares.
        prefault: the size of a spare to make at :meth:`prefault` (``init``); 0: none.
    """

    def __init__(self, capacity: int, *, spare_limit: int = 0, prefault: int = 0) -> None:
        self.capacity = capacity
        self.live = 0  # bytes of live objects (in memory: spilled ones count 0)
        self.spare_limit = spare_limit
        self.spares = Spares(Segment.prefaulted)
        self.pool = SegmentPool(limit=capacity // 4, drop=self._drop)
        self._prefault = prefault
        self._freed: dict[int, Shm] = {}  # {key: released, but still mapped somewhere}
        self.local_unmapped: deque[int] = deque()  # appended by the driver's finalizers
        self.maps = Mappings(self.local_unmapped.append)
        # make_room(bytes) spills objects until ``bytes`` more fit; returns why it could
        # not ("" if it could). Set by the object table, which knows what may be spilled.
        self.make_room: Callable[[int], str] | None = None

    def reserve(
        self, size: int, what: str, holders: Callable[[], str]
    ) -> tuple[Segment | None, int]:
        """Room for ``size`` bytes: a pooled or spare segment (or None: create one) and the
        bytes now counted, to hand to :class:`Shm` or back to :meth:`unreserve`. Spills
        objects (``make_room``) when they do not fit otherwise.

        Raises:
            ObjectStoreFullError: it does not fit even with the pool emptied and every
                object that may be spilled spilled.
        """
        self.spares.collect()
        segment = self.pool.take(size)
        if segment is None:
            segment = self.spares.take(size)
        need = segment.capacity if segment is not None else size
        why = ""
        if self.live + need > self.capacity >= need and self.make_room is not None:
            why = self.make_room(self.live + need - self.capacity)
            if segment is None:  # what was spilled may have left a segment that fits
                segment = self.pool.take(size)
                need = segment.capacity if segment is not None else size
        over = self.live + self.pool.bytes + self.spares.pending + need - self.capacity
        if over > 0 and self.spares.pending:  # spares are a bet on the future: drop them first
            over -= self.spares.cancel()
        if over > 0:
            self.pool.trim(max(0, self.pool.bytes - over))
        if self.live + self.pool.bytes + need > self.capacity:
            if segment is not None:
                self._drop(segment)
            raise ObjectStoreFullError(
                f"Cannot store {what} of {_mb(size)}: the object store holds {_mb(self.live)} "
                f"of its {_mb(self.capacity)} capacity (object_store_memory). {why}{holders()}"
                "Drop ObjectRefs you no longer need (`del ref`), pass smaller pieces, or "
                "start raylite with more: raylite.init(object_store_memory=<bytes>)."
            )
        self.live += need
        return segment, need

    def _drop(self, segment: Segment) -> None:
        """Closes a segment nobody uses; a big one on the spares thread, as freeing its pages
        takes time (100 MB: ~17 ms of CPU here) that a put or a ``del``, holding the
        runtime lock, should not wait for. Uncounted now, freed a moment later."""
        if segment.capacity >= SPARE_MIN:
            self.spares.retire(segment)
        else:
            segment.close()

    def unreserve(self, nbytes: int) -> None:
        self.live -= nbytes

    def prefault(self) -> None:
        """Starts making the spare asked for at init, if any (its thread starts now: call
        this once no process is to be forked from this one)."""
        if self._prefault:
            self.spares.request(self._prefault)

    def want_spare(self, size: int) -> None:
        """The driver wrote (or will write) ``size`` bytes: has a segment for the next write
        of that size pre-faulted in the background, unless the pool or the spares have one,
        or it would not fit ``spare_limit`` and the capacity."""
        if size < SPARE_MIN or self.pool.fits(size) or self.spares.covers(size):
            return
        step = max(1 << 20, 1 << (size.bit_length() - 4))  # slack for a slightly bigger put
        capacity = -(-size // step) * step
        spares = self.spares.pending + capacity
        if spares <= self.spare_limit and self.live + self.pool.bytes + spares <= self.capacity:
            self.spares.request(capacity)

    def keep(self, oid: int, shm: Shm, mapping: mmap.mmap) -> None:
        """The driver wrote ``oid`` through ``mapping``: keep it as its view."""
        self.maps.adopt_mapping(shm.key or oid, mapping)
        shm.mapped_by.add(DRIVER)

    def view(self, shm: Shm) -> list[memoryview]:
        """Zero-copy views of a stored object's buffers for the driver itself."""
        if DRIVER not in shm.mapped_by:
            self.maps.adopt(shm.key, shm.segment.fd, shm.layout.size, close_fd=False)
            shm.mapped_by.add(DRIVER)
        return self.maps.buffers(shm.key, shm.layout.spans)

    def unmap_here(self, shm: Shm) -> bool:
        """Drops the driver's own mapping of ``shm`` unless a value in this process uses
        it; True if nothing here maps it any more."""
        if DRIVER not in shm.mapped_by:
            return True
        if not self.maps.release(shm.key):
            return False
        shm.mapped_by.discard(DRIVER)
        return True

    def spilled(self, old: Shm, fd: int, key: int) -> tuple[Shm, list[int]]:
        """``old``'s bytes are now in the spill file ``fd``: releases ``old`` (as :meth:`free`
        does) and returns the spilled object's new books and the workers that must be told
        to ``Forget`` ``old``."""
        new = Shm(Segment(fd, old.layout.size), old.layout, 0, old.origin, key=key, spilled=True)
        return new, self.free(old)

    def free(self, shm: Shm) -> list[int]:
        """The object (or its in-memory copy) is released; returns the workers that must be
        told to ``Forget`` its key."""
        self.live -= shm.nbytes
        if DRIVER in shm.mapped_by:
            self.maps.forget(shm.key)  # its finalizer reports back (via local_unmapped)
        workers = [w for w in shm.mapped_by if w != DRIVER]
        if shm.spilled:  # the file goes with its last mapping: nothing to recycle
            shm.segment.close()
        elif not shm.mapped_by:
            self.pool.give(shm.segment)
        else:
            self._freed[shm.key] = shm
        return workers

    def unmapped(self, key: int, who: int) -> None:
        """``who`` has no mapping of released segment ``key`` left; recycle it once nobody
        has."""
        shm = self._freed.get(key)
        if shm is None:
            return
        shm.mapped_by.discard(who)
        if not shm.mapped_by:
            del self._freed[key]
            self.pool.give(shm.segment)

    def drain_local(self) -> None:
        while self.local_unmapped:
            self.unmapped(self.local_unmapped.popleft(), DRIVER)

    def close(self, live: list[Shm]) -> None:
        """Closes every segment: the live ones given, the freed ones, the pool."""
        self.maps.clear()
        for shm in live + list(self._freed.values()):
            shm.segment.close()
        self._freed.clear()
        self.spares.close()  # first: the pool's segments are closed here and now, then
        self.pool.close()
