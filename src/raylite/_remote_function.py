"""``@remote`` on a function: ``RemoteFunction``, ``.options(...)`` and ``.remote(...)``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from . import _runtime
from ._object_ref import ObjectRef
from ._options import TaskOptions, is_generator_function, resolve_num_returns, task_options
from ._signature import ArgSpec, arg_spec

__all__ = ["RemoteFunction"]


class RemoteFunction:
    """A function that runs as a task: ``f.remote(*args)`` returns ObjectRef(s) at once.

    Made by ``@raylite.remote`` / ``@raylite.remote(num_cpus=..., ...)``; call
    ``.options(...)`` for a variant with other options (same function, shipped once).

    Example:
        >>> @raylite.remote
        ... def square(x):
        ...     return x * x
        >>> raylite.get([square.remote(i) for i in range(4)])
        [0, 1, 4, 9]
    """

    __module__ = "raylite.remote_function"

    def __init__(
        self,
        function: Callable[..., Any],
        options: TaskOptions,
        fn_id: int = 0,
        spec: ArgSpec | None | bool = True,
    ) -> None:
        self._function = function
        name = getattr(function, "__name__", "remote_function")
        returns = resolve_num_returns(
            options.num_returns, is_generator_function(function), f"{name}()"
        )
        if returns != options.num_returns:
            options = replace(options, num_returns=returns)
        self._options = options
        # Shared by all .options() variants, so the body travels to each worker once.
        self._fn_id = fn_id or int.from_bytes(os.urandom(7), "big")
        # What .remote() checks its arguments against (made once per function; None:
        # Python cannot tell the signature, so calls are not checked).
        self._spec = arg_spec(function) if spec is True else spec or None
        self.__name__ = getattr(function, "__name__", "remote_function")
        self._call = f"{self.__name__}.remote()"  # how argument errors name the call
        self.__qualname__ = getattr(function, "__qualname__", self.__name__)
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    @property
    def function_name(self) -> str:
        """The name tasks of this function show in errors, logs and the timeline."""
        return self._options.name or self.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Remote functions cannot be called directly. Instead of running "
            f"'{self.__name__}()', try '{self.__name__}.remote()'."
        )

    def __repr__(self) -> str:
        return f"<raylite remote function {self.__qualname__}>"

    def options(self, **options: Any) -> RemoteFunction:
        """A variant of this function with some options overridden (validated now).

        Raises:
            ValueError: an unknown option or a bad value (the message names it).
        """
        return RemoteFunction(
            self._function, task_options(self._options, **options), self._fn_id, self._spec
        )

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submits a task; returns an ObjectRef, a list of them (``num_returns > 1``),
        ``None`` (``num_returns=0``), or for a generator function an ``ObjectRefGenerator``
        (``"streaming"``, the default) or one ObjectRef to a ``DynamicObjectRefGenerator``
        (``"dynamic"``).

        Raises:
            TypeError: the arguments do not fit the function's signature (as in Ray).
        """
        if self._spec is not None:
            self._spec.check(self._call, args, kwargs)
        refs = _runtime.current().submit_task(self, args, kwargs, self._options)
        n = self._options.num_returns
        if n == 1 or isinstance(n, str):
            return refs[0]
        return None if n == 0 else refs

    def _remote(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **task_options: Any,
    ) -> Any:
        """Ray's lower-level form, used by libraries: ``f._remote(args=[1], kwargs={},
        num_returns=2)`` is ``f.options(num_returns=2).remote(1)``."""
        fn = self.options(**task_options) if task_options else self
        return fn.remote(*(args or ()), **(kwargs or {}))

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "Ray DAGs (.bind) are not supported by raylite; call .remote() instead."
        )


def is_object_ref(value: Any) -> bool:
    return isinstance(value, ObjectRef)
