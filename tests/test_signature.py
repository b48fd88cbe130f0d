"""``_signature.ArgSpec``: the argument check of ``.remote()`` agrees with Python's own."""

from __future__ import annotations

import inspect
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylite._signature import arg_spec


def every_kind(a, b=1, *args, c, d=2, **kwargs):
    pass


def positional_only(a, /, b, *, c=3):
    pass


def plain(x, y=1):
    pass


def anything(*args, **kwargs):
    pass


def mixed(a, b, /, c, d=4, *, e, f=5):
    pass


FUNCTIONS = [every_kind, positional_only, plain, anything, mixed]
NAMES = ["a", "b", "c", "d", "e", "f", "x", "y", "args", "kwargs"]


@settings(max_examples=300, deadline=None)
@given(
    fn=st.sampled_from(FUNCTIONS),
    n_args=st.integers(0, 6),
    keywords=st.lists(st.sampled_from(NAMES), max_size=5, unique=True),
)
def test_check_agrees_with_bind(fn, n_args, keywords):
    args, kwargs = tuple(range(n_args)), dict.fromkeys(keywords, 0)
    try:
        inspect.signature(fn).bind(*args, **kwargs)
        expected = None
    except TypeError as exc:
        expected = str(exc)
    spec = arg_spec(fn)
    assert spec is not None
    if expected is None:
        spec.check("f.remote()", args, kwargs)
    else:
        with pytest.raises(TypeError) as info:
            spec.check("f.remote()", args, kwargs)
        assert str(info.value) == f"f.remote(): {expected}"


def test_self_is_left_out_and_the_spec_pickles():
    class C:
        def method(self, x):
            pass

    spec = pickle.loads(pickle.dumps(arg_spec(C.method, drop_first=True)))
    spec.check("C.method.remote()", (1,), {})
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        spec.check("C.method.remote()", (), {})


def test_callables_without_a_signature_are_not_checked():
    assert arg_spec(min) is None  # Python cannot tell min's signature
    assert arg_spec(lambda self: None, drop_first=True) is not None
    assert arg_spec(lambda *args: None, drop_first=True) is None  # no `self` to drop
