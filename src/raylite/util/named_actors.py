"""``list_named_actors``: the names of the live named actors, as Ray's ``ray.util``."""

from __future__ import annotations

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
    named = _runtime.current().list_named_actors(all_namespaces)
    if all_namespaces:
        return [{"name": name, "namespace": namespace} for namespace, name in named]
    return [name for _, name in named]
