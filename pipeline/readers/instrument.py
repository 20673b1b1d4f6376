"""Instrument exports: a ``key:<TAB>value`` header block, a blank line, a table.

What each header key and column means comes from a mapping file (``mapping.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError, MappingError
from ..schema import COLUMNS
from .common import (EOL, MAX_HEADER_BYTES, MAX_HEADER_LINES, RawFile, derive_direction,
                     die_position, finish, number_loops, parse_table, parse_timestamp,
                     sniff_delimiter, timestamps)
from .mapping import Mapping, TEXT_FIELDS

INTEGER_FIELDS = frozenset(c for c, t in COLUMNS.items() if pa.types.is_integer(t))


def looks_like(first_line: str) -> bool:
    key, sep, _ = first_line.partition(":")
    return bool(sep) and "\t" not in key and "," not in key and bool(key.strip())


def split_header(data: bytes, file: str) -> tuple[dict[str, tuple[str, int]], bytes, int]:
    """Header dict (key -> (value, line)), the table bytes, and its first line number.

    Only the header is decoded here; the table goes to pyarrow as bytes.
    """
    header: dict[str, tuple[str, int]] = {}
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    pos = 0
    for line_no in range(1, MAX_HEADER_LINES + 2):
        eol = EOL.search(data, pos)
        if eol is None:
            raise InputError("header block has no blank line after it, or the file has no table",
                             file=file, row=line_no)
        try:
            line = data[pos:eol.start()].decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("not UTF-8 text", file=file, row=line_no) from None
        pos = eol.end()
        if pos > MAX_HEADER_BYTES:
            raise InputError(f"header block is larger than {MAX_HEADER_BYTES} bytes",
                             file=file, row=line_no)
        if not line.strip():
            if not header:
                raise InputError("file starts with a blank line, expected a header block",
                                 file=file, row=line_no)
            return header, data[pos:], line_no + 1
        key, sep, value = line.partition(":")
        if not sep:
            raise InputError(f"header line is not 'key:<TAB>value': {line[:60]!r}",
                             file=file, row=line_no)
        key, value = key.strip(), value.strip()
        if key in header and header[key][0] != value:
            raise InputError(f"header key {key!r} given twice with different values",
                             file=file, row=line_no)
        header[key] = (value, line_no)
    raise InputError(f"header block is longer than {MAX_HEADER_LINES} lines",
                     file=file, row=MAX_HEADER_LINES)


def _header_value(rule, header, file):
    if rule.value is not None:
        return rule.value
    if rule.key not in header:
        raise InputError(f"header key {rule.key!r} (for {rule.target}) is missing", file=file)
    value, line = header[rule.key]
    if rule.target in TEXT_FIELDS:
        if rule.target == "measured_at":
            try:
                return parse_timestamp(value)
            except ValueError:
                raise InputError(f"timestamp {value!r} is not ISO 8601", file=file, row=line,
                                 column=rule.key) from None
        return value
    try:
        return float(value) * rule.scale
    except ValueError:
        raise InputError(f"header value {value!r} is not a number", file=file, row=line,
                         column=rule.key) from None


def _integral(values, name: str, lines: np.ndarray, file: str) -> pa.Array:
    """Whole numbers as int64; a fractional or non-finite value is an error at its row."""
    if pa.types.is_integer(values.type):
        return values
    try:
        return pc.cast(values, pa.int64())  # safe cast: refuses fractions and NaN
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    arr = np.asarray(values.to_numpy(zero_copy_only=False), dtype=float)
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    i = int(np.argmax(bad))
    raise InputError(f"expected a whole number, found {arr[i]:g}", file=file,
                     row=int(lines[i]), column=name)


def _agree(declared: float, values, rule, header_keys: dict, lines: np.ndarray, file: str) -> None:
    """A field the header declares and the table also gives must agree on every row
    (e.g. a file that declares one pulse width but holds several)."""
    v = np.asarray(values.to_numpy(zero_copy_only=False) if hasattr(values, "to_numpy") else values,
                   dtype=float)
    bad = ~np.isclose(v, float(declared), rtol=1e-6, atol=0.0)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"table value {v[i]:g} contradicts the header "
                         f"({header_keys.get(rule.target)!r} = {float(declared):g} for {rule.target})",
                         file=file, row=int(lines[i]), column=rule.column or rule.target)


@dataclass
class Layout:
    """What the header block and the table's header row say, before any data row."""

    delimiter: str
    names: list[str]
    numeric: tuple[str, ...]
    table_line: int               # file line of the table's header row
    fields: dict                  # values from the header block, by canonical name
    header_keys: dict             # canonical name -> header key (for error messages)
    loops: dict = field(default_factory=dict)  # loop numbering carried across blocks


