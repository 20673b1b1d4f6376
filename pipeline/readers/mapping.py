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

A mapping is checked whole when parsed; errors name the file, the section and the field:
unknown sections, ``[format]`` keys, field names and field keys (a misspelt ``unti``) are
errors, each field has exactly one source (``SOURCES``), and each unit must have the
field's dimension (``units.field_dimension``: a pulse width in ``mV``, or a ``divide`` of
``["V", "A"]`` into ``conductance_state``, is refused). Without ``unit``/``units`` values
are taken as SI.
"""

from __future__ import annotations

import stat
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import MappingError
from ..schema import COLUMNS, STATE_UNITS, upgrade_columns
from .. import units

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


# what a field spec may hold: one source, and the unit keys that go with it
SOURCES = {"header": ("key", "value", "derive"),
           "columns": ("column", "value", "derive", "divide", "reciprocal")}
UNIT_KEYS = {"key": ("unit",), "column": ("unit",), "value": ("unit",), "reciprocal": ("unit",),
             "divide": ("units",), "derive": ()}
SECTIONS = ("format", "header", "columns")
FORMAT_KEYS = ("delimiter", "positive_amplitude", "state_unit", "zero_amplitude")
NOT_MAPPED = ("source_file", "source_sha256", "source_row")


def _rule(target: str, spec: dict, where: str, state_unit: str = "S",
          sources: tuple[str, ...] = SOURCES["columns"]) -> FieldRule:
    """One field of a mapping; ``where`` names it in errors ("[columns] pulse")."""
    if target not in COLUMNS or target in NOT_MAPPED:
        known = ", ".join(c for c in COLUMNS if c not in NOT_MAPPED)
        raise MappingError(f"{where}: {target!r} is not a canonical column (known: {known})")
    if not isinstance(spec, dict):
        raise MappingError(f"{where} must be a table like {{ column = \"...\" }}")
    given = [k for k in sources if k in spec]
    if len(given) != 1:
        other = [k for k in spec if k not in sources]
        raise MappingError(f"{where} needs exactly one of {', '.join(sources)}"
                           + (f" (found {', '.join(given)})" if given else "")
                           + (f"; unknown key {other[0]!r}" if other and not given else ""))
    source = given[0]
    allowed = (source, *UNIT_KEYS[source])
    for key in spec:
        if key not in allowed:
            raise MappingError(f"{where}: unknown key {key!r} (known: {', '.join(allowed)})")
    if target in TEXT_FIELDS and "unit" in spec:
        raise MappingError(f"{where}: {target} is text and takes no unit")
    scale = _unit_scale(target, spec, where, state_unit)
    if source == "divide":
        return _divide(target, spec, where, state_unit)
    if source == "derive":
        allowed = DERIVED.get(target, ())
        if spec["derive"] not in allowed:
            raise MappingError(f"{where}: derive = {spec['derive']!r} is not known"
                               + (f" (use one of {allowed})" if allowed else
                                  f" ({target} cannot be derived)"))
        return FieldRule(target, derive=spec["derive"])
    if source == "value":
        return FieldRule(target, value=_constant(target, spec["value"], scale, where))
    if not isinstance(spec[source], str):
        raise MappingError(f"{where}: {source} must be a name in quotes, found {spec[source]!r}")
    return FieldRule(target, scale=scale, **{source: spec[source]})


def _unit_scale(target: str, spec: dict, where: str, state_unit: str) -> float:
    """The SI factor of ``spec``'s unit, whose dimension must be the field's (for
    ``reciprocal``, the dimension whose reciprocal is the field's)."""
    unit = spec.get("unit")
    if unit is None:
        return 1.0
    try:
        scale, dim = units.factor(unit), units.dimension(unit)
    except MappingError as exc:
        raise MappingError(f"{where}: {exc.message}") from None
    got = units.reciprocal(dim) if "reciprocal" in spec else dim
    _expect(target, got, where, state_unit,
            f"1/{unit} is {_a(got)}" if "reciprocal" in spec else f"unit {unit!r} is {_a(dim)}")
    return scale


def _divide(target: str, spec: dict, where: str, state_unit: str) -> FieldRule:
    ops = spec["divide"]
    if not (isinstance(ops, list) and len(ops) == 2 and all(isinstance(o, str) for o in ops)):
        raise MappingError(f"{where}: divide must list two operand names")
    given = spec.get("units")
    if given is None:  # operands in SI units: nothing to check them against
        return FieldRule(target, divide=(ops[0], ops[1]))
    if not (isinstance(given, list) and len(given) == 2):
        raise MappingError(f"{where}: units must list two units, one per operand")
    try:
        scales = (units.factor(given[0]), units.factor(given[1]))
        dims = (units.dimension(given[0]), units.dimension(given[1]))
    except MappingError as exc:
        raise MappingError(f"{where}: {exc.message}") from None
    got = units.quotient(*dims)
    _expect(target, got, where, state_unit,
            f"{given[0]} / {given[1]} is {_a(got)}")
    return FieldRule(target, divide=(ops[0], ops[1]), divide_scales=scales)


def _expect(target: str, got: str | None, where: str, state_unit: str, what: str) -> None:
    want = units.field_dimension(target, state_unit)
    if got != want:
        why = f' (state_unit "{state_unit}")' if target.endswith("_state") else ""
        raise MappingError(f"{where}: {what}, but {target} is {_a(want)}{why}: use "
                           f"{units.examples(want)}...")


def _a(dim: str | None) -> str:
    if dim is None:
        return "no quantity ferroflow knows"
    return "a number without unit" if dim == "dimensionless" else f"a {dim}"


def parse_override(target: str, text) -> str | float:
    """The value of ``--set TARGET=TEXT`` (SI units for numbers)."""
    return _rule(target, {"value": text}, f"--set {target}").value


def _constant(target: str, value, scale: float, where: str) -> str | float:
    """A constant field: text for text fields, else a number times its unit's scale."""
    if target in TEXT_FIELDS:
        return str(value)
    try:
        return float(value) * scale
    except (TypeError, ValueError):
        raise MappingError(f"{where}: value {value!r} is not a number") from None


def parse_mapping(doc: dict, name: str = "mapping", file: str | None = None) -> Mapping:
    """A mapping from its parsed TOML; errors name ``file`` (default ``name``), the
    section and the field."""
    try:
        return _parse(doc, name)
    except MappingError as exc:
        raise MappingError(exc.message, file=file or name) from None


def _parse(doc: dict, name: str) -> Mapping:
    for section in doc:
        if section not in SECTIONS:
            raise MappingError(f"unknown section [{section}] (known: {', '.join(SECTIONS)})")
    fmt = _section(doc, "format")
    for key in fmt:
        if key not in FORMAT_KEYS:
            raise MappingError(f"[format]: unknown key {key!r} (known: {', '.join(FORMAT_KEYS)})")
    delimiter = fmt.get("delimiter", "\t")
    if delimiter not in ("\t", ",", ";", "auto"):
        raise MappingError("[format]: delimiter must be tab, comma, semicolon or auto")
    positive = fmt.get("positive_amplitude", "up")
    if positive not in ("up", "down"):
        raise MappingError("[format]: positive_amplitude must be 'up' or 'down'")
    state_unit = fmt.get("state_unit", "S")
    if state_unit not in STATE_UNITS:
        raise MappingError(f"[format]: state_unit must be one of {STATE_UNITS}")
    zero = fmt.get("zero_amplitude", "refuse")
    if zero not in ZERO_AMPLITUDE:
        raise MappingError(f"[format]: zero_amplitude must be one of {ZERO_AMPLITUDE}")
    # mapping files written before the unit rule name legacy canonical columns
    rules = {s: tuple(_rule(t, spec, f"[{s}] {t}", state_unit, SOURCES[s])
                      for t, spec in upgrade_columns(_section(doc, s)).items())
             for s in ("header", "columns")}
    return Mapping(name=name, delimiter=delimiter, positive_is_up=positive == "up",
                   state_unit=state_unit, header=rules["header"], columns=rules["columns"],
                   source=name, zero_amplitude=zero)


def _section(doc: dict, section: str) -> dict:
    value = doc.get(section, {})
    if not isinstance(value, dict):
        raise MappingError(f"[{section}] must be a table")
    return value


_CACHE: dict[Path, Mapping] = {}


def load_mapping(path: str | Path | None = None) -> Mapping:
    path = Path(path) if path else DEFAULT_MAPPING
    path = path.resolve()
    if path not in _CACHE:
        try:
            doc = tomllib.loads(_mapping_text(path))
        except FileNotFoundError:
            raise MappingError(f"mapping file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise MappingError(f"{path}: not valid TOML ({exc})") from None
        _CACHE[path] = parse_mapping(doc, name=path.name, file=str(path))
    return _CACHE[path]


MAPPING_MAX_BYTES = 1 << 20  # a mapping is a few KiB; a data file given by mistake is not read


def _mapping_text(path: Path) -> str:
    """A mapping file's text: UTF-8, a leading byte-order mark (Windows editors write one)
    dropped; a file far bigger than any mapping is refused unread, a FIFO, socket or
    device unopened (reading one would wait for a writer or never end)."""
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a folder: open() names it
        raise MappingError(f"{path}: not a regular file; not opened")
    with path.open("rb") as fh:
        raw = fh.read(MAPPING_MAX_BYTES + 1)
    if len(raw) > MAPPING_MAX_BYTES:
        raise MappingError(f"{path}: over {MAPPING_MAX_BYTES >> 20} MiB, not a mapping file "
                           "(a mapping is a few KiB of TOML)")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise MappingError(f"{path}: not UTF-8 text (byte {exc.start}, line {line})") from None
