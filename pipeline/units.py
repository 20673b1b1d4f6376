"""Unit names a mapping file may use, and their factor to SI."""

from __future__ import annotations

from .errors import MappingError

_PREFIX = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3, "u": 1e-6, "µ": 1e-6,
           "n": 1e-9, "p": 1e-12, "f": 1e-15}
_BASE = {"s": "s", "V": "V", "A": "A", "S": "S", "ohm": "ohm", "Ohm": "ohm", "J": "J",
         "W": "W", "F": "F"}
_AREA = {"m2": 1.0, "cm2": 1e-4, "mm2": 1e-6, "um2": 1e-12, "µm2": 1e-12, "nm2": 1e-18}
_DIMENSIONLESS = {"1": 1.0, "": 1.0, "%": 0.01}


def factor(unit: str) -> float:
    """SI factor of ``unit`` ("ns" -> 1e-9, "um2" -> 1e-12, "kohm" -> 1e3)."""
    unit = unit.strip()
    if unit in _DIMENSIONLESS:
        return _DIMENSIONLESS[unit]
    if unit in _AREA:
        return _AREA[unit]
    for base in sorted(_BASE, key=len, reverse=True):
        if unit.endswith(base):
            prefix = unit[: -len(base)]
            if prefix in _PREFIX:
                return _PREFIX[prefix]
    raise MappingError(f"unknown unit {unit!r}")


def format_seconds(seconds: float) -> str:
    """A pulse width for people: 2e-08 -> '20 ns', 0.0002 -> '200 us'."""
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:g} {unit}"
    return f"{seconds:g} s"
