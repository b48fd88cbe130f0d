"""RayRuntime: raylite's API served by the real ``ray`` package, on a Ray cluster.

::

    raylite API (_api, RemoteFunction)           ray, in this process
    ----------------------------------           --------------------
    f.remote(*args) -> submit_task  ---------->  Ray's remote function of f .remote(*args)
    get / wait / put / cancel       ---------->  ray.get / ray.wait / ray.put / ray.cancel
    raylite.exceptions.X            <----------  ray.exceptions.X (translated: errors.py)

Refs are Ray's own: ``submit_task`` and ``put`` return ``ray.ObjectRef`` s, not wrappers.
So Ray resolves ref arguments itself (and tracks refs nested in containers as borrowed),
``ray.get``, ``await ref`` and every other Ray API take them, and nothing is copied or
counted twice. ``isinstance(ref, raylite.ObjectRef)`` holds for them (``_object_ref``'s
foreign refs, registered by this package), and their owner is the current RayRuntime, so a
ref from an earlier local session is refused by name rather than misread.

Inside a Ray worker raylite has no runtime until user code calls it: ``_runtime.current()``
then finds Ray connected (``attached``) and serves nested tasks through Ray. Such a runtime
does not own the connection, and its ``shutdown()`` leaves Ray alone.

Functions: Ray exports a function to the cluster once per remote function object, so
``_bases`` keeps one per raylite function (``.options()`` variants share it, as in Ray),
and ``_calls`` the variant with each RemoteFunction's options, dropped with it. Ray is
thread-safe; this class keeps no lock of its own (a race builds a variant twice, harmlessly).
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any, cast

import ray

from .._object_ref import ObjectRef
from ..exceptions import RaySystemError
from .errors import raylite_errors

if TYPE_CHECKING:
    import concurrent.futures

    from .._options import TaskOptions
    from .._remote_function import RemoteFunction

__all__ = ["RayRuntime", "ray_task_options"]


class RayRuntime:
    """The runtime of a process connected to a Ray cluster (``init(address=...)``).

    Args:
        owns_connection: whether raylite opened the connection, and so closes it at
            ``shutdown()``; false inside a Ray worker or after the user's own ``ray.init()``.
    """

    def __init__(self, *, owns_connection: bool) -> None:
        self._owns_connection = owns_connection
        # {RemoteFunction: (its options, Ray's function with them)}
        self._calls: weakref.WeakKeyDictionary[RemoteFunction, tuple[TaskOptions, Any]] = (
            weakref.WeakKeyDictionary()
        )
        # {(fn id, max_calls): Ray's remote function}
        self._bases: dict[tuple[int, int | None], Any] = {}

    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any], opts: TaskOptions
    ) -> list[ObjectRef]:
        call = self._ray_function(fn, opts)
        with raylite_errors():
            out = call.remote(*args, **kwargs)
        n = opts.num_returns
        return [out] if n == 1 else [] if n == 0 else list(out)

    def _ray_function(self, fn: RemoteFunction, opts: TaskOptions) -> Any:
        cached = self._calls.get(fn)
        if cached is not None and cached[0] is opts:
            return cached[1]
        options = ray_task_options(opts, fn.function_name)
        # Ray takes max_calls only where it makes the function, not in .options().
        max_calls = options.pop("max_calls")
        base = self._bases.get((fn._fn_id, max_calls))
        if base is None:
            make = ray.remote if max_calls is None else ray.remote(max_calls=max_calls)
            base = self._bases[fn._fn_id, max_calls] = make(fn._function)
        with raylite_errors():
            call = base.options(**options)
        self._calls[fn] = (opts, call)
        return call

    # Actors through raylite's API are not wired to Ray yet (raylite's actor API is new).
    # Loosely typed until then; Ray's own @ray.remote classes work in the same program.
    def create_actor(self, cls: Any, args: Any, kwargs: Any, opts: Any) -> Any:
        raise NotImplementedError(
            f"Actors (@raylite.remote on a class, here {cls.__name__}) do not run on a Ray "
            "cluster through raylite yet. Decorate the class with @ray.remote for now (its "
            "handles and refs work with raylite.get/wait), or run on the local runtime."
        )

    def submit_actor_call(self, handle: Any, method: str, args: Any, kwargs: Any, opts: Any) -> Any:
        raise NotImplementedError("raylite actors do not run on a Ray cluster yet.")

    def kill_actor(self, handle: Any, no_restart: bool) -> None:
        with raylite_errors():
            ray.kill(handle, no_restart=no_restart)

    def get_actor(self, name: str, namespace: str | None) -> Any:
        with raylite_errors():
            return ray.get_actor(name, namespace=namespace)

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "Calling 'put' on an ObjectRef is not allowed. If you really want to do this, "
                "wrap the ObjectRef in a list and call 'put' on it."
            )
        with raylite_errors():
            return cast(ObjectRef, ray.put(value))

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        with raylite_errors():
            return cast("list[Any]", ray.get(cast("list[Any]", refs), timeout=timeout))

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        with raylite_errors():
            ready, not_ready = ray.wait(
                cast("list[Any]", refs), num_returns=num_returns, timeout=timeout
            )
        return cast("list[ObjectRef]", ready), cast("list[ObjectRef]", not_ready)

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        with raylite_errors():
            ray.cancel(ref, force=force, recursive=recursive)

    def available_resources(self) -> dict[str, float]:
        return dict(ray.available_resources())

    def cluster_resources(self) -> dict[str, float]:
        return dict(ray.cluster_resources())

    def context(self) -> dict[str, Any]:
        """Who and where the caller is, with Ray's ids (hex strings)."""
        ctx = ray.get_runtime_context()
        # Ray logs a warning when a driver asks for its task: ask inside tasks only.
        in_task = ctx.worker.mode == ray.WORKER_MODE
        return {
            "session": ctx.get_job_id(),
            "node_id": ctx.get_node_id(),
            "worker_id": ctx.get_worker_id(),
            "task_id": ctx.get_task_id() if in_task else None,
            "task_name": ctx.get_task_name() if in_task else None,
            "pid": os.getpid(),
            "gpu_ids": ray.get_gpu_ids(),
        }

    def shutdown(self) -> None:
        if self._owns_connection:
            ray.shutdown()

    # ObjectRef's needs: raylite's own refs are never Ray's, so a raylite ref unpickled while
    # Ray serves this process points at no value here. Ray counts its refs itself.
    def add_ref(self, oid: int) -> None:
        """Nothing to count: see above."""

    def release(self, oid: int) -> None:
        """Nothing to count: see above."""

    def future(self, oid: int) -> concurrent.futures.Future[Any]:
        raise RaySystemError(
            "This ObjectRef was made by raylite's local runtime, but Ray serves this process: "
            "its value is not on the cluster. Recompute it after raylite.init(address=...)."
        )


