"""Unit names a mapping file may use: one table, unit -> (dimension, factor to SI).

A canonical column's dimension follows from its name (``schema``'s unit rule: ``_s``
seconds, ``_v`` volts, ``_j`` joules, ``_m2`` square metres, ``_siemens`` siemens,
``_state`` the series' state unit); counts such as ``pulse`` are dimensionless.
"""

from __future__ import annotations

from .errors import MappingError

_PREFIX = {"": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12, "k": 1e3, "M": 1e6,
           "G": 1e9, "f": 1e-15, "µ": 1e-6}
_BASE = {"s": "time", "V": "voltage", "A": "current", "S": "conductance", "ohm": "resistance",
         "Ohm": "resistance", "Ω": "resistance", "J": "energy", "W": "power", "F": "capacitance"}
_AREA = {"m2": 1.0, "cm2": 1e-4, "mm2": 1e-6, "um2": 1e-12, "µm2": 1e-12, "nm2": 1e-18}
_DIMENSIONLESS = {"1": 1.0, "": 1.0, "%": 0.01}

UNITS: dict[str, tuple[str, float]] = {
    **{p + base: (dim, f) for base, dim in _BASE.items() for p, f in _PREFIX.items()},
    **{u: ("area", f) for u, f in _AREA.items()},
    **{u: ("dimensionless", f) for u, f in _DIMENSIONLESS.items()},
}

# the dimension a canonical column's name gives it (longest suffix first)
_SUFFIX = (("_siemens", "conductance"), ("_m2", "area"), ("_s", "time"), ("_v", "voltage"),
           ("_j", "energy"))
# a / b, where neither is dimensionless nor both the same
_QUOTIENT = {("current", "voltage"): "conductance", ("voltage", "current"): "resistance",
             ("energy", "time"): "power", ("power", "voltage"): "current",
             ("power", "current"): "voltage"}
_RECIPROCAL = {"resistance": "conductance", "conductance": "resistance",
               "dimensionless": "dimensionless"}


def _lookup(unit) -> tuple[str, float]:
    if not isinstance(unit, str):
        raise MappingError(f"unit {unit!r} is not a text such as \"ns\"")
    try:
        return UNITS[unit.strip()]
    except KeyError:
        raise MappingError(f"unknown unit {unit!r}") from None


def factor(unit: str) -> float:
    """SI factor of ``unit`` ("ns" -> 1e-9, "um2" -> 1e-12, "kohm" -> 1e3)."""
    return _lookup(unit)[1]


def dimension(unit: str) -> str:
    """What ``unit`` measures: "ns" -> "time", "kohm" -> "resistance"."""
    return _lookup(unit)[0]


def field_dimension(column: str, state_unit: str = "S") -> str:
    """The dimension of a numeric canonical column (``state_unit``: the series' one)."""
    if column.endswith("_state"):
        return "conductance" if state_unit == "S" else "dimensionless"
    return next((dim for suffix, dim in _SUFFIX if column.endswith(suffix)), "dimensionless")


def quotient(a: str, b: str) -> str | None:
    """The dimension of a / b (None: none this module names)."""
    if b == "dimensionless":
        return a
    if a == b:
        return "dimensionless"
    return _QUOTIENT.get((a, b))


def reciprocal(a: str) -> str | None:
    return _RECIPROCAL.get(a)


def examples(dim: str) -> str:
    """A few unit names of ``dim`` for error messages: "s, ms, us, ns"."""
    names = [u for u, (d, _) in UNITS.items() if d == dim and u and "µ" not in u]
    return ", ".join(names[:4]) if dim != "dimensionless" else '"1", "%"'


def format_seconds(seconds: float) -> str:
    """A pulse width for people: 2e-08 -> '20 ns', 0.0002 -> '200 us'."""
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:g} {unit}"
    return f"{seconds:g} s"
