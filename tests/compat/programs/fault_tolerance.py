"""Fault tolerance: crashed workers, restarted actors, killed actors."""

import os
import time

import ray
from ray.exceptions import RayActorError, WorkerCrashedError

ray.init(num_cpus=2)


@ray.remote(num_cpus=0)
class Attempts:
    def __init__(self):
        self.n = 0

    def next(self):
        self.n += 1
        return self.n


# A task whose worker process dies is retried (max_retries; Ray's default is 3).
@ray.remote(max_retries=2)
def dies_once(attempts):
    if ray.get(attempts.next.remote()) == 1:
        os._exit(1)
    return "survived"


assert ray.get(dies_once.remote(Attempts.remote())) == "survived"


@ray.remote(max_retries=0)
def always_dies():
    os._exit(1)


try:
    ray.get(always_dies.remote())
except WorkerCrashedError:
    pass
else:
    raise AssertionError("no WorkerCrashedError")


# An actor whose process dies is restarted up to max_restarts times; its state restarts.
@ray.remote(max_restarts=1, max_task_retries=0)
class Fragile:
    def __init__(self):
        self.calls = 0

    def pid(self):
        return os.getpid()

    def call(self):
        self.calls += 1
        return self.calls

    def crash(self):
        os._exit(1)


fragile = Fragile.remote()
assert ray.get(fragile.call.remote()) == 1
first_pid = ray.get(fragile.pid.remote())
try:
    ray.get(fragile.crash.remote())
except RayActorError:
    pass
else:
    raise AssertionError("the crash went unnoticed")

def call_once_back(actor, deadline_s=60):
    """Calls made while the actor restarts fail (ActorUnavailableError on Ray): retry."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return ray.get(actor.call.remote())
        except RayActorError:
            assert time.monotonic() < deadline, "the actor did not come back"


assert call_once_back(fragile) == 1  # a fresh instance
assert ray.get(fragile.pid.remote()) != first_pid
try:
    ray.get(fragile.crash.remote())
except RayActorError:
    pass
try:
    ray.get(fragile.call.remote())  # no restarts left
except RayActorError:
    pass
else:
    raise AssertionError("the actor came back a second time")

# kill() ends an actor for good; later calls fail. Named actors are found by name.
keeper = Attempts.options(name="keeper").remote()
assert ray.get(ray.get_actor("keeper").next.remote()) == 1
ray.kill(keeper)
try:
    ray.get(keeper.next.remote())
except RayActorError:
    pass
else:
    raise AssertionError("a killed actor answered")
ray.shutdown()
print("ok")
