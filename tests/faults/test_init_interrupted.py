"""``init`` that fails or is interrupted (Ctrl-C) part way: it leaves no process, fd or
session folder behind, whatever step it had reached."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from _helpers import live_children

import raylite
from raylite._local import runtime, workers

pytestmark = pytest.mark.local_only("the embedded runtime's init")


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _interrupted(*args: Any, **kwargs: Any) -> Any:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "step, reached",
    [
        ("Zygote", "the session folder made"),
        ("register_new", "the zygote and the first workers forked"),
        ("ControlServer", "the I/O thread running"),
        ("DashboardServer", "the control socket listening"),
    ],
)
def test_ctrl_c_at_each_step_of_init_leaves_nothing(baseline, root, monkeypatch, step, reached):
    # Ctrl-C lands as ``step`` begins, with ``reached``.
    owner = workers.WorkerSet if step == "register_new" else runtime
    monkeypatch.setattr(owner, step, _interrupted)
    with pytest.raises(KeyboardInterrupt):
        raylite.init(num_cpus=2, _temp_dir=str(root), include_dashboard=True, dashboard_port=0)
    assert not raylite.is_initialized()
    assert live_children() == [] and psutil.Process().children() == []  # no zombie either
    assert list(root.glob("session_*")) == []
    # (the ``baseline`` fixture then checks that no fd or /dev/shm entry was left)


_DRIVER = textwrap.dedent(
    """
    import os, random, signal, sys, threading, time
    import psutil
    import raylite

    random.seed(int(sys.argv[2]))
    # Once uninterrupted: init imports modules on first use, and a KeyboardInterrupt in the
    # middle of an import leaves that module half made (Python's doing, not raylite's).
    raylite.init(num_cpus=2)
    raylite.shutdown()
    leftovers = 0
    for _ in range(int(sys.argv[1])):
        timer = threading.Timer(random.uniform(0, 0.15), os.kill, (os.getpid(), signal.SIGINT))
        try:
            timer.start()
            raylite.init(num_cpus=2)
            time.sleep(0.3)  # the one interrupt lands in init, or here
        except KeyboardInterrupt:
            pass
        timer.join()
        raylite.shutdown()
        leftovers += len(psutil.Process().children(recursive=True))
    print("leftover processes", leftovers)
    """
)


def test_ctrl_c_at_random_moments_of_init_leaves_no_process():
    out = subprocess.run(
        [sys.executable, "-c", _DRIVER, "30", "1"], capture_output=True, text=True, timeout=300
    )
    assert "leftover processes 0" in out.stdout, out.stdout + out.stderr
