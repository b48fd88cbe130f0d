"""The module-level API: ``init``, ``shutdown``, ``get``, ``put``, ``wait``, ``cancel``, ...

Each function checks its arguments (errors name the argument, the value and what is
allowed), then hands the call to ``_runtime.current()``. Names, signatures and defaults are
Ray's (https://docs.ray.io/en/latest/ray-core/api/core.html).
"""

from __future__ import annotations

import atexit
import inspect
import json
import math
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any, overload

from . import _ray, _runtime
from ._actor import ActorClass, ActorHandle
from ._object_ref import ObjectRef, ObjectRefGenerator, owner_of
from ._options import actor_options, check_amount, task_options, validate_resources
from ._remote_function import RemoteFunction
from .exceptions import RaySystemError

__all__ = [
    "init",
    "shutdown",
    "is_initialized",
    "remote",
    "get",
    "put",
    "wait",
    "cancel",
    "available_resources",
    "cluster_resources",
    "get_runtime_context",
    "get_gpu_ids",
    "get_actor",
    "kill",
    "RuntimeContext",
]

# Ray's init() keywords that mean nothing on one machine but are harmless to accept.
_IGNORED_INIT = {
    "configure_logging", "logging_level", "logging_format", "logging_config", "log_to_driver", "namespace",
    "job_config", "_temp_dir", "_system_config", "_node_ip_address", "labels",
    "enable_resource_isolation", "_metrics_export_port", "object_spilling_directory",
}  # fmt: skip


class InitInfo(dict):  # type: ignore[type-arg]
    """What ``init`` returns (Ray's RayContext is dict-like too)."""

    @property
    def dashboard_url(self) -> str | None:
        """The dashboard's ``host:port`` (as Ray's ``RayContext.dashboard_url``), or None."""
        return self.get("dashboard_url")

    def __enter__(self) -> InitInfo:
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown()

    def disconnect(self) -> None:
        shutdown()


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    local_mode: bool = False,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    dashboard_host: str | None = None,
    dashboard_port: int | None = None,
    **kwargs: Any,
) -> InitInfo:
    """Starts raylite in this process: worker processes on this machine, no server; or,
    given a Ray cluster's ``address``, runs everything on that cluster through Ray.

    Args:
        address: ``None`` (or ``"local"``) for the embedded runtime. Any address
            ``ray.init`` takes (``"auto"``, ``"host:port"``, ``"ray://host:10001"``) connects
            to that Ray cluster through the ``ray`` package (``pip install 'raylite[ray]'``);
            the other keywords then go to ``ray.init``, which checks them.
        num_cpus: CPUs tasks may reserve (default: ``os.cpu_count()``); fractions allowed.
        num_gpus: GPUs (default: detected); a fraction such as ``0.2`` caps GPU use
            (Ray rejects fractional totals, raylite accepts them).
        resources: custom resources, e.g. ``{"search": 4}`` to allow 4 concurrent users.
        object_store_memory: bytes the object store may hold.
        local_mode: run every task inline in this process (for debuggers).
        ignore_reinit_error: return quietly if raylite is already running.
        include_dashboard: serve the live dashboard (workers, resources, actors, the object
            store, a task stream and the timeline) on this machine. Off by default on the
            embedded runtime: no port is opened unless asked.
        dashboard_host: where the dashboard listens: ``"127.0.0.1"`` (the default) or
            another loopback address; it has no authentication, so nothing else is allowed.
        dashboard_port: its port; default 8265 (Ray's) or, if busy, the next free one;
            ``0`` for any free port. A port given and busy is an error.

    Returns:
        A dict-like context; usable as ``with raylite.init(): ...``. Its
        ``"dashboard_url"`` is ``"127.0.0.1:8265"`` (host:port, as Ray's) with the
        dashboard on, else ``None``.

    Raises:
        RuntimeError: already initialized (and ``ignore_reinit_error`` is false), or an
            unknown keyword.
        ValueError, TypeError: a bad value (the message names it).
        ImportError: an ``address`` was given but ``ray`` is not installed.
    """
    unknown = sorted(set(kwargs) - _IGNORED_INIT)
    if unknown and address in (None, "local"):  # ray.init checks its own keywords
        raise RuntimeError(
            f"Unknown keyword argument(s) to raylite.init(): {', '.join(unknown)}. "
            "See help(raylite.init) for the supported ones."
        )
    with _runtime.lifecycle():  # not while another thread shuts down or auto-inits
        return _init(
            address=address, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
            object_store_memory=object_store_memory, local_mode=local_mode,
            ignore_reinit_error=ignore_reinit_error, include_dashboard=include_dashboard,
            dashboard_host=dashboard_host, dashboard_port=dashboard_port, kwargs=kwargs,
        )  # fmt: skip


