"""What Ray's placement options mean on this machine: placement groups, node affinity,
``memory``, ``accelerator_type`` and ``runtime_env={"env_vars": ...}``.

::

    placement_group(bundles) -> a reservation: a scheduler task on no worker (threaded)
        asking for the bundles' sum; queued like any task until that much is free
      dispatched -> CREATED: the scheduler gets resources "CPU_group_<i>_<id>" (bundle i)
                    and "CPU_group_<id>" (any bundle), as Ray names them; ready refs resolve
      removed    -> the reservation ends (its resources are free again), the group
                    resources go; tasks still running keep what they hold until they end
    f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote()
        -> its request asks for "CPU_group_<i>_<id>" instead of "CPU" (Ray's renaming)
    f.options(runtime_env={"env_vars": {...}}) -> the worker runs ``WithEnv(f's body, vars)``
        (shipped under an id of its own): variables set for the task, restored after it

Everything here runs with the runtime's lock held, as the actor manager does.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from .._options import ACCELERATOR_PREFIX, LocalPlacement
from .._placement import STRATEGIES, PlacementGroup
from ..exceptions import PendingTaskWarning
from . import serialization as ser
from .scheduler import UNIT, Request, thread_worker, to_units

if TYPE_CHECKING:
    from .runtime import LocalRuntime
    from .tasks import Task

__all__ = ["Placement", "WithEnv", "check_bundles", "run_with_env"]

_PENDING, _CREATED, _REMOVED = "PENDING", "CREATED", "REMOVED"


@dataclass(slots=True)
class _Group:
    pg: PlacementGroup
    name: str
    strategy: str
    bundles: list[dict[str, int]]  # units, "CPU" and custom names
    reservation: int  # the scheduler task holding the bundles' resources
    state: str = _PENDING
    ready_oids: list[int] = field(default_factory=list)  # refs to resolve once CREATED

    def group_resources(self) -> dict[str, int]:
        """Ray's names for the group's resources: per bundle, and for any bundle."""
        out: dict[str, int] = {}
        pg_id = self.pg.id
        for i, bundle in enumerate(self.bundles):
            for name, units in bundle.items():
                out[f"{name}_group_{i}_{pg_id}"] = units
                out[f"{name}_group_{pg_id}"] = out.get(f"{name}_group_{pg_id}", 0) + units
        return out


class Placement:
    """Placement groups and the meaning of placement options, for one LocalRuntime."""

    def __init__(self, rt: LocalRuntime) -> None:
        self.rt = rt
        self.node_id = rt.config.session  # one machine, one node: its id is the session's
        self.memory_total = float(psutil.virtual_memory().total)
        self.groups: dict[str, _Group] = {}  # {group id: group}
        self.reservations: dict[int, str] = {}  # {scheduler task id: group id}
        self._env_fns: dict[tuple[int, tuple[tuple[str, str], ...]], int] = {}

    # ---- requests -----------------------------------------------------------------------

    def request_for(self, base: Request, local: LocalPlacement, what: str) -> tuple[Request, str | None]:
        """The request to schedule for ``base`` under ``local``'s options, and why it can
        never run here (``None`` if it can).

        Raises:
            ValueError: a placement group's bundle index, or a request no bundle can hold
                (Ray's checks, at ``.remote()``).
        """
        if local.node_id is not None and local.node_id != self.node_id:
            return base, (
                f"NodeAffinitySchedulingStrategy(node_id={local.node_id!r}, soft=False) asks "
                f"for another node, and this machine is the only one (node id "
                f"{self.node_id!r}). Use raylite.get_runtime_context().get_node_id(), or "
                "soft=True"
            )
        if local.memory > self.memory_total:
            return base, (
                f"memory={local.memory:.0f} bytes but this machine has "
                f"{self.memory_total:.0f}. Ask for less"
            )
        for name in local.resources:
            if name.startswith(ACCELERATOR_PREFIX) and name not in self.rt.sched.custom_total:
                kind = name[len(ACCELERATOR_PREFIX) :]
                return base, (
                    f"accelerator_type={kind!r} but this machine declares no such accelerator "
                    "(raylite does not detect accelerator models). Remove the option, or "
                    f"declare it: raylite.init(resources={{'{name}': 1}})"
                )
        pg = local.placement_group
        if pg is None:
            why = self.rt.sched.infeasible(base)
            if why is None:
                return base, None
            return base, (
                f"{why}. Ask for less, or start raylite with more (raylite.init(num_cpus=..., "
                "num_gpus=..., resources={...}))"
            )
        group = self.groups.get(pg.id)
        if group is None or group.state == _REMOVED:
            return base, (
                f"its placement group {pg.id} was removed (or belongs to an earlier session). "
                "Create a new one with raylite.util.placement_group(...)"
            )
        return _in_bundle(base, group, local.bundle_index, what, self.rt.sched.custom_free), None

    def function_for(self, task: Task) -> int:
        """The function id ``task`` runs as: its own, or (``env_vars`` set) its body wrapped
        in :class:`WithEnv`, registered once per function and set of variables."""
        env = task.opts.local.env_vars
        if not env:
            return task.fn_id
        key = (task.fn_id, tuple(sorted(env.items())))
        fn_id = self._env_fns.get(key)
        if fn_id is None:
            fn_id = self._env_fns[key] = next(self.rt._ids)
            body = self.rt._functions[task.fn_id]
            self.rt._functions[fn_id] = ser.dumps_function(WithEnv(body, dict(env)))
        return fn_id

    # ---- placement groups ---------------------------------------------------------------

    def create(self, bundles: list[dict[str, float]], strategy: str, name: str) -> PlacementGroup:
        """Reserves ``bundles`` (once they fit: until then the group is PENDING)."""
        units = [_bundle_units(b) for b in bundles]
        total: dict[str, int] = {}
        for bundle in units:
            for key, value in bundle.items():
                total[key] = total.get(key, 0) + value
        cpu = total.pop("CPU", 0)
        request = Request(cpu, 0, tuple(sorted(total.items())))
        pg = PlacementGroup(os.urandom(9).hex(), [dict(b) for b in bundles])
        reservation = next(self.rt._ids)
        self.groups[pg.id] = _Group(pg, name, strategy, units, reservation)
        self.reservations[reservation] = pg.id
        why = self.rt.sched.infeasible(request)
        if strategy == "STRICT_SPREAD" and len(bundles) > 1:  # a node each: one node here
            why = f"STRICT_SPREAD puts each of its {len(bundles)} bundles on a node of its own"
        if why is not None:
            warnings.warn(
                f"Placement group {pg.id} can never be reserved here: {why}. It stays pending "
                "(pg.wait() returns False); ask for less, or start raylite with more "
                "(raylite.init(num_cpus=..., resources={...})).",
                PendingTaskWarning,
                4,
            )
            return pg
        self.rt._apply(self.rt.sched.submit(reservation, request, 0, [], threaded=True))
        return pg

    def reserved(self, task_id: int) -> bool:
        """The scheduler dispatched ``task_id``: if it is a group's reservation, the group
        is CREATED (True); else it is no business of this class (False)."""
        pg_id = self.reservations.get(task_id)
        if pg_id is None:
            return False
        group = self.groups[pg_id]
        group.state = _CREATED
        self.rt._apply(self.rt.sched.add_resources(group.group_resources()))
        payload = ser.dumps(group.pg)[0]
        for oid in group.ready_oids:
            if oid in self.rt._objs:
                self.rt._store(oid, payload, False, [])
        group.ready_oids.clear()
        return True

    def ready(self, pg: PlacementGroup) -> int:
        """The id of a new object that becomes ``pg`` once the group is reserved."""
        group = self.groups.get(pg.id)
        if group is None:
            raise ValueError(
                f"Placement group {pg.id} is not one of this session's (it was made before "
                "raylite.shutdown()): create it again with raylite.util.placement_group(...)."
            )
        oid = next(self.rt._ids)
        self.rt._objs.new(oid, 1)
        if group.state == _CREATED:
            self.rt._store(oid, ser.dumps(pg)[0], False, [])
        elif group.state == _PENDING:
            group.ready_oids.append(oid)
        return oid  # of a REMOVED group: never ready, as in Ray

    def remove(self, pg: PlacementGroup) -> None:
        """Ends the reservation; the group's resources leave the scheduler."""
        group = self.groups.get(pg.id)
        if group is None or group.state == _REMOVED:
            return
        created = group.state == _CREATED
        group.state = _REMOVED
        group.ready_oids.clear()  # never ready now
        del self.reservations[group.reservation]
        sched = self.rt.sched
        if created:
            sched.remove_resources(list(group.group_resources()))
            self.rt._apply(sched.task_done(thread_worker(group.reservation), group.reservation))
        else:
            sched.cancel(group.reservation)

    def table(self, pg: PlacementGroup | None) -> dict[str, Any]:
        """Ray's ``placement_group_table``: one group's row, or ``{id: row}`` for all."""
        if pg is not None:
            group = self.groups.get(pg.id)
            return self._row(group) if group is not None else {}
        return {pg_id: self._row(group) for pg_id, group in self.groups.items()}

    def _row(self, group: _Group) -> dict[str, Any]:
        return {
            "placement_group_id": group.pg.id,
            "name": group.name,
            "bundles": {i: dict(b) for i, b in enumerate(group.pg.bundle_specs)},
            "bundles_to_node_id": {i: self.node_id for i in range(group.pg.bundle_count)},
            "strategy": group.strategy,
            "state": group.state,
        }


def check_bundles(bundles: Any, strategy: Any) -> list[dict[str, float]]:
    """Ray's checks of ``placement_group(bundles, strategy)``; the bundles as floats.

    Raises:
        ValueError: no bundles, an empty bundle, a bad amount or strategy (Ray's words).
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Invalid placement group strategy {strategy}. Supported strategies are: "
            f"{set(STRATEGIES)}."
        )
    if not isinstance(bundles, list) or not bundles:
        raise ValueError(
            "Bundles must be a non-empty list of resource dictionaries. For example: "
            '`[{"CPU": 1.0}, {"GPU": 1.0}]`. Got empty list instead.'
        )
    out = []
    for bundle in bundles:
        if not isinstance(bundle, dict) or not any(
            isinstance(v, (int, float)) and v > 0 for v in bundle.values()
        ):
            raise ValueError(
                "Bundles cannot be an empty dictionary or resources with only 0 values. "
                f"Bundles: {bundles}"
            )
        clean = {}
        for key, value in bundle.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"Bundle amounts must be numbers >= 0, got {key!r}: {value!r} in {bundle}."
                )
            if key == "GPU" and value:
                raise ValueError(
                    "Placement group bundles with GPUs are not supported by raylite's local "
                    "runtime (its GPUs are handed out per task): ask for num_gpus on the task "
                    "or actor instead, or run on a Ray cluster with raylite.init(address=...)."
                )
            if key != "memory" and value:  # memory: Ray's logical resource, not reserved here
                clean[key] = float(value)
        out.append(clean)
    return out


def _bundle_units(bundle: dict[str, float]) -> dict[str, int]:
    return {k: to_units(v) for k, v in bundle.items() if v}


def _in_bundle(
    base: Request, group: _Group, index: int, what: str, free: dict[str, int]
) -> Request:
    """``base`` rewritten to use one bundle's resources, and the group's (Ray's names,
    checks and errors). With ``index`` -1 the bundle is one with room now (by ``free``), or
    else the first that can ever hold it: per-bundle use never exceeds the bundle."""
    bundles = group.bundles
    if index >= len(bundles):
        raise ValueError(
            f"placement group bundle index {index} is invalid. Valid placement group indexes: "
            f"0-{len(bundles) - 1}"
        )
    wanted = dict(base.custom)
    if base.cpu:
        wanted["CPU"] = base.cpu
    if base.gpu:
        wanted["GPU"] = base.gpu
    pg_id = group.pg.id
    candidates = [index] if index >= 0 else range(len(bundles))
    fitting = [i for i in candidates if all(bundles[i].get(k, 0) >= v for k, v in wanted.items())]
    if not fitting:
        shown = {k: v / UNIT for k, v in wanted.items()}
        specs = [{k: v / UNIT for k, v in b.items()} for b in bundles]
        raise ValueError(
            f"Cannot schedule {what} with the placement group because the resource request "
            f"{shown} cannot fit into any bundles for the placement group, {specs}."
        )
    chosen = next(
        (i for i in fitting
         if all(free.get(f"{k}_group_{i}_{pg_id}", 0) >= v for k, v in wanted.items())),
        fitting[0],
    )  # fmt: skip
    custom = {f"{k}_group_{chosen}_{pg_id}": v for k, v in wanted.items()}
    custom.update((f"{k}_group_{pg_id}", v) for k, v in wanted.items())
    return Request(0, 0, tuple(sorted(custom.items())))


class WithEnv:
    """A task's function run with ``runtime_env`` ``env_vars`` set, restored after it.

    Holds the function's pickled body and unpickles it on first call in the worker, so the
    driver never needs to unpickle the user's function.
    """

    __slots__ = ("body", "env", "_fn")

    def __init__(self, body: bytes, env: dict[str, str]) -> None:
        self.body = body
        self.env = env
        self._fn: Any = None

    def __getstate__(self) -> tuple[bytes, dict[str, str]]:
        return self.body, self.env

    def __setstate__(self, state: tuple[bytes, dict[str, str]]) -> None:
        self.body, self.env = state
        self._fn = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._fn is None:
            self._fn = ser.loads(self.body)
        return run_with_env(self.env, self._fn, *args, **kwargs)


def run_with_env(env: Mapping[str, str], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with the variables ``env`` set, restored after it."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return fn(*args, **kwargs)
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
