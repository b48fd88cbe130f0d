"""RayRuntime: raylite's API served by the real ``ray`` package, on a Ray cluster.

::

    raylite API (_api, RemoteFunction,           ray, in this process
                 ActorClass)                     --------------------
    ----------------------------------
    f.remote(*args) -> submit_task  ---------->  Ray's remote function of f .remote(*args)
    C.remote(*args) -> create_actor ---------->  Ray's actor class of C .remote(*args)
    get / wait / put / cancel / kill --------->  ray.get / ray.wait / ray.put / ray.cancel /
    get_actor                                    ray.kill / ray.get_actor
    raylite.exceptions.X            <----------  ray.exceptions.X (translated: errors.py)

Refs are Ray's own: ``submit_task`` and ``put`` return ``ray.ObjectRef`` s, not wrappers.
So Ray resolves ref arguments itself (and tracks refs nested in containers as borrowed),
``ray.get``, ``await ref`` and every other Ray API take them, and nothing is copied or
counted twice. ``isinstance(ref, raylite.ObjectRef)`` holds for them (``_object_ref``'s
foreign refs, registered by this package), and their owner is the current RayRuntime, so a
ref from an earlier local session is refused by name rather than misread.

Actor handles are Ray's own too (``isinstance(h, raylite.ActorHandle)`` holds for them):
Ray calls their methods itself, with the ``@raylite.method`` options given to Ray as
``@ray.method`` ones when the class is first made a Ray actor class.

Inside a Ray worker raylite has no runtime until user code calls it: ``_runtime.current()``
then finds Ray connected (``attached``) and serves nested tasks through Ray. Such a runtime
does not own the connection, and its ``shutdown()`` leaves Ray alone.

Functions: Ray exports a function to the cluster once per remote function object, so
``_bases`` keeps one per raylite function (``.options()`` variants share it, as in Ray),
and ``_calls`` the variant with each RemoteFunction's options, dropped with it; likewise
``_actor_classes`` one Ray actor class per raylite one. Ray is
thread-safe; this class keeps no lock of its own (a race builds a variant twice, harmlessly).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn, cast

import ray
import ray.util.scheduling_strategies

from .._object_ref import ObjectRef
from .._placement import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy
from ..exceptions import RaySystemError
from .errors import raylite_errors

if TYPE_CHECKING:
    import concurrent.futures

    from .._actor import ActorClass, ActorHandle
    from .._options import ActorOptions, MethodOptions, TaskOptions
    from .._remote_function import RemoteFunction

__all__ = ["RayRuntime", "ray_actor_options", "ray_task_options"]


class RayRuntime:
    """The runtime of a process connected to a Ray cluster (``init(address=...)``).

    Args:
        owns_connection: whether raylite opened the connection, and so closes it at
            ``shutdown()``; false inside a Ray worker or after the user's own ``ray.init()``.
        dashboard_url: the Ray dashboard's ``host:port``, as ``ray.init`` returned it.
    """

    def __init__(self, *, owns_connection: bool, dashboard_url: str | None = None) -> None:
        self._owns_connection = owns_connection
        self.dashboard_url = dashboard_url
        # {RemoteFunction: (its options, Ray's function with them)}
        self._calls: weakref.WeakKeyDictionary[RemoteFunction, tuple[TaskOptions, Any]] = (
            weakref.WeakKeyDictionary()
        )
        # {(fn id, max_calls): Ray's remote function}
        self._bases: dict[tuple[int, int | None], Any] = {}
        # {(class id, concurrency groups): Ray's actor class}
        self._actor_classes: dict[tuple[int, tuple[tuple[str, int], ...]], Any] = {}

    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any], opts: TaskOptions
    ) -> list[ObjectRef]:
        call = self._ray_function(fn, opts)
        with raylite_errors():
            out = call.remote(*args, **kwargs)
        n = opts.num_returns
        # A generator task gives one thing: Ray's ObjectRefGenerator, or one ref ("dynamic").
        return [out] if n == 1 or isinstance(n, str) else [] if n == 0 else list(out)

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

    def create_actor(
        self, cls: ActorClass, args: tuple[Any, ...], kwargs: dict[str, Any], opts: ActorOptions
    ) -> ActorHandle:
        options = ray_actor_options(opts, cls.__name__)
        # Ray takes concurrency groups only where it makes the class, not in .options().
        groups = options.pop("concurrency_groups")
        key = (cls._cls_id, tuple(sorted(groups.items())))
        ray_class = self._actor_classes.get(key)
        if ray_class is None:
            _give_ray_the_method_options(cls)
            remote: Any = ray.remote  # its type hints lack concurrency_groups
            make = remote(concurrency_groups=groups) if groups else remote
            ray_class = self._actor_classes[key] = make(cls._cls)
        with raylite_errors():
            handle = ray_class.options(**options).remote(*args, **kwargs)
        return cast("ActorHandle", handle)

    def submit_actor_call(
        self,
        handle: ActorHandle,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        opts: MethodOptions,
    ) -> list[ObjectRef]:
        # Ray's handles call Ray themselves; only a raylite handle comes here, and such a
        # handle was made by a local session: its actor is not on the cluster.
        raise RaySystemError(
            f"{handle!r} belongs to an earlier raylite session (the local runtime), so its "
            "actor is gone: create the actor again after raylite.init(address=...)."
        )

    def kill_actor(self, handle: ActorHandle, no_restart: bool) -> None:
        with raylite_errors():
            ray.kill(cast(Any, handle), no_restart=no_restart)

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle:
        with raylite_errors():
            return cast("ActorHandle", ray.get_actor(name, namespace=namespace))

    def list_named_actors(self, all_namespaces: bool) -> list[tuple[str, str]]:
        named = ray.util.list_named_actors(all_namespaces=True)
        current = ray.get_runtime_context().namespace
        return [
            (entry["namespace"], entry["name"]) for entry in named
            if all_namespaces or entry["namespace"] == current
        ]  # fmt: skip

    def exit_actor(self) -> NoReturn:
        ray.actor.exit_actor()
        raise AssertionError("unreachable: ray.actor.exit_actor() raises")

    def create_placement_group(
        self, bundles: list[dict[str, float]], strategy: str, name: str
    ) -> Any:
        with raylite_errors():
            return ray.util.placement_group(bundles, strategy=strategy, name=name)

    def placement_group_ready(self, pg: Any) -> ObjectRef:
        return cast(ObjectRef, pg.ready())

    def remove_placement_group(self, pg: Any) -> None:
        with raylite_errors():
            ray.util.remove_placement_group(pg)

    def placement_group_table(self, pg: Any) -> dict[str, Any]:
        return cast("dict[str, Any]", ray.util.placement_group_table(pg))

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

    def timeline(self) -> list[dict[str, Any]]:
        return ray.timeline()  # type: ignore[no-any-return]

    def list_state(
        self, kind: str, filters: list[tuple[str, str, Any]] | None, limit: int | None,
        detail: bool,
    ) -> list[dict[str, Any]]:  # fmt: skip
        from ray.util import state  # needs ray[default]; imported only when asked for

        lister = getattr(state, f"list_{kind}")
        rows = lister(filters=filters, limit=limit or 10**9, detail=detail)
        return [
            dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r)  # type: ignore[arg-type]
            for r in rows
        ]

    def summarize_tasks(self) -> dict[str, Any]:
        from ray.util import state

        return state.summarize_tasks()  # type: ignore[no-any-return]

    def forget_after_fork(self) -> None:
        """Nothing of raylite's to let go of: Ray's connection follows Ray's fork rules."""

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


