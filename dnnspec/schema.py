"""Argument schemas for everything a spec can call (layers, losses, optimizers, ...).

One `Signature` per registered thing; `bind` turns the positional and keyword arguments
written in a spec into a complete, typed argument dict with every default filled in,
or located diagnostics (unknown argument with did-you-mean, wrong type, out of range).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from dnnspec.errors import Diagnostic, DiagnosticError, Span, did_you_mean

INT64_MAX = 2**63 - 1
"""The largest integer a spec may hold: every integer ends up in an int64 somewhere."""

T = TypeVar("T")

ArgType = Literal["int", "float", "bool", "str", "duration", "ints", "floats", "any", "tensor"]
"""`tensor`: a tensor passed by keyword (`memory = enc`); resolve binds the value\'s name,
and the empty string (the default) means none was passed."""


DurationUnit = Literal["steps", "epochs"]


class Duration(BaseModel):
    """A length of training written with its unit: `2 epochs`, `500 steps`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float
    unit: DurationUnit

    def to_steps(self, steps_per_epoch: int) -> int:
        return int(round(self.value * (steps_per_epoch if self.unit == "epochs" else 1)))


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class ArgSpec(BaseModel):
    """One argument: its type, default (REQUIRED when none), allowed words and bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str
    type: ArgType
    default: Any = REQUIRED
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


class Signature(BaseModel):
    """The ordered arguments of one callable; positional arguments fill them in order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    args: tuple[ArgSpec, ...] = ()

    def names(self) -> list[str]:
        return [a.name for a in self.args]

    def get(self, name: str) -> ArgSpec | None:
        return next((a for a in self.args if a.name == name), None)

    def bind(
        self,
        what: str,
        positional: Sequence[tuple[Any, Span]],
        keyword: Sequence[tuple[str, Any, Span]],
        call_span: Span,
    ) -> dict[str, Any]:
        """Check and complete the arguments of a call of `what`; raise all problems at once."""
        problems: list[Diagnostic] = []
        bound: dict[str, Any] = {}
        if len(positional) > len(self.args):
            extra_span = positional[len(self.args)][1]
            problems.append(
                Diagnostic(
                    message=f"{what} takes at most {len(self.args)} positional argument(s), "
                    f"got {len(positional)}",
                    span=extra_span,
                    help=f"arguments of {what}: {', '.join(self.names()) or 'none'}",
                )
            )
        for arg, (value, span) in zip(self.args, positional, strict=False):
            bound[arg.name] = _check(what, arg, value, span, problems)
        for name, value, span in keyword:
            spec = self.get(name)
            if spec is None:
                hint = did_you_mean(name, self.names())
                problems.append(
                    Diagnostic(
                        message=f"{what} has no argument '{name}'",
                        span=span,
                        help=hint or f"{what} takes no arguments",
                    )
                )
                continue
            if name in bound:
                problems.append(
                    Diagnostic(message=f"argument '{name}' of {what} given twice", span=span)
                )
                continue
            bound[name] = _check(what, spec, value, span, problems)
        for spec in self.args:
            if spec.name not in bound:
                if spec.required:
                    problems.append(
                        Diagnostic(
                            message=f"{what} needs argument '{spec.name}' ({spec.type})",
                            span=call_span,
                            help=f"write {what}({spec.name} = ...)"
                            + (f": {spec.doc}" if spec.doc else ""),
                        )
                    )
                else:
                    bound[spec.name] = spec.default
        if problems:
            raise DiagnosticError(problems)
        return bound


def _shown(value: Any) -> str:
    """`value` as it would be written in a spec: `true`, `"abc"`, `[1, 2]`, `2 epochs`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, Duration):
        return f"{value.value:g} {value.unit}"
    return repr(value)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Duration):
        return "duration"
    return {int: "int", float: "float", str: "word", list: "list"}.get(
        type(value), type(value).__name__
    )


def _out_of_bounds(spec: ArgSpec, value: float) -> str | None:
    """'> 0', '<= 1', ... when `value` breaks the argument's bounds, else None."""
    lo, hi = spec.min, spec.max
    if lo is not None and (value < lo or (spec.min_exclusive and value == lo)):
        return f"{'>' if spec.min_exclusive else '>='} {lo:g}"
    if hi is not None and (value > hi or (spec.max_exclusive and value == hi)):
        return f"{'<' if spec.max_exclusive else '<='} {hi:g}"
    return None


