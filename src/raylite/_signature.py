"""Checking a call's arguments against a function's signature at ``.remote()``, as Ray does.

Ray binds ``.remote(*args, **kwargs)`` to the signature of the function, method or actor
``__init__`` and raises ``TypeError`` at once, not when the task runs. :class:`ArgSpec` is
made once per function or class (at ``@remote``) and keeps only the parameters' names and
kinds: it is small, picklable (it travels inside actor handles) and holds none of the
defaults. :meth:`ArgSpec.check` answers the common call (positional arguments only, within
the allowed count) with two comparisons, and binds a signature only for the rest.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ArgSpec", "arg_spec"]

_P = inspect.Parameter
_NO_DEFAULT = _P.empty
_KIND: Any = type(_P.POSITIONAL_ONLY)  # inspect's _ParameterKind, an IntEnum


@dataclass(frozen=True)
class ArgSpec:
    """The parameters of a callable: ``(name, kind, has_default)`` each, ``self`` left out."""

    params: tuple[tuple[str, int, bool], ...]
    # The fast paths: no keywords and ``min_pos <= len(args) <= max_pos`` binds (``fast``);
    # with keywords, :meth:`_binds` decides from these.
    min_pos: int = field(init=False)
    max_pos: float = field(init=False)
    fast: bool = field(init=False)  # False: a required keyword-only parameter
    keywords: dict[str, int] = field(init=False)  # {name: position, -1 if keyword-only}
    required: tuple[tuple[str, int], ...] = field(init=False)  # (name, position or -1)
    var_keyword: bool = field(init=False)
    _signature: list[inspect.Signature] = field(
        init=False, default_factory=list, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        positional = [p for p in self.params if p[1] <= _P.POSITIONAL_OR_KEYWORD]
        set_ = object.__setattr__
        set_(self, "min_pos", sum(1 for p in positional if not p[2]))
        has_var = any(p[1] == _P.VAR_POSITIONAL for p in self.params)
        set_(self, "max_pos", float("inf") if has_var else len(positional))
        set_(self, "fast", not any(p[1] == _P.KEYWORD_ONLY and not p[2] for p in self.params))
        keywords = {name: i for i, (name, kind, _) in enumerate(positional)
                    if kind == _P.POSITIONAL_OR_KEYWORD}  # fmt: skip
        keywords.update((p[0], -1) for p in self.params if p[1] == _P.KEYWORD_ONLY)
        set_(self, "keywords", keywords)
        required = [(name, i) for i, (name, _, default) in enumerate(positional) if not default]
        required += [(p[0], -1) for p in self.params if p[1] == _P.KEYWORD_ONLY and not p[2]]
        set_(self, "required", tuple(required))
        set_(self, "var_keyword", any(p[1] == _P.VAR_KEYWORD for p in self.params))

    def _binds(self, n: int, kwargs: dict[str, Any]) -> bool:
        """True when ``n`` positional arguments and ``kwargs`` surely bind (False: maybe not;
        :meth:`check` then binds for Python's own error)."""
        if n > self.max_pos:
            return False
        keywords = self.keywords
        for name in kwargs:
            position = keywords.get(name)
            if position is None:
                if not self.var_keyword:
                    return False  # unknown (or positional-only) name
            elif 0 <= position < n:
                return False  # given twice
        return all(
            position != -1 and position < n or (name in kwargs and keywords.get(name) is not None)
            for name, position in self.required
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"params": self.params}  # the cached Signature is rebuilt where needed

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "params", state["params"])
        object.__setattr__(self, "_signature", [])
        self.__post_init__()

    def check(self, what: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raises ``TypeError`` (Ray's text, prefixed by ``what``) if the call cannot bind.

        Args:
            what: the call as the user wrote it, e.g. ``"f.remote()"``.
        """
        if not kwargs:
            if self.fast and self.min_pos <= len(args) <= self.max_pos:
                return
        elif self._binds(len(args), kwargs):
            return
        if not self._signature:
            self._signature.append(
                inspect.Signature(
                    [
                        _P(name, _KIND(kind), default=None if has_default else _NO_DEFAULT)
                        for name, kind, has_default in self.params
                    ]
                )
            )
        try:
            self._signature[0].bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{what}: {exc}") from None


def arg_spec(fn: Any, *, drop_first: bool = False) -> ArgSpec | None:
    """The :class:`ArgSpec` of ``fn`` (``drop_first``: leave out ``self``), or ``None`` when
    Python cannot tell its signature (some builtins): such calls are not checked."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if drop_first:
        if not params or params[0].kind not in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
            return None  # no `self` to drop (a method declared without it): checked elsewhere
        params = params[1:]
    return ArgSpec(tuple((p.name, int(p.kind), p.default is not _NO_DEFAULT) for p in params))