def _init(
    *, address: str | None, num_cpus: float | None, num_gpus: float | None,
    resources: dict[str, float] | None, object_store_memory: int | None, local_mode: bool,
    ignore_reinit_error: bool, include_dashboard: bool | None, dashboard_host: str | None,
    dashboard_port: int | None, kwargs: dict[str, Any],
) -> InitInfo:  # fmt: skip
    """``init`` once its keywords are known and the lifecycle lock is held."""
    _runtime.wait_closed(timeout=30)  # a shutdown a signal handler queued: see shutdown()
    if _runtime.current_or_none() is not None:
        if ignore_reinit_error:
            return InitInfo(session=_runtime.current().context()["session"])
        raise RuntimeError(
            "Maybe you called raylite.init twice by accident? This error can be suppressed "
            "by passing in 'ignore_reinit_error=True' or by calling 'raylite.shutdown()' "
            "prior to 'raylite.init()'."
        )
    if address is not None and address != "local":
        return _init_ray(
            address, local_mode, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
            object_store_memory=object_store_memory, include_dashboard=include_dashboard,
            dashboard_host=dashboard_host, dashboard_port=dashboard_port, **kwargs,
        )  # fmt: skip
    dashboard = _dashboard_options(include_dashboard, dashboard_host, dashboard_port, local_mode)
    cpus = float(os.cpu_count() or 1) if num_cpus is None else check_amount("num_cpus", num_cpus)
    gpus = _gpu_list(num_gpus)
    custom = validate_resources("resources", resources)
    if isinstance(object_store_memory, float) and object_store_memory.is_integer():
        object_store_memory = int(object_store_memory)  # 700e6, as Ray takes it
    if object_store_memory is not None and (
        isinstance(object_store_memory, bool)
        or not isinstance(object_store_memory, int)
        or object_store_memory <= 0
    ):
        raise ValueError(
            f"object_store_memory must be a positive number of bytes, got {object_store_memory!r}."
        )
    # The runtimes are imported here, not at `import raylite` (it stays ~50 ms): init pays
    # for them once, before the zygote forks, so workers start with them loaded.
    from ._local.inline import InlineRuntime
    from ._local.interrupts import deferred_sigint
    from ._local.runtime import LocalRuntime, RuntimeConfig
    from ._local.spill import spill_config

    session = uuid.uuid4().hex[:12]
    config = RuntimeConfig(
        num_cpus=float(cpus),
        gpus=gpus,
        resources=custom,
        object_store_memory=object_store_memory,
        max_workers=_max_workers(cpus),
        session=session,
        namespace=kwargs.get("namespace") or "default",
        temp_dir=kwargs.get("_temp_dir"),
        dashboard_host=dashboard[0] if dashboard else None,
        dashboard_port=dashboard[1] if dashboard else None,
        spilling=spill_config(kwargs.get("object_spilling_directory"), kwargs.get("_system_config")),
    )
    if local_mode:
        _runtime.set_current(InlineRuntime(config))
        return InitInfo(session=session, address="local", num_cpus=cpus, dashboard_url=None)
    with deferred_sigint():  # Ctrl-C lands once the runtime is installed (so owned)
        rt = LocalRuntime(config)
        _runtime.set_current(rt)
    return InitInfo(
        session=session, address="local", num_cpus=cpus, dashboard_url=rt.dashboard_url
    )


def _dashboard_options(
    include: bool | None, host: str | None, port: int | None, local_mode: bool
) -> tuple[str, int | None] | None:
    """``(host, port)`` of the dashboard to serve, or None; checks the values."""
    if include is not None and not isinstance(include, bool):
        raise TypeError(f"include_dashboard must be True, False or None, got {include!r}.")
    if host is not None:
        if not isinstance(host, str):
            raise TypeError(f"dashboard_host must be a str such as '127.0.0.1', got {host!r}.")
        from ._local.dashboard import check_host  # lazily: http.server costs ~40 ms

        check_host(host)
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
    ):
        raise ValueError(
            f"dashboard_port must be a port number from 0 to 65535 (0: any free port), "
            f"got {port!r}."
        )
    if not include:
        return None
    if local_mode:
        raise ValueError(
            "include_dashboard=True shows worker processes, and local_mode=True runs every "
            "task inline in this process (there are none): pass one or the other."
        )
    return host or "127.0.0.1", port