def _check(what: str, spec: ArgSpec, value: Any, span: Span, problems: list[Diagnostic]) -> Any:
    """Coerce `value` to the argument's type (int -> float, number -> steps) or record why not."""

    def bad(message: str, help: str | None = None) -> Any:
        problems.append(Diagnostic(message=message, span=span, help=help))
        return value

    t = spec.type
    label = f"argument '{spec.name}' of {what}"
    if t in ("any", "tensor"):
        return value
    if t == "bool":
        if not isinstance(value, bool):
            return bad(f"{label} must be true or false, got {_type_name(value)} {_shown(value)}")
        return value
    if t in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return bad(f"{label} must be a number ({t}), got {_type_name(value)} {_shown(value)}")
        if t == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    return bad(f"{label} must be an integer, got {value!r}")
                if abs(value) > INT64_MAX:
                    return bad(f"{label} does not fit in 64 bits, got {value!r}")
                value = int(value)
        else:
            value = float(value)
        problem = _out_of_bounds(spec, value)
        return bad(f"{label} must be {problem}, got {value!r}") if problem else value
    if t == "str":
        if not isinstance(value, str):
            return bad(f"{label} must be a word, got {_type_name(value)} {_shown(value)}")
        if spec.choices is not None and value not in spec.choices:
            return bad(
                f"{label} has no option '{value}'",
                did_you_mean(value, spec.choices) or "options: " + ", ".join(spec.choices),
            )
        return value
    if t == "duration":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            value = Duration(value=value, unit="steps")
        if isinstance(value, Duration):
            problem = _out_of_bounds(spec, value.value)
            if problem:
                return bad(f"{label} must be {problem} {value.unit}, got {value.value:g}")
            return value
        return bad(
            f"{label} must be a duration, got {_type_name(value)} {_shown(value)}",
            "write it with a unit, e.g. '2 epochs' or '500 steps'",
        )
    if t in ("ints", "floats"):
        items = value if isinstance(value, list) else [value]
        if t == "ints":  # whole floats (`8 / 2`) are ints, as for a single int argument
            items = [
                int(v) if isinstance(v, float) and v.is_integer() and abs(v) <= INT64_MAX else v
                for v in items
            ]
        want = int if t == "ints" else (int, float)
        if not all(isinstance(v, want) and not isinstance(v, bool) for v in items):
            return bad(f"{label} must be a list of {t[:-1]}s, got {_shown(value)}")
        return [float(v) for v in items] if t == "floats" else list(items)
    return bad(f"{label} has an unsupported type {t}")


# -- typed access to bound arguments ---------------------------------------------------------
# `Signature.bind` has already checked each argument's type, so these only narrow the static
# type of one value (a wrong type here is a bug in the caller, not a spec mistake).


def _typed(args: Mapping[str, object], name: str, kind: type[T], what: str) -> T:
    value = args[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(f"argument '{name}' should be {what}, got {value!r}")
    return value


def arg_int(args: Mapping[str, object], name: str) -> int:
    """A bound `int` argument."""
    return _typed(args, name, int, "an int")


def arg_float(args: Mapping[str, object], name: str) -> float:
    """A bound `float` argument (an int is accepted: a lock file may hold `1` for `1.0`)."""
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"argument '{name}' should be a number, got {value!r}")
    return float(value)


def arg_str(args: Mapping[str, object], name: str) -> str:
    """A bound `str` argument (a word)."""
    return _typed(args, name, str, "a word")


def arg_bool(args: Mapping[str, object], name: str) -> bool:
    """A bound `bool` argument."""
    return _typed(args, name, bool, "true or false")
