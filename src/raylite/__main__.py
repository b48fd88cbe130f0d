"""``python -m raylite``: the same as the ``raylite`` command (see :mod:`raylite.cli`)."""

from raylite.cli import main

raise SystemExit(main())