def layout(header: dict, body: bytes, table_line: int, mapping: Mapping, file: str) -> Layout:
    """Check the header block and the table's header row (the first line of ``body``,
    the bytes after the header block) against the mapping."""
    try:
        first = EOL.split(body[:4096], 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=file, row=table_line) from None
    delimiter = sniff_delimiter(first) if mapping.delimiter == "auto" else mapping.delimiter
    names = [c.strip() for c in first.rstrip("\r").split(delimiter)]
    if len(names) < 2:
        raise InputError(f"table header has one column; expected {delimiter!r}-separated "
                         "columns (wrong delimiter?)", file=file, row=table_line)
    fields = {rule.target: _header_value(rule, header, file) for rule in mapping.header
              if rule.derive is None}
    return Layout(delimiter, names, tuple(c for c in names if c in mapping.numeric_columns),
                  table_line, fields, {r.target: r.key for r in mapping.header})


def read_instrument(raw: RawFile, mapping: Mapping) -> pa.Table:
    file = raw.name
    header, body, table_line = split_header(raw.data, file)
    if not body.strip():
        raise InputError("header only: the file has no table", file=file, row=table_line)
    lay = layout(header, body, table_line, mapping, file)
    table, lines = parse_table(body, delimiter=lay.delimiter, first_line=table_line, file=file,
                               numeric=lay.numeric)
    return convert(table, lay, mapping, raw, lines)


def convert(table: pa.Table, lay: Layout, mapping: Mapping, raw: RawFile,
            lines: np.ndarray) -> pa.Table:
    """Parsed table rows (``lines``: the file line of each) -> canonical rows."""
    file = raw.name
    table = table.rename_columns([c.strip() for c in table.column_names])
    fields = dict(lay.fields)

    def operand(name: str):
        if name in table.column_names:
            return table.column(name)
        if name in fields:
            return fields[name]
        raise MappingError(f"mapping names column {name!r}, which the file lacks "
                           f"(columns: {', '.join(table.column_names)})", file=file,
                           row=lay.table_line, column=name)

    for rule in mapping.columns:
        if rule.derive:
            continue  # from the other fields, below
        if rule.value is not None:
            value = rule.value
        elif rule.column:
            value = operand(rule.column)
            if rule.target not in TEXT_FIELDS and rule.scale != 1.0:
                value = pc.multiply(value, rule.scale)
        elif rule.divide:
            a, b = (operand(n) for n in rule.divide)
            fa, fb = rule.divide_scales
            value = pc.divide(pc.multiply(a, fa), pc.multiply(b, fb))
        else:
            value = pc.divide(1.0, pc.multiply(operand(rule.reciprocal), rule.scale))
        if rule.target in INTEGER_FIELDS:
            value = _integral(value, rule.column or rule.target, lines, file)
        if rule.target in fields and rule.target not in TEXT_FIELDS:
            _agree(fields[rule.target], value, rule, lay.header_keys, lines, file)
        fields[rule.target] = value

    n = table.num_rows
    if isinstance(fields.get("measured_at"), pa.ChunkedArray):  # a time column
        fields["measured_at"] = timestamps(fields["measured_at"], _column_of(mapping, "measured_at"),
                                           lines, file)
    if "die" in fields and "die_x" not in fields and not isinstance(fields["die"], pa.ChunkedArray):
        fields["die"], fields["die_x"], fields["die_y"] = die_position(str(fields["die"]))
    if "direction" not in fields and "pulse_amplitude_v" in fields:
        amp = fields["pulse_amplitude_v"]
        amp = pa.repeat(pa.scalar(float(amp)), n) if np.isscalar(amp) else amp
        fields["direction"] = derive_direction(amp, mapping.positive_is_up, mapping.zero_is_read)
    for rule in (*mapping.header, *mapping.columns):
        if rule.derive == "loops":
            fields[rule.target] = _loops(fields, lay, file, int(lines[0]))
    fields.setdefault("state_unit", mapping.state_unit)
    return finish(fields, n, raw, lines)


def _column_of(mapping: Mapping, target: str) -> str:
    """The file's column a field comes from (its name in errors)."""
    return next((r.column for r in mapping.columns if r.target == target and r.column), target)


def _loops(fields: dict, lay: Layout, file: str, first_data: int) -> pa.Array:
    direction = fields.get("direction")
    if direction is None or np.isscalar(direction) or isinstance(direction, str):
        raise MappingError("cycle = { derive = \"loops\" } needs a pulse direction per row "
                           "(a direction column or a write amplitude column)", file=file,
                           row=first_data)
    return pa.array(number_loops(direction, lay.loops), pa.int32())
