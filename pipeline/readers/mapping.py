"""Mapping files: how a lab's instrument export maps onto the canonical table.

A mapping is a small TOML file (see ``pipeline/mappings/ferroflow_b1500.toml``)::

    [format]
    delimiter = "\\t"            # "\\t", ",", ";" or "auto"
    positive_amplitude = "up"    # or "down" for junctions that lower G under + pulses
    state_unit = "S"             # or "normalized"

    [header]                     # canonical field <- header key (``key:<TAB>value`` lines)
    wafer = { key = "Wafer" }
    pulse_width_s = { key = "Pulse duration_ns", unit = "ns" }

    [columns]                    # canonical field <- table column
    pulse = { column = "Pulse" }
    pulse_amplitude_v = { column = "V_write", unit = "V" }
    conductance_state = { divide = ["I_read_A", "read_voltage_v"], units = ["A", "V"] }
    # or: conductance_state = { reciprocal = "R_ohm", unit = "ohm" }

Computed fields use two operations only, ``divide`` and ``reciprocal``; operands are
table columns or canonical fields mapped from the header. No expression is evaluated.
Table columns the mapping does not name are ignored.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import MappingError
from ..schema import COLUMNS, STATE_UNITS, upgrade_columns
from ..units import factor

MAPPINGS_DIR = Path(__file__).resolve().parents[1] / "mappings"
DEFAULT_MAPPING = MAPPINGS_DIR / "ferroflow_b1500.toml"
TEXT_FIELDS = frozenset({"wafer", "die", "device", "direction", "state_unit", "measured_at"})


@dataclass(frozen=True)
class FieldRule:
    target: str
    key: str | None = None          # header key
    column: str | None = None       # table column
    scale: float = 1.0
    divide: tuple[str, str] | None = None
    divide_scales: tuple[float, float] = (1.0, 1.0)
    reciprocal: str | None = None

    def table_columns(self) -> set[str]:
        if self.column:
            return {self.column}
        if self.divide:
            return set(self.divide)
        if self.reciprocal:
            return {self.reciprocal}
        return set()


@dataclass(frozen=True)
class Mapping:
    name: str
    delimiter: str = "\t"
    positive_is_up: bool = True
    state_unit: str = "S"
    header: tuple[FieldRule, ...] = ()
    columns: tuple[FieldRule, ...] = ()
    source: str = ""

    @property
    def numeric_columns(self) -> frozenset[str]:
        """Table columns (or header fields used as operands) that must be numbers."""
        out: set[str] = set()
        for rule in self.columns:
            if rule.target not in TEXT_FIELDS:
                out |= rule.table_columns()
        return frozenset(out)


def _rule(target: str, spec: dict, where: str) -> FieldRule:
    if target not in COLUMNS or target in ("source_file", "source_sha256", "source_row"):
        raise MappingError(f"{where}: {target!r} is not a canonical column")
    if not isinstance(spec, dict):
        raise MappingError(f"{where}.{target} must be a table like {{ column = \"...\" }}")
    unit = spec.get("unit")
    scale = factor(unit) if unit is not None else 1.0
    if "divide" in spec:
        ops = spec["divide"]
        if not (isinstance(ops, list) and len(ops) == 2 and all(isinstance(o, str) for o in ops)):
            raise MappingError(f"{where}.{target}.divide must list two operand names")
        units = spec.get("units", ["", ""])
        scales = (factor(units[0]), factor(units[1]))
        return FieldRule(target, divide=(ops[0], ops[1]), divide_scales=scales, scale=scale)
    if "reciprocal" in spec:
        return FieldRule(target, reciprocal=str(spec["reciprocal"]), scale=scale)
    if "key" in spec:
        return FieldRule(target, key=str(spec["key"]), scale=scale)
    if "column" in spec:
        return FieldRule(target, column=str(spec["column"]), scale=scale)
    raise MappingError(f"{where}.{target} needs one of key, column, divide, reciprocal")


def parse_mapping(doc: dict, name: str = "mapping") -> Mapping:
    fmt = doc.get("format", {})
    delimiter = fmt.get("delimiter", "\t")
    if delimiter not in ("\t", ",", ";", "auto"):
        raise MappingError(f"{name}: delimiter must be tab, comma, semicolon or auto")
    positive = fmt.get("positive_amplitude", "up")
    if positive not in ("up", "down"):
        raise MappingError(f"{name}: positive_amplitude must be 'up' or 'down'")
    state_unit = fmt.get("state_unit", "S")
    if state_unit not in STATE_UNITS:
        raise MappingError(f"{name}: state_unit must be one of {STATE_UNITS}")
    # mapping files written before the unit rule name legacy canonical columns
    header = tuple(_rule(t, s, "header") for t, s in upgrade_columns(doc.get("header", {})).items())
    columns = tuple(_rule(t, s, "columns") for t, s in upgrade_columns(doc.get("columns", {})).items())
    return Mapping(name=name, delimiter=delimiter, positive_is_up=positive == "up",
                   state_unit=state_unit, header=header, columns=columns, source=name)


_CACHE: dict[Path, Mapping] = {}


def load_mapping(path: str | Path | None = None) -> Mapping:
    path = Path(path) if path else DEFAULT_MAPPING
    path = path.resolve()
    if path not in _CACHE:
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise MappingError(f"mapping file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise MappingError(f"{path}: not valid TOML ({exc})") from None
        try:
            _CACHE[path] = parse_mapping(doc, name=path.name)
        except MappingError as exc:
            raise MappingError(f"{path.name}: {exc.message}", file=str(path)) from None
    return _CACHE[path]
