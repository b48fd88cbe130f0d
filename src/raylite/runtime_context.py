"""Public home of ``RuntimeContext`` (as Ray's ``ray.runtime_context``)."""

from ._api import RuntimeContext as RuntimeContext
from ._api import get_runtime_context as get_runtime_context
from ._compat import module_getattr

__all__ = ["RuntimeContext", "get_runtime_context"]

__getattr__ = module_getattr(__name__)  # a Ray name raylite lacks: an error that says so
