"""Public home of ``RemoteFunction`` (as Ray's ``ray.remote_function``)."""

from ._compat import module_getattr
from ._remote_function import RemoteFunction as RemoteFunction

__all__ = ["RemoteFunction"]

__getattr__ = module_getattr(__name__)  # a Ray name raylite lacks: an error that says so
