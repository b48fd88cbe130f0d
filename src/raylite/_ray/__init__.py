"""The Ray runtime's way in, importable without ``ray``.

``init(address=...)`` (:func:`connect`) and the first raylite call inside a Ray worker
(:func:`attached`) come here; only they import ``ray`` (an optional dependency that takes
~0.5 s to import), through ``runtime.py``.

Importing this package tells ``raylite.ObjectRef`` about Ray's ref class, so that
``isinstance(ray_ref, raylite.ObjectRef)`` holds and a Ray ref belongs to the current
``RayRuntime`` (to no runtime when the current one is local); and ``raylite.ActorHandle``
about Ray's actor handles, likewise.

Real Ray is told apart by identity, never by the name ``ray``: under ``raylite run`` or
``install_as_ray()`` (``_compat.py``), ``sys.modules["ray"]`` is raylite itself.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .. import _runtime
from .._actor import register_foreign_handles
from .._object_ref import register_foreign_generators, register_foreign_refs

if TYPE_CHECKING:
    from .runtime import RayRuntime

__all__ = ["attached", "connect", "real_ray"]


def real_ray() -> ModuleType | None:
    """Real Ray's ``ray`` package if this process has imported it, else ``None``.

    Ray's package holds its compiled core as the submodule ``ray._raylet``; raylite standing
    in for ``ray`` has no such submodule (its module ``__getattr__`` raises), so a module
    under the name ``ray`` is real Ray only if its ``_raylet`` is the one in ``sys.modules``.
    """
    raylet = sys.modules.get("ray._raylet")
    ray = sys.modules.get("ray")
    if raylet is None or ray is None:
        return None
    return ray if getattr(ray, "_raylet", None) is raylet else None


def connect(address: str, **options: Any) -> RayRuntime:
    """Connects this process to the Ray cluster at ``address`` through ``ray.init``.

    If this process is connected to Ray already (it called ``ray.init()`` itself), raylite
    uses that connection and leaves it open at ``shutdown()``.

    Args:
        address: any address ``ray.init`` takes: ``"auto"``, ``"host:port"``,
            ``"ray://host:10001"``.
        **options: more keywords for ``ray.init`` (``runtime_env``, ``namespace``, ...);
            Ray checks them.

    Returns:
        The runtime that serves raylite's API from now on.

    Raises:
        ImportError: ``ray`` is not installed (the message says how to install it).
    """
    from .._compat import standing_in_for_ray

    if standing_in_for_ray():
        raise RuntimeError(
            f"raylite.init(address={address!r}) needs the real 'ray' package, but raylite "
            "stands in for 'ray' in this process (raylite run, or install_as_ray()). Run the "
            "program with plain 'python' to use a Ray cluster, or leave out address to run "
            "it on raylite."
        )
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            f"raylite.init(address={address!r}) runs your program on a Ray cluster through "
            "the 'ray' package, which is not installed here. Install it with "
            "\"pip install 'raylite[ray]'\", or omit address to use the embedded runtime."
        ) from exc
    from .runtime import RayRuntime

    if ray.is_initialized():
        return RayRuntime(owns_connection=False)
    context = ray.init(address=address, **options)
    return RayRuntime(owns_connection=True, dashboard_url=context.dashboard_url or None)


def attached() -> RayRuntime | None:
    """This process's connection to Ray as a runtime, if it has one, else ``None``.

    Such a process is a Ray worker running a task (whose code calls ``raylite.get`` and
    such), or a driver that called ``ray.init()`` itself. Costs nothing when ``ray`` was
    never imported.
    """
    ray = real_ray()
    if ray is None or not ray.is_initialized():
        return None
    from .runtime import RayRuntime

    return RayRuntime(owns_connection=False)


def _is_ray_ref_class(cls: type) -> bool:
    ray = real_ray()  # a Ray ref exists only once ray is imported
    return ray is not None and issubclass(cls, ray.ObjectRef)


def _is_ray_generator_class(cls: type) -> bool:
    ray = real_ray()
    return ray is not None and issubclass(cls, ray.ObjectRefGenerator)


def _is_ray_handle_class(cls: type) -> bool:
    ray = real_ray()
    return ray is not None and issubclass(cls, ray.actor.ActorHandle)


def _ray_refs_owner() -> object | None:
    from .runtime import RayRuntime  # ray is imported: a Ray ref exists

    rt = _runtime.current_or_none()
    return rt if isinstance(rt, RayRuntime) else None


register_foreign_refs(_is_ray_ref_class, _ray_refs_owner)
register_foreign_handles(_is_ray_handle_class)
register_foreign_generators(_is_ray_generator_class)
