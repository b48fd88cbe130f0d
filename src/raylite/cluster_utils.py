"""``ray.cluster_utils`` as far as one machine goes: importable, so a Ray program or test
module that imports it runs its other code, but :class:`Cluster` (Ray's multi-node test
cluster) is not provided: building one raises an error saying so.

raylite runs every task on this machine. To test code across several Ray nodes, run it on
Ray itself (``ray.cluster_utils.Cluster`` with the ``ray`` package), or point raylite at a
Ray cluster with ``init(address=...)``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Cluster", "AutoscalingCluster", "cluster_not_supported"]

#: Ray sets this on platforms where ``Cluster`` cannot run; raylite never runs one.
cluster_not_supported = True

_MESSAGE = (
    "raylite does not provide ray.cluster_utils.{name} (a multi-node Ray cluster on one "
    "machine): raylite runs every task on this machine, with no nodes to add or remove. "
    "Run this on Ray itself (plain 'python' with the 'ray' package installed), or use "
    "raylite.init(num_cpus=..., resources=...) to model one machine's resources."
)


class Cluster:
    """Ray's multi-node test cluster; constructing one raises :class:`RuntimeError`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(_MESSAGE.format(name="Cluster"))


class AutoscalingCluster:
    """Ray's fake autoscaling cluster; constructing one raises :class:`RuntimeError`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(_MESSAGE.format(name="AutoscalingCluster"))
