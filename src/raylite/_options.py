"""Validation of ``@remote(...)`` / ``.options(...)`` keywords, with errors that teach.

Ray's option names are the spec. Each keyword is one of:

- supported: validated here and honoured by the runtimes;
- accepted as a no-op on one machine (``scheduling_strategy="DEFAULT"``/``"SPREAD"``,
  ``runtime_env=None``): there is no other node to spread to;
- a Ray option the local runtime cannot honour (placement groups, ``runtime_env``, ...):
  rejected with a message saying so and what to do, never silently dropped;
- unknown: rejected with the list of valid names (a typo must not pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["TaskOptions", "check_amount", "task_options", "validate_resources"]

_NOT_LOCAL = {
    "placement_group": "placement groups reserve resources across nodes",
    "placement_group_bundle_index": "placement groups reserve resources across nodes",
    "placement_group_capture_child_tasks": "placement groups reserve resources across nodes",
    "runtime_env": "runtime environments install code per job",
    "accelerator_type": "accelerator types pick among a cluster's node types",
    "label_selector": "label selectors pick among a cluster's nodes",
    "memory": "memory is a logical scheduling resource of Ray's raylets",
    "object_store_memory": "per-task object store reservations are Ray's",
    "max_calls": "workers are not recycled after N calls",
    "_metadata": "metadata is for Ray's internal libraries",
}

_NOOP_SCHEDULING = (None, "DEFAULT", "SPREAD")
NOT_LOCAL_KEYS = frozenset(_NOT_LOCAL) | {"scheduling_strategy", "enable_task_events"}


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


def _int(name: str, low: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}.")
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


def _num_returns(value: Any) -> int:
    if value in ("dynamic", "streaming"):
        raise ValueError(
            f"num_returns={value!r} (generator tasks) is not supported by raylite yet; "
            "return a list and use num_returns=<int>."
        )
    return _int("num_returns", 0)(value)


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

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    num_returns: int = 1
    max_retries: int = 3
    retry_exceptions: bool | tuple[type[BaseException], ...] = False
    name: str | None = None
    executor: str = "process"


_TASK_CHECKS: dict[str, Callable[[Any], Any]] = {
    "num_cpus": lambda v: check_amount("num_cpus", v),
    "num_gpus": lambda v: check_amount("num_gpus", v),
    "resources": lambda v: validate_resources("resources", v),
    "num_returns": _num_returns,
    "max_retries": _int("max_retries", -1),
    "retry_exceptions": _retry_exceptions,
    "name": _name,
    "executor": _executor,
}


def check_not_local(kind: str, key: str, value: Any) -> None:
    """Accepts no-op keywords; rejects the Ray options the local runtime cannot honour."""
    if key == "scheduling_strategy" and value in _NOOP_SCHEDULING:
        return
    if key == "enable_task_events" and isinstance(value, bool):
        return
    if value is not None:
        why = _NOT_LOCAL.get(key, "only 'DEFAULT' and 'SPREAD' mean something on one machine")
        raise ValueError(
            f"The {kind} option {key}={value!r} is not supported by raylite's local runtime "
            f"({why}). Remove it, or run on a Ray cluster with raylite.init(address=...)."
        )


def task_options(base: TaskOptions | None = None, **kwargs: Any) -> TaskOptions:
    """Validates ``kwargs`` and merges them into ``base`` (Ray's defaults if ``None``).

    Raises:
        ValueError: an unknown keyword, a bad value, or a Ray option the local runtime
            cannot honour.
        TypeError: a value of the wrong type.
    """
    valid = sorted(_TASK_CHECKS)
    changes: dict[str, Any] = {}
    for key, value in kwargs.items():
        check = _TASK_CHECKS.get(key)
        if check is None:
            if key in NOT_LOCAL_KEYS:
                check_not_local("remote function", key, value)
                continue
            raise ValueError(
                f"Invalid option keyword {key!r} for remote functions. "
                f"Valid ones are {', '.join(valid)}."
            )
        if key in ("num_returns", "max_retries") and value is None:
            continue
        changes[key] = check(value)
    return replace(base or TaskOptions(), **changes)
