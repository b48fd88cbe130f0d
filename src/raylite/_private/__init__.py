"""Where Ray keeps its older test helpers (``ray._private.test_utils``), so Ray's own test
suites run on raylite standing in for ``ray``.

Only :mod:`raylite._private.test_utils` lives here: Ray's other ``ray._private`` modules
(the core worker, GCS clients, option tables) are Ray's internals, and raylite does not
provide them.
"""
