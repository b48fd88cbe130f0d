"""Public home of the actor classes (as Ray's ``ray.actor``): where their ``__module__``
points, so pickles and reprs name an importable module."""

from ._actor import ActorClass as ActorClass
from ._actor import ActorHandle as ActorHandle
from ._actor import ActorMethod as ActorMethod

__all__ = ["ActorClass", "ActorHandle", "ActorMethod"]
