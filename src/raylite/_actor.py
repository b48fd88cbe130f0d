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
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from ._signature import ArgSpec, arg_spec

__all__ = [
    "ActorClass",
    "ActorClassInheritanceException",
    "ActorHandle",
    "ActorMethod",
    "ActorMeta",
    "IntendedExit",
    "exit_outside_actor",
    "method",
    "register_foreign_handles",
]

_METHOD_OPTIONS = "__raylite_method_options__"


class IntendedExit(SystemExit):
    """Raised by ``exit_actor()``: the actor's process (or host) ends the actor for good."""


def exit_outside_actor() -> TypeError:
    """The error of ``exit_actor()`` called where no actor runs (a runtime raises it)."""
    return TypeError(
        "exit_actor() was called outside an actor: call it inside an actor method to end "
        "that actor gracefully, or use raylite.kill(handle) to end an actor from outside."
    )


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
    # {method name: what its calls' arguments are checked against}; "__init__" for .remote()
    specs: dict[str, ArgSpec | None] = field(default_factory=dict)
    # {method name: its __ray_invocation_decorator__}, Ray's caller-side wrapper of calls
    decorators: dict[str, Callable[..., Any]] = field(default_factory=dict)


def _meta_of(cls: type) -> ActorMeta:
    methods: dict[str, MethodOptions] = {}
    specs: dict[str, ArgSpec | None] = {"__init__": arg_spec(cls)}
    missing_self = set()
    generators: set[str] = set()
    decorators: dict[str, Callable[..., Any]] = {}
    is_async = False
    for name, attr in inspect.getmembers(cls):
        if name.startswith("__") and name not in ("__call__",):
            continue
        raw = inspect.getattr_static(cls, name, None)
        if isinstance(raw, (staticmethod, classmethod)) or not inspect.isfunction(attr):
            if isinstance(raw, (staticmethod, classmethod)):
                methods[name] = MethodOptions(num_returns=1)
                specs[name] = arg_spec(attr)  # bound already (classmethod) or no self
            continue
        opts = getattr(attr, _METHOD_OPTIONS, MethodOptions())
        if is_generator_function(attr):
            generators.add(name)
        returns = resolve_num_returns(
            opts.num_returns, name in generators, f"{cls.__name__}.{name}()"
        )
        methods[name] = replace(opts, num_returns=returns)
        specs[name] = arg_spec(attr, drop_first=True)
        decorator = getattr(attr, "__ray_invocation_decorator__", None)
        if decorator is not None:
            decorators[name] = decorator
        params = list(inspect.signature(attr).parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        ):
            missing_self.add(name)
        if inspect.iscoroutinefunction(attr) or inspect.isasyncgenfunction(attr):
            is_async = True
    return ActorMeta(
        cls.__name__,
        methods,
        frozenset(missing_self),
        is_async,
        frozenset(generators),
        specs,
        decorators,
    )


def _ray_ready(self: Any) -> bool:
    """``handle.__ray_ready__.remote()``: True once the actor is created (its ``__init__``
    ran); waiting on it is how Ray programs wait for an actor to be up."""
    return True


