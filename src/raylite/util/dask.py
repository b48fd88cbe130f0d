"""A Dask scheduler that runs each task of a Dask graph as a raylite task.

Ray's ``ray.util.dask.ray_dask_get`` under raylite's name::

    import dask
    from raylite.util.dask import raylite_dask_get

    dask.compute(x, scheduler=raylite_dask_get)        # one computation
    dask.config.set(scheduler=raylite_dask_get)        # or every one from now on

``ray_dask_get`` is the same function under Ray's name. Arrays, dataframes, bags and
``dask.delayed`` all reach the scheduler as a graph, so all of them run. Needs dask
(``pip install 'raylite[dask]'``); ``import raylite`` does not import this module.

How a graph runs::

    driver: graph in topological order ─ each task: remote(task, dep keys, *dep refs) ─┐
            a data node: put once; an alias: the ref of its target (no task)            │
    workers: raylite resolves the dependency refs (shared memory, no driver round trip), │
             runs the task, stores its result <─────────────────────────────────────────┘
    driver: get(the refs of the keys asked for) -> the values, in the keys' nesting

The driver drops its ref to an intermediate result once every task that needs it has been
submitted, so raylite frees it as soon as those tasks are done, not at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dask._task_spec import Alias, DataNode, GraphNode, convert_legacy_graph

from .. import _api
from .._object_ref import ObjectRef

__all__ = ["ray_dask_get", "raylite_dask_get"]

# Scheduler keywords of Ray's that mean nothing here: raylite submits from the calling
# thread (no thread pool to size or pass), and shows no progress bar actor.
_IGNORED = frozenset({"num_workers", "pool", "_ray_enable_progress_bar"})


def _run(node: GraphNode, keys: tuple[Any, ...], *values: Any) -> Any:
    """In a worker: one Dask task, its dependencies' values already resolved."""
    return node(dict(zip(keys, values, strict=True)))


_run_remote = _api.remote(_run)


def raylite_dask_get(dsk: Mapping[Any, Any], keys: Any, **kwargs: Any) -> Any:
    """Computes ``keys`` of the Dask graph ``dsk`` on raylite: ``scheduler=`` for Dask.

    Args:
        dsk: The graph (any form Dask gives a scheduler, old-style tuples included).
        keys: The keys to compute, possibly nested in lists.
        **kwargs: ``ray_remote_args`` (options for every task, e.g. ``{"num_cpus": 2}``)
            and ``ray_persist`` (True: return ObjectRefs instead of values), as Ray's;
            ``num_workers`` and ``pool`` are accepted and unused.

    Returns:
        The values of ``keys``, nested as ``keys`` is.

    Raises:
        TypeError: A keyword this scheduler does not know.
    """
    remote_args = kwargs.pop("ray_remote_args", None) or {}
    persist = bool(kwargs.pop("ray_persist", False))
    unknown = sorted(set(kwargs) - _IGNORED)
    if unknown:
        raise TypeError(
            f"raylite_dask_get() got unknown keyword(s) {unknown}: it takes ray_remote_args "
            f"and ray_persist (num_workers and pool are accepted and unused)"
        )
    if not isinstance(dsk, Mapping):  # a Dask expression
        dsk = dsk.__dask_graph__()
    graph: dict[Any, GraphNode] = convert_legacy_graph(dict(dsk))
    submit = _run_remote.options(**remote_args) if remote_args else _run_remote
    wanted = set(_flatten(keys))
    refs = _submit_graph(graph, wanted, submit)
    del graph
    if persist:
        return _nest(keys, refs)
    values = dict(zip(refs, _api.get(list(refs.values())), strict=True))
    return _nest(keys, values)


ray_dask_get = raylite_dask_get


def _submit_graph(graph: dict[Any, GraphNode], wanted: set[Any], submit: Any) -> dict[Any, Any]:
    """Submits every node, dependencies first; returns ``{key: ref}`` for ``wanted``."""
    missing = wanted - graph.keys()
    if missing:
        raise KeyError(f"keys {sorted(map(str, missing))} are not in the Dask graph")
    waiting_on = {key: len(node.dependencies) for key, node in graph.items()}
    dependents: dict[Any, list[Any]] = {key: [] for key in graph}
    for key, node in graph.items():
        for dep in node.dependencies:
            dependents[dep].append(key)
    uses = {key: len(users) for key, users in dependents.items()}  # unsubmitted users
    ready = [key for key, count in waiting_on.items() if count == 0]
    refs: dict[Any, ObjectRef] = {}  # {key: ref} of results still needed
    while ready:
        key = ready.pop()
        node = graph[key]
        deps = tuple(node.dependencies)
        if isinstance(node, Alias):
            refs[key] = refs[node.target]
        elif isinstance(node, DataNode):
            refs[key] = _api.put(node.value)
        else:
            refs[key] = submit.remote(node, deps, *(refs[d] for d in deps))
        for dep in deps:
            uses[dep] -= 1
            if uses[dep] == 0 and dep not in wanted:
                del refs[dep]  # its users hold it now; raylite frees it after them
        for user in dependents[key]:
            waiting_on[user] -= 1
            if waiting_on[user] == 0:
                ready.append(user)
    if len(refs) < len(wanted) or any(waiting_on.values()):
        raise ValueError("the Dask graph has a cycle: its tasks cannot be ordered")
    return {key: refs[key] for key in wanted}


def _flatten(keys: Any) -> list[Any]:
    if isinstance(keys, list):
        return [k for sub in keys for k in _flatten(sub)]
    return [keys]


def _nest(keys: Any, values: Mapping[Any, Any]) -> Any:
    if isinstance(keys, list):
        return [_nest(k, values) for k in keys]
    return values[keys]
