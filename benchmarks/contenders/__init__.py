"""The contenders. Importing this package registers each one and its ``@bench`` functions.

One module per library; each defines ``start``/``first_result``/``stop`` for
:class:`harness.Contender` and one function per benchmark. :data:`ORDER` is the column order.
"""

from __future__ import annotations

from . import dask_distributed, futures_pool, joblib_parallel, mp_pool, raylike

__all__ = ["ORDER", "dask_distributed", "futures_pool", "joblib_parallel", "mp_pool", "raylike"]

ORDER: tuple[str, ...] = ("raylite", "ray", "multiprocessing", "concurrent", "joblib", "dask")
