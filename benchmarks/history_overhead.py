"""What recording the task history (timeline, state API) costs: raylite's tiny-task
throughput, sync round trip and async actor calls with recording on (the default,
``RAYLITE_TASK_HISTORY=100000``) and off (``0``), in the same run.

Each (setting, round) runs in a fresh subprocess, the settings alternating round by round so
machine noise spreads evenly; the table shows medians and the on/off ratio.

    .venv/bin/python benchmarks/history_overhead.py [--rounds 7] [--tasks 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = """
import json, sys
sys.path.insert(0, {here!r})
sys.path.insert(0, {contenders!r})
import raylite
from harness import round_trip_us, throughput
from bench_tasks import noop

n = {n}
raylite.init(num_cpus=2)
task = raylite.remote(noop)

@raylite.remote
class Pinger:
    async def ping(self):
        return None

p = Pinger.remote()
out = {{
    "tiny_tasks_per_s": throughput(lambda k: raylite.get([task.remote(i) for i in range(k)]), n),
    "sync_round_trip_us": round_trip_us(lambda i: raylite.get(task.remote(i)), n // 10),
    "async_actor_calls_per_s": throughput(
        lambda k: raylite.get([p.ping.remote() for _ in range(k)]), n, returns_none=True
    ),
}}
raylite.shutdown()
print(json.dumps(out))
"""


def _one(history: int, n: int) -> dict[str, float]:
    code = _CHILD.format(here=str(HERE), contenders=str(HERE / "contenders"), n=n)
    env = {**os.environ, "RAYLITE_TASK_HISTORY": str(history)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=600)  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tasks", type=int, default=20_000)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for r in range(args.rounds):
        for name, history in (("on", 100_000), ("off", 0)) if r % 2 == 0 else (
            ("off", 0), ("on", 100_000)
        ):
            runs[name].append(_one(history, args.tasks))
    print(f"{'metric':<26}{'history on':>14}{'history off':>14}{'on/off':>9}")
    for metric in runs["on"][0]:
        on = statistics.median(r[metric] for r in runs["on"])
        off = statistics.median(r[metric] for r in runs["off"])
        print(f"{metric:<26}{on:>14,.1f}{off:>14,.1f}{on / off:>9.3f}")
    print(f"(medians of {args.rounds} rounds, {args.tasks} tasks each; for throughput a "
          "ratio below 1 is the cost, for latency one above 1)")  # fmt: skip


if __name__ == "__main__":
    main()
