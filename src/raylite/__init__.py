"""raylite: Ray Core's API, embedded and fast on one machine.

``import raylite as ray`` runs Ray Core programs unchanged: ``@ray.remote`` functions run
as tasks in worker processes on this machine, with no server to start.
"""

from . import actor as actor
from . import exceptions as exceptions
from . import remote_function as remote_function
from . import runtime_context as runtime_context
from . import util as util
from ._actor import ActorClass as ActorClass
from ._actor import ActorHandle as ActorHandle
from ._actor import method as method
from ._api import available_resources as available_resources
from ._api import cancel as cancel
from ._api import cluster_resources as cluster_resources
from ._api import get as get
from ._api import get_actor as get_actor
from ._api import get_gpu_ids as get_gpu_ids
from ._api import get_runtime_context as get_runtime_context
from ._api import init as init
from ._api import is_initialized as is_initialized
from ._api import kill as kill
from ._api import put as put
from ._api import remote as remote
from ._api import shutdown as shutdown
from ._api import timeline as timeline
from ._api import wait as wait
from ._compat import install_as_ray as install_as_ray
from ._compat import module_getattr
from ._object_ref import DynamicObjectRefGenerator as DynamicObjectRefGenerator
from ._object_ref import ObjectRef as ObjectID  # Ray's older name, still exported by Ray
from ._object_ref import ObjectRef as ObjectRef
from ._object_ref import ObjectRefGenerator as ObjectRefGenerator
from ._remote_function import RemoteFunction as RemoteFunction

__version__ = "0.1.0"

__all__ = [
    # lifecycle
    "init",
    "shutdown",
    "is_initialized",
    # tasks and objects
    "remote",
    "get",
    "put",
    "wait",
    "cancel",
    "ObjectRef",
    "ObjectID",
    "ObjectRefGenerator",
    "DynamicObjectRefGenerator",
    "RemoteFunction",
    # actors
    "method",
    "kill",
    "get_actor",
    "ActorClass",
    "ActorHandle",
    # resources and context
    "available_resources",
    "cluster_resources",
    "get_runtime_context",
    "get_gpu_ids",
    # observability
    "timeline",
    # standing in for ray
    "install_as_ray",
    # submodules
    "exceptions",
    "util",
]

__getattr__ = module_getattr(__name__)  # a Ray name raylite lacks: an error that says so
