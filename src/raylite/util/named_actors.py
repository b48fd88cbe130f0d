"""``list_named_actors``: the names of the live named actors, as Ray's ``ray.util``."""

from __future__ import annotations

from typing import Any

from .. import _runtime

__all__ = ["list_named_actors"]


def list_named_actors(all_namespaces: bool = False) -> list[str] | list[dict[str, str]]:
    """The named actors that are alive (or restarting), as Ray returns them.

    Args:
        all_namespaces: every namespace's, as ``{"name": ..., "namespace": ...}`` dicts;
            by default only the current namespace's, as bare names.

    Returns:
        ``["name", ...]``, or ``[{"name": "a", "namespace": "ns"}, ...]``.
    """
    rt = _runtime.current()
    rows: list[dict[str, Any]] = rt.list_state("actors", None, None, False)
    live = [r for r in rows if r.get("name") and r.get("state") != "DEAD"]
    if all_namespaces:
        return [{"name": r["name"], "namespace": r["ray_namespace"]} for r in live]
    current = rt.context().get("namespace") or "default"
    return [r["name"] for r in live if r["ray_namespace"] == current]
