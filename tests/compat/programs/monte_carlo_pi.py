"""Monte Carlo estimate of pi: sampling tasks report progress to an actor."""

import math
import random
import time

import ray

ray.init(num_cpus=2)


@ray.remote
class Progress:
    def __init__(self, expected):
        self.expected = expected
        self.done_by_task = {}

    def report(self, task_id, done):
        self.done_by_task[task_id] = done

    def fraction(self):
        return sum(self.done_by_task.values()) / self.expected


@ray.remote
def sample(task_id, n, progress, seed):
    rng = random.Random(seed)
    inside = 0
    for i in range(1, n + 1):
        x, y = rng.random(), rng.random()
        if x * x + y * y <= 1.0:
            inside += 1
        if i % 5_000 == 0:
            progress.report.remote(task_id, i)
    progress.report.remote(task_id, n)
    return inside


TASKS, PER_TASK = 4, 25_000
progress = Progress.remote(TASKS * PER_TASK)
refs = [sample.remote(t, PER_TASK, progress, seed=t) for t in range(TASKS)]
inside = sum(ray.get(refs))
estimate = 4 * inside / (TASKS * PER_TASK)
assert abs(estimate - math.pi) < 0.05, estimate

# A task's reports are calls of its own, not ordered with the driver's: poll until the
# actor has seen the last of them.
deadline = time.monotonic() + 30
while ray.get(progress.fraction.remote()) < 1.0:
    assert time.monotonic() < deadline, "progress reports never arrived"
assert ray.get(progress.fraction.remote()) == 1.0
ray.shutdown()
print("ok")
