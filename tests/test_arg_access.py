"""Typed access to bound arguments: the value as bound, or a TypeError for a caller's bug."""

from __future__ import annotations

import pytest

from dnnspec.errors import Span
from dnnspec.schema import ArgSpec, Signature, arg_bool, arg_float, arg_int, arg_str

SPAN = Span(file="t.dnn", line=1, col=1, end_line=1, end_col=2)
SIGNATURE = Signature(
    args=(
        ArgSpec(name="units", type="int"),
        ArgSpec(name="rate", type="float"),
        ArgSpec(name="mode", type="str", default="fast"),
        ArgSpec(name="bias", type="bool", default=True),
    )
)


def test_accessors_return_the_bound_values_with_their_types() -> None:
    args = SIGNATURE.bind("f", [(64, SPAN), (1, SPAN)], [], SPAN)
    assert arg_int(args, "units") == 64
    rate = arg_float(args, "rate")
    assert rate == 1.0 and isinstance(rate, float)
    assert arg_str(args, "mode") == "fast"
    assert arg_bool(args, "bias") is True


def test_accessors_reject_a_value_of_another_type() -> None:
    args = {"flag": True, "word": "x", "number": 2.5}
    with pytest.raises(TypeError, match="'flag' should be an int"):
        arg_int(args, "flag")  # a bool is not an int here, though Python says it is
    with pytest.raises(TypeError, match="'word' should be a number"):
        arg_float(args, "word")
    with pytest.raises(TypeError, match="'number' should be a word"):
        arg_str(args, "number")
    with pytest.raises(TypeError, match="'word' should be true or false"):
        arg_bool(args, "word")
