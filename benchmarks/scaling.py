"""Core scaling: CPU-bound speed-up and tiny-task throughput as num_cpus grows.

For the machines with more cores than the 2 here (e.g. the 16-core GPU machine). For each
``num_cpus`` in 1, 2, 4, ... up to the core count: the wall time of 8 x num_cpus tasks of
~50 ms of pure-Python work (speed-up vs 1 CPU; ideal = num_cpus), and the throughput of
20,000 no-op tasks. Usage: ``python benchmarks/scaling.py [max_cpus]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import raylite


def burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def noop() -> None:
    return None


def _loops_for(seconds: float) -> int:
    start = time.perf_counter()
    burn(200_000)
    return int(200_000 * seconds / (time.perf_counter() - start))


def main() -> None:
    top = int(sys.argv[1]) if len(sys.argv) > 1 else (os.cpu_count() or 1)
    loops = _loops_for(0.05)
    counts = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= top]
    base = None
    print(f"{'num_cpus':>8} {'cpu-bound s':>12} {'speed-up':>9} {'tiny tasks/s':>13}")
    for n in counts:
        raylite.init(num_cpus=n)
        try:
            work, nop = raylite.remote(burn), raylite.remote(noop)
            raylite.get([work.remote(1000) for _ in range(n)])  # warm every worker
            times = []
            for _ in range(3):
                start = time.perf_counter()
                raylite.get([work.remote(loops) for _ in range(8 * n)])
                times.append(time.perf_counter() - start)  # ideally 8 x 50 ms for every n
            wall = statistics.median(times)
            base = base or wall
            raylite.get([nop.remote() for _ in range(2000)])
            rates = []
            for _ in range(3):
                start = time.perf_counter()
                raylite.get([nop.remote() for _ in range(20_000)])
                rates.append(20_000 / (time.perf_counter() - start))
        finally:
            raylite.shutdown()
        print(f"{n:>8} {wall:>12.3f} {base / wall * n:>9.2f} {statistics.median(rates):>13,.0f}")


if __name__ == "__main__":
    main()