def _ray_call(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``handle.__ray_call__.remote(fn, *args)``: runs ``fn(instance, *args, **kwargs)``
    inside the actor, in call order like a method."""
    return fn(self, *args, **kwargs)


def _ray_terminate(self: Any) -> None:
    """``handle.__ray_terminate__.remote()``: ends the actor gracefully once the calls
    submitted before it have run (``exit_actor()`` inside it)."""
    from .actor import exit_actor  # the public module imports this one

    exit_actor()


# Ray's builtin actor methods, callable through every handle.
_BUILTIN_METHODS = {
    "__ray_ready__": _ray_ready,
    "__ray_call__": _ray_call,
    "__ray_terminate__": _ray_terminate,
}
_WITH_BUILTINS = "__raylite_builtin_methods__"


def _with_builtins(cls: type) -> type:
    """``cls`` with Ray's builtin actor methods added, as Ray adds them: a subclass of the
    same name, module and qualname (``cls`` itself when it already has them, or when it
    cannot be derived from: then only its own methods are callable)."""
    if vars(cls).get(_WITH_BUILTINS):
        return cls
    namespace: dict[str, Any] = {
        **_BUILTIN_METHODS,
        _WITH_BUILTINS: True,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
    }
    try:
        return type(cls)(cls.__name__, (cls,), namespace)
    except Exception:  # a metaclass that takes other arguments, a final class...
        return cls


class ActorClassInheritanceException(TypeError):
    """A class was defined with an actor class (the result of ``@remote``) as a base."""


def _inheritance_error(name: str, bases: Any) -> ActorClassInheritanceException:
    parent = next((b.__name__ for b in bases if isinstance(b, ActorClass)), "?")
    return ActorClassInheritanceException(
        f"Attempted to define subclass '{name}' of actor class '{parent}'. Inheriting from "
        "actor classes is not currently supported. You can instead inherit from a non-actor "
        "base class and make the derived class an actor class (with @raylite.remote)."
    )


class ActorClass:
    """A class whose instances are actors: ``Cls.remote(*args)`` returns an ActorHandle.

    As in Ray, the decorated name is an instance of a subclass of both ``ActorClass`` and
    the user's class (``ActorClass(Counter)``): class attributes, inherited attributes,
    ``classmethod``\\ s and ``staticmethod``\\ s are reachable through it, in the driver and
    inside the actor's own methods.

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
    # Set by __init__ (straight into the instance's __dict__).
    _cls: type
    _options: ActorOptions
    _cls_id: int
    _meta: ActorMeta
    __name__: str
    __qualname__: str

    def __new__(klass, cls: type, options: ActorOptions, cls_id: int = 0) -> ActorClass:
        if klass is ActorClass:  # @remote: derive from the user's class, once
            klass = _derived_class(cls)
        return object.__new__(klass) if klass is ActorClass else _instance_of(klass)

    def __init__(self, cls: type, options: ActorOptions, cls_id: int = 0) -> None:
        if isinstance(cls, str):  # `class Derived(SomeActorClass)`: Python calls us so
            raise _inheritance_error(cls, options)
        meta = _meta_of(cls)
        for group in {m.concurrency_group for m in meta.methods.values()} - {None}:
            if group not in options.concurrency_groups:
                raise ValueError(
                    f"{cls.__name__}: a method uses concurrency_group={group!r}, but the class "
                    f"declares {sorted(options.concurrency_groups) or 'none'}. Add it: "
                    f"@raylite.remote(concurrency_groups={{{group!r}: 1}})."
                )
        # Straight into __dict__: the user's class may define __setattr__.
        vars(self).update(
            _cls=_with_builtins(cls),  # what the actor's process instantiates
            _options=options,
            _cls_id=cls_id or int.from_bytes(os.urandom(7), "big"),
            _meta=meta,
            __name__=cls.__name__,
            __qualname__=cls.__qualname__,
            __doc__=cls.__doc__,
        )

    # The user's class must not change what an actor class is: identity, pickling, calls.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_rebuild_actor_class, (self._cls, self._options, self._cls_id))

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Actors cannot be instantiated directly. Instead of "
            f"'{self.__name__}()', use '{self.__name__}.remote()'."
        )

    def __repr__(self) -> str:
        return f"<raylite actor class {self.__qualname__}>"

    def options(self, **options: Any) -> ActorClass:
        """A variant of this actor class with some options overridden (validated now)."""
        return type(self)(self._cls, actor_options(self._options, **options), self._cls_id)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Creates the actor (asynchronously) and returns its handle at once.

        Raises:
            TypeError: the arguments do not fit ``__init__``'s signature (as in Ray).
        """
        spec = self._meta.specs.get("__init__")
        if spec is not None:
            spec.check(f"{self.__name__}.remote()", args, kwargs)
        return _runtime.current().create_actor(self, args, kwargs, self._options)

    def _remote(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **actor_options: Any,
    ) -> ActorHandle:
        """Ray's lower-level form: ``Cls._remote(args=[1], num_cpus=2)`` is
        ``Cls.options(num_cpus=2).remote(1)``."""
        cls = self.options(**actor_options) if actor_options else self
        return cls.remote(*(args or ()), **(kwargs or {}))

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Ray DAGs (.bind) are not supported by raylite.")


def _derived_class(cls: type) -> type[ActorClass]:
    """``ActorClass(cls)``, a subclass of both, as Ray makes; plain ``ActorClass`` where
    ``cls`` cannot be derived from (a metaclass or layout conflict, an abstract class)."""
    try:
        derived = type(
            f"ActorClass({cls.__name__})",
            (ActorClass, cls),
            {"__module__": cls.__module__, "__doc__": cls.__doc__},
        )
        _instance_of(derived)  # fails here, not at the user's @remote, if it cannot be made
    except Exception:
        return ActorClass
    return derived


def _instance_of(klass: type) -> Any:
    """A bare instance of a derived actor class, made by the first builtin ``__new__`` in
    its MRO (``object``'s, or a builtin base's): the user's own ``__new__`` may need
    arguments, and this object is the class's stand-in, never an instance of it."""
    for base in klass.__mro__[1:]:
        new = vars(base).get("__new__")
        if new is not None and not isinstance(new, staticmethod):  # staticmethod: Python's
            return new(klass)
    return object.__new__(klass)