def _init_ray(address: str, local_mode: bool, **options: Any) -> InitInfo:
    """``init(address=...)``: serves everything from the Ray cluster at ``address``."""
    if local_mode:
        raise ValueError(
            f"local_mode=True runs every task inline in this process, so it cannot be combined "
            f"with running on the Ray cluster at address={address!r}: pass one or the other."
        )
    rt = _ray.connect(address, **{k: v for k, v in options.items() if v is not None})
    _runtime.set_current(rt)
    return InitInfo(
        session=rt.context()["session"], address=address, dashboard_url=rt.dashboard_url
    )


def _max_workers(cpus: float) -> int:
    """The cap on worker processes: ``RAYLITE_MAX_WORKERS``, else max(64, 4 x CPUs). Each
    task blocked in ``get`` holds one, so the cap bounds runaway nested recursion."""
    default = max(64, 4 * int(math.ceil(cpus)))
    from ._local.env import env_int

    return env_int("RAYLITE_MAX_WORKERS", default, 1, "the most worker processes raylite may start")


def _gpu_list(num_gpus: float | None) -> list[float]:
    """Per-GPU capacities: ``[1, 1]`` for two GPUs, ``[0.2]`` for a fractional total."""
    if num_gpus is None:
        return [1.0] * _detect_gpus()
    total = check_amount("num_gpus", num_gpus)
    whole = int(total)
    return [1.0] * whole + ([round(total - whole, 4)] if total - whole > 1e-9 else [])


def _detect_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len([d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()])
    except OSError:
        return 0


def shutdown() -> None:
    """Stops raylite: ends every worker process and frees every object. Safe to repeat,
    and to call from any thread, a signal handler or ``atexit``.

    Other threads' calls meanwhile raise ``RaySystemError`` (the session is shut down);
    a call after it returns starts a new session, as any first call does. In a process
    forked after ``init`` it does nothing to the parent's session.
    """
    with _runtime.lifecycle():  # no auto-init starts a session while this one goes down
        rt = _runtime.current_or_none()
        if rt is None:
            return
        try:
            rt.shutdown()
        finally:
            _runtime.set_current(None)


atexit.register(shutdown)


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """Every finished task and actor call (name, process, thread or actor, start, duration)
    as Chrome trace events: open the file in https://ui.perfetto.dev or chrome://tracing.

    Args:
        filename: write the events there as JSON (and return None).

    Returns:
        The events, if no ``filename`` was given.

    Example::

        raylite.timeline("trace.json")   # then load trace.json in Perfetto
    """
    events = _runtime.current().timeline()
    if filename is None:
        return events
    with open(filename, "w") as f:
        json.dump(events, f)
    return None


def is_initialized() -> bool:
    """True between ``init`` (or the first auto-init) and ``shutdown``."""
    return _runtime.current_or_none() is not None


@overload
def remote(__function: Callable[..., Any]) -> RemoteFunction: ...


@overload
def remote(**options: Any) -> Callable[[Callable[..., Any]], RemoteFunction]: ...


