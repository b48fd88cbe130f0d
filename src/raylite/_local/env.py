"""The ``RAYLITE_*`` environment variables that tune the local runtime, read and checked in
one place. ``init`` reads them all before it creates anything, so a bad value is an error
that names the variable, and leaves no process or session folder behind.

=============================  =======  ===============================================
variable                       default  meaning
=============================  =======  ===============================================
``RAYLITE_MAX_WORKERS``        64+      worker processes raylite may start (max(64, 4 x CPUs))
``RAYLITE_PENDING_WARNING_S``  5        seconds a task waits for resources before a warning
``RAYLITE_SPARE_FRACTION``     0.25     share of object_store_memory that spare segments,
                                        pre-faulted for big puts, may fill (0: none)
``RAYLITE_PREFAULT_BYTES``     0        a spare of this size is pre-faulted at init, so
                                        even the first put up to that size is one copy
``RAYLITE_TASK_HISTORY``       100000   finished tasks kept for timeline() and the state API
``RAYLITE_TEMP_DIR``           /tmp/..  the root of session folders (see ``session.py``)
=============================  =======  ===============================================
"""

from __future__ import annotations

import math
import os

__all__ = [
    "env_float", "env_int", "pending_warning_s", "prefault_bytes", "spare_fraction",
    "task_history",
]  # fmt: skip


def env_int(name: str, default: int, minimum: int, meaning: str) -> int:
    """The whole number in environment variable ``name`` (``default`` if unset).

    Raises:
        ValueError: not a whole number >= ``minimum``; the message names the variable,
            the value and ``meaning``.
    """
    value = os.environ.get(name)
    if value is None:
        return default
    text = value.strip()
    if not text.lstrip("-").isdigit() or int(text) < minimum:
        raise ValueError(
            f"The environment variable {name} must be a whole number >= {minimum} ({meaning}), "
            f"got {value!r}: fix or unset it."
        )
    return int(text)


def env_float(name: str, default: float, minimum: float, meaning: str) -> float:
    """The number in environment variable ``name`` (``default`` if unset).

    Raises:
        ValueError: not a finite number >= ``minimum``; the message names the variable,
            the value and ``meaning``.
    """
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < minimum:
        raise ValueError(
            f"The environment variable {name} must be a number >= {minimum:g} ({meaning}), "
            f"got {value!r}: fix or unset it."
        )
    return number


def pending_warning_s() -> float:
    """``RAYLITE_PENDING_WARNING_S``: seconds a task waits for resources before a warning."""
    return env_float(
        "RAYLITE_PENDING_WARNING_S", 5.0, 0.0, "seconds a task may wait for resources before "
        "raylite warns about it",
    )  # fmt: skip


def spare_fraction() -> float:
    """``RAYLITE_SPARE_FRACTION``: the share of ``object_store_memory`` that spare segments
    pre-faulted for big puts may fill (see ``store.py``)."""
    fraction = env_float(
        "RAYLITE_SPARE_FRACTION", 0.25, 0.0, "the share of object_store_memory that spare "
        "segments pre-faulted for big puts may fill; 0 makes none",
    )  # fmt: skip
    if fraction > 1:
        raise ValueError(
            f"The environment variable RAYLITE_SPARE_FRACTION must be between 0 and 1 (the "
            f"share of object_store_memory spare segments may fill), got {fraction:g}: fix "
            "or unset it."
        )
    return fraction


def prefault_bytes() -> int:
    """``RAYLITE_PREFAULT_BYTES``: the size of a spare segment pre-faulted at ``init``."""
    return env_int(
        "RAYLITE_PREFAULT_BYTES", 0, 0, "the size of a spare segment pre-faulted at init for "
        "the first big put; 0 makes none",
    )  # fmt: skip


def task_history() -> int:
    """``RAYLITE_TASK_HISTORY``: finished tasks kept for ``timeline()`` and the state API."""
    return env_int(
        "RAYLITE_TASK_HISTORY", 100_000, 0, "finished tasks kept for timeline() and the state "
        "API; 0 keeps none",
    )  # fmt: skip
