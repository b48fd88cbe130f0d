"""The driver's record of a task, and of a call's packed arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .._options import TaskOptions
from . import serialization as ser
from .scheduler import Request
from .store import Shm

if TYPE_CHECKING:
    from .watchdog import CallSite

__all__ = ["DRIVER", "PackedArgs", "Task"]

DRIVER = 0  # the owner id of tasks and borrows that belong to the driver itself


class PackedArgs(NamedTuple):
    """A call's pickled arguments, ready to be held and sent."""

    s: ser.Serialized
    positions: list[int | str]
    dep_ids: list[int]
    shm: Shm | None


@dataclass(slots=True)
class Task:
    """A task the driver knows of, from submission until its results are stored."""

    task_id: int
    fn_id: int
    name: str
    args: bytes | int  # the pickled arguments, or the id of a hidden object holding big ones
    dep_positions: list[Any]
    dep_ids: list[int]
    contained: list[int]
    return_ids: list[int]
    opts: TaskOptions
    request: Request
    retries_left: int
    owner: int = DRIVER
    depth: int = 0  # nesting: 0 for the driver's tasks, the parent's + 1 for nested ones
    worker: int | None = None
    cancelled: bool = False
    children: list[int] | None = None  # nested tasks it submitted, for recursive cancel
    submitted: float = 0.0  # time.monotonic() when first submitted
    call: tuple[Any, tuple[Any, ...], dict[str, Any]] | None = None  # a thread task's
    start: float = 0.0  # when its last attempt ran (epoch seconds), for the history
    site: CallSite | None = None  # the driver's .remote() line, for warnings; None if nested
    end: float = 0.0
    lane: int = 0  # the thread it ran on, for thread tasks
    reruns: int = 0  # reruns after its worker died of another task's fault (bounded)
    state: int = 0  # task_states.PENDING or DISPATCHED (only task_states writes it)
