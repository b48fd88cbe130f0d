"""Spill and restore throughput against the disk's own sequential speed (issue 16, item 4).

A store of ``--store`` MiB takes ``--objects`` puts of ``--mb`` MiB each, so most of them are
spilled; then each is read back with ``get`` and copied out (every byte read, as a restore
must). In the same run, the same bytes are written to and read back from a plain file in the
same folder (``os.write``/``readinto``, no fsync: spilling does not fsync either, so both go
through the page cache), and written once more with an fsync, for the disk itself.

Spill throughput is the bytes spilled over the time spent writing spill files (timed around
``SpillDir.write``); restore throughput is the bytes read back over the time of ``get`` plus
the copy. Rounds alternate spill and plain-file passes; the table shows medians and ratios.

    .venv/bin/python benchmarks/spill.py [--mb 32] [--objects 24] [--store 160] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import raylite
from raylite._local import spill


def spill_pass(n: int, count: int, store: int, folder: Path) -> tuple[float, float]:
    """Returns (spill GB/s, restore GB/s) for one pass."""
    timed = {"s": 0.0, "bytes": 0}
    write = spill.SpillDir.write

    def timed_write(self: spill.SpillDir, src_fd: int, size: int) -> int:
        t = time.perf_counter()
        try:
            return write(self, src_fd, size)
        finally:
            timed["s"] += time.perf_counter() - t
            timed["bytes"] += size

    spill.SpillDir.write = timed_write  # type: ignore[method-assign]
    raylite.init(num_cpus=1, object_store_memory=store, object_spilling_directory=str(folder))
    try:
        refs = [raylite.put(np.full(n // 8, i, dtype=np.float64)) for i in range(count)]
        out = np.empty(n // 8)
        t = time.perf_counter()
        for i, ref in enumerate(refs[: count // 2]):  # the oldest: spilled
            value = raylite.get(ref)
            np.copyto(out, value)
            del value
            assert out[-1] == i
        restore_s = time.perf_counter() - t
    finally:
        raylite.shutdown()
        spill.SpillDir.write = write  # type: ignore[method-assign]
    return timed["bytes"] / timed["s"] / 1e9, (count // 2) * n / restore_s / 1e9


def file_pass(n: int, count: int, folder: Path, fsync: bool) -> tuple[float, float]:
    """Returns (write GB/s, read GB/s) of ``count`` files of ``n`` bytes in ``folder``."""
    data = np.ones(n // 8)
    paths = [folder / f"plain-{i}" for i in range(count)]
    t = time.perf_counter()
    for path in paths:
        with open(path, "wb") as f:
            f.write(memoryview(data).cast("B"))
            if fsync:
                os.fsync(f.fileno())
    write_s = time.perf_counter() - t
    out = bytearray(n)
    t = time.perf_counter()
    for path in paths[: count // 2]:
        with open(path, "rb", buffering=0) as f:
            f.readinto(out)  # type: ignore[attr-defined]
    read_s = time.perf_counter() - t
    for path in paths:
        path.unlink()
    return count * n / write_s / 1e9, (count // 2) * n / read_s / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=32, help="object size in MiB")
    parser.add_argument("--objects", type=int, default=24)
    parser.add_argument("--store", type=int, default=160, help="object_store_memory in MiB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="folder to spill to (default: a temp one)")
    args = parser.parse_args()
    n, store = args.mb << 20, args.store << 20
    rows: dict[str, list[float]] = {
        k: [] for k in ("spill", "restore", "file write", "file read", "file write+fsync")
    }
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        for _ in range(args.rounds):
            s, r = spill_pass(n, args.objects, store, folder)
            rows["spill"].append(s)
            rows["restore"].append(r)
            w, rd = file_pass(n, args.objects, folder, fsync=False)
            rows["file write"].append(w)
            rows["file read"].append(rd)
            rows["file write+fsync"].append(file_pass(n, 4, folder, fsync=True)[0])
        where = os.path.realpath(tmp)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(
        f"{args.objects} objects x {args.mb} MiB through a {args.store} MiB store, "
        f"{args.rounds} rounds, spilled to {where}, load {os.getloadavg()[0]:.1f}\n"
    )
    print("| figure | median GB/s | min-max GB/s | plain file / it |")
    print("|---|---|---|---|")
    for name, base in (
        ("spill", "file write"), ("restore", "file read"), ("file write", None),
        ("file read", None), ("file write+fsync", None),
    ):  # fmt: skip
        v = rows[name]
        ratio = f"{med[base] / med[name]:.2f}" if base else ""
        print(f"| {name} | {med[name]:.2f} | {min(v):.2f}-{max(v):.2f} | {ratio} |")


if __name__ == "__main__":
    main()
