"""Validation of ``@remote(...)`` / ``.options(...)`` keywords, with errors that teach.

Ray's option names are the spec. Each keyword is one of:

- supported: validated here and honoured by the runtimes;
- Ray's placement options (``scheduling_strategy``, placement groups, ``runtime_env``,
  ``memory``, ``accelerator_type``, ...): kept as given in ``cluster_options`` for a Ray
  cluster, and read into :class:`LocalPlacement` for this machine: ``"SPREAD"`` is a no-op
  here, node affinity must name this node, a placement group's bundles are reserved here,
  ``env_vars`` are set in the worker, ``accelerator_type`` is a resource as in Ray;
- a Ray option the local runtime cannot honour (``runtime_env={"pip": ...}``,
  ``label_selector``, ...): the local runtime rejects it at ``.remote()``
  (:func:`check_local`) with a message saying so and what to do, never silently dropping it;
- unknown: rejected with the list of valid names (a typo must not pass).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ._placement import (
    NodeAffinitySchedulingStrategy,
    PlacementGroup,
    PlacementGroupSchedulingStrategy,
)

_T = TypeVar("_T")

__all__ = [
    "ACCELERATOR_PREFIX",
    "ActorOptions",
    "LocalPlacement",
    "MethodOptions",
    "TaskOptions",
    "actor_options",
    "check_amount",
    "check_local",
    "is_generator_function",
    "method_options",
    "resolve_num_returns",
    "task_options",
    "validate_resources",
]

_NOT_LOCAL = {
    "label_selector": "label selectors pick among a cluster's nodes",
    "object_store_memory": "per-task object store reservations are Ray's",
    "max_calls": "workers are not recycled after N calls",
    "fallback_strategy": "fallback strategies pick among a cluster's nodes",
    "_metadata": "metadata is for Ray's internal libraries",
}
# What the runtime_env keys other than env_vars need: a cluster's per-job installs.
_RUNTIME_ENV_WHY = "it installs code or files per job, which only a Ray cluster does"
NOT_LOCAL_KEYS = frozenset(_NOT_LOCAL) | {
    "scheduling_strategy", "enable_task_events", "runtime_env", "memory", "accelerator_type",
    "placement_group", "placement_group_bundle_index", "placement_group_capture_child_tasks",
}  # fmt: skip
ACCELERATOR_PREFIX = "accelerator_type:"  # Ray's resource name for accelerator_type=X


@dataclass(frozen=True)
class LocalPlacement:
    """What Ray's placement options (kept as given in ``cluster_options``) mean on this
    machine. Made when the options are validated; the local runtime reads it at
    ``.remote()`` (:func:`check_local` raises ``refusal``)."""

    env_vars: Mapping[str, str] = field(default_factory=dict)  # runtime_env={"env_vars": ...}
    resources: Mapping[str, float] = field(default_factory=dict)  # accelerator_type's
    memory: float = 0.0  # bytes (Ray's logical memory resource)
    node_id: str | None = None  # a hard NodeAffinitySchedulingStrategy's node
    placement_group: PlacementGroup | None = None
    bundle_index: int = -1
    refusal: str | None = None  # why the local runtime cannot honour these options


def _env_vars(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"runtime_env['env_vars'] must be of type Dict[str, str], got {type(value)}."
        )
    for key, var in value.items():
        if not isinstance(key, str) or not isinstance(var, str):
            bad, what = (key, "key") if not isinstance(key, str) else (var, "value")
            raise TypeError(
                f"runtime_env['env_vars'] must be of type Dict[str, str], but the {what} "
                f"{bad!r} is of type {type(bad)}."
            )
    return dict(value)


def _local_placement(kind: str, cluster: Mapping[str, Any]) -> LocalPlacement:
    """Validates Ray's placement options (as Ray does when they are given) and reads what
    they mean here; what this machine cannot honour becomes the ``refusal``.

    Raises:
        ValueError, TypeError: a value Ray refuses too (the message says which).
    """
    out: dict[str, Any] = {}
    refusals: list[str] = []

    def refuse(key: str, value: Any, why: str) -> None:
        refusals.append(
            f"The {kind} option {key}={value!r} is not supported by raylite's local runtime "
            f"({why}). Remove it, or run on a Ray cluster with raylite.init(address=...)."
        )

    for key, value in cluster.items():
        if key == "scheduling_strategy":
            _strategy(value, out, functools.partial(refuse, "scheduling_strategy", value))
        elif key == "placement_group":
            if isinstance(value, PlacementGroup):
                out["placement_group"] = value
            elif value != "default":
                refuse(key, value, "it takes a PlacementGroup from raylite.util.placement_group")
        elif key == "placement_group_bundle_index":
            out["bundle_index"] = _int(key, -1)(value)
        elif key == "placement_group_capture_child_tasks":
            _bool(key)(value)
        elif key == "enable_task_events":
            _bool(key)(value)
        elif key == "runtime_env":
            if not isinstance(value, Mapping):
                raise TypeError(f"runtime_env must be a dict, got {type(value).__name__}.")
            for env_key, env_value in value.items():
                if env_key == "env_vars":
                    out["env_vars"] = _env_vars(env_value)
                elif env_value is not None:
                    refuse(key, value, f"runtime_env key {env_key!r}: {_RUNTIME_ENV_WHY}; "
                                       "only 'env_vars' is set per task here")  # fmt: skip
        elif key == "memory":
            out["memory"] = _request("memory", value)
        elif key == "accelerator_type":
            if not isinstance(value, str) or not value:
                raise TypeError(f"accelerator_type must be a str such as 'A100', got {value!r}.")
            out["resources"] = {ACCELERATOR_PREFIX + value: 0.001}  # Ray's request for it
        else:
            refuse(key, value, _NOT_LOCAL.get(key, "Ray's own option"))
    return LocalPlacement(**out, refusal=refusals[0] if refusals else None)


def _strategy(value: Any, out: dict[str, Any], refuse: Callable[[str], None]) -> None:
    """Reads a ``scheduling_strategy`` into ``out`` (Ray's check of its value)."""
    if value is None or value in ("DEFAULT", "SPREAD"):
        return  # one machine: nothing to spread over
    if isinstance(value, PlacementGroupSchedulingStrategy):
        out["placement_group"] = value.placement_group
        out["bundle_index"] = _int("placement_group_bundle_index", -1)(
            value.placement_group_bundle_index
        )
    elif isinstance(value, NodeAffinitySchedulingStrategy):
        if not value.soft:
            out["node_id"] = value.node_id
    elif isinstance(value, str):
        raise ValueError(
            f"Invalid scheduling_strategy value {value}. Valid values are [\"DEFAULT\" | "
            '"SPREAD" | PlacementGroupSchedulingStrategy | NodeAffinitySchedulingStrategy]'
        )
    else:
        refuse(
            "raylite knows \"DEFAULT\", \"SPREAD\" and the strategies of "
            "raylite.util.scheduling_strategies"
        )


def check_amount(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def validate_resources(name: str, value: Any) -> dict[str, float]:
    """Checks a ``resources={...}`` mapping: names to amounts, without CPU/GPU."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of resource name to amount, got {value!r}.")
    out: dict[str, float] = {}
    for key, amount in value.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{name} keys must be non-empty strings, got {key!r}.")
        if key in ("CPU", "GPU"):
            raise ValueError(
                f"Use the 'num_cpus' and 'num_gpus' keyword instead of '{key}' in '{name}'."
            )
        out[key] = check_amount(f"{name}[{key!r}]", amount)
    return out


def _type_error(name: str, types: tuple[type, ...], value: Any) -> TypeError:
    """Ray's wording for a keyword of the wrong type, with the value given."""
    return TypeError(
        f"The type of keyword '{name}' must be {types}, but received type {type(value)} "
        f"({value!r})."
    )


# Ray's wording of the values an integer keyword accepts, by its lowest value.
_ACCEPTS = {
    -1: "None, 0, -1 or a positive integer, where -1 represents infinity",
    0: "None, 0 or a positive integer",
}


def _int(name: str, low: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(name, (int, type(None)), value)
        if value < low:
            accepts = _ACCEPTS.get(low, f"None or an integer >= {low}")
            raise ValueError(f"The keyword '{name}' only accepts {accepts}; got {value}.")
        return value

    return check


_RESOURCE_UNIT = 1e-4  # Ray's granularity of resource amounts


def _request(name: str, value: Any) -> float:
    """An amount a task or actor asks for: a number >= 0 that Ray's resource unit can hold
    (0.00001 CPUs would round to nothing)."""
    amount = check_amount(name, value)
    if amount and int(amount / _RESOURCE_UNIT) == 0:
        raise ValueError(
            f"The precision of the fractional quantity of resource {name} cannot go beyond "
            f"{_RESOURCE_UNIT}: got {value!r}. Ask for at least {_RESOURCE_UNIT}, or 0."
        )
    return amount


def _request_resources(value: Any) -> dict[str, float]:
    amounts = validate_resources("resources", value)
    for key, amount in amounts.items():
        _request(key, amount)
    return amounts


def _bool(name: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}.")
        return value

    return check


def _retry_exceptions(value: Any) -> bool | tuple[type[BaseException], ...]:
    if isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        return tuple(value)
    raise TypeError(
        f"retry_exceptions must be a bool or a list of exception classes, got {value!r}."
    )


def _num_returns(value: Any) -> int | str | None:
    """An int >= 0, ``"streaming"``/``"dynamic"`` (generators), or None (Ray's default:
    ``"streaming"`` for a generator function, else 1; see :func:`resolve_num_returns`)."""
    if value is None or value in ("dynamic", "streaming"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _type_error("num_returns", (int, str, type(None)), value)
    if isinstance(value, str) or value < 0:
        raise ValueError(
            "The keyword 'num_returns' only accepts None, a non-negative integer, "
            f"'streaming' (for generators), or 'dynamic'; got {value!r}."
        )
    return value


def is_generator_function(fn: Any) -> bool:
    """Whether ``fn`` yields (a generator or async generator function)."""
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def resolve_num_returns(num_returns: int | str | None, is_generator: bool, what: str) -> int | str:
    """``num_returns`` as Ray settles it: None is ``"streaming"`` for a generator function
    (sync or async) and 1 otherwise.

    Raises:
        ValueError: ``"streaming"``/``"dynamic"`` on a function that does not ``yield``.
    """
    if num_returns is None:
        return "streaming" if is_generator else 1
    if isinstance(num_returns, str) and not is_generator:
        raise ValueError(
            f"num_returns={num_returns!r} can only be used with generator functions "
            f"(functions that use 'yield'), and {what} is not one: remove the option, or "
            "make it yield its results."
        )
    return num_returns


def _name(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"name must be a str, got {value!r}.")
    return value


def _executor(value: Any) -> str:
    if value not in ("process", "thread"):
        raise ValueError(
            f"executor must be 'process' (CPU-bound work) or 'thread' (I/O-bound work), "
            f"got {value!r}."
        )
    return str(value)


@dataclass(frozen=True)
class TaskOptions:
    """The validated options of a remote function (Ray's defaults)."""

    num_cpus: float | None = None  # None: 1 for a process task, 0 for a thread task
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    # None until RemoteFunction settles it (resolve_num_returns); then an int, "streaming"
    # (an ObjectRefGenerator) or "dynamic" (one ref to a DynamicObjectRefGenerator)
    num_returns: Any = None
    max_retries: int = 3
    retry_exceptions: bool | tuple[type[BaseException], ...] = False
    name: str | None = None
    executor: str = "process"
    # Ray's placement options, as given ({"placement_group": pg, ...}): a Ray cluster
    # honours them; ``local`` says what they mean on this machine.
    cluster_options: Mapping[str, Any] = field(default_factory=dict)
    local: LocalPlacement = field(default_factory=LocalPlacement)

    @property
    def cpus(self) -> float:
        """CPUs the task reserves: as given, else Ray's 1 (a thread task waits on I/O, so
        it reserves none unless asked)."""
        if self.num_cpus is not None:
            return self.num_cpus
        return 0.0 if self.executor == "thread" else 1.0

    def derived(self, key: str, make: Callable[[], _T]) -> _T:
        """``make()``, computed once per options object and kept on it (not pickled, not
        compared): what a runtime derives from the options, such as its scheduler request
        or their pickled form.

        Kept here rather than in a runtime's cache keyed by ``id(options)``: a dead options
        object hands its id on to the next one (which then got the other call's options),
        and such a cache keeps every options object ever used alive.
        """
        memo: dict[str, Any] = self.__dict__.setdefault("_derived", {})  # frozen: no setattr
        try:
            return memo[key]  # type: ignore[no-any-return]
        except KeyError:
            value = memo[key] = make()
            return value

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_derived", None)  # derived values belong to this process's runtime
        return state


_TASK_CHECKS: dict[str, Callable[[Any], Any]] = {
    "num_cpus": lambda v: _request("num_cpus", v),
    "num_gpus": lambda v: _request("num_gpus", v),
    "resources": _request_resources,
    "num_returns": _num_returns,
    "max_retries": _int("max_retries", -1),
    "retry_exceptions": _retry_exceptions,
    "name": _name,
    "executor": _executor,
}


def check_local(opts: TaskOptions | ActorOptions) -> None:
    """Rejects the Ray options in ``opts`` that the local runtime cannot honour.

    The local runtimes call this when they first meet an options object (at ``.remote()``);
    ``@remote(...)`` accepts these options since a Ray cluster honours them.

    Raises:
        ValueError: names the option, why it needs a cluster, and what to do.
    """
    local = opts.local
    if local.refusal is not None:
        raise ValueError(local.refusal)
    if local.env_vars and opts.executor == "thread":
        raise ValueError(
            "runtime_env={'env_vars': ...} cannot be set for executor='thread': such tasks "
            "and actors run on threads of the driver process, whose environment all of its "
            "threads share. Drop executor='thread', or set the variables in the driver."
        )


def task_options(base: TaskOptions | None = None, **kwargs: Any) -> TaskOptions:
    """Validates ``kwargs`` and merges them into ``base`` (Ray's defaults if ``None``).

    Ray options that only a cluster honours are kept as given (``None`` unsets one); Ray
    checks them on a cluster, :func:`check_local` on the local runtime.

    Raises:
        ValueError: an unknown keyword or a bad value.
        TypeError: a value of the wrong type.
    """
    valid = sorted(_TASK_CHECKS)
    changes: dict[str, Any] = {}
    cluster: dict[str, Any] | None = None
    for key, value in kwargs.items():
        check = _TASK_CHECKS.get(key)
        if check is None:
            if key in NOT_LOCAL_KEYS:
                if cluster is None:
                    cluster = dict(base.cluster_options) if base else {}
                if key == "max_calls" and value is not None:
                    _int("max_calls", 0)(value)  # a bad value fails here on any runtime
                cluster[key] = value
                continue
            raise ValueError(
                f"Invalid option keyword {key!r} for remote functions. "
                f"Valid ones are {', '.join(valid)}."
            )
        if key == "max_retries" and value is None:
            continue
        changes[key] = check(value)
    if cluster is not None:
        changes["cluster_options"] = {k: v for k, v in cluster.items() if v is not None}
        changes["local"] = _local_placement("remote function", changes["cluster_options"])
    return replace(base or TaskOptions(), **changes)


def _lifetime(value: Any) -> str | None:
    if value not in (None, "detached", "non_detached"):
        raise ValueError(
            f"lifetime must be None, 'detached' or 'non_detached', got {value!r}: a detached "
            "actor outlives its handles (until kill() or shutdown())."
        )
    return None if value == "non_detached" else value


def _concurrency_groups(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
        for k, v in value.items()
    ):
        raise TypeError(
            "concurrency_groups must be a dict of group name to max concurrency (int >= 1), "
            f'e.g. {{"io": 2, "compute": 4}}; got {value!r}.'
        )
    return dict(value)


def _max_concurrency(value: Any) -> int | None:
    return None if value is None else _int("max_concurrency", 1)(value)


@dataclass(frozen=True)
class ActorOptions:
    """The validated options of an actor class (Ray's defaults).

    ``num_cpus`` is ``None`` unless given: such an actor reserves nothing while it runs
    (Ray: 1 CPU to schedule, 0 to run) and is packed into a shared host process. An actor
    that asks for CPUs, GPUs or custom resources gets a process of its own holding them.
    """

    num_cpus: float | None = None
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    max_restarts: int = 0
    max_task_retries: int = 0
    max_concurrency: int | None = None  # None: 1, or 1000 for an async actor
    max_pending_calls: int = -1
    name: str | None = None
    namespace: str | None = None
    get_if_exists: bool = False
    lifetime: str | None = None
    concurrency_groups: Mapping[str, int] = field(default_factory=dict)
    executor: str = "process"
    # Ray's placement options, as given (see TaskOptions.cluster_options).
    cluster_options: Mapping[str, Any] = field(default_factory=dict)
    local: LocalPlacement = field(default_factory=LocalPlacement)

    allow_out_of_order_execution: bool | None = None  # None: True for async/threaded actors

    @property
    def dedicated(self) -> bool:
        """Whether the actor gets a process of its own: it reserves whole CPUs, or GPUs
        (``CUDA_VISIBLE_DEVICES`` is per process), or sets environment variables (a
        process's environment is shared by all it hosts). Every other actor, one with a
        fraction of a CPU, custom resources or a placement group's bundle included, is
        packed into a shared host process and holds what it reserves there, so actors never
        use up the worker processes."""
        return bool(self.num_gpus or (self.num_cpus or 0) >= 1 or self.local.env_vars)

    @property
    def names_resources(self) -> bool:
        """Whether any resource is given (``num_cpus=0`` and ``accelerator_type`` count): as
        in Ray, an actor that gives none needs a machine with 1 CPU and holds none while it
        lives; one that gives any holds them for its life, with 1 CPU unless ``num_cpus``
        says."""
        return (
            self.num_cpus is not None or bool(self.num_gpus) or bool(self.resources)
            or bool(self.local.resources)
        )  # fmt: skip

    @property
    def specified(self) -> bool:
        """Whether the actor goes through the scheduler (it names resources, or a placement
        group's bundle to hold them in) rather than being placed at once."""
        return self.names_resources or self.local.placement_group is not None

    @property
    def held_cpus(self) -> float:
        """CPUs the actor holds for its life (Ray's rule, see ``names_resources``)."""
        if self.num_cpus is not None:
            return self.num_cpus
        return 1.0 if self.names_resources else 0.0


_ACTOR_CHECKS: dict[str, Callable[[Any], Any]] = {
    "num_cpus": lambda v: _request("num_cpus", v),
    "num_gpus": lambda v: _request("num_gpus", v),
    "resources": _request_resources,
    "max_restarts": _int("max_restarts", -1),
    "max_task_retries": _int("max_task_retries", -1),
    "max_concurrency": _max_concurrency,
    "max_pending_calls": _int("max_pending_calls", -1),
    "name": _name,
    "namespace": _name,
    "get_if_exists": _bool("get_if_exists"),
    "lifetime": _lifetime,
    "concurrency_groups": _concurrency_groups,
    "executor": _executor,
    "allow_out_of_order_execution": lambda v: None if v is None else _bool(
        "allow_out_of_order_execution"
    )(v),
}


def actor_options(base: ActorOptions | None = None, **kwargs: Any) -> ActorOptions:
    """Validates actor ``kwargs`` and merges them into ``base`` (Ray's defaults if ``None``).

    Raises:
        ValueError, TypeError: as :func:`task_options`.
    """
    valid = sorted(_ACTOR_CHECKS)
    changes: dict[str, Any] = {}
    cluster: dict[str, Any] | None = None
    for key, value in kwargs.items():
        check = _ACTOR_CHECKS.get(key)
        if check is None:
            if key in NOT_LOCAL_KEYS:  # kept for Ray; the local runtime rejects it at .remote()
                if cluster is None:
                    cluster = dict(base.cluster_options) if base else {}
                cluster[key] = value
                continue
            raise ValueError(
                f"Invalid option keyword {key!r} for actors. Valid ones are {', '.join(valid)}."
            )
        changes[key] = check(value)
    if cluster is not None:
        changes["cluster_options"] = {k: v for k, v in cluster.items() if v is not None}
        changes["local"] = _local_placement("actor", changes["cluster_options"])
    return replace(base or ActorOptions(), **changes)


@dataclass(frozen=True)
class MethodOptions:
    """Options of one actor method (``@raylite.method(...)``)."""

    num_returns: Any = None  # as TaskOptions.num_returns (settled per method by _meta_of)
    concurrency_group: str | None = None
    name: str | None = None


def method_options(base: MethodOptions | None = None, **kwargs: Any) -> MethodOptions:
    """Validates ``@raylite.method``/``.options`` keywords for an actor method."""
    changes: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "num_returns":
            changes[key] = _num_returns(value)
        elif key in ("concurrency_group", "name"):
            changes[key] = _name(value)
        elif key in ("max_task_retries", "retry_exceptions", "enable_task_events"):
            continue  # accepted per call by Ray; raylite applies the actor's settings
        else:
            raise ValueError(
                f"Invalid option keyword {key!r} for actor methods. Valid ones are "
                "concurrency_group, name, num_returns."
            )
    return replace(base or MethodOptions(), **changes)
