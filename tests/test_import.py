"""``import raylite`` stays light: the runtime, the dashboard, the state API, psutil and tqdm
are imported when first used, not by the import (the CLI pays the import on every command)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Heavy or optional modules that `import raylite` (and `import raylite.cli`) must not pull in.
_LAZY = [
    "raylite._local.runtime",
    "raylite._local.dashboard",
    "raylite._local.state",
    "raylite.util.state",
    "psutil",
    "tqdm",
    "http.server",
    "numpy",
    "ray",
]


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("statement", ["import raylite", "import raylite.cli"])
def test_import_leaves_the_heavy_modules_unloaded(statement):
    loaded = _modules_after(statement)
    assert not loaded & set(_LAZY), sorted(loaded & set(_LAZY))


def test_each_lazy_part_loads_when_used():
    loaded = _modules_after(
        "import raylite; from raylite.util import progress; raylite.init(num_cpus=1); "
        "from raylite.util.state import list_tasks; list_tasks(); "
        "progress([raylite.put(1)], disable=True); raylite.shutdown()"
    )
    assert {"raylite._local.runtime", "raylite.util.state", "psutil", "tqdm"} <= loaded
