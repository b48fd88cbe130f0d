"""Scheduling strategies, as Ray's ``ray.util.scheduling_strategies``: pass one as
``scheduling_strategy=`` to ``@remote`` or ``.options()``.

``"DEFAULT"`` and ``"SPREAD"`` (strings) mean the same on one machine;
``PlacementGroupSchedulingStrategy`` runs in a placement group's reserved resources;
``NodeAffinitySchedulingStrategy`` must name this machine's node
(``raylite.get_runtime_context().get_node_id()``) unless ``soft=True``.
"""

from .._placement import NodeAffinitySchedulingStrategy as NodeAffinitySchedulingStrategy
from .._placement import PlacementGroupSchedulingStrategy as PlacementGroupSchedulingStrategy

__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]
