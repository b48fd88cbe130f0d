"""``ray.cloudpickle`` for programs that use it (``from ray import cloudpickle``): the
cloudpickle package raylite pickles functions and classes with, re-exported unchanged.

Example::

    from raylite import cloudpickle

    double = cloudpickle.loads(cloudpickle.dumps(lambda x: 2 * x))
    assert double(21) == 42
"""

from cloudpickle import *  # noqa: F403
from cloudpickle import Pickler, dump, dumps, load, loads  # noqa: F401
