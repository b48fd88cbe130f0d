"""Ray's placement-group and scheduling-strategy objects, as plain values.

``raylite.util.placement_group`` and ``raylite.util.scheduling_strategies`` re-export them
(as Ray's modules of those names). They hold ids and specs only: the runtime that runs a
task reads them (``_options.LocalPlacement`` on this machine, Ray on a cluster), and a
``PlacementGroup`` asks the current runtime for its state (``ready``, ``wait``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "NodeAffinitySchedulingStrategy",
    "PlacementGroup",
    "PlacementGroupSchedulingStrategy",
    "STRATEGIES",
]

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroup:
    """A set of resource bundles reserved together (``raylite.util.placement_group``).

    On one machine every strategy places all bundles here; what counts is that the bundles'
    resources are reserved for the tasks and actors scheduled into the group.

    Attributes:
        id: the group's id (hex, as ``id.hex()``).
        bundle_specs: the bundles, as given (amounts as floats).
    """

    __module__ = "raylite.util.placement_group"

    def __init__(self, pg_id: str, bundle_specs: list[dict[str, float]]) -> None:
        self.id = PlacementGroupID(pg_id)
        self.bundle_specs = bundle_specs

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    @property
    def is_empty(self) -> bool:
        return not self.bundle_specs

    def ready(self) -> Any:
        """An ObjectRef that becomes ready (its value: this group) once the group's
        resources are reserved: ``raylite.get(pg.ready())`` or ``raylite.wait([...])``."""
        from . import _runtime

        return _runtime.current().placement_group_ready(self)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Waits up to ``timeout_seconds`` for the group to be reserved; True if it is."""
        from ._api import wait

        ready, _ = wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup(id={self.id.hex()}, bundles={self.bundle_specs})"


class PlacementGroupID(str):
    """A placement group's id: a hex string with Ray's ``.hex()``."""

    __module__ = "raylite.util.placement_group"

    def hex(self) -> str:  # type: ignore[override]
        return str(self)


class PlacementGroupSchedulingStrategy:
    """Run a task or actor in a placement group, on one of its bundles (``-1``: any).

    Args:
        placement_group: the group (from ``raylite.util.placement_group``).
        placement_group_bundle_index: the bundle whose resources the task uses; ``-1`` for
            whichever has room.
        placement_group_capture_child_tasks: accepted, as Ray's; child tasks are not
            captured by raylite.
    """

    __module__ = "raylite.util.scheduling_strategies"

    def __init__(
        self,
        placement_group: PlacementGroup,
        placement_group_bundle_index: int = -1,
        placement_group_capture_child_tasks: bool | None = None,
    ) -> None:
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self) -> str:
        return (
            f"PlacementGroupSchedulingStrategy({self.placement_group!r}, "
            f"placement_group_bundle_index={self.placement_group_bundle_index})"
        )


class NodeAffinitySchedulingStrategy:
    """Run a task or actor on the node ``node_id`` (``soft=True``: there if possible).

    On one machine the only node is this one, whose id is
    ``raylite.get_runtime_context().get_node_id()``.
    """

    __module__ = "raylite.util.scheduling_strategies"

    def __init__(
        self,
        node_id: str,
        soft: bool,
        _spill_on_unavailable: bool = False,
        _fail_on_unavailable: bool = False,
    ) -> None:
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self) -> str:
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"