def remote(*args: Any, **options: Any) -> Any:
    """Makes a function a remote function (a task when called with ``.remote()``).

    Use bare (``@raylite.remote``) or with options (``@raylite.remote(num_cpus=0.5)``).

    Raises:
        TypeError: misuse of the decorator (the message shows the right form).
        ValueError: an unknown option or a bad value.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args or not options:  # `@remote(x)` or `@remote()`: Ray rejects both
        raise TypeError(
            "The @raylite.remote decorator must be applied either with no arguments and no "
            "parentheses, for example '@raylite.remote', or it must be applied using some "
            "of the arguments, for example '@raylite.remote(num_cpus=1)'."
        )
    _check_option_names(options)
    return lambda target: _make_remote(target, options)


def _check_option_names(options: dict[str, Any]) -> None:
    """Rejects at once a keyword that neither functions nor classes take (a typo); the
    values are checked when the decorator is applied and the kind is known."""
    try:
        task_options(**options)
    except ValueError as task_error:
        if "Invalid option keyword" not in str(task_error):
            return
        try:
            actor_options(**options)
        except ValueError as actor_error:
            if "Invalid option keyword" in str(actor_error):
                raise task_error from None
        except TypeError:
            pass
    except TypeError:
        pass


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if isinstance(target, type):
        return ActorClass(target, actor_options(**options))
    if not callable(target):
        raise TypeError(f"@raylite.remote needs a function or a class, got {target!r}.")
    if inspect.iscoroutinefunction(target):  # Ray's check and message
        raise ValueError(
            "'async def' should not be used for remote tasks. You can wrap the async function "
            "with `asyncio.run(f())`. See more at: "
            "https://docs.ray.io/en/latest/ray-core/actors/async_api.html"
        )
    return RemoteFunction(target, task_options(**options))


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kills an actor at once: its queued and running calls fail with ``ActorDiedError``.

    With ``no_restart=False`` it is restarted if ``max_restarts`` allows.
    """
    if not isinstance(actor, ActorHandle):
        raise ValueError(
            f"raylite.kill() only supports actors (use raylite.cancel() for tasks); got "
            f"{type(actor).__name__} {actor!r}."
        )
    _runtime.current().kill_actor(actor, no_restart)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor created with ``options(name=name)``.

    Raises:
        ValueError: no live actor has that name in that namespace.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() needs an actor name (a non-empty str), got {name!r}.")
    return _runtime.current().get_actor(name, namespace)


def get(object_refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None) -> Any:
    """Waits for and returns the value(s) of ObjectRef(s).

    Args:
        object_refs: one ObjectRef, or a list of them.
        timeout: seconds to wait at most; ``None`` waits as long as it takes.

    Returns:
        The value, or a list of values in the order of ``object_refs``.

    Raises:
        GetTimeoutError: not ready within ``timeout``.
        RayTaskError: the task raised (also an instance of the user's exception class).
        WorkerCrashedError, TaskCancelledError, ObjectLostError: as named.
    """
    _check_timeout(timeout)
    if isinstance(object_refs, ObjectRef):
        return _owner_of([object_refs]).get([object_refs], timeout)[0]
    if isinstance(object_refs, ObjectRefGenerator):
        return object_refs  # as Ray: iterate it for the values' refs
    if not isinstance(object_refs, (list, tuple)):
        raise ValueError(
            f"Invalid type of object refs, {type(object_refs).__name__}, is given. "
            "'object_refs' must either be an ObjectRef or a list of ObjectRefs."
        )
    _check_refs("get", object_refs)
    if not object_refs:
        return []
    return _owner_of(object_refs).get(list(object_refs), timeout)


def put(value: Any, *, _owner: Any = None) -> ObjectRef:
    """Stores ``value`` once; pass the returned ObjectRef to many tasks instead of the value."""
    return _runtime.current().put(value)


