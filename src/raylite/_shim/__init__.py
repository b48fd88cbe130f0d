"""Holds the ``ray`` package that ``raylite run`` puts first on ``PYTHONPATH`` (see
``raylite._compat``); nothing here is imported as part of raylite."""
