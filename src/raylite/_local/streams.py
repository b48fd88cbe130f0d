"""Generator tasks' streams in the driver: the refs a task yielded, until the user takes them.

::

    worker ── GeneratorItem(task, index, oid, value) ─> runtime stores the object, held by
              the stream ─> StreamTable.item(): appended; the oldest waiting claim gets it
    user   ── next(gen) / gen.__anext__() ─> claim(): a future, resolved with the next ref
              (the stream's hold passes to that ObjectRef), or None once the stream ends
           ── wait([gen, ...]) ─> watch(): a callback once a ref waits or the stream ends
    task done (its completion ref is stored) ─> finished(): the claims past the last item
              get the completion ref if the task failed (it raises the error), then None
    the generator's ref freed (the ObjectRefGenerator is gone) ─> freed(): the refs never
              taken are released, and later items of that task are dropped as they come

Streaming (``num_returns="streaming"``): a rerun of the task (retry after a crash or an
exception) yields from index 0 again; items the stream has already are dropped, so the user
sees each index once. Dynamic (``num_returns="dynamic"``): the worker returns a
``DynamicObjectRefGenerator`` of every item's ref as the task's value, which holds them; the
stream only holds them until that value is stored.

Not thread-safe: the runtime calls every method with its lock held. Futures are resolved
under the lock: their callbacks only wake a thread or schedule on an event loop.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .objects import Waiter

if TYPE_CHECKING:
    from .._object_ref import ObjectRef
    from .objects import ObjectTable

__all__ = ["StreamTable"]

Claim = concurrent.futures.Future  # resolves to the next ObjectRef, or None at the end


@dataclass(slots=True)
class _Stream:
    task_id: int
    gen_oid: int  # the task's completion ref (the ObjectRefGenerator holds it)
    dynamic: bool
    items: list[int] = field(default_factory=list)  # object ids by index
    taken: int = 0  # items handed out (their hold passed to an ObjectRef)
    done: bool = False
    failed: bool = False  # the completion ref holds the task's error
    error_taken: bool = False
    claims: deque[Claim[ObjectRef | None]] = field(default_factory=deque)
    watchers: list[Callable[[], None]] = field(default_factory=list)  # wait() on it


class StreamTable:
    """The open streams of one runtime.

    Args:
        objs: the runtime's object table.
        make_ref: ``make_ref(oid)`` is an ObjectRef that takes over one counted reference.
    """

    def __init__(self, objs: ObjectTable, make_ref: Callable[[int], ObjectRef]) -> None:
        self._objs = objs
        self._make_ref = make_ref
        self._by_task: dict[int, _Stream] = {}
        self._by_gen: dict[int, _Stream] = {}

    def open(self, task_id: int, gen_oid: int, dynamic: bool) -> None:
        """Task ``task_id`` (its completion ref ``gen_oid``, just made) will stream."""
        stream = _Stream(task_id, gen_oid, dynamic)
        self._by_task[task_id] = stream
        self._by_gen[gen_oid] = stream
        entry = self._objs[gen_oid]
        entry.actor = True  # the runtime hears when it is freed: see freed()
        self._objs.add_waiter([entry], Waiter(1, lambda: self._finished(stream)))

    def item(self, task_id: int, index: int, oid: int) -> bool:
        """Object ``oid`` (stored, one reference counted for the stream) is the task's
        ``index``-th value; False if the stream does not want it (gone, or a rerun's
        duplicate): the caller releases it."""
        stream = self._by_task.get(task_id)
        if stream is None or stream.done or (not stream.dynamic and index < len(stream.items)):
            return False
        stream.items.append(oid)
        self._serve(stream)
        return True

    def claim(self, gen_oid: int) -> Claim[ObjectRef | None]:
        """The next ref of the stream as a future (None once it ends)."""
        claim: Claim[ObjectRef | None] = concurrent.futures.Future()
        stream = self._by_gen.get(gen_oid)
        if stream is None:  # freed, or made by an earlier session: nothing more comes
            claim.set_result(None)
            return claim
        stream.claims.append(claim)
        self._serve(stream)
        return claim

    def status(self, gen_oid: int) -> tuple[bool, bool]:
        """``(next_ready, exhausted)`` of the stream of ``gen_oid``."""
        stream = self._by_gen.get(gen_oid)
        if stream is None:
            return True, True
        exhausted = stream.done and stream.taken == len(stream.items) and (
            not stream.failed or stream.error_taken
        )  # fmt: skip
        return exhausted or stream.taken < len(stream.items), exhausted

    def watch(self, gen_oid: int, callback: Callable[[], None]) -> bool:
        """Calls ``callback`` once the stream's next ref is there or it ends; False (and
        no call) if that is so already."""
        stream = self._by_gen.get(gen_oid)
        if stream is None or self.status(gen_oid)[0]:
            return False
        stream.watchers.append(callback)
        return True

    def freed(self, oid: int) -> bool:
        """Object ``oid`` was freed; if it is a generator's ref, its stream closes and the
        refs it never handed out are released. False if ``oid`` is no generator's."""
        stream = self._by_gen.pop(oid, None)
        if stream is None:
            return False
        self._by_task.pop(stream.task_id, None)
        self._release_untaken(stream)
        return True

    def _finished(self, stream: _Stream) -> None:
        """The task's completion ref was stored: the stream ends after its items."""
        stream.done = True
        entry = self._objs.get(stream.gen_oid)
        stream.failed = entry is not None and entry.is_error
        self._by_task.pop(stream.task_id, None)  # items of a late rerun are not wanted
        if stream.dynamic:  # the stored DynamicObjectRefGenerator holds the items now
            self._release_untaken(stream)
        self._serve(stream)

    def _release_untaken(self, stream: _Stream) -> None:
        untaken, stream.items = stream.items[stream.taken :], stream.items[: stream.taken]
        for oid in untaken:
            self._objs.decref(oid)
        while stream.claims:
            claim = stream.claims.popleft()
            if claim.set_running_or_notify_cancel():
                claim.set_result(None)

    def _serve(self, stream: _Stream) -> None:
        """Resolves waiting claims, in order, with what the stream has; then tells the
        watchers if a ref waits or the stream ended."""
        self._serve_claims(stream)
        if stream.watchers and (stream.done or stream.taken < len(stream.items)):
            watchers, stream.watchers = stream.watchers, []
            for callback in watchers:
                callback()

    def _serve_claims(self, stream: _Stream) -> None:
        claims = stream.claims
        while claims:
            if stream.taken < len(stream.items):
                ref: ObjectRef | None = None
                oid = stream.items[stream.taken]
                if not claims[0].set_running_or_notify_cancel():
                    claims.popleft()  # given up (a cancelled await): the next claim's turn
                    continue
                stream.taken += 1
                ref = self._make_ref(oid)
            elif not stream.done:
                return
            else:
                if not claims[0].set_running_or_notify_cancel():
                    claims.popleft()
                    continue
                ref = None
                if stream.failed and not stream.error_taken:
                    stream.error_taken = True
                    self._objs.hold([stream.gen_oid])
                    ref = self._make_ref(stream.gen_oid)
            claims.popleft().set_result(ref)
