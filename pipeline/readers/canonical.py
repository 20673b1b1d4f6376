"""Tidy CSV or parquet files that already use the canonical column names (or their
legacy names, ``schema.LEGACY_COLUMNS``, which are upgraded on reading)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from ..schema import COLUMNS, LINEAGE, upgrade_columns, upgrade_name
from .common import (RawFile, decode, derive_direction, die_position, finish, first_line,
                     parse_table, sniff_delimiter, timestamps)
from .instrument import INTEGER_FIELDS, _integral

NUMERIC = tuple(c for c, t in COLUMNS.items()
                if (pa.types.is_floating(t) or pa.types.is_integer(t)) and c not in LINEAGE)


def looks_like(first_line: str) -> bool:
    names = {upgrade_name(c.strip().strip('"'))
             for c in first_line.replace(";", ",").replace("\t", ",").split(",")}
    return {"wafer", "conductance_state"} <= names


def header_row(first: str) -> tuple[str, list[str], tuple[str, ...]]:
    """(delimiter, column names, numeric columns) of a canonical CSV's header row."""
    first = first.rstrip("\r")
    delimiter = sniff_delimiter(first)
    names = [c.strip() for c in first.split(delimiter)]
    as_named = {upgrade_name(c): c for c in names}  # the file's own name of each column
    return delimiter, names, tuple(as_named[c] for c in NUMERIC if c in as_named)


def read_canonical(raw: RawFile) -> pa.Table:
    if raw.path.suffix == ".parquet":
        try:
            table = pq.read_table(pa.BufferReader(raw.data))
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"not a readable parquet file ({exc})", file=raw.name) from None
        check_types(table, raw.name)
        lines = np.arange(1, table.num_rows + 1)  # a parquet file's own row numbers
    else:
        text = decode(raw)
        delimiter, _, numeric = header_row(first_line(text))
        table, lines = parse_table(text, delimiter=delimiter, first_line=1, file=raw.name,
                                   numeric=numeric)
    return convert(table, raw, lines)


def convert(table: pa.Table, raw: RawFile, lines: np.ndarray) -> pa.Table:
    """Parsed canonical-named rows (``lines``: the file line of each) -> canonical table."""
    table = upgrade_columns(table)
    fields = {c: table.column(c) for c in table.column_names if c in COLUMNS and c not in LINEAGE}
    for name in INTEGER_FIELDS & fields.keys():
        fields[name] = _integral(fields[name], name, lines, raw.name)
    if "measured_at" in fields:
        fields["measured_at"] = timestamps(fields["measured_at"], "measured_at", lines, raw.name)
    n = table.num_rows
    if "die" in fields and "die_x" not in fields:
        dies = [die_position(str(d)) for d in fields["die"].to_pylist()]
        fields["die"] = pa.array([d[0] for d in dies])
        fields["die_x"] = pa.array([d[1] for d in dies], pa.int32())
        fields["die_y"] = pa.array([d[2] for d in dies], pa.int32())
    if "direction" not in fields and "pulse_amplitude_v" in fields:
        fields["direction"] = derive_direction(fields["pulse_amplitude_v"])
    return finish(fields, n, raw, lines)


# what a parquet column of each canonical type may hold; anything else (booleans, lists,
# structs, text where a number is meant) is refused, never cast. Whole numbers where
# floats are meant are exact; floats where whole numbers are meant are checked row by
# row (``_integral``).
_HOLDS = {
    "a number": (pa.types.is_floating, pa.types.is_integer, pa.types.is_decimal),
    "a whole number": (pa.types.is_integer, pa.types.is_floating),
    "text": (pa.types.is_string, pa.types.is_large_string),
    "a timestamp": (pa.types.is_timestamp, pa.types.is_string, pa.types.is_large_string),
}


def _meaning(typ: pa.DataType) -> str:
    if pa.types.is_floating(typ):
        return "a number"
    if pa.types.is_integer(typ):
        return "a whole number"
    return "a timestamp" if pa.types.is_timestamp(typ) else "text"


def check_types(table: pa.Table, file: str) -> None:
    """Each canonical column of a parquet file holds the kind of value the schema means."""
    for name, found in zip(table.column_names, table.schema.types):
        column = upgrade_name(name)
        if column not in COLUMNS or column in LINEAGE or pa.types.is_null(found):
            continue
        held = found.value_type if pa.types.is_dictionary(found) else found
        want = _meaning(COLUMNS[column])
        if not any(test(held) for test in _HOLDS[want]):
            raise InputError(f"holds {found}, expected {want} ({COLUMNS[column]})",
                             file=file, column=name)