def _rebuild_actor_class(cls: type, options: ActorOptions, cls_id: int) -> ActorClass:
    """Unpickles an actor class (inside a worker, a method may refer to its own class)."""
    return ActorClass(cls, options, cls_id)


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
        if meta is not None and name in _BUILTIN_METHODS:
            opts = MethodOptions(num_returns=1)
        elif meta is None or name.startswith("__"):
            raise AttributeError(name)
        else:
            opts = meta.methods.get(name)
            if opts is None:
                raise AttributeError(
                    f"Actor {meta.class_name} has no method {name!r}; it has: "
                    f"{', '.join(sorted(meta.methods)) or 'none'}."
                )
        # Kept in the handle's __dict__, so later accesses find it without this hook;
        # the method holds the handle weakly, so the two make no cycle (the actor lives
        # as long as its handles, not until the next garbage collection).
        kind = _DecoratedActorMethod if name in meta.decorators else ActorMethod
        method = self.__dict__[name] = kind(self, name, opts)
        return method

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

    __slots__ = ("_handle_ref", "_actor_ref", "_meta", "_name", "_options", "_spec", "_what")

    def __init__(self, handle: ActorHandle, name: str, options: MethodOptions) -> None:
        self._handle_ref = weakref.ref(handle)
        self._actor_ref = handle._actor_ref  # keeps the actor alive, as the handle does
        self._meta = meta = handle._meta
        self._name = name
        self._options = options
        # What each .remote() checks, looked up once per method, not once per call.
        self._spec = meta.specs.get(name)
        self._what = f"{meta.class_name}.{name}.remote()"

    @property
    def _handle(self) -> ActorHandle:
        """The handle this method came from, or an equal one once that handle is gone."""
        handle = self._handle_ref()
        return handle if handle is not None else ActorHandle(self._actor_ref, self._meta)

    def __reduce__(self) -> Any:
        return (type(self), (self._handle, self._name, self._options))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Actor methods cannot be called directly. Instead of running "
            f"'object.{self._name}()', try 'object.{self._name}.remote()'."
        )

    def options(self, **options: Any) -> ActorMethod:
        opts = method_options(self._options, **options)
        meta = self._meta
        what = f"{meta.class_name}.{self._name}()"
        returns = resolve_num_returns(opts.num_returns, self._name in meta.generators, what)
        return type(self)(self._handle, self._name, replace(opts, num_returns=returns))

    def _remote(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **method_options: Any,
    ) -> Any:
        """Ray's lower-level form: ``h.m._remote(args=[1], num_returns=2)`` is
        ``h.m.options(num_returns=2).remote(1)``."""
        call = self.options(**method_options) if method_options else self
        return call.remote(*(args or ()), **(kwargs or {}))

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the method on the actor; returns ObjectRef(s) (as ``num_returns`` says)."""
        meta = self._meta
        if self._name in meta.missing_self:
            raise TypeError(
                f"Actor method {meta.class_name}.{self._name}() is declared without 'self', "
                f"so the actor cannot call it on its instance. Declare it as "
                f"'def {self._name}(self, ...)'."
            )
        if self._spec is not None:
            self._spec.check(self._what, args, kwargs)
        options = self._options
        refs = _runtime.current().submit_actor_call(self._handle, self._name, args, kwargs, options)
        n = options.num_returns
        if n == 1 or isinstance(n, str):
            return refs[0]
        return None if n == 0 else refs


class _DecoratedActorMethod(ActorMethod):
    """A method carrying Ray's ``__ray_invocation_decorator__``: the decorator wraps the
    caller's side of each call, ``decorator(invoke)(args, kwargs)``, where ``invoke(args,
    kwargs)`` submits the call, as on Ray (a library may reshape arguments or results there).
    Undecorated methods are plain ``ActorMethod``s and pay nothing for it."""

    __slots__ = ()

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        decorator = self._meta.decorators[self._name]
        return decorator(self._invoke)(args, kwargs)

    def _invoke(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        return ActorMethod.remote(self, *args, **kwargs)
