"""Spare segments pre-faulted in the background for big puts (``_local/spares.py``): what
the next put gets, what they count against the capacity, and that none is ever left behind."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
from _helpers import live_children, memfds, wait_until

import raylite
from raylite._local.spares import Spares
from raylite._local.store import ObjectStore, Segment
from raylite.exceptions import ObjectStoreFullError

pytestmark = pytest.mark.local_only("the local runtime's shared-memory object store")

MB = 1024 * 1024
NO_SPILLING = {"automatic_object_spilling_enabled": False}  # Ray's switch


def allocated(segment: Segment) -> int:
    """Bytes of pages the kernel has allocated for ``segment`` (not just its size)."""
    return os.fstat(segment.fd).st_blocks * 512


def spare_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "raylite-spares"]


class Gate:
    """A ``make`` for :class:`Spares` that waits until the test opens it; keeps what it made."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()
        self.made: list[Segment] = []

    def __call__(self, capacity: int) -> Segment:
        self.entered.set()
        assert self.open.wait(timeout=60), "the test never opened the gate"
        segment = Segment.prefaulted(capacity)
        self.made.append(segment)
        return segment


def test_the_next_write_of_a_size_gets_a_segment_whose_pages_exist():
    store = ObjectStore(400 * MB, spare_limit=100 * MB)
    try:
        segment, counted = store.reserve(20 * MB, "an object", str)
        assert segment is None and counted == 20 * MB  # the first write: fresh memory
        store.want_spare(20 * MB)
        assert store.spares.wait(timeout=60)
        segment, counted = store.reserve(20 * MB, "an object", str)
        assert segment is not None
        assert counted == segment.capacity >= 20 * MB  # counted as what it holds
        assert allocated(segment) >= 20 * MB  # pre-faulted: the put only copies
        segment.close()
    finally:
        store.close([])


@pytest.mark.parametrize("fallocate", [True, False], ids=["posix_fallocate", "zeros"])
def test_a_prefaulted_segment_has_its_pages(monkeypatch, fallocate):
    if not fallocate:  # as on macOS
        monkeypatch.delattr(os, "posix_fallocate")
    segment = Segment.prefaulted(5 * MB + 123)
    try:
        assert allocated(segment) >= 5 * MB + 123
        assert os.pread(segment.fd, 16, 5 * MB) == bytes(16)
    finally:
        segment.close()


def test_spares_are_counted_and_bounded_and_small_writes_get_none():
    store = ObjectStore(100 * MB, spare_limit=30 * MB)
    try:
        store.reserve(20 * MB, "an object", str)
        store.want_spare(2 * MB)  # small: fresh pages cost little, nothing held for them
        assert store.spares.pending == 0
        store.want_spare(20 * MB)
        assert store.spares.pending >= 20 * MB  # counted from the moment it is asked for
        store.want_spare(20 * MB)  # one of that size is on its way: no second
        store.want_spare(25 * MB)  # 20 + 25 MB would pass the 30 MB limit
        assert store.spares.pending < 25 * MB
        assert store.spares.wait(timeout=60)
        store.spares.collect()
        assert store.spares.pending >= 20 * MB  # made, and still counted until taken
        assert store.live + store.pool.bytes + store.spares.pending <= store.capacity
    finally:
        store.close([])


