"""The small interface every runtime implements, and which one serves this process now.

The API layer (``_api.py``, ``_remote_function.py``) builds calls and hands them to
``current()``; it knows nothing of processes or sockets. Implementations:

- ``_local.runtime.LocalRuntime``: the embedded driver (worker processes + object store);
- ``_local.worker.WorkerRuntime``: inside a worker process, forwarding to the driver;
- ``_local.inline.InlineRuntime``: ``init(local_mode=True)``, everything inline;
- ``_ray.runtime.RayRuntime``: ``init(address=...)``, forwarding to the real ``ray``.

``current()`` auto-initializes on first use, as Ray does (``ray.get``/``f.remote()``
before ``ray.init()`` start a local Ray): it follows Ray if this process is connected to it
(a Ray worker running a task, or a driver that called ``ray.init()``), else starts the local
runtime with defaults.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from ._object_ref import ObjectRef, set_unpickle_owner

if TYPE_CHECKING:
    from ._actor import ActorClass, ActorHandle
    from ._options import ActorOptions, MethodOptions, TaskOptions
    from ._remote_function import RemoteFunction

__all__ = ["Runtime", "current", "current_or_none", "set_current"]


class Runtime(Protocol):
    """What the API layer needs from a runtime."""

    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any], opts: TaskOptions
    ) -> list[ObjectRef]: ...

    def create_actor(
        self, cls: ActorClass, args: tuple[Any, ...], kwargs: dict[str, Any], opts: ActorOptions
    ) -> ActorHandle: ...

    def submit_actor_call(
        self,
        handle: ActorHandle,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        opts: MethodOptions,
    ) -> list[ObjectRef]: ...

    def kill_actor(self, handle: ActorHandle, no_restart: bool) -> None: ...

    def exit_actor(self) -> NoReturn: ...  # raylite.actor.exit_actor(), in an actor method

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle: ...

    def list_named_actors(self, all_namespaces: bool) -> list[tuple[str, str]]: ...

    def put(self, value: Any) -> ObjectRef: ...

    # placement groups (raylite.util.placement_group)
    def create_placement_group(
        self, bundles: list[dict[str, float]], strategy: str, name: str
    ) -> Any: ...

    def placement_group_ready(self, pg: Any) -> ObjectRef: ...

    def remove_placement_group(self, pg: Any) -> None: ...

    def placement_group_table(self, pg: Any) -> dict[str, Any]: ...

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]: ...

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]: ...

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None: ...

    def available_resources(self) -> dict[str, float]: ...

    def cluster_resources(self) -> dict[str, float]: ...

    def context(self) -> dict[str, Any]: ...

    # observability: raylite.timeline() and raylite.util.state
    def timeline(self) -> list[dict[str, Any]]: ...

    def list_state(
        self, kind: str, filters: list[tuple[str, str, Any]] | None, limit: int | None,
        detail: bool,
    ) -> list[dict[str, Any]]: ...  # fmt: skip

    def summarize_tasks(self) -> dict[str, Any]: ...

    def shutdown(self) -> None: ...

    # ObjectRef's needs (see _object_ref._RefOwner)
    def add_ref(self, oid: int) -> None: ...

    def release(self, oid: int) -> None: ...

    def future(self, oid: int) -> concurrent.futures.Future[Any]: ...


_lock = threading.RLock()
_current: Runtime | None = None


def current_or_none() -> Runtime | None:
    return _current


def set_current(rt: Runtime | None) -> None:
    """Installs ``rt`` as this process's runtime (``None`` after shutdown)."""
    global _current
    _current = rt


def current() -> Runtime:
    """The runtime serving this process, auto-initialized if none is (see above)."""
    rt = _current
    if rt is not None:
        return rt
    with _lock:
        if _current is None:
            from ._api import init
            from ._ray import attached

            ray_runtime = attached()
            if ray_runtime is not None:
                set_current(ray_runtime)
            else:
                init()
        assert _current is not None
        return _current


set_unpickle_owner(current_or_none)
