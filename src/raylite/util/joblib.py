"""A joblib backend that runs ``Parallel`` (and scikit-learn's ``n_jobs``) on raylite.

Ray's ``ray.util.joblib.register_ray()`` under raylite's name::

    import joblib
    from raylite.util.joblib import register_raylite

    register_raylite()
    with joblib.parallel_backend("raylite"):      # or parallel_config(backend="raylite")
        search.fit(X, y)                          # scikit-learn's n_jobs work on raylite

``register_ray()`` registers the same backend as ``"ray"``, so code written for Ray's runs
unchanged. Needs joblib (``pip install 'raylite[joblib]'``); ``import raylite`` does not
import this module.

How a batch runs::

    Parallel ─ BatchedCalls ─> submit(): numpy arrays >= max_nbytes among the calls'
                                         arguments ─ put once per Parallel call ─> ObjectRef
                               Pool.apply_async(_Resolved(batch, {position: ref}))
                                  │  (raylite.util.multiprocessing.Pool, n_jobs processes)
    worker process: get(ref) = a read-only view of the shared-memory store, then the batch

The pool lives for one ``Parallel`` call (as Ray's does): its processes hold a CPU each,
which raylite's tasks and other pools get back when the call ends. Big arrays are joblib's
auto-memmapping done by raylite's store: an array that every task of a
grid search takes (``X``, ``y``) is written once, however many tasks read it, and no task
copies it. ``max_nbytes`` (joblib's, default ``"1M"``; None turns it off) is the size from
which an array goes through the store instead of the task's own pickle.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from joblib import register_parallel_backend
from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    PoolManagerMixin,
    SequentialBackend,
)
from joblib.disk import memstr_to_bytes

from .. import _api
from .._object_ref import ObjectRef
from .multiprocessing import Pool

__all__ = ["RayliteBackend", "register_ray", "register_raylite"]

_DEFAULT_MAX_NBYTES = 1 << 20  # joblib's default "1M"


def register_raylite() -> None:
    """Registers the ``"raylite"`` joblib backend (``parallel_backend("raylite")``)."""
    register_parallel_backend("raylite", RayliteBackend)


def register_ray() -> None:
    """Registers the same backend as ``"ray"``: Ray's ``register_ray()`` under its name."""
    register_parallel_backend("ray", RayliteBackend)


def _nbytes(limit: int | str | None) -> int | None:
    """joblib's ``max_nbytes``: bytes, ``"1M"``-style text (joblib's parser), or None."""
    return limit if limit is None or isinstance(limit, int) else memstr_to_bytes(limit)


class _Resolved:
    """A joblib batch whose big arguments stayed in raylite's store; fetched in the worker.

    ``refs`` maps ``(call index, argument position or keyword)`` to the ObjectRef that
    replaced that argument.
    """

    def __init__(self, batch: Any, refs: dict[tuple[int, int | str], ObjectRef]) -> None:
        self.batch = batch
        self.refs = refs

    def __call__(self) -> Any:
        items = self.batch.items
        for (i, where), ref in self.refs.items():
            func, args, kwargs = items[i]
            value = _api.get(ref)
            if isinstance(where, int):
                args = (*args[:where], value, *args[where + 1 :])
            else:
                kwargs = {**kwargs, where: value}
            items[i] = (func, args, kwargs)
        return self.batch()


class RayliteBackend(AutoBatchingMixin, PoolManagerMixin, ParallelBackendBase):
    """joblib's process backend on raylite: a ``raylite.util.multiprocessing.Pool`` of
    ``n_jobs`` processes, big numpy arguments shared through the object store.

    Args:
        ray_remote_args: Options for the pool's actors, as Ray's backend takes them.
        **backend_kwargs: joblib's (``max_nbytes``; ``mmap_mode`` and ``temp_folder``
            are accepted and unused: the store replaces memory-mapped files).
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = False

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **backend_kwargs: Any,
    ) -> None:
        super().__init__(
            nesting_level=nesting_level,
            inner_max_num_threads=inner_max_num_threads,
            **backend_kwargs,
        )
        self.ray_remote_args = ray_remote_args
        self._pool: Pool | None = None  # from configure() to terminate()
        self._max_nbytes: int | None = _DEFAULT_MAX_NBYTES
        # {id(array): (array, ref)} for this Parallel call: the entry holds the array, so
        # its id cannot be reused by another object while the entry exists.
        self._stored: dict[int, tuple[Any, ObjectRef]] = {}

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """joblib's rules, with raylite's CPUs as "all" (``-1``)."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning: pass 1 or more, or -1")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            if not _api.is_initialized():
                _api.init()
            cpus = int(_api.cluster_resources().get("CPU", 1))
            return max(cpus + 1 + n_jobs, 1)
        return n_jobs

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **pool_kwargs: Any,
    ) -> int:
        """Starts the pool for one ``Parallel``; returns how many processes it has."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        options = {**self.backend_kwargs, **pool_kwargs}
        self._max_nbytes = _nbytes(options.get("max_nbytes", _DEFAULT_MAX_NBYTES))
        remote_args = ray_remote_args if ray_remote_args is not None else self.ray_remote_args
        self._pool = Pool(n_jobs, ray_remote_args=remote_args)
        self.parallel = parallel
        return n_jobs

    def submit(self, func: Any, callback: Callable[[Any], object] | None = None) -> Any:
        """Runs one joblib batch in the pool, its big arrays passed as store refs."""
        return super().submit(self._with_refs(func), callback)

    def stop_call(self) -> None:
        """End of a ``Parallel`` call: its arrays may change before the next one."""
        self._stored.clear()

    def terminate(self) -> None:
        """Ends the pool (its processes hold a CPU each) and frees the arrays put in the
        store."""
        self._stored.clear()
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        self.reset_batch_stats()

    def _with_refs(self, batch: Any) -> Any:
        """``batch``, or a copy of it whose big arrays are refs, to be fetched in the worker."""
        numpy = sys.modules.get("numpy")
        items = getattr(batch, "items", None)
        if numpy is None or self._max_nbytes is None or not isinstance(items, list):
            return batch
        refs: dict[tuple[int, int | str], ObjectRef] = {}
        slim = []
        for i, (func, args, kwargs) in enumerate(items):
            args, kwargs = list(args), dict(kwargs)
            for where, value in [*enumerate(args), *kwargs.items()]:
                if isinstance(value, numpy.ndarray) and value.nbytes >= self._max_nbytes:
                    refs[(i, where)] = self._ref_of(value)
                    if isinstance(where, int):
                        args[where] = None
                    else:
                        kwargs[where] = None
            slim.append((func, tuple(args), kwargs))
        if not refs:
            return batch
        # A copy made without pickling (BatchedCalls.__reduce__ has side effects).
        copy = object.__new__(type(batch))
        copy.__dict__.update(batch.__dict__)
        copy.items = slim
        return _Resolved(copy, refs)

    def _ref_of(self, array: Any) -> ObjectRef:
        entry = self._stored.get(id(array))
        if entry is None:
            entry = self._stored[id(array)] = (array, _api.put(array))
        return entry[1]
