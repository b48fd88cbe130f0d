"""Makes the README's pictures: runs a small mixed workload with the dashboard on and saves
``docs/dashboard.png`` (the Live tab, mid-run) and ``docs/timeline.png`` (the Timeline tab,
after it), through a headless chromium.

    .venv/bin/python docs/screenshots.py      # needs `apt-get install -y chromium`
"""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path

import numpy as np

import raylite

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests"))  # the tests' browser helper: one copy of it
from _helpers import chromium_page, missing_browser  # noqa: E402


@raylite.remote
def load(i: int) -> np.ndarray:
    time.sleep(random.uniform(0.2, 0.6))  # reading a shard
    return np.random.default_rng(i).random(200_000)


@raylite.remote
def transform(x: np.ndarray) -> float:
    deadline = time.perf_counter() + random.uniform(0.1, 0.4)
    while time.perf_counter() < deadline:  # CPU-bound work
        x = np.sqrt(x + 1.0)
    return float(x.sum())


@raylite.remote(max_retries=0)
def validate(score: float) -> float:
    time.sleep(0.1)
    if random.random() < 0.15:
        raise ValueError(f"score {score:.1f} out of range")
    return score


@raylite.remote
class ParameterServer:
    def __init__(self) -> None:
        self.total = 0.0

    def update(self, score: float) -> float:
        time.sleep(0.05)
        self.total += score
        return self.total


def workload(stop: threading.Event) -> None:
    """Waves of load -> transform -> validate -> ParameterServer.update until ``stop``."""
    server = ParameterServer.remote()
    weights = raylite.put(np.zeros(5_000_000))  # 40 MB in the object store
    wave = 0
    while not stop.is_set():
        scores = [transform.remote(load.remote(wave * 8 + i)) for i in range(8)]
        checked = [validate.remote(s) for s in scores]
        updates = [server.update.remote(s) for s in scores]
        raylite.wait(checked + updates, num_returns=len(checked) + len(updates), timeout=30)
        wave += 1
    del weights


def main() -> None:
    why = missing_browser()
    if why is not None:
        sys.exit(f"cannot take screenshots: {why}")
    random.seed(7)
    info = raylite.init(num_cpus=4, include_dashboard=True, dashboard_port=0)
    url = f"http://{info['dashboard_url']}/"
    stop = threading.Event()
    runner = threading.Thread(target=workload, args=(stop,), name="workload")
    runner.start()
    try:
        with chromium_page(width=1280, height=1000) as page:
            page.goto(url)
            page.wait_for_selector("#running tr[data-name]", timeout=15_000)
            time.sleep(25)  # let the task stream fill up: this is a demo, not a test
            page.locator("main").screenshot(path=str(DOCS / "dashboard.png"))
            stop.set()
            runner.join(timeout=60)
            page.click("#tab-timeline")
            page.wait_for_selector("#tl[data-bars]", timeout=15_000)
            page.locator("#timeline").screenshot(path=str(DOCS / "timeline.png"))
    finally:
        stop.set()
        runner.join(timeout=60)
        raylite.shutdown()
    for name in ("dashboard.png", "timeline.png"):
        print(f"{DOCS / name}: {(DOCS / name).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
