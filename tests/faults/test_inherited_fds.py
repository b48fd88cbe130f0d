"""File descriptors that must not travel where they do not belong: the driver's fds into the
worker processes (its pipes would never see EOF, its closed ports would stay bound), and the
workers' own channels and segments into a task's ``subprocess``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from _helpers import live_children, wait_until

import raylite

pytestmark = pytest.mark.local_only("the embedded runtime's worker processes")


@pytest.fixture
def fresh() -> object:
    """Starts nothing: the test makes its fds, then calls init; shut down afterwards."""
    yield None
    raylite.shutdown()
    wait_until(lambda: not live_children(), 10, "worker processes to exit after shutdown")


def test_a_pipe_the_driver_closes_reaches_eof(fresh):
    cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        raylite.init(num_cpus=1)
        assert raylite.get(raylite.remote(lambda: 1).remote(), timeout=30) == 1
        assert cat.stdin is not None
        cat.stdin.close()  # the only writer left: cat must see EOF and exit
        assert cat.wait(timeout=10) == 0
    finally:
        if cat.poll() is None:
            cat.kill()
            cat.wait()


def test_a_port_the_driver_closes_is_released(fresh):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    raylite.init(num_cpus=1)
    assert raylite.get(raylite.remote(lambda: 1).remote(), timeout=30) == 1
    listener.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with socket.socket() as again:  # and it can be bound again
        again.bind(("127.0.0.1", port))


@raylite.remote
def fds_a_subprocess_inherits(array):
    """The fds a child process started from a task (close_fds=False) has, but 0, 1, 2."""
    assert array.sum() == 0  # the argument arrived through a segment's fd
    listing = "import os; print(' '.join(os.listdir('/proc/self/fd')))"
    out = subprocess.run(
        [sys.executable, "-c", listing], close_fds=False, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    fds = {int(fd) for fd in out.split()} - {0, 1, 2}
    return {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")}


def test_a_task_subprocess_inherits_no_channel_or_segment(fresh):
    raylite.init(num_cpus=1)
    big = np.zeros(1 << 20)  # goes through shared memory: a segment fd reaches the worker
    inherited = raylite.get(fds_a_subprocess_inherits.remote(big), timeout=30)
    # One fd may remain: the listing's own /proc/self/fd (opened by the child itself).
    leaked = {fd: target for fd, target in inherited.items() if "socket" in target or "memfd" in target}
    assert leaked == {}
