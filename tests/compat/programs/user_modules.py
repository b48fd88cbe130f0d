"""Functions and classes from the program's own modules travel by reference, and a
remote error names the file and line where it was raised."""

import ray
import shapes
from shapes import Circle, check_positive, grow

ray.init(num_cpus=2)

# The module's own function and class, run remotely: the worker imports `shapes`.
remote_grow = ray.remote(grow)
bigger = ray.get(remote_grow.remote(Circle(1.0), 3.0))
assert type(bigger) is shapes.Circle and bigger.radius == 3.0


@ray.remote
def areas(circles):
    return [round(c.area(), 3) for c in circles]


assert ray.get(areas.remote([Circle(1.0), Circle(2.0)])) == [3.142, 12.566]

try:
    ray.get(ray.remote(check_positive).remote(-1))
except ValueError as exc:
    text = str(exc)
    assert f'File "{shapes.__file__}", line ' in text, text
    assert 'raise ValueError(f"expected a positive value, got {value}")' in text, text
else:
    raise AssertionError("no error")


@ray.remote
def fails_here():
    raise RuntimeError("from the main script")


try:
    ray.get(fails_here.remote())
except RuntimeError as exc:
    assert f'File "{__file__}", line ' in str(exc), str(exc)
    assert 'raise RuntimeError("from the main script")' in str(exc)
ray.shutdown()
print("ok")
