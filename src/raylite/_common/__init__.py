"""Where Ray keeps its test helpers (``ray._common.test_utils``), so Ray's own test suites
and programs that borrow those helpers run on raylite standing in for ``ray``.

Only :mod:`raylite._common.test_utils` lives here; the rest of Ray's ``ray._common``
(internal utilities) is not provided.
"""
