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

Files that lack a field can give it as a constant, in either section:
``die = { value = "X05Y29" }`` (numbers in the ``unit`` given, SI by default). Files
with no loop column can number loops: ``cycle = { derive = "loops" }`` starts a new cycle
where the pulse direction returns to the file's first direction after the other one
(zero-amplitude reads belong to the loop of the pulse after them).
``[format] zero_amplitude = "read"`` keeps zero-amplitude rows as reads without a pulse
(``direction = "read"``: the state before the next pulse); the default ``"refuse"``
leaves them without a direction, which validation refuses. ``Mapping.with_overrides``
replaces any field by a constant (``ferroflow ingest --set die=X05Y29``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import MappingError
from ..schema import COLUMNS, STATE_UNITS, upgrade_columns
from ..units import factor

MAPPINGS_DIR = Path(__file__).resolve().parents[1] / "mappings"
DEFAULT_MAPPING = MAPPINGS_DIR / "ferroflow_b1500.toml"
TEXT_FIELDS = frozenset({"wafer", "die", "device", "direction", "state_unit", "measured_at"})
DERIVED = {"cycle": ("loops",)}
ZERO_AMPLITUDE = ("refuse", "read")


@dataclass(frozen=True)
class FieldRule:
    target: str
    key: str | None = None          # header key
    column: str | None = None       # table column
    scale: float = 1.0
    divide: tuple[str, str] | None = None
    divide_scales: tuple[float, float] = (1.0, 1.0)
    reciprocal: str | None = None
    value: str | float | None = None  # a constant
    derive: str | None = None         # a field computed from the rows (DERIVED)

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
    zero_amplitude: str = "refuse"

    @property
    def zero_is_read(self) -> bool:
        return self.zero_amplitude == "read"

    def with_overrides(self, overrides: dict[str, str] | None) -> "Mapping":
        """This mapping with each ``field -> text`` of ``overrides`` as a constant
        (``ferroflow ingest --set die=X05Y29``); numbers are in SI units."""
        if not overrides:
            return self
        rules = {t: FieldRule(t, value=parse_override(t, v)) for t, v in overrides.items()}
        return replace(self, header=tuple(r for r in self.header if r.target not in rules)
                       + tuple(rules.values()),
                       columns=tuple(r for r in self.columns if r.target not in rules))

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
    if "value" in spec:
        return FieldRule(target, value=_constant(target, spec["value"], scale, where))
    if "derive" in spec:
        allowed = DERIVED.get(target, ())
        if spec["derive"] not in allowed:
            raise MappingError(f"{where}.{target}: derive = {spec['derive']!r} is not known"
                               + (f" (use one of {allowed})" if allowed else
                                  f" ({target} cannot be derived)"))
        return FieldRule(target, derive=spec["derive"])
    raise MappingError(f"{where}.{target} needs one of key, column, value, derive, divide, "
                       "reciprocal")


def parse_override(target: str, text) -> str | float:
    """The value of ``--set TARGET=TEXT`` (SI units for numbers)."""
    return _rule(target, {"value": text}, "--set").value


def _constant(target: str, value, scale: float, where: str) -> str | float:
    """A constant field: text for text fields, else a number times its unit's scale."""
    if target in TEXT_FIELDS:
        return str(value)
    try:
        return float(value) * scale
    except (TypeError, ValueError):
        raise MappingError(f"{where}.{target}: value {value!r} is not a number") from None


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
    zero = fmt.get("zero_amplitude", "refuse")
    if zero not in ZERO_AMPLITUDE:
        raise MappingError(f"{name}: zero_amplitude must be one of {ZERO_AMPLITUDE}")
    # mapping files written before the unit rule name legacy canonical columns
    header = tuple(_rule(t, s, "header") for t, s in upgrade_columns(doc.get("header", {})).items())
    columns = tuple(_rule(t, s, "columns") for t, s in upgrade_columns(doc.get("columns", {})).items())
    return Mapping(name=name, delimiter=delimiter, positive_is_up=positive == "up",
                   state_unit=state_unit, header=header, columns=columns, source=name,
                   zero_amplitude=zero)


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