def test_a_spare_fraction_of_zero_makes_no_spares_and_no_thread(monkeypatch):
    monkeypatch.setenv("RAYLITE_SPARE_FRACTION", "0")
    raylite.init(num_cpus=1, object_store_memory=100 * MB)
    try:
        books = raylite._runtime.current()._objs.books  # type: ignore[attr-defined]
        refs = [raylite.put(np.ones(12 * MB // 8)) for _ in range(2)]
        assert books.spares.pending == 0 and spare_threads() == []
        del refs
    finally:
        raylite.shutdown()


def test_a_write_that_needs_the_room_a_spare_holds_drops_it_even_while_it_is_made():
    gate = Gate()
    store = ObjectStore(50 * MB, spare_limit=25 * MB)
    store.spares = Spares(gate)
    try:
        store.reserve(20 * MB, "an object", str)
        store.want_spare(20 * MB)
        assert gate.entered.wait(timeout=60)  # the thread is making it, and blocks there
        assert store.spares.pending >= 20 * MB
        segment, counted = store.reserve(25 * MB, "another object", str)  # 45 of 50 MB
        assert segment is None and store.spares.pending == 0
        with pytest.raises(ObjectStoreFullError, match="object_store_memory"):
            store.reserve(10 * MB, "a third", str)  # the capacity still holds
        gate.open.set()
        assert store.spares.wait(timeout=60)
        assert [s.fd for s in gate.made] == [-1]  # made for nobody: closed at once
        assert store.spares.pending == 0
    finally:
        gate.open.set()
        store.close([])


def test_a_spare_that_cannot_be_made_is_a_warning_and_puts_go_on_without_spares():
    def refuse(capacity: int) -> Segment:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    store = ObjectStore(100 * MB, spare_limit=50 * MB)
    store.spares = Spares(refuse)
    try:
        store.want_spare(10 * MB)
        assert store.spares.wait(timeout=60)
        with pytest.warns(RuntimeWarning, match="could not pre-fault.*Cannot allocate memory"):
            segment, _ = store.reserve(10 * MB, "an object", str)
        assert segment is None and store.spares.pending == 0
        store.want_spare(10 * MB)
        assert store.spares.pending == 0  # no more tries
    finally:
        store.close([])


def test_a_crash_of_the_spares_thread_is_a_warning_not_a_silent_stop(monkeypatch):
    store = ObjectStore(100 * MB, spare_limit=50 * MB)

    def crash() -> None:
        raise RuntimeError("a bug in the spares thread")

    monkeypatch.setattr(store.spares, "_loop", crash)
    try:
        store.want_spare(10 * MB)

        def failed() -> bool:
            store.spares.collect()
            return store.spares.failed is not None

        with pytest.warns(RuntimeWarning, match="a bug in the spares thread"):
            wait_until(failed, timeout=30, what="the driver to see the crash")
        assert store.spares.pending == 0  # nothing counted for a thread that is gone
        store.want_spare(10 * MB)
        assert store.spares.pending == 0
    finally:
        store.close([])


def test_a_spare_no_put_takes_is_closed_after_a_while():
    before = len(memfds())
    store = ObjectStore(100 * MB, spare_limit=50 * MB)
    store.spares = Spares(Segment.prefaulted, idle_s=0.2)
    try:
        store.want_spare(10 * MB)
        assert store.spares.wait(timeout=60)

        def released() -> bool:
            store.spares.collect()
            return store.spares.pending == 0

        wait_until(released, timeout=30, what="the idle spare to be closed")
        assert len(memfds()) == before  # its memory went back to the system
        segment, _ = store.reserve(10 * MB, "an object", str)
        assert segment is None
        store.want_spare(10 * MB)  # a later big write asks for one again
        assert store.spares.pending >= 10 * MB
    finally:
        store.close([])
    assert len(memfds()) == before


def test_big_segments_the_pool_drops_are_closed_by_the_thread_and_small_ones_at_once():
    store = ObjectStore(40 * MB)  # the pool keeps 10 MB at most; no spares
    before = len(memfds())
    try:
        small, big = Segment.create(1 * MB), Segment.create(20 * MB)
        store.pool.give(small)
        store.pool.give(big)  # over the pool's limit: dropped
        assert store.pool.bytes == 1 * MB
        wait_until(lambda: big.fd == -1, timeout=30, what="the big segment to be closed")
        assert spare_threads()  # closed there, not by the caller
        store.pool.trim(0)
        assert small.fd == -1  # small: closed at once
        assert len(memfds()) == before
    finally:
        store.close([])
    assert spare_threads() == []


def test_close_stops_the_thread_and_closes_every_spare():
    before = len(memfds())
    gate = Gate()
    store = ObjectStore(100 * MB, spare_limit=50 * MB)
    store.spares = Spares(gate)
    store.want_spare(10 * MB)
    store.want_spare(30 * MB)
    assert spare_threads()
    gate.open.set()  # close() waits for the spare being made, then closes it
    store.close([])
    assert spare_threads() == []
    assert all(s.fd == -1 for s in gate.made)
    assert len(memfds()) == before


def test_a_spare_prefaulted_at_init_is_what_the_first_put_gets(monkeypatch):
    monkeypatch.setenv("RAYLITE_PREFAULT_BYTES", str(24 * MB))
    before = len(memfds())
    raylite.init(num_cpus=1, object_store_memory=100 * MB)
    try:
        rt = raylite._runtime.current()
        assert rt._objs.books.spares.wait(timeout=60)  # type: ignore[attr-defined]
        a = np.arange(20 * MB // 8, dtype=np.float64)
        ref = raylite.put(a)
        with rt._lock:  # type: ignore[attr-defined]
            shm = rt._objs[ref._id].shm  # type: ignore[attr-defined]
            assert shm is not None and shm.segment.capacity == 24 * MB  # the spare
            assert allocated(shm.segment) >= 20 * MB
        assert np.array_equal(raylite.get(ref), a)
    finally:
        raylite.shutdown()
    assert spare_threads() == [] and len(memfds()) == before


def test_puts_over_the_room_spares_hold_still_fit_and_shutdown_leaves_nothing(monkeypatch):
    monkeypatch.setenv("RAYLITE_SPARE_FRACTION", "0.5")
    before = len(memfds())
    raylite.init(num_cpus=1, object_store_memory=40 * MB, _system_config=NO_SPILLING)
    try:
        books = raylite._runtime.current()._objs.books  # type: ignore[attr-defined]
        first = raylite.put(np.ones(12 * MB // 8))  # asks for a 12 MB spare
        assert books.spares.wait(timeout=60)
        second = raylite.put(np.ones(12 * MB // 8))  # takes it, asks for another
        assert books.spares.wait(timeout=60)
        third = raylite.put(np.ones(15 * MB // 8))  # 39 of 40 MB: only without spares
        assert [float(raylite.get(r).sum()) for r in (first, second, third)] == [
            12 * MB // 8, 12 * MB // 8, 15 * MB // 8
        ]  # fmt: skip
        with pytest.raises(ObjectStoreFullError):
            raylite.put(np.ones(2 * MB // 8))
        del first, second, third
    finally:
        raylite.shutdown()
    assert spare_threads() == [] and len(memfds()) == before


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("RAYLITE_SPARE_FRACTION", "some", "RAYLITE_SPARE_FRACTION must be a number >= 0"),
        ("RAYLITE_SPARE_FRACTION", "1.5", "RAYLITE_SPARE_FRACTION must be between 0 and 1"),
        ("RAYLITE_PREFAULT_BYTES", "1GB", "RAYLITE_PREFAULT_BYTES must be a whole number >= 0"),
        ("RAYLITE_PREFAULT_BYTES", str(60 * MB), r"RAYLITE_PREFAULT_BYTES \(62,914,560\) is "
         r"more than spare segments may hold: 26,214,400 bytes"),
    ],
)  # fmt: skip
def test_bad_spare_settings_are_named_at_init_and_leave_nothing(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    root = Path(tempfile.mkdtemp(prefix="rl-"))  # short: a socket's path lives under it
    try:
        with pytest.raises(ValueError, match=message):
            raylite.init(num_cpus=1, object_store_memory=100 * MB, _temp_dir=str(root))
        assert not raylite.is_initialized()
        assert list(root.glob("session_*")) == []
        assert live_children() == [] and psutil.Process().children() == []
        assert spare_threads() == []
    finally:
        shutil.rmtree(root, ignore_errors=True)
