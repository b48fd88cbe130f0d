"""Limits of the process the driver runs in: the number of open files.

Each object in shared memory holds a file descriptor in the driver (and, while mapped, a
second one), so holding many large results meets ``ulimit -n``. raylite raises the soft
limit to the hard one at ``init``; where that is not enough, the error names the limit,
and nothing waits forever. Each case runs a driver in a subprocess with its own limit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.local_only("the embedded runtime's file descriptors")

_DRIVER = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
    import numpy as np
    import raylite

    raylite.init(num_cpus=2)

    @raylite.remote
    def blob(i):
        return np.full(256 * 1024 // 8, i, dtype=np.int64)  # 256 KB: in shared memory

    refs = [blob.remote(i) for i in range(1500)]  # all held at once
    try:
        values = raylite.get(refs, timeout=90)
        print("OK", sum(int(v[0]) for v in values))
    except Exception as exc:
        print("ERROR", type(exc).__name__, exc)
    raylite.shutdown()
    """
)


def run_driver(soft: int, hard: int) -> tuple[str, float]:
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(soft), str(hard)], capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    return out.stdout + out.stderr, time.monotonic() - start


def test_a_low_soft_limit_is_raised_at_init():
    out, _ = run_driver(1024, 8192)
    assert f"OK {sum(range(1500))}" in out, out


def test_the_hard_limit_reached_is_an_error_that_names_it():
    out, seconds = run_driver(1024, 1024)
    assert "ERROR" in out and "GetTimeoutError" not in out, out
    assert "RLIMIT_NOFILE" in out and "ulimit -n" in out, out
    assert seconds < 60  # no wait for the get's timeout