def ray_task_options(opts: TaskOptions, function_name: str) -> dict[str, Any]:
    """The keywords of ``ray.remote``/``.options`` for a task with ``opts``.

    ``max_calls`` is always present (``None``: Ray's default); GPU tasks default to
    ``max_calls=1`` as under ``@ray.remote(num_gpus=...)``, so a worker gives GPU memory back.

    Raises:
        ValueError: a raylite-only option with no Ray equivalent (the thread executor).
    """
    if opts.executor != "process":
        raise ValueError(
            f"The option executor={opts.executor!r} of {function_name}() runs tasks on threads "
            "of the driver process, which only raylite's local runtime does: on a Ray cluster "
            "every task runs in a worker process. Remove the option (for many concurrent "
            "I/O-bound calls on Ray, use an actor with max_concurrency=N)."
        )
    retry = opts.retry_exceptions
    options: dict[str, Any] = {
        "num_cpus": opts.num_cpus,
        "num_gpus": opts.num_gpus,
        "resources": dict(opts.resources),
        "num_returns": opts.num_returns,
        "max_retries": opts.max_retries,
        "retry_exceptions": list(retry) if isinstance(retry, tuple) else retry,
        "max_calls": 1 if opts.num_gpus else None,
        **opts.cluster_options,
    }
    if opts.name is not None:
        options["name"] = opts.name
    return options
