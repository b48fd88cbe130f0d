"""Public home of ``RemoteFunction`` (as Ray's ``ray.remote_function``)."""

from ._remote_function import RemoteFunction as RemoteFunction

__all__ = ["RemoteFunction"]
