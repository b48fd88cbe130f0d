"""raylite standing in for ``ray``: ``install_as_ray()``, ``raylite run``, and the error a
Ray name raylite lacks gives.

::

    import raylite          sys.meta_path[0]     = _RayAliasFinder (answers only while
                                                   sys.modules["ray"] is raylite)
    install_as_ray()        sys.modules["ray"]   = raylite   (or a user's own aliasing)
    import ray.util.queue   _RayAliasFinder: "ray.util.queue" -> the module raylite.util.queue
                            (the very same object, so classes and isinstance agree; without
                            it Python would load raylite/util/queue.py a second time)
    import ray._common      _AliasLoader also puts ray._common.test_utils in sys.modules
                            (Ray's test helpers: a finder ahead of ours, pytest's, would
                            load their file again as a test file under Ray's name)
    import ray.data         ModuleNotFoundError: raylite does not provide ray.data ...
    ray.nodes               raylite's module __getattr__ (module_getattr):
                            AttributeError: raylite does not provide ray.nodes ...

    raylite run x.py        install_as_ray(); PYTHONPATH = _shim/:...  (a package named ``ray``
                            that calls install_as_ray(), for Python processes the program
                            starts afresh); then x.py runs as __main__, as ``python x.py`` would

Worker processes are forked from a zygote made at ``init()`` (``_local/pool.py``), so they
inherit the alias when ``install_as_ray()`` ran before ``init()``; it refuses to run after.
This module imports only the standard library at import time (and not ``importlib.abc``,
~90 ms here: the finder and loader follow its protocols without subclassing it).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import runpy
import sys
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType, TracebackType
from typing import Any

__all__ = [
    "install_as_ray",
    "module_getattr",
    "run_program",
    "shim_dir",
    "standing_in_for_ray",
    "unsupported",
]

# The big Ray libraries a Ray program may reach for, named in the error.
_LIBRARIES = {
    "data": "Ray Data",
    "train": "Ray Train",
    "tune": "Ray Tune",
    "serve": "Ray Serve",
    "rllib": "RLlib",
    "dag": "Ray DAGs (.bind)",
    "workflow": "Ray Workflows",
    "client": "Ray Client (use raylite.init(address='ray://...') without raylite run)",
    "job_submission": "Ray Jobs",
    "autoscaler": "the Ray autoscaler",
}


# Ray's private modules that raylite provides under Ray's names: the test helpers Ray's own
# test suites import (raylite/_common, raylite/_private); nothing else private resolves.
_RAY_TEST_HELPERS = frozenset(
    {
        "ray._common",
        "ray._common.test_utils",
        "ray._private",
        "ray._private.client_mode_hook",
        "ray._private.test_utils",
    }
)


def unsupported(ray_name: str) -> str:
    """The message for a Ray module or attribute raylite does not provide.

    Args:
        ray_name: the dotted name as a Ray program spells it, e.g. ``"ray.util.collective"``.
    """
    parts = ray_name.split(".")
    what = _LIBRARIES.get(parts[1], "") if len(parts) > 1 else ""
    named = f"{ray_name} ({what})" if what else ray_name
    return (
        f"raylite does not provide {named}: raylite implements Ray Core's API on one machine "
        "(see 'What raylite does not support' in its README). To use it, run the program on "
        "Ray itself: plain 'python' with the 'ray' package installed."
    )


def _ray_name(raylite_name: str) -> str:
    return "ray" + raylite_name[len("raylite") :]


def module_getattr(module_name: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for raylite's public module ``module_name``.

    A package's submodule is imported on first use (``ray.util.queue`` after ``import
    ray``); any other public name it lacks raises an ``AttributeError`` saying that raylite
    does not provide the Ray name, never a silent stand-in.

    Example::

        __getattr__ = module_getattr(__name__)
    """

    def __getattr__(name: str) -> Any:
        module = sys.modules[module_name]
        if name.startswith("_"):  # dunders and private names: Python's own message
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}", name=name)
        if hasattr(module, "__path__"):
            submodule = f"{module_name}.{name}"
            try:
                return importlib.import_module(submodule)
            except ModuleNotFoundError as exc:
                if exc.name != submodule:
                    raise  # the submodule exists but something it imports does not
        raise AttributeError(unsupported(f"{_ray_name(module_name)}.{name}"), name=name)

    return __getattr__


