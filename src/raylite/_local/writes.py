"""What the driver writes into the object store: ``put`` values and calls' arguments.

::

    user thread (no lock)                          a section (lock held)
    ---------------------                          ---------------------
    pack_args(): pickle the arguments ───────┐
    write_shm(): reserve room ──────────────────> ObjectTable.books.reserve (a section)
      copy the big buffers into a segment    │      (100 MB takes a while: never locked)
      (fails: the room is given back) ──────────> books.unreserve
      copied, 4 MiB or more ────────────────────> books.want_spare: pages for the next
                                             │      write of that size (spares.py)
                                             └──> hold_args() / new_object(): the object
                                                  made and stored, its refs held

The runtime owns one ``ObjectWriter``; sections follow its rule (``with lock:``, then
``settle()``; see locking.py). Nothing here runs inside a section but ``hold_args`` and
``new_object``, which the caller runs in its own.
"""

from __future__ import annotations

import errno
import mmap
from collections.abc import Callable
from typing import Any

from ..exceptions import ObjectStoreFullError
from . import serialization as ser
from .locking import DriverLock
from .objects import ObjectTable
from .protocol import check_inband, open_files_limit_reached
from .store import SPARE_MIN, Segment, Shm, layout_of, write_segment
from .tasks import PackedArgs

__all__ = ["ObjectWriter"]

Store = Callable[[int, bytes, bool, list[int], Shm | None], None]


class ObjectWriter:
    """Pickles and writes what the driver stores: put values and calls' arguments.

    Args:
        guard: the runtime's lock and its queues.
        settle: applies what was queued without the lock (first thing in every section).
        check_alive: raises RaySystemError once the runtime is shut down or broken.
        objs: the object table (the segments' books, holds).
        new_id: a new object id (the runtime's counter).
        store: stores a ready object's value (``LocalRuntime._store``: waiters and
            dependent tasks hear of it).
    """

    def __init__(
        self, *, guard: DriverLock, settle: Callable[[], None], check_alive: Callable[[], None],
        objs: ObjectTable, new_id: Callable[[], int], store: Store,
    ) -> None:  # fmt: skip
        self._guard = guard
        self._lock = guard.lock
        self._settle = settle
        self._check_alive = check_alive
        self._objs = objs
        self._new_id = new_id
        self._store = store

    def pack_args(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> PackedArgs:
        """Pickles a call's arguments (outside the lock); big buffers go to a segment."""
        try:
            s, positions, dep_ids = ser.dumps_args(args, kwargs)
        except ser.SerializationError as exc:
            raise TypeError(
                f"Could not serialize the arguments of {name}.remote(): {exc}. "
                "Pass picklable data, or create the object inside the task."
            ) from None
        check_inband(f"The arguments of {name}.remote()", s.payload)
        shm = self.write_shm(s, f"the arguments of {name}()")[0] if s.buffers else None
        return PackedArgs(s, positions, dep_ids, shm)

    def hold_args(self, packed: PackedArgs) -> tuple[bytes | int, list[int]]:
        """Holds what packed arguments need until the call is done (lock held).

        Returns:
            ``(args, contained)``: the pickle, or the id of a hidden object holding big
            arguments, and the ids to release when the call is done (with its deps).
        """
        args: bytes | int = packed.s.payload
        contained = packed.s.contained
        if packed.shm is not None:
            args = self.new_object(0, packed.s.payload, packed.shm, contained)
            contained = [args]
        if packed.dep_ids or contained:
            self._objs.hold(packed.dep_ids + contained)
        return args, contained

    def new_object(
        self, refcount: int, payload: bytes, shm: Shm | None, contained: list[int]
    ) -> int:
        """Stores a ready object made here (lock held); returns its id."""
        oid = self._new_id()
        self._objs.hold(contained)
        self._objs.new(oid, refcount)
        self._store(oid, payload, False, contained, shm)
        return oid

    def write_shm(
        self, s: ser.Serialized, what: str, keep: bool = False
    ) -> tuple[Shm, mmap.mmap | None]:
        """Writes ``s``'s buffers to a segment, outside the lock (a 100 MB copy takes a while).

        Raises:
            ObjectStoreFullError: no room within ``object_store_memory``, or the machine
                has no memory left for the segment.
        """
        layout = layout_of(s.buffers)
        self._guard.refuse_here(f"storing {what}")
        with self._lock:
            self._settle()
            self._check_alive()
            segment, counted = self._objs.books.reserve(layout.size, what, self._objs.holders)
        try:
            if segment is None:
                segment = Segment.create(layout.size)
            mapping = write_segment(segment, layout, s.buffers, keep)
        except BaseException as exc:
            with self._lock:
                self._objs.books.unreserve(counted)
            if segment is not None:
                segment.close()
            if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
                raise ObjectStoreFullError(
                    f"Cannot store {what}: {open_files_limit_reached()}"
                ) from exc
            if isinstance(exc, OSError):
                raise ObjectStoreFullError(
                    f"Cannot store {what} of {layout.size / 1e6:,.1f} MB: the machine refused "
                    f"the shared memory ({exc}). Free memory, or pass smaller pieces."
                ) from exc
            raise
        if layout.size >= SPARE_MIN:  # asked once the copy is done, not to compete with it
            with self._lock:
                self._settle()
                self._objs.books.want_spare(layout.size)  # for the next write of this size
        return Shm(segment, layout, counted, what), mapping
