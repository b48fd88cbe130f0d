"""``ray`` for Python processes started under ``raylite run``: it replaces itself with
raylite (``raylite.install_as_ray()``), so ``import ray`` gives raylite there too.

``raylite run`` puts this package's folder first on ``PYTHONPATH``; the import system hands
back whatever ``sys.modules["ray"]`` holds once this module has run, which is raylite.
"""

import raylite

raylite.install_as_ray()
