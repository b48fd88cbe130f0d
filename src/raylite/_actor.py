"""``@remote`` on a class: ``ActorClass``, ``ActorHandle``, ``ActorMethod``, ``method``.

An actor is one instance of a class living in a worker process; ``handle.m.remote(x)`` runs
``instance.m(x)`` there and returns ObjectRef(s). Calls from one caller run in the order they
were made. The handle holds an ObjectRef to the actor's id object, so the runtime's
reference counting covers handles too: pass handles to tasks and other actors freely, and
the actor ends once every handle is gone (unless ``lifetime="detached"``).
"""

from __future__ import annotations

import abc
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import _runtime
from ._object_ref import ObjectRef
from ._options import (
    ActorOptions,
    MethodOptions,
    actor_options,
    is_generator_function,
    method_options,
    resolve_num_returns,
)

__all__ = [
    "ActorClass",
    "ActorHandle",
    "ActorMethod",
    "ActorMeta",
    "method",
    "register_foreign_handles",
]

_METHOD_OPTIONS = "__raylite_method_options__"


def method(*args: Any, **options: Any) -> Any:
    """Sets options of one actor method: ``@raylite.method(num_returns=2)``.

    Args:
        num_returns: how many ObjectRefs a call returns.
        concurrency_group: the group (``concurrency_groups=`` on the class) it runs in.
    """
    if args:
        raise TypeError(
            "@raylite.method takes keyword arguments only, e.g. '@raylite.method(num_returns=2)'."
        )
    opts = method_options(**options)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _METHOD_OPTIONS, opts)
        return fn

    return decorate


@dataclass(frozen=True)
class ActorMeta:
    """What a handle knows of its class: name, methods and their options."""

    class_name: str
    methods: dict[str, MethodOptions]
    missing_self: frozenset[str]  # methods declared without a `self` parameter
    is_async: bool
    generators: frozenset[str] = frozenset()  # methods that yield


def _meta_of(cls: type) -> ActorMeta:
    methods: dict[str, MethodOptions] = {}
    missing_self = set()
    generators: set[str] = set()
    is_async = False
    for name, attr in inspect.getmembers(cls):
        if name.startswith("__") and name not in ("__call__",):
            continue
        raw = inspect.getattr_static(cls, name, None)
        if isinstance(raw, (staticmethod, classmethod)) or not inspect.isfunction(attr):
            if isinstance(raw, (staticmethod, classmethod)):
                methods[name] = MethodOptions(num_returns=1)
            continue
        opts = getattr(attr, _METHOD_OPTIONS, MethodOptions())
        if is_generator_function(attr):
            generators.add(name)
        returns = resolve_num_returns(
            opts.num_returns, name in generators, f"{cls.__name__}.{name}()"
        )
        methods[name] = replace(opts, num_returns=returns)
        params = list(inspect.signature(attr).parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        ):
            missing_self.add(name)
        if inspect.iscoroutinefunction(attr) or inspect.isasyncgenfunction(attr):
            is_async = True
    return ActorMeta(cls.__name__, methods, frozenset(missing_self), is_async, frozenset(generators))


