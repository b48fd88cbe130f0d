"""``multiprocessing.Pool``'s interface on raylite, as Ray's ``ray.util.multiprocessing``.

Change one import and a ``multiprocessing`` program runs on raylite's workers::

    from raylite.util.multiprocessing import Pool   # was: from multiprocessing import Pool

``TimeoutError`` is the standard library's (what ``AsyncResult.get(timeout)`` raises), as in
Ray's module; ``JoinableQueue`` is re-exported from the standard library likewise.
"""

from multiprocessing import JoinableQueue as JoinableQueue
from multiprocessing import TimeoutError as TimeoutError

from ._results import AsyncResult as AsyncResult
from ._results import IMapIterator as IMapIterator
from ._results import RemoteTraceback as RemoteTraceback
from .pool import Pool as Pool

__all__ = [
    "Pool",
    "AsyncResult",
    "IMapIterator",
    "RemoteTraceback",
    "TimeoutError",
    "JoinableQueue",
]
