"""The session folder and the control socket (``_local/session.py``): a root others may
write to, a ``session_latest`` that is a folder, a live session of a driver in another PID
namespace, and clients of ``control.sock`` that connect and say nothing."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import raylite
from raylite._local.session import SessionDir, driver_pid, request

pytestmark = pytest.mark.local_only("the embedded runtime's session folders")


@pytest.fixture
def root() -> Iterator[Path]:
    """A fresh root for session folders, with a short path (Unix socket paths are short)."""
    path = Path(tempfile.mkdtemp(prefix="rl-"))
    yield path
    if raylite.is_initialized():
        raylite.shutdown()
    shutil.rmtree(path, ignore_errors=True)


def test_a_root_others_may_write_to_is_made_private(root: Path) -> None:
    os.chmod(root, 0o777)
    raylite.init(num_cpus=1, _temp_dir=str(root))
    raylite.shutdown()
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700


def test_sessions_started_in_the_same_microsecond_get_folders_of_their_own(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)  # a clock that stands still
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_250_000_000)
    first = SessionDir(root)
    try:
        first.close()  # ended, its folder kept (for the logs), as after shutdown()
        second = SessionDir(root)
        try:
            assert second.path != first.path and second.path.is_dir()
            assert driver_pid(second.path) == os.getpid()  # still the name's last part
        finally:
            second.remove()
    finally:
        first.remove()


def test_a_session_latest_that_is_a_folder_is_left_alone_with_a_warning(root: Path) -> None:
    (root / "session_latest").mkdir()
    with pytest.warns(UserWarning, match="session_latest is a folder.*--session"):
        raylite.init(num_cpus=1, _temp_dir=str(root))
    try:
        assert raylite.get(raylite.remote(lambda: 7).remote(), timeout=30) == 7
    finally:
        raylite.shutdown()
    assert (root / "session_latest").is_dir()


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def test_a_live_session_whose_pid_is_not_ours_to_see_is_kept(root: Path) -> None:
    # A driver in another PID namespace sharing /tmp: the pid in its folder's name means
    # nothing here (no such process), but it is alive, and holds its session's lock.
    other = root / f"session_2020-01-01_00-00-00_000000_{2**22 + 4321}"
    (other / "logs").mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(other / "control.sock"))
    listener.listen(1)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(other / "driver.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        raylite.init(num_cpus=1, _temp_dir=str(root))
        raylite.shutdown()  # pruning ran (on the control thread) before it served
        assert (other / "control.sock").exists()
    finally:
        listener.close()
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    # Once its driver is gone (the lock with it), the socket file of the dead is removed.
    raylite.init(num_cpus=1, _temp_dir=str(root))
    raylite.shutdown()
    assert not (other / "control.sock").exists()


def test_silent_clients_of_the_control_socket_do_not_stall_others(root: Path) -> None:
    raylite.init(num_cpus=1, _temp_dir=str(root))
    sock_path = root / "session_latest" / "control.sock"
    silent = []
    try:
        for _ in range(3):  # each connects and sends nothing
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(sock_path))
            silent.append(s)
        start = time.monotonic()
        status = request(sock_path, {"op": "status"}, timeout=30)
        assert status["driver_pid"] == os.getpid()
        assert time.monotonic() - start < 5  # not behind 3 x 10 s of read timeouts
    finally:
        for s in silent:
            s.close()
        raylite.shutdown()


def test_the_session_lock_is_released_at_shutdown(root: Path) -> None:
    raylite.init(num_cpus=1, _temp_dir=str(root))
    session = (root / "session_latest").resolve()
    fd = os.open(session / "driver.lock", os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):  # held while the driver runs
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        raylite.shutdown()
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # free once it is over
    finally:
        os.close(fd)