class ActorClass:
    """A class whose instances are actors: ``Cls.remote(*args)`` returns an ActorHandle.

    Example:
        >>> @raylite.remote
        ... class Counter:
        ...     def __init__(self):
        ...         self.n = 0
        ...     def add(self, k=1):
        ...         self.n += k
        ...         return self.n
        >>> c = Counter.remote()
        >>> raylite.get([c.add.remote() for _ in range(3)])
        [1, 2, 3]
    """

    __module__ = "raylite.actor"

    def __init__(self, cls: type, options: ActorOptions, cls_id: int = 0) -> None:
        self._cls = cls
        self._options = options
        self._cls_id = cls_id or int.from_bytes(os.urandom(7), "big")
        self._meta = _meta_of(cls)
        for group in {m.concurrency_group for m in self._meta.methods.values()} - {None}:
            if group not in options.concurrency_groups:
                raise ValueError(
                    f"{cls.__name__}: a method uses concurrency_group={group!r}, but the class "
                    f"declares {sorted(options.concurrency_groups) or 'none'}. Add it: "
                    f"@raylite.remote(concurrency_groups={{{group!r}: 1}})."
                )
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Actors cannot be instantiated directly. Instead of "
            f"'{self.__name__}()', use '{self.__name__}.remote()'."
        )

    def __repr__(self) -> str:
        return f"<raylite actor class {self.__qualname__}>"

    def options(self, **options: Any) -> ActorClass:
        """A variant of this actor class with some options overridden (validated now)."""
        return ActorClass(self._cls, actor_options(self._options, **options), self._cls_id)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Creates the actor (asynchronously) and returns its handle at once."""
        return _runtime.current().create_actor(self, args, kwargs, self._options)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Ray DAGs (.bind) are not supported by raylite.")


# Other runtimes' actor handle classes: each function tells one of them (Ray's, without
# importing ray), so that isinstance(handle, ActorHandle) holds for those too.
_foreign_handles: list[Callable[[type], bool]] = []


def register_foreign_handles(is_handle_class: Callable[[type], bool]) -> None:
    """Makes another runtime's actor handles instances of :class:`ActorHandle`."""
    _foreign_handles.append(is_handle_class)


class ActorHandle(metaclass=abc.ABCMeta):  # noqa: B024 (an ABC for its virtual subclasses)
    """A reference to an actor; ``handle.method.remote(...)`` calls it.

    On a Ray cluster the handles are Ray's own, which are instances of this class too.
    """

    __module__ = "raylite.actor"

    def __init__(self, actor_ref: ObjectRef, meta: ActorMeta) -> None:
        self._actor_ref = actor_ref
        self._meta = meta

    @classmethod
    def __subclasshook__(cls, subclass: type) -> Any:
        # ABCMeta caches the answer per class, so this runs once per class, not per check.
        if cls is ActorHandle and any(is_handle(subclass) for is_handle in _foreign_handles):
            return True
        return NotImplemented

    @property
    def _actor_id(self) -> int:
        return self._actor_ref._id

    def __getattr__(self, name: str) -> ActorMethod:
        meta = self.__dict__.get("_meta")
        if meta is None or name.startswith("__"):
            raise AttributeError(name)
        opts = meta.methods.get(name)
        if opts is None:
            raise AttributeError(
                f"Actor {meta.class_name} has no method {name!r}; it has: "
                f"{', '.join(sorted(meta.methods)) or 'none'}."
            )
        return ActorMethod(self, name, opts)

    def __reduce__(self) -> Any:
        return (ActorHandle, (self._actor_ref, self._meta))

    def __eq__(self, other: object) -> bool:
        return type(other) is ActorHandle and other._actor_ref == self._actor_ref

    def __hash__(self) -> int:
        return hash(self._actor_ref)

    def __repr__(self) -> str:
        return f"Actor({self._meta.class_name}, {self._actor_ref.hex()[-16:]})"


class ActorMethod:
    """``handle.method``: call it with ``.remote(...)``."""

    __module__ = "raylite.actor"

    def __init__(self, handle: ActorHandle, name: str, options: MethodOptions) -> None:
        self._handle = handle
        self._name = name
        self._options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Actor methods cannot be called directly. Instead of running "
            f"'object.{self._name}()', try 'object.{self._name}.remote()'."
        )

    def options(self, **options: Any) -> ActorMethod:
        opts = method_options(self._options, **options)
        meta = self._handle._meta
        what = f"{meta.class_name}.{self._name}()"
        returns = resolve_num_returns(opts.num_returns, self._name in meta.generators, what)
        return ActorMethod(self._handle, self._name, replace(opts, num_returns=returns))

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the method on the actor; returns ObjectRef(s) (as ``num_returns`` says)."""
        meta = self._handle._meta
        if self._name in meta.missing_self:
            raise TypeError(
                f"Actor method {meta.class_name}.{self._name}() is declared without 'self', "
                f"so the actor cannot call it on its instance. Declare it as "
                f"'def {self._name}(self, ...)'."
            )
        refs = _runtime.current().submit_actor_call(
            self._handle, self._name, args, kwargs, self._options
        )
        n = self._options.num_returns
        if n == 1 or isinstance(n, str):
            return refs[0]
        return None if n == 0 else refs
