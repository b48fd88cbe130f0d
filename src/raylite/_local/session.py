"""The folder of one ``init`` (worker logs, the control socket), private to this user.

::

    <root>/                            _temp_dir=, else $RAYLITE_TEMP_DIR, else /tmp/raylite-<uid>
      session_<date>_<time>_<pid>/     mode 0700: only this user can enter it
        control.sock                   ControlServer: `raylite status/list/...` ask the driver
        driver.lock                    flock'ed by the driver while it lives (its liveness)
        logs/worker-<pid>.out|.err     each worker's stdout/stderr (the worker writes them)
        spill/                         objects spilled from a full store (spill.py), unnamed
      session_latest -> session_...    the newest session, where the CLI looks by default

    CLI ──connect──> control.sock ──accept (thread "raylite-control")── SO_PEERCRED uid check
        ── one JSON request line ──> a thread per connection ("raylite-control-conn", at
        most _MAX_CONNS): answer(request), one at a time ── one JSON reply line ──>
    A client that connects and says nothing holds only its own thread (until _READ_TIMEOUT_S),
    never the next client.

Nothing listens on a network address. The socket file is removed at shutdown; the logs stay
for ``raylite logs`` (as Ray keeps ``/tmp/ray/session_*``), and each ``init`` removes the
folders of sessions whose driver is gone, keeping the newest ``KEEP``. Whether a driver is
gone is asked of its ``driver.lock`` (the kernel drops the lock when the process dies), not
of its pid: drivers in other PID namespaces (containers) may share the root, and there
the pid in a folder's name means another process or none.

The root is this user's alone: a root that is not a folder owned by this user is refused,
and one that others may write to (mode 0777, say) is made 0700 first.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["KEEP", "ControlServer", "SessionDir", "default_root", "live_sessions", "request"]

KEEP = 10  # finished sessions' folders kept for `raylite logs`
_LOCK = "driver.lock"
_MAX_CONNS = 16  # control connections served at once
_READ_TIMEOUT_S = 10.0  # a client has this long to send its request line
_MAX_REQUEST = 1 << 16
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes with its NUL


def default_root() -> Path:
    """Where sessions live unless ``init(_temp_dir=...)`` says otherwise."""
    env = os.environ.get("RAYLITE_TEMP_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"raylite-{os.getuid()}"


class SessionDir:
    """Creates this session's folder under ``root`` (see the module docstring).

    Raises:
        PermissionError: ``root`` is not a folder owned by this user (in a shared /tmp,
            another user could have made it to read our logs or catch our socket).
    """

    def __init__(self, root: Path | None = None) -> None:
        self._lock_fd = -1
        self.root = root or default_root()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(
                f"raylite's session folder {self.root} is not a folder owned by you (uid "
                f"{os.getuid()}): remove it, or pass another one with init(_temp_dir=...)."
            )
        if st.st_mode & 0o077:  # others could swap session_latest or plant folders
            os.chmod(self.root, 0o700)
        now = time.time()
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now))
        self.path = self._make_folder(f"session_{stamp}_{int(now * 1e6) % 10**6:06d}")
        self.logs = self.path / "logs"
        self.spill = self.path / "spill"  # made by spill.SpillDir on first use
        self.control = self.path / "control.sock"
        if len(os.fsencode(self.control)) > _UNIX_PATH_MAX:
            os.rmdir(self.path)
            raise ValueError(
                f"The session folder path {self.path} is too long for a Unix socket "
                f"({_UNIX_PATH_MAX} bytes at most): pass a shorter init(_temp_dir=...)."
            )
        try:
            os.chmod(self.path, 0o700)  # whatever the umask
            self.logs.mkdir(mode=0o700)
            # Held (flock) for the driver's life: see _alive. Close-on-exec, and released
            # in the zygote (pool.py), so only this process holds it.
            self._lock_fd = os.open(
                self.path / _LOCK, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._point_latest()
        except BaseException:
            self.remove()
            raise

    def _make_folder(self, stem: str) -> Path:
        """Makes the session's folder ``<stem>_<pid>`` in the root, or ``<stem>-1_<pid>``,
        ``<stem>-2_<pid>``, ... if a session of this process started in the same microsecond
        (the clock's resolution may be coarser) left one there. The pid stays last: readers
        of the folder name take it from there."""
        pid = os.getpid()
        for n in range(1000):
            path = self.root / (f"{stem}_{pid}" if n == 0 else f"{stem}-{n}_{pid}")
            try:
                path.mkdir(mode=0o700)
                return path
            except FileExistsError:
                continue
        raise FileExistsError(
            f"raylite could not make a session folder {self.root / stem}_{pid}: 1,000 folders of "
            f"that name exist already; remove old sessions from {self.root}."
        )

    def _point_latest(self) -> None:
        latest = self.root / "session_latest"
        tmp = self.root / f".session_latest.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.path.name)
        try:
            os.replace(tmp, latest)  # atomic: a concurrent reader sees the old or the new one
        except IsADirectoryError:  # not ours to delete: say so, and go on without it
            tmp.unlink(missing_ok=True)
            warnings.warn(
                f"{latest} is a folder, so it cannot point at the newest session: `raylite "
                f"status` and `raylite logs` need --session {self.path} until you remove it.",
                stacklevel=4,
            )

    def close(self) -> None:
        """This session is over: releases its lock (its folder stays, for the logs)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def remove(self) -> None:
        """Removes this session's folder (an ``init`` that failed: nothing to keep)."""
        self.close()
        latest = self.root / "session_latest"
        if latest.is_symlink() and os.readlink(latest) == self.path.name:
            latest.unlink(missing_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)

    def prune(self) -> None:
        """Removes the folders of finished sessions but the newest ``KEEP``, and the control
        socket a killed driver could not remove from those it keeps. (The control server's
        thread calls it as it starts, so ``init`` does not wait for it.)"""
        finished = [
            p for p in sorted(self.root.glob("session_2*"))
            if p != self.path and not _session_alive(p)
        ]  # fmt: skip
        for i, p in enumerate(finished):
            if i < len(finished) - KEEP:
                shutil.rmtree(p, ignore_errors=True)
            else:
                (p / "control.sock").unlink(missing_ok=True)
                shutil.rmtree(p / "spill", ignore_errors=True)


def driver_pid(session: Path) -> int:
    """The pid of the driver that made ``session`` (the last part of its name), or 0."""
    tail = session.name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def live_sessions(root: Path) -> list[Path]:
    """The session folders under ``root`` whose driver runs now (it holds the session's
    lock and its control socket is there), oldest first."""
    return [
        p for p in sorted(root.glob("session_2*"))
        if (p / "control.sock").exists() and _session_alive(p)
    ]  # fmt: skip


def _session_alive(session: Path) -> bool:
    """Whether the driver of ``session`` still runs: it holds the folder's lock. (Folders
    from before the lock existed: whether a process has the pid in the name.)"""
    try:
        fd = os.open(session / _LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        pid = driver_pid(session)
        return pid != os.getpid() and _alive(pid)  # this process runs one at a time
    except OSError:
        return True  # cannot tell: keep it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held; anything else: cannot tell, keep it
        return True
    finally:
        os.close(fd)  # drops the lock just taken, if any
    return False


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (in this PID namespace)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ControlServer:
    """Answers one JSON request per connection on ``path``, for processes of this user only.

    Args:
        path: the socket file (in the 0700 session folder).
        answer: ``answer(request) -> result``, called on this server's thread; held weakly
            (a bound method of the runtime), so the server never keeps its runtime alive.
        first: called once on the server's thread before it serves (housekeeping that
            ``init`` need not wait for).
    """

    def __init__(
        self, path: Path, answer: Callable[[dict[str, Any]], Any],
        first: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        self.path = path
        self._first = first
        self._answer = weakref.WeakMethod(answer)  # type: ignore[arg-type]
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(os.fspath(path))
            os.chmod(path, 0o600)
            self._sock.listen(8)
        except OSError:
            self._sock.close()
            raise
        self._slots = threading.BoundedSemaphore(_MAX_CONNS)
        self._one_at_a_time = threading.Lock()  # the state's CPU readings compare two calls
        self._thread = threading.Thread(target=self._serve, name="raylite-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        if self._first is not None:
            try:
                self._first()
            except OSError:
                pass  # housekeeping only: serving matters more
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed: shutdown
                return
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many at once: that client retries
                continue
            try:
                threading.Thread(
                    target=self._serve_one, args=(conn,), name="raylite-control-conn",
                    daemon=True,
                ).start()  # fmt: skip
            except BaseException:
                self._slots.release()
                conn.close()
                raise

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._answer_one(conn)
        except OSError:
            pass  # the client went away, or said nothing in time
        finally:
            self._slots.release()

    def _answer_one(self, conn: socket.socket) -> None:
        conn.settimeout(_READ_TIMEOUT_S)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            reply: dict[str, Any] = {"ok": False, "error": "permission denied: not the driver's user"}
        else:
            try:
                req = json.loads(_read_line(conn))
                answer = self._answer()
                if answer is None:
                    raise RuntimeError("the driver is shutting down")
                with self._one_at_a_time:
                    result = answer(req)
                reply = {"ok": True, "result": result}
            except Exception as exc:  # the client is told; the driver goes on
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        conn.sendall(json.dumps(reply, default=str).encode() + b"\n")

    def forget_after_fork(self) -> None:
        """In a child forked from the driver: closes this process's copy of the listening
        socket, leaving the driver's socket and its file as they are."""
        self._sock.close()

    def close(self) -> None:
        """Stops the thread and removes the socket file."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > _MAX_REQUEST:
            raise ValueError(f"request longer than {_MAX_REQUEST} bytes")
    return data


def request(path: Path, req: dict[str, Any], timeout: float = 30.0) -> Any:
    """Sends ``req`` to the driver listening on ``path``; returns its result.

    Raises:
        ConnectionError: no driver answers there.
        RuntimeError: the driver answered with an error.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(os.fspath(path))
        except OSError as exc:
            raise ConnectionError(
                f"No raylite driver answers at {path} ({exc.strerror}): is the program that "
                "called raylite.init() still running?"
            ) from None
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    reply = json.loads(data)
    if not reply["ok"]:
        raise RuntimeError(f"The raylite driver could not answer: {reply['error']}")
    return reply["result"]
