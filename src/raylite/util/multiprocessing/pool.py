"""``Pool``: the standard library's ``multiprocessing.Pool``, run on raylite's workers.

Ray's ``ray.util.multiprocessing.Pool`` under raylite's name: the same methods and
arguments as ``multiprocessing.pool.Pool`` plus Ray's ``ray_address`` and
``ray_remote_args``. Each of the pool's processes is an actor with a process of its own
(``PROCESS_CPUS``), forked from raylite's zygote in milliseconds; the engine that feeds
them is in ``_manager.py``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ... import _api
from ._manager import Job, Manager, PoolProcess, chunked
from ._results import AsyncResult, IMapIterator, IMapUnorderedIterator

__all__ = ["Pool"]

_log = logging.getLogger(__name__)

_RUN, _CLOSE, _TERMINATE = "RUN", "CLOSE", "TERMINATE"
_TERMINATE_TIMEOUT_S = 30.0  # what terminate() waits for the manager thread, at most

PROCESS_CPUS = 1
"""What each pool process reserves: a whole CPU, because that is what gives an actor a
process of its own (raylite packs actors that reserve less into shared host processes,
where they would share a GIL). A pool holds its CPUs until it is closed or terminated:
close pools you are done with (``with Pool() as pool:`` does), or tasks and other pools
wait for those CPUs. ``processes`` is capped at the CPU count, as in Ray."""


class Pool:
    """A pool of worker processes with ``multiprocessing.Pool``'s interface, on raylite.

    Example:
        >>> from raylite.util.multiprocessing import Pool
        >>> with Pool(2) as pool:                       # doctest: +SKIP
        ...     print(pool.map(abs, range(-3, 3)))
        [3, 2, 1, 0, 1, 2]

    Args:
        processes: How many worker processes (default: the CPUs raylite has).
        initializer: Called as ``initializer(*initargs)`` once in each process, before its
            first task (per-process state: module globals, a connection, a model).
        initargs: Arguments for ``initializer``.
        maxtasksperchild: After this many tasks (chunks) a process is replaced by a fresh
            one (None: processes live as long as the pool).
        context: Accepted for ``multiprocessing.Pool`` compatibility and ignored (raylite
            starts its processes itself), as Ray does.
        ray_address: If raylite is not initialized yet: ``raylite.init(address=...)``
            (``"auto"``, ``"HOST:6379"``, ``"ray://..."``, or ``"local"``). Default: the
            ``RAY_ADDRESS`` environment variable, else a local raylite.
        ray_remote_args: Options for the pool's actors (``raylite.remote(**...)``); default
            ``{"num_cpus": 1}`` (see ``PROCESS_CPUS``). Keep ``num_cpus`` at 1 or more:
            raylite packs actors that reserve less into shared processes.

    Raises:
        ValueError: ``processes`` is below 1, or more than the CPUs available for it.
    """

    __module__ = "raylite.util.multiprocessing"

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        ray_address: str | None = None,
        ray_remote_args: Mapping[str, Any] | None = None,
    ) -> None:
        if processes is not None and processes < 1:
            raise ValueError(f"Number of processes must be at least 1, got {processes}")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError(
                f"maxtasksperchild must be a positive int or None, got {maxtasksperchild!r}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable, got {initializer!r}")
        if context is not None:
            _log.warning("raylite Pool ignores context=%r: raylite starts its processes", context)
        options = {"num_cpus": PROCESS_CPUS, **(ray_remote_args or {})}
        self._processes = _start_runtime(processes, ray_address)
        actor_class = _api.remote(**options)(PoolProcess)
        args = tuple(initargs)
        self._state = _RUN
        self._manager = Manager(
            processes=self._processes,
            new_actor=lambda: actor_class.remote(initializer, args),
            max_tasks=maxtasksperchild,
            session=_api.get_runtime_context().get_job_id(),
        )
        # A pool dropped without close()/terminate() still ends its processes.
        self._finalizer = weakref.finalize(
            self, self._manager.terminate, "the Pool was garbage collected"
        )

    # -- one call ------------------------------------------------------------------------

    def apply(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        *,
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """``func(*args, **kwds)`` in a pool process; waits for and returns its result.

        ``kwargs`` is Ray's name for ``kwds``.
        """
        return self.apply_async(func, args, kwds, kwargs=kwargs).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        kwargs: Mapping[str, Any] | None = None,
    ) -> AsyncResult:
        """Like ``apply``, without waiting: returns an ``AsyncResult``.

        ``callback(result)`` or ``error_callback(exception)`` runs on the pool's manager
        thread when the call is done (keep them short).
        """
        if kwds and kwargs:
            raise TypeError("apply_async() got both kwds= and kwargs= (Ray's name): pass one")
        keywords = kwds or kwargs
        target = functools.partial(func, **keywords) if keywords else func
        return self._map_async(target, [tuple(args)], 1, True, callback, error_callback, True)

    # -- many calls ----------------------------------------------------------------------

    def map(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> list[Any]:
        """``[func(x) for x in iterable]``, computed in the pool's processes.

        Args:
            func: Called with each item.
            iterable: The items (consumed at once).
            chunksize: Items per task (default: about 4 tasks per process).
        """
        return self.map_async(func, iterable, chunksize).get()

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult:
        """Like ``map``, without waiting: returns an ``AsyncResult`` of the list."""
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
    ) -> list[Any]:
        """``[func(*args) for args in iterable]``, computed in the pool's processes."""
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult:
        """Like ``starmap``, without waiting: returns an ``AsyncResult`` of the list."""
        return self._map_async(func, iterable, chunksize, True, callback, error_callback)

    def imap(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> IMapIterator:
        """An iterator of ``func(x)`` for each item, in order, as results come in.

        The iterable is drawn lazily, as processes have room. Tiny tasks are packed into
        few calls automatically (see ``_manager``), so ``chunksize`` mostly decides which
        items fail together.
        """
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> IMapIterator:
        """Like ``imap``, but yields results in the order they finish."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """No more tasks: the processes end once the submitted ones are done."""
        if self._state == _RUN:
            self._state = _CLOSE
            self._manager.close()

    def terminate(self) -> None:
        """Ends the processes now; tasks not finished fail with an error saying so."""
        if self._state != _TERMINATE:
            self._state = _TERMINATE
            self._finalizer.detach()
            self._manager.terminate("Pool.terminate() was called")
            # As the standard library's: the pool is over when terminate() returns, so a
            # raylite.shutdown() right after cannot race the manager thread's last steps.
            if threading.current_thread() is not self._manager.thread:
                self._manager.thread.join(_TERMINATE_TIMEOUT_S)

    def join(self, timeout: float | None = None) -> None:
        """Waits for the processes to end (after ``close`` or ``terminate``).

        Raises:
            ValueError: the pool is still running (call ``close()`` or ``terminate()``).
        """
        if self._state == _RUN:
            raise ValueError("Pool is still running: call close() or terminate() before join()")
        self._manager.thread.join(timeout)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()  # as multiprocessing.Pool does

    def __repr__(self) -> str:
        return (
            f"<raylite.util.multiprocessing.Pool state={self._state} pool_size={self._processes}>"
        )

    # -- internals -----------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != _RUN:
            raise ValueError("Pool not running: it was closed or terminated; make a new one")
        if self._manager.broken:
            raise ValueError(f"Pool not running: {self._manager.broken}")

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        star: bool,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        single: bool = False,
    ) -> AsyncResult:
        self._check_running()
        items: Sequence[Any] = iterable if hasattr(iterable, "__len__") else list(iterable)  # type: ignore[assignment]
        if chunksize is None:
            chunksize = max(1, -(-len(items) // (self._processes * 4)))
        elif chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, got {chunksize}")
        chunks = -(-len(items) // chunksize)
        result = AsyncResult(
            chunks=chunks,
            single=single,
            callback=callback,
            error_callback=error_callback,
            keep_alive=self,
        )
        if chunks:
            self._manager.submit(
                Job(result, func, star, chunked(items, chunksize), chunksize, chunks)
            )
        return result

    def _imap(
        self,
        kind: type[IMapIterator],
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int,
    ) -> IMapIterator:
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, got {chunksize}")
        result = kind(keep_alive=self)
        total = -(-len(iterable) // chunksize) if isinstance(iterable, Sequence) else None
        job = Job(
            result, func, False, chunked(iterable, chunksize), chunksize, total, result._set_length
        )
        self._manager.submit(job)
        return result


def _start_runtime(processes: int | None, address: str | None) -> int:
    """Starts raylite if needed (Ray's rules) and checks the pool fits; its process count."""
    if not _api.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address and address != "local":
            _api.init(address=address)
        else:
            _api.init(num_cpus=processes)
    cpus = int(_api.cluster_resources().get("CPU", 0))
    if processes is None:
        processes = max(1, cpus)
    if processes > cpus:
        raise ValueError(
            f"Pool(processes={processes}) is more processes than raylite's {cpus} CPUs "
            f"(Ray's rule): ask for at most {cpus}, or start raylite with more "
            f"(raylite.init(num_cpus={processes}) before the pool)"
        )
    return processes