class _AliasLoader:
    """Loads ``ray.X`` as the already-built module ``raylite.X``, unchanged."""

    def __init__(self, *, alias: str, target: str) -> None:
        self._alias = alias
        self._target = target
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self._target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system has just set __spec__ to the alias's; keep raylite's own (its
        # other attributes it leaves alone when they are set).
        module.__spec__ = self._spec
        # Ray's test helpers in this package enter sys.modules under Ray's names now, before
        # anyone imports them: a finder ahead of ours would otherwise load raylite's file a
        # second time under the Ray name. pytest's assertion rewriter is one: it takes
        # test_utils.py for a test file, loads it as ray._common.test_utils, and its relative
        # imports then reach for ray._api (every Ray test module importing it failed to load).
        for helper in _RAY_TEST_HELPERS:
            if helper.rpartition(".")[0] == self._alias:
                target = "raylite" + helper[len("ray") :]
                sys.modules[helper] = importlib.import_module(target)


class _RayAliasFinder:
    """While raylite stands in for ``ray``, answers each import of ``ray.X`` with raylite's
    module ``raylite.X``, or an error naming what raylite does not provide."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("ray.") or not standing_in_for_ray():
            return None  # real Ray (or no ray at all) imports as usual
        parts = fullname.split(".")
        target_name = ".".join(["raylite", *parts[1:]])
        found = None
        # raylite's internals stay hidden; Ray's test helpers resolve (raylite has them)
        if fullname in _RAY_TEST_HELPERS or not any(p.startswith("_") for p in parts[1:]):
            try:
                found = importlib.util.find_spec(target_name)
            except ModuleNotFoundError:
                found = None
        if found is None:
            raise ModuleNotFoundError(unsupported(fullname), name=fullname)
        # importlib's loader protocol, duck-typed
        loader: Any = _AliasLoader(alias=fullname, target=target_name)
        return importlib.util.spec_from_loader(fullname, loader)


def standing_in_for_ray() -> bool:
    """True when ``import ray`` in this process gives raylite (``install_as_ray()``,
    ``raylite run``, or the program's own ``sys.modules["ray"] = raylite``)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray is sys.modules.get("raylite")


_FINDER = _RayAliasFinder()
if not any(isinstance(finder, _RayAliasFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _FINDER)


def install_as_ray() -> None:
    """Makes ``import ray`` (and ``ray.util``, ``ray.exceptions``, ...) give raylite.

    For this process and raylite's worker processes: call it before ``init()``, and before
    anything imports ``ray``. A Ray program then runs unchanged, as under ``raylite run``.
    Calling it again does nothing.

    Example::

        import raylite
        raylite.install_as_ray()

        import ray
        from ray.util import ActorPool

        @ray.remote
        def square(x):
            return x * x

        print(ray.get([square.remote(i) for i in range(4)]))  # [0, 1, 4, 9]

    Raises:
        RuntimeError: the real ``ray`` package is imported in this process already, or
            raylite is initialized already (its workers would not see the change).
    """
    import raylite

    from . import _runtime
    from ._ray import real_ray

    if standing_in_for_ray():
        return
    if real_ray() is not None:
        raise RuntimeError(
            "install_as_ray(): the real 'ray' package is imported in this process already, "
            "so 'ray' cannot become raylite. Call install_as_ray() before anything imports "
            "ray (first thing in the program), or run the program with 'raylite run'."
        )
    if _runtime.current_or_none() is not None:
        raise RuntimeError(
            "install_as_ray() after raylite.init(): raylite's worker processes, forked at "
            "init, would not see it. Call install_as_ray() first, or call "
            "raylite.shutdown() before it."
        )
    for name in [n for n in sys.modules if n.startswith("ray.")]:
        del sys.modules[name]  # leftovers of a failed import of real Ray
    sys.modules["ray"] = raylite


def shim_dir() -> str:
    """The folder holding the ``ray`` package that installs raylite as ``ray``."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_shim")


def run_program(target: str, args: list[str], *, as_module: bool = False) -> int:
    """Runs a Ray program on raylite, unchanged: what ``raylite run`` does.

    ``target`` runs as ``__main__`` with ``sys.argv`` and ``sys.path[0]`` set as ``python
    target args...`` (or ``python -m target``) would set them. Python processes it starts
    find raylite's ``ray`` package first on ``PYTHONPATH``.

    Args:
        target: the script's path (or, with ``as_module``, a module name).
        args: the program's own arguments.
        as_module: run ``target`` as a module, like ``python -m``.

    Returns:
        0 when the program returns; 1 after printing the traceback of an exception it
        raised; 2 when the script does not exist. ``SystemExit`` (``sys.exit(n)``)
        propagates, as in ``python``.
    """
    if not as_module and not os.path.isfile(target):
        print(f"raylite run: can't open file {target!r}: no such file", file=sys.stderr)
        return 2
    install_as_ray()
    paths = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = shim_dir() + (os.pathsep + paths if paths else "")
    sys.argv = [target, *args]
    try:
        if as_module:
            sys.path[0] = os.getcwd()
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            path = os.path.abspath(target)  # as __main__.__file__ is under python
            sys.path[0] = os.path.dirname(path)
            runpy.run_path(path, run_name="__main__")
    except Exception as exc:
        tb = _user_frames(exc.__traceback__)
        traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
        return 1
    return 0


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from the program's first frame on: without this module's and runpy's."""
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in (__name__, "runpy"):
        tb = tb.tb_next
    return tb
