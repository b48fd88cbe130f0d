"""Task functions run by every contender.

They live in a real module (not ``__main__``) so that multiprocessing, ProcessPoolExecutor,
joblib, dask and Ray pickle them by reference; the harness puts this directory on the
children's ``PYTHONPATH`` so every library's workers can import them.
"""

from __future__ import annotations


def noop(i: int) -> int:
    """The no-op task: returns its argument (so results can be checked)."""
    return i