def ray_actor_options(opts: ActorOptions, class_name: str) -> dict[str, Any]:
    """The keywords of ``ray.remote``/``.options`` for an actor with ``opts``.

    Unset options (``None``) are left out, so that Ray's defaults apply: an actor that names
    no ``num_cpus`` needs a CPU to be placed and none while it runs, in both runtimes.

    Raises:
        ValueError: a raylite-only option with no Ray equivalent (the thread executor).
    """
    if opts.executor != "process":
        raise ValueError(
            f"The option executor={opts.executor!r} of actor {class_name} runs it on a thread "
            "of the driver process, which only raylite's local runtime does: on a Ray "
            "cluster every actor runs in a worker process. Remove the option."
        )
    options: dict[str, Any] = {
        "num_gpus": opts.num_gpus,
        "resources": dict(opts.resources),
        "max_restarts": opts.max_restarts,
        "max_task_retries": opts.max_task_retries,
        "max_pending_calls": opts.max_pending_calls,
        "get_if_exists": opts.get_if_exists,
        "concurrency_groups": dict(opts.concurrency_groups),
    }
    optional = {
        "num_cpus": opts.num_cpus,
        "max_concurrency": opts.max_concurrency,
        "name": opts.name,
        "namespace": opts.namespace,
        "lifetime": opts.lifetime,
        "allow_out_of_order_execution": opts.allow_out_of_order_execution,
    }
    options.update((key, value) for key, value in optional.items() if value is not None)
    options.update(_for_ray(opts.cluster_options))  # Ray's placement options
    return options


def _for_ray(options: Mapping[str, Any]) -> dict[str, Any]:
    """Ray's placement options with raylite's strategy objects made Ray's own."""
    out = dict(options)
    strategy = out.get("scheduling_strategy")
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        out["scheduling_strategy"] = ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy(
            cast(Any, strategy.placement_group), strategy.placement_group_bundle_index,
            strategy.placement_group_capture_child_tasks,
        )  # fmt: skip
    elif isinstance(strategy, NodeAffinitySchedulingStrategy):
        out["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            strategy.node_id, strategy.soft
        )
    return out


def _give_ray_the_method_options(cls: ActorClass) -> None:
    """Sets ``@raylite.method`` options on the methods as ``@ray.method`` would.

    Ray reads them from the functions when it makes its actor class; ``@raylite.method``
    marked these functions already, and the local runtime ignores Ray's marks.
    """
    for name, opts in cls._meta.methods.items():
        given: dict[str, Any] = {}
        if opts.num_returns != 1 and opts.num_returns != "streaming":  # not Ray's default
            given["num_returns"] = opts.num_returns
        if opts.concurrency_group is not None:
            given["concurrency_group"] = opts.concurrency_group
        fn = inspect.getattr_static(cls._cls, name, None)
        if given and inspect.isfunction(fn):
            ray.method(**given)(fn)


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
        "num_gpus": opts.num_gpus,
        "resources": dict(opts.resources),
        "num_returns": opts.num_returns,
        "max_retries": opts.max_retries,
        "retry_exceptions": list(retry) if isinstance(retry, tuple) else retry,
        "max_calls": 1 if opts.num_gpus else None,
        **_for_ray(opts.cluster_options),
    }
    if opts.name is not None:
        options["name"] = opts.name
    if opts.num_cpus is not None:  # None left out: Ray's default (an explicit None is 0
        options["num_cpus"] = opts.num_cpus  # CPUs inside a placement group bundle)
    return options
