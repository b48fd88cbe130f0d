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

Lifecycle: ``init``, ``shutdown`` and auto-init run one at a time (``lifecycle()``), so no
thread starts a session while another tears one down (the new fork server would inherit
the old one's socket, which then never sees EOF). A runtime serves the process that made
it: in a forked child ``current_or_none()`` is None (the child's first call starts a runtime
of its own, as in any process), and the child's copy of the parent's runtime is told to let
go of the parent's channels without touching the parent's session (``forget_after_fork``).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from ._object_ref import ObjectRef, set_unpickle_owner

if TYPE_CHECKING:
    from ._actor import ActorClass, ActorHandle
    from ._options import ActorOptions, MethodOptions, TaskOptions
    from ._remote_function import RemoteFunction

__all__ = ["Runtime", "current", "current_or_none", "lifecycle", "parent_pid", "set_current"]


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

    # in a child forked from the process it serves (see the module docstring)
    def forget_after_fork(self) -> None: ...


_lock = threading.RLock()  # init, shutdown and auto-init: one at a time
_current: Runtime | None = None
_pid = 0  # the process _current serves
# {a runtime this process inherited at a fork: the pid of the process it serves}
_parents: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def current_or_none() -> Runtime | None:
    """This process's runtime, or None (also in a child forked from a process that has one:
    ``_after_fork_in_child`` drops it there, so no ``getpid`` per call, ~1 us here)."""
    return _current


def set_current(rt: Runtime | None) -> None:
    """Installs ``rt`` as this process's runtime (``None`` after shutdown)."""
    global _current, _pid
    _current = rt
    _pid = os.getpid()


def lifecycle() -> threading.RLock:
    """The lock ``init``, ``shutdown`` and auto-init hold while they run."""
    return _lock


_closing: list[threading.Event] = []  # shutdowns under way on another thread (set: done)


def closing(done: threading.Event) -> None:
    """A shutdown goes on elsewhere (queued by a signal handler): the next session starts
    once ``done`` is set (see ``wait_closed``)."""
    _closing.append(done)


def wait_closed(timeout: float) -> None:
    """Waits for the shutdowns under way, so that no session starts while one goes down."""
    while _closing:
        _closing.pop(0).wait(timeout)


def current() -> Runtime:
    """The runtime serving this process, auto-initialized if none is (see above)."""
    rt = current_or_none()
    if rt is not None:
        return rt
    with _lock:
        rt = current_or_none()
        if rt is None:
            from ._api import init
            from ._ray import attached

            ray_runtime = attached()
            if ray_runtime is not None:
                set_current(ray_runtime)
            else:
                init()
            rt = current_or_none()
        assert rt is not None
        return rt


def _after_fork_in_child() -> None:
    """In a forked child: no runtime yet, and no lock held by a thread that is not here."""
    global _lock, _current
    _lock = threading.RLock()
    inherited, _current = _current, None
    if inherited is not None:
        _parents[inherited] = _pid
        inherited.forget_after_fork()


def parent_pid(rt: object) -> int | None:
    """The pid ``rt`` serves if this process inherited it at a fork, else None."""
    try:
        return _parents.get(rt)
    except TypeError:  # not weakly referenceable: not a runtime
        return None


os.register_at_fork(after_in_child=_after_fork_in_child)
set_unpickle_owner(current_or_none)
