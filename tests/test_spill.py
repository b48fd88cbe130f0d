"""Object spilling: a full store writes objects to disk and reads them back on get."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _helpers import kill_driver_and_wait_for_workers, open_fds, wait_until

import raylite
from raylite._local import spill
from raylite._local.spill import SpillConfig, spill_config
from raylite.exceptions import ObjectStoreFullError, WorkerCrashedError
from raylite.util.state import list_objects

pytestmark = pytest.mark.local_only("the local runtime's object store and its spill folder")

MB = 1024 * 1024


def spill_fds(folder: str = "/") -> list[str]:
    """The spill files this process holds open (unnamed files in a spill folder)."""
    return [
        t for t in open_fds().values()
        if ("/spill/" in t or "/raylite_spilled_objects_" in t) and t.startswith(folder)
    ]  # fmt: skip


@raylite.remote
def make(i):
    return np.full(31_500_000 // 8, i, dtype=np.float64)


@raylite.remote
def ends(x):
    return float(x[0]), float(x[-1]), x.size


@raylite.remote
def ends_of_nested(refs):
    return ends_of(raylite.get(refs[0]))


def ends_of(x):
    return float(x[0]), float(x[-1]), x.size


def test_results_over_the_store_capacity_are_spilled_and_come_back_correct():
    raylite.init(num_cpus=2, object_store_memory=150 * MB)
    try:
        refs = [make.remote(i) for i in range(40)]  # 1.26 GB of results, a 157 MB store
        for i, ref in enumerate(refs):
            assert ends_of(raylite.get(ref)) == (i, i, 31_500_000 // 8)
        assert spill_fds(), "nothing was spilled"
        # Workers read spilled objects too, as arguments.
        assert raylite.get([ends.remote(r) for r in refs[:3]]) == [
            (i, i, 31_500_000 // 8) for i in range(3)
        ]
        del refs  # the spill files go with their objects
        wait_until(lambda: not spill_fds(), 10, "spill files to be deleted with their objects")
    finally:
        raylite.shutdown()


def test_a_worker_reads_a_spilled_object_as_argument_and_through_get():
    raylite.init(num_cpus=1, object_store_memory=64 * MB)
    try:
        first = raylite.put(np.arange(6 * MB, dtype=np.float64))  # 48 MB
        second = raylite.put(np.ones(6 * MB))  # does not fit beside it: first is spilled
        assert len(spill_fds()) == 1
        listed = {o.object_id: o for o in list_objects()}
        assert listed[first.hex()].object_size >= 48 * MB  # its size, wherever it is
        assert not listed[first.hex()].in_shared_memory and listed[second.hex()].in_shared_memory
        expect = (0.0, 6 * MB - 1.0, 6 * MB)
        assert raylite.get(ends.remote(first)) == expect
        assert raylite.get(ends_of_nested.remote([first])) == expect  # a nested get
        assert ends_of(raylite.get(first)) == expect  # and the driver
        assert ends_of(raylite.get(second)) == (1.0, 1.0, 6 * MB)
    finally:
        raylite.shutdown()


@raylite.remote(max_retries=0)
def crash_after_reading(x):
    float(x.sum())
    os._exit(3)


def test_a_worker_that_dies_mapping_a_spilled_object_leaves_nothing_behind():
    raylite.init(num_cpus=1, object_store_memory=64 * MB)
    try:
        first = raylite.put(np.arange(6 * MB, dtype=np.float64))
        second = raylite.put(np.ones(6 * MB))  # first is spilled
        with pytest.raises(WorkerCrashedError):
            raylite.get(crash_after_reading.remote(first))
        assert raylite.get(ends.remote(first)) == (0.0, 6 * MB - 1.0, 6 * MB)  # a new worker
        del first, second
        wait_until(lambda: not spill_fds(), 10, "the spill file to go with its object")
        third = raylite.put(np.ones(6 * MB))  # the books balance: room for it again
        assert ends_of(raylite.get(third)) == (1.0, 1.0, 6 * MB)
    finally:
        raylite.shutdown()


def spill_mappings() -> int:
    """How many mappings of spill files this process has (values read from spill files)."""
    with open("/proc/self/maps") as maps:
        return sum("/spill/" in line for line in maps)


def test_the_least_recently_used_object_is_spilled_first():
    raylite.init(num_cpus=1, object_store_memory=100 * MB)
    try:
        a, b, c = (raylite.put(np.full(30 * MB // 8, float(i))) for i in range(3))
        assert raylite.get(a)[0] == 0.0  # a read: now b is the least recently used
        d = raylite.put(np.ones(30 * MB // 8))  # room for one more: b goes to disk
        assert len(spill_fds()) == 1
        assert [raylite.get(r)[-1] for r in (a, c, d)] == [0.0, 2.0, 1.0]
        assert spill_mappings() == 0  # those three were read from memory
        assert raylite.get(b)[-1] == 1.0
        assert spill_mappings() == 1  # b from its spill file
    finally:
        raylite.shutdown()


def test_values_in_use_are_not_spilled_and_the_error_says_so():
    raylite.init(num_cpus=1, object_store_memory=40 * MB)
    try:
        ref = raylite.put(np.ones(25 * MB // 8))
        held = raylite.get(ref)  # a value in the driver uses its memory: not spillable
        with pytest.raises(ObjectStoreFullError) as info:
            raylite.put(np.ones(25 * MB // 8))
        text = str(info.value)
        assert "in use" in text and "cannot be spilled" in text and "object_store_memory" in text
        assert "26.2 MB by values in this process" in text
        assert not spill_fds()
        del held  # now it may be spilled
        other = raylite.put(np.full(25 * MB // 8, 2.0))
        assert len(spill_fds()) == 1
        assert float(raylite.get(other)[-1]) == 2.0
        assert float(raylite.get(ref)[-1]) == 1.0  # read back from its spill file
    finally:
        raylite.shutdown()


def test_spilling_can_be_turned_off_as_in_ray():
    raylite.init(
        num_cpus=1, object_store_memory=40 * MB,
        _system_config={"automatic_object_spilling_enabled": False},
    )  # fmt: skip
    try:
        first = raylite.put(np.ones(25 * MB // 8))
        with pytest.raises(ObjectStoreFullError, match="object_store_memory"):
            raylite.put(np.ones(25 * MB // 8))
        del first
    finally:
        raylite.shutdown()


def test_a_configured_folder_is_used_and_removed_at_shutdown(tmp_path):
    where = tmp_path / "spill-here"
    raylite.init(num_cpus=1, object_store_memory=40 * MB, object_spilling_directory=str(where))
    try:
        first = raylite.put(np.ones(25 * MB // 8))
        second = raylite.put(np.ones(25 * MB // 8))
        assert len(spill_fds(str(where))) == 1
        assert [p.name.startswith("raylite_spilled_objects_session_") for p in where.iterdir()] == [
            True
        ]
        del first, second
    finally:
        raylite.shutdown()
    assert list(where.iterdir()) == []
    assert not spill_fds()


def test_a_full_disk_fails_with_a_message_naming_the_store_and_the_disk(tmp_path, monkeypatch):
    def disk_full(src: int, dst: int, size: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spill, "_copy", disk_full)
    raylite.init(num_cpus=1, object_store_memory=40 * MB, object_spilling_directory=str(tmp_path))
    try:
        first = raylite.put(np.ones(25 * MB // 8))
        with pytest.raises(ObjectStoreFullError) as info:
            raylite.put(np.ones(25 * MB // 8))
        text = str(info.value)
        assert "object store holds 26.2 MB" in text and "object_store_memory" in text
        assert f"Spilling to {tmp_path}" in text and "No space left on device" in text
        assert "object_spilling_directory" in text and "free disk space" in text
        assert not spill_fds()
        assert float(raylite.get(first).sum()) == 25 * MB // 8  # nothing was lost
    finally:
        raylite.shutdown()


@pytest.mark.parametrize("configured", [False, True], ids=["session-folder", "configured"])
def test_a_driver_killed_mid_spill_leaves_nothing_after_the_next_init(configured):
    short = Path(tempfile.mkdtemp(prefix="rl-"))  # a session folder's socket path is short
    try:
        killed_mid_spill_then_init(short / "sessions", short / "spill", configured)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def killed_mid_spill_then_init(root: Path, spill: Path, configured: bool) -> None:
    where = f", object_spilling_directory={str(spill)!r}" if configured else ""
    script = textwrap.dedent(
        f"""
        import os, numpy as np, raylite
        raylite.init(num_cpus=1, object_store_memory=48 << 20, _temp_dir={str(root)!r}{where})

        @raylite.remote
        def pid():
            return os.getpid()

        def spilled():
            n = 0
            for fd in os.listdir("/proc/self/fd"):
                try:
                    n += "/raylite_spilled_objects_" in os.readlink(f"/proc/self/fd/{{fd}}")
                    n += "/spill/" in os.readlink(f"/proc/self/fd/{{fd}}")
                except OSError:  # the fd of listdir itself
                    pass
            return n

        refs = []
        while spilled() < 2:
            refs.append(raylite.put(np.ones(2 << 20)))
        print(raylite.get(pid.remote()), flush=True)
        while True:  # spilling on and on until killed
            refs.append(raylite.put(np.ones(2 << 20)))
        """
    )
    kill_driver_and_wait_for_workers(script)
    killed = [p for p in root.glob("session_2*")]
    assert len(killed) == 1
    raylite.init(num_cpus=1, _temp_dir=str(root), **(
        {"object_spilling_directory": str(spill)} if configured else {}
    ))  # fmt: skip
    try:
        if configured:
            assert list(spill.iterdir()) == []
        else:
            wait_until(lambda: not (killed[0] / "spill").exists(), 10, "the sweep")
    finally:
        raylite.shutdown()


@pytest.mark.parametrize(
    ("directory", "system", "env", "expect"),
    [
        (None, None, {}, SpillConfig(True, None)),
        ("/a", None, {}, SpillConfig(True, "/a")),
        (None, {"object_spilling_directory": "/b"}, {}, SpillConfig(True, "/b")),
        (None, None, {"RAY_object_spilling_directory": "/c"}, SpillConfig(True, "/c")),
        (
            None,
            {"object_spilling_config": json.dumps(
                {"type": "filesystem", "params": {"directory_path": "/d"}}
            )},
            {}, SpillConfig(True, "/d"),
        ),
        (
            None,
            {"object_spilling_config": json.dumps(
                {"type": "filesystem", "params": {"directory_path": ["/e", "/f"]}}
            )},
            {}, SpillConfig(True, "/e"),
        ),
        ("/a", {"object_spilling_directory": "/b"}, {}, SpillConfig(True, "/a")),
        (None, {"automatic_object_spilling_enabled": False}, {}, SpillConfig(False, None)),
    ],
)  # fmt: skip
def test_spill_options_read_as_ray_reads_them(monkeypatch, directory, system, env, expect):
    monkeypatch.delenv("RAY_object_spilling_directory", raising=False)
    monkeypatch.delenv("RAY_object_spilling_config", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert spill_config(directory, system) == expect


@pytest.mark.parametrize(
    ("system", "error", "match"),
    [
        ({"object_spilling_config": "not json"}, ValueError, "must be JSON such as"),
        (
            {"object_spilling_config": '{"type": "smart_open", "params": {"uri": "s3://b"}}'},
            ValueError, "spills to a local folder only",
        ),
        ({"automatic_object_spilling_enabled": "yes"}, TypeError, "must be True or False"),
        ({"object_spilling_directory": 5}, TypeError, "must be a folder path"),
    ],
)  # fmt: skip
def test_bad_spill_options_are_named(system, error, match):
    with pytest.raises(error, match=match):
        raylite.init(num_cpus=1, _system_config=system)
    assert not raylite.is_initialized()


@pytest.mark.parametrize("tmpfile", [True, False], ids=["O_TMPFILE", "named-then-unlinked"])
def test_spill_files_have_no_name_and_hold_the_segment_bytes(tmp_path, monkeypatch, tmpfile):
    if not tmpfile:
        monkeypatch.delattr(os, "O_TMPFILE")
    folder = spill.SpillDir(tmp_path / "spill")
    data = np.random.default_rng(0).integers(0, 255, 3 * MB + 5, dtype=np.uint8).tobytes()
    segment = os.memfd_create("test-segment")
    try:
        os.pwrite(segment, data, 0)
        fd = folder.write(segment, len(data))
    finally:
        os.close(segment)
    try:
        assert list((tmp_path / "spill").iterdir()) == []  # nothing to leave behind
        assert os.pread(fd, len(data) + 1, 0) == data
    finally:
        os.close(fd)
        folder.close()
    assert not (tmp_path / "spill").exists()
