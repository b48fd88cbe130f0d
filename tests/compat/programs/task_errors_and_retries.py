"""A task's exception reaches the caller; retries, timeouts and cancellation."""

import time

import ray
from ray.exceptions import GetTimeoutError, RayTaskError, TaskCancelledError

ray.init(num_cpus=2)


class InsufficientFunds(Exception):
    pass


@ray.remote
def withdraw(amount):
    if amount > 100:
        raise InsufficientFunds(f"cannot withdraw {amount}")
    return 100 - amount


assert ray.get(withdraw.remote(30)) == 70

# The error is both a RayTaskError and the user's own class.
try:
    ray.get(withdraw.remote(500))
except InsufficientFunds as exc:
    assert isinstance(exc, RayTaskError)
    assert isinstance(exc.cause, InsufficientFunds)
    assert "cannot withdraw 500" in str(exc)
else:
    raise AssertionError("no error")


# An error passes through a task that depends on the failed one.
@ray.remote
def add_one(x):
    return x + 1


try:
    ray.get(add_one.remote(withdraw.remote(500)))
except RayTaskError as exc:
    assert isinstance(exc, InsufficientFunds)
else:
    raise AssertionError("no error")


# Application errors are retried only when retry_exceptions says so.
@ray.remote
class Attempts:
    def __init__(self):
        self.n = 0

    def next(self):
        self.n += 1
        return self.n


@ray.remote(max_retries=3, retry_exceptions=True)
def flaky(attempts):
    n = ray.get(attempts.next.remote())
    if n < 3:
        raise ConnectionError(f"attempt {n} failed")
    return n


attempts = Attempts.remote()
assert ray.get(flaky.remote(attempts)) == 3


@ray.remote(max_retries=3)
def not_retried(attempts):
    ray.get(attempts.next.remote())
    raise ConnectionError("no retry for application errors by default")


attempts = Attempts.remote()
try:
    ray.get(not_retried.remote(attempts))
except ConnectionError:
    pass
assert ray.get(attempts.next.remote()) == 2  # one attempt only


# Only the listed exception types are retried.
@ray.remote(max_retries=2, retry_exceptions=[KeyError])
def picky(attempts):
    ray.get(attempts.next.remote())
    raise KeyError("retried")


attempts = Attempts.remote()
try:
    ray.get(picky.remote(attempts))
except KeyError:
    pass
assert ray.get(attempts.next.remote()) == 4  # 1 try + 2 retries


@ray.remote
def sleeper(seconds):
    time.sleep(seconds)
    return seconds


# get with a timeout raises GetTimeoutError (also a TimeoutError).
ref = sleeper.remote(30)
try:
    ray.get(ref, timeout=0.1)
except GetTimeoutError as exc:
    assert isinstance(exc, TimeoutError)
else:
    raise AssertionError("no timeout")

# Cancelling the running task ends it; get raises TaskCancelledError.
ray.cancel(ref)
try:
    ray.get(ref, timeout=60)
except TaskCancelledError:
    pass
else:
    raise AssertionError("not cancelled")
ray.shutdown()
print("ok")
