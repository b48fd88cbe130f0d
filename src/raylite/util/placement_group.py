"""Placement groups, as Ray's ``ray.util.placement_group``: reserve bundles of resources,
then schedule tasks and actors into them.

On one machine every strategy puts all bundles here; what a group gives is the
reservation: its bundles' resources are taken from the pool once they are free, and only
tasks and actors scheduled into the group (``PlacementGroupSchedulingStrategy``) use them.

Example::

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    raylite.get(pg.ready())
    strategy = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=0)
    raylite.get(f.options(scheduling_strategy=strategy).remote())
    remove_placement_group(pg)
"""

from __future__ import annotations

from typing import Any

from .. import _runtime
from .._placement import PlacementGroup

__all__ = [
    "PlacementGroup",
    "get_current_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
    _soft_target_node_id: str | None = None,
    bundle_label_selector: list[dict[str, str]] | None = None,
) -> PlacementGroup:
    """Asks for ``bundles`` to be reserved together; returns the group at once.

    Args:
        bundles: resource dicts, e.g. ``[{"CPU": 1}, {"CPU": 2, "db": 1}]``.
        strategy: ``"PACK"``, ``"SPREAD"``, ``"STRICT_PACK"`` or ``"STRICT_SPREAD"`` (all
            mean "this machine" here).
        name: shown by ``placement_group_table``.
        lifetime: accepted as Ray's (``None`` or ``"detached"``); a group ends with
            ``remove_placement_group`` or ``shutdown``.

    Returns:
        The group; ``pg.ready()`` is an ObjectRef ready once it is reserved, and
        ``pg.wait(timeout_seconds)`` says whether it is.

    Raises:
        ValueError: empty bundles, a bad amount or strategy (Ray's messages), or GPUs in a
            bundle (not supported by the local runtime).
    """
    if lifetime not in (None, "detached"):
        raise ValueError(
            f"Placement group `lifetime` argument must be either `None` or 'detached'. "
            f"Got {lifetime}."
        )
    if bundle_label_selector is not None:
        raise ValueError(
            "bundle_label_selector picks among a cluster's nodes, which raylite's local "
            "runtime does not have: remove it, or run on a Ray cluster."
        )
    return _runtime.current().create_placement_group(bundles, strategy, name)  # type: ignore[no-any-return]


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Ends the group's reservation: its resources go back to the pool. Tasks already
    running in it finish (Ray kills them); queued ones never start."""
    _runtime.current().remove_placement_group(placement_group)


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """The state of one group (``placement_group_id``, ``name``, ``bundles``,
    ``bundles_to_node_id``, ``strategy``, ``state``: PENDING, CREATED or REMOVED), or of
    every group (``{id: row}``) without an argument, as Ray's."""
    return _runtime.current().placement_group_table(placement_group)


def get_current_placement_group() -> PlacementGroup | None:
    """The group the caller runs in: always ``None`` here (child tasks are not captured)."""
    return None
