"""Object spilling: where objects go when the store is full, and how they come back.

::

    ObjectStore.reserve(size) ── over capacity ──> ObjectTable.make_room(bytes)
        least recently used objects that nothing uses now (no dispatched task's or
        actor's argument, no ref held in a worker, no value in the driver), oldest first:
          SpillDir.write(segment fd) ─ sendfile ─> an unnamed file in the spill folder
          the object's memory segment is released (workers told to Forget it); the object
          now lives in the file, counted against nothing
    get (driver) / a task's argument or get (worker)
          the spill file's fd is mapped read-only, like any segment (it travels to workers
          over the socket): the value is read through the page cache, without a copy

Spilling runs on the thread that needs the room (a ``put``, or the I/O thread storing a
task's result) with the runtime's lock held: other calls wait while a file is written, at
the disk's speed (``sendfile``, no fsync: the page cache absorbs bursts).

Spill files are *unnamed* (``O_TMPFILE``; elsewhere a file unlinked as soon as it is
created): the kernel frees one with its last fd and mapping, so an object's file goes with
the object, every file goes at ``shutdown``, and a SIGKILLed driver leaves none behind —
only, at worst, an empty folder, which the next ``init`` sweeps.

Configuration, as Ray spells it (first found wins): ``init(object_spilling_directory=...)``,
``_system_config={"object_spilling_directory": ...}``, ``$RAY_object_spilling_directory``,
``_system_config={"object_spilling_config": '{"type": "filesystem", "params":
{"directory_path": ...}}'}``, ``$RAY_object_spilling_config``; by default the ``spill``
folder of the session folder. ``_system_config={"automatic_object_spilling_enabled":
False}`` turns spilling off (a full store raises ``ObjectStoreFullError``).
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .session import SessionDir, _alive

__all__ = ["SpillConfig", "SpillDir", "spill_config", "sweep"]

_PREFIX = "raylite_spilled_objects_"  # a session's folder inside a configured directory
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)  # the filesystem has no O_TMPFILE


@dataclass(frozen=True)
class SpillConfig:
    """Whether to spill, and where (None: the session folder's ``spill`` folder)."""

    enabled: bool = True
    directory: str | None = None


def spill_config(directory: Any, system_config: Any) -> SpillConfig:
    """Reads the spilling options of ``init`` (Ray's names; see the module docstring).

    Args:
        directory: ``init(object_spilling_directory=...)``, or None.
        system_config: ``init(_system_config=...)``, or None.

    Raises:
        ValueError, TypeError: a bad option; the message names it and what is allowed.
    """
    system = {} if system_config is None else system_config
    if not isinstance(system, dict):
        raise TypeError(f"_system_config must be a dict, got {type(system).__name__}.")
    enabled = system.get("automatic_object_spilling_enabled", True)
    if not isinstance(enabled, bool):
        raise TypeError(
            f"_system_config['automatic_object_spilling_enabled'] must be True or False, "
            f"got {enabled!r}."
        )
    for value, name in (
        (directory, "object_spilling_directory"),
        (system.get("object_spilling_directory"), "_system_config['object_spilling_directory']"),
        (os.environ.get("RAY_object_spilling_directory"), "$RAY_object_spilling_directory"),
    ):
        if value:
            return SpillConfig(enabled, _check_dir(value, name))
    config = system.get("object_spilling_config") or os.environ.get("RAY_object_spilling_config")
    if config:
        return SpillConfig(enabled, _dir_of_config(config))
    return SpillConfig(enabled, None)


def _check_dir(value: Any, name: str) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a folder path (str), got {value!r}.")
    return os.fspath(value)  # type: ignore[return-value]


def _dir_of_config(config: Any) -> str:
    """The folder of Ray's ``object_spilling_config`` (a JSON string, or its dict)."""
    what = "object_spilling_config"
    try:
        parsed = json.loads(config) if isinstance(config, str) else config
        kind = parsed["type"]
        paths = parsed["params"]["directory_path"] if kind == "filesystem" else None
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(
            f'{what} must be JSON such as \'{{"type": "filesystem", "params": '
            f'{{"directory_path": "/tmp/spill"}}}}\', got {config!r} ({exc!r}).'
        ) from None
    if kind != "filesystem":
        raise ValueError(
            f'{what}: raylite spills to a local folder only: use "type": "filesystem" '
            f"(got {kind!r}; Ray's smart_open/S3 storage needs a Ray cluster)."
        )
    if isinstance(paths, list):  # Ray spreads over several folders; one machine needs one
        paths = paths[0] if paths else None
    return _check_dir(paths, f"{what}'s directory_path")


class SpillDir:
    """The folder of this session's spill files (made on first use, removed by ``close``).

    Args:
        path: the folder; made (mode 0700) the first time an object is spilled.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._made = False

    @classmethod
    def for_session(cls, config: SpillConfig, session: SessionDir) -> SpillDir:
        """The spill folder ``config`` names for ``session``. In a configured directory,
        the folders of killed sessions are swept now (the session folder's own ``spill``
        goes with the session folder's sweep)."""
        if config.directory is None:
            return cls(session.spill)
        where = Path(config.directory).expanduser()
        sweep(where)
        return cls(where / f"{_PREFIX}{session.path.name}")

    def write(self, src_fd: int, size: int) -> int:
        """Copies the first ``size`` bytes of ``src_fd`` (a memory segment) to a new
        unnamed file here.

        Returns:
            The file's fd (read-write; the caller owns it: the file lives as long as it, or
            a mapping of it).

        Raises:
            OSError: the folder cannot be made, or the disk is full (``ENOSPC``).
        """
        if not self._made:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._made = True
        fd = self._unnamed_file()
        try:
            _copy(src_fd, fd, size)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _unnamed_file(self) -> int:
        tmpfile = getattr(os, "O_TMPFILE", 0)  # Linux
        if tmpfile:
            try:
                return os.open(self.path, tmpfile | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
        # No O_TMPFILE here: a named file, unlinked at once.
        fd, name = tempfile.mkstemp(prefix="object-", dir=self.path)
        os.unlink(name)
        return fd

    def close(self) -> None:
        """Removes the folder (files still open or mapped live on, unnamed, until closed)."""
        if self._made:
            shutil.rmtree(self.path, ignore_errors=True)
            self._made = False


def sweep(directory: Path) -> None:
    """Removes the spill folders in ``directory`` of sessions whose driver is gone (killed:
    their files vanished with it, unnamed, but not the folder)."""
    for folder in directory.glob(f"{_PREFIX}session_*"):
        pid = folder.name.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _copy(src: int, dst: int, size: int) -> None:
    """``size`` bytes from ``src`` to ``dst`` in the kernel (``sendfile``), or through a
    read-only mapping where ``sendfile`` cannot take a memory segment."""
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(dst, src, offset, size - offset)
            if sent == 0:
                raise OSError(errno.EIO, f"the memory segment ended after {offset} bytes")
            offset += sent
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) or offset:
            raise
    m = mmap.mmap(src, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    try:
        with memoryview(m) as view:
            while offset < size:
                offset += os.pwrite(dst, view[offset:], offset)
    finally:
        m.close()