def wait(
    ray_waitables: Sequence[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Waits until ``num_returns`` of the refs are ready or ``timeout`` passes.

    Returns:
        ``(ready, not_ready)``, each in the order of ``ray_waitables``; ``ready`` has at
        most ``num_returns`` refs.
    """
    if isinstance(ray_waitables, ObjectRef) or not isinstance(ray_waitables, (list, tuple)):
        raise TypeError(
            f"wait() expected a list of ObjectRef, got {type(ray_waitables).__name__}. "
            "Wrap a single ref in a list: raylite.wait([ref])."
        )
    # An ObjectRefGenerator is ready once its next ref is (or it has ended), as in Ray.
    refs = [g.completed() if isinstance(g, ObjectRefGenerator) else g for g in ray_waitables]
    _check_refs("wait", refs)
    _check_timeout(timeout)
    if not ray_waitables:  # as Ray: nothing to wait for, whatever num_returns says
        return [], []
    if len(set(ray_waitables)) != len(ray_waitables):
        raise ValueError("Wait requires a list of unique object refs.")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns!r}: must be >= 1.")
    if num_returns > len(ray_waitables):
        raise ValueError(
            f"Invalid number of objects to return {num_returns}/{len(ray_waitables)}: "
            "num_returns cannot be greater than the number of ray_waitables provided to wait."
        )
    return _owner_of(refs).wait(list(ray_waitables), num_returns, timeout)


def cancel(
    ray_waitable: ObjectRef | ObjectRefGenerator, *, force: bool = False, recursive: bool = True
) -> None:
    """Cancels the task that produces ``ray_waitable`` (a ref, or a generator task's
    ObjectRefGenerator).

    A queued task never runs; a running one is interrupted (``force=True`` kills its worker
    process). ``get`` on its result then raises ``TaskCancelledError``. ``recursive``
    cancels the tasks it submitted too. Cancelling a finished task does nothing.
    """
    if isinstance(ray_waitable, ObjectRefGenerator):  # its task
        ray_waitable = ray_waitable.completed()
    if not isinstance(ray_waitable, ObjectRef):
        raise TypeError(
            f"cancel() expected an ObjectRef, got {type(ray_waitable).__name__} {ray_waitable!r}."
        )
    _owner_of([ray_waitable]).cancel(ray_waitable, force, recursive)


def available_resources() -> dict[str, float]:
    """Resources free right now, by name (``{"CPU": 1.5, "GPU": 1.0, ...}``)."""
    return _runtime.current().available_resources()


def cluster_resources() -> dict[str, float]:
    """Total resources of this runtime, by name."""
    return _runtime.current().cluster_resources()


class RuntimeContext:
    """Who and where the caller is: driver or task, ids, assigned GPUs.

    Ids are hex strings; on a Ray cluster they are Ray's own.
    """

    __module__ = "raylite.runtime_context"

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info

    def get_job_id(self) -> str:
        return str(self._info["session"])

    def get_node_id(self) -> str:
        return str(self._info.get("node_id", self._info["session"]))  # one machine: one node

    def get_worker_id(self) -> str:
        return _hex(self._info["worker_id"])

    def get_task_id(self) -> str | None:
        task_id = self._info["task_id"]
        return None if task_id is None else _hex(task_id, 56)

    def get_task_name(self) -> str | None:
        return self._info["task_name"]

    def get_actor_id(self) -> str | None:
        actor_id = self._info.get("actor_id")
        return None if actor_id is None else f"{actor_id:056x}"

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        return {"GPU": [str(i) for i in self._info["gpu_ids"]]}

    @property
    def namespace(self) -> str:
        return str(self._info.get("namespace") or "default")

    @property
    def was_current_actor_reconstructed(self) -> bool:
        return False


def _hex(value: int | str, digits: int = 0) -> str:
    """An id in hex: raylite's runtimes report ints, Ray's ids come in hex already."""
    return value if isinstance(value, str) else f"{value:0{digits}x}"


def get_runtime_context() -> RuntimeContext:
    """The context of the caller (the driver, or the task this runs in)."""
    return RuntimeContext(_runtime.current().context())


def get_gpu_ids() -> list[int]:
    """GPU ids assigned to the calling task or actor (``[]`` in the driver)."""
    return [int(i) if str(i).isdigit() else i for i in _runtime.current().context()["gpu_ids"]]


def _owner_of(refs: Sequence[ObjectRef]) -> _runtime.Runtime:
    """The current runtime, checking that ``refs`` belong to it (not to an old session, nor
    to the session of the process this one was forked from)."""
    rt = _runtime.current_or_none()
    if rt is not None:  # the common case, checked in one pass: every ref is the runtime's
        for r in refs:
            if (r._owner if type(r) is ObjectRef else owner_of(r)) is not rt:
                break
        else:
            return rt
    for r in refs:
        parent = _runtime.parent_pid(owner_of(r))
        if parent is not None:
            raise RaySystemError(
                f"{r!r} belongs to the raylite session of process {parent}, which this "
                "process was forked from: a forked process has no access to its parent's "
                "objects (it starts a session of its own on its first raylite call). Pass "
                "the values themselves to the child, or call raylite from the parent."
            )
    rt = _runtime.current()
    for r in refs:
        if owner_of(r) is not rt:
            raise RaySystemError(
                f"{r!r} belongs to an earlier raylite session (shut down since), so its value "
                "is gone: call raylite.init() and recompute it in the new session."
            )
    return rt


def _check_timeout(timeout: float | None) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ValueError(f"'timeout' must be a non-negative number or None, got {timeout!r}.")


def _check_refs(fn: str, refs: Sequence[Any]) -> None:
    for r in refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(
                f"{fn}() expected a list of ObjectRef, but it contains "
                f"{type(r).__name__} {r!r}. Pass the refs returned by .remote() or put()."
            )
