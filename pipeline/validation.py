"""Validation of canonical tables. The first broken rule raises an InputError that
names the file, the file line (``source_row``) and the column.

Rules (each has a test with a file that breaks it):

- required columns present and not null (``pulse_amplitude_v`` may be null when the
  row's ``direction`` is given: some trace files do not record the amplitude);
- ``wafer``, ``die``, ``device`` are safe identifiers (``pipeline.identifiers``);
- numbers finite; ``pulse_width_s`` > 0; ``conductance_s`` > 0 where ``state_unit`` is
  ``S``; ``state_unit`` and ``direction`` from their allowed sets;
- plausible ranges (``PLAUSIBLE``): outside them a value is a unit mistake, not data;
- ``pulse`` strictly increasing within each (wafer, die, device, pulse width, cycle);
- every cycle has at least two pulses;
- no two rows share the key (``schema.KEY``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .identifiers import check_identifier
from .schema import DIRECTIONS, IDENTIFIERS, KEY, REQUIRED, STATE_UNITS

# (low, high) in SI units, inclusive; chosen wide: they catch unit slips (ns given as s,
# uS as S), not unusual devices.
PLAUSIBLE = {
    "pulse_width_s": (1e-12, 10.0),
    "pulse_amplitude_v": (-50.0, 50.0),
    "read_voltage_v": (-10.0, 10.0),
    "energy_j": (0.0, 1e-3),
    "device_area_m2": (1e-18, 1e-3),
    "cycle": (0, 10**7),
    "pulse": (0, 10**9),
}
CONDUCTANCE_MAX_S = 10.0
FLOAT_COLUMNS = ("pulse_width_s", "pulse_amplitude_v", "conductance_s", "read_voltage_v",
                 "energy_j", "device_area_m2")


def _fail(table: pa.Table, index: int, column: str, message: str, file: str) -> None:
    rows = table.column("source_row")
    row = rows[index].as_py() if table.num_rows else None
    raise InputError(message, file=file, row=row, column=column)


def _first(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


def validate(table: pa.Table, file: str | None = None) -> pa.Table:
    """Check ``table`` (canonical schema); return it unchanged or raise InputError."""
    file = file or (table.column("source_file")[0].as_py() if table.num_rows else "<table>")
    if table.num_rows == 0:
        raise InputError("no data rows", file=file)
    _check_nulls(table, file)
    _check_identifiers(table, file)
    _check_numbers(table, file)
    _check_sets(table, file)
    _check_order(table, file)
    return table


def validate_batch(tables: list[pa.Table], files: list[str]) -> list[pa.Table | InputError]:
    """Validate many files' tables at once (cheaper per file than one by one).

    Each result is the table or its InputError. The checks are the same as ``validate``:
    rows of different files never form one series here (``source_sha256`` is part of
    the grouping); a failing batch is re-checked file by file to name the bad ones.
    """
    if not tables:
        return []
    try:
        validate(pa.concat_tables(tables), files[0])
        return list(tables)
    except InputError:
        pass
    out: list[pa.Table | InputError] = []
    for table, file in zip(tables, files):
        try:
            out.append(validate(table, file))
        except InputError as exc:
            out.append(exc)
    return out


def _check_nulls(table: pa.Table, file: str) -> None:
    direction_given = np.asarray(pc.is_valid(table.column("direction")))
    for name in REQUIRED:
        null = np.asarray(pc.is_null(table.column(name), nan_is_null=False))
        if name == "pulse_amplitude_v":
            null &= ~direction_given
        i = _first(null)
        if i is not None:
            _fail(table, i, name, "value is missing", file)


def _check_identifiers(table: pa.Table, file: str) -> None:
    for name in IDENTIFIERS:
        values = table.column(name)
        for value in pc.unique(values).to_pylist():
            try:
                check_identifier(value, name)
            except InputError as exc:
                i = _first(np.asarray(pc.equal(values, value)))
                _fail(table, i, name, exc.message, file)


def _check_numbers(table: pa.Table, file: str) -> None:
    siemens_col = pc.equal(table.column("state_unit"), "S").fill_null(False)
    all_siemens = pc.all(siemens_col).as_py()
    for name in FLOAT_COLUMNS:
        col = table.column(name)
        if col.null_count == len(col):
            continue
        if _numbers_ok(col, name, all_siemens):
            continue
        _locate_bad_number(table, col, name, np.asarray(siemens_col), file)
    for name in ("cycle", "pulse"):
        lo, hi = PLAUSIBLE[name]
        mm = pc.min_max(table.column(name)).as_py()
        if lo <= mm["min"] and mm["max"] <= hi:
            continue
        v = np.asarray(table.column(name), dtype=np.int64)
        i = _first((v < lo) | (v > hi))
        _fail(table, i, name, f"value {v[i]} outside [{lo}, {hi}]", file)


def _numbers_ok(col, name: str, all_siemens: bool) -> bool:
    """Fast whole-column test; False sends the column to the row-locating slow path."""
    if not pc.all(pc.is_finite(col)).as_py():
        return False
    mm = pc.min_max(col).as_py()
    lo, hi = PLAUSIBLE.get(name, (-np.inf, np.inf))
    if name == "pulse_width_s":
        lo = max(lo, np.nextafter(0, 1))
    if name == "conductance_s":
        if not all_siemens:
            return False
        lo, hi = np.nextafter(0, 1), CONDUCTANCE_MAX_S
    return lo <= mm["min"] and mm["max"] <= hi


def _locate_bad_number(table, col, name: str, siemens: np.ndarray, file: str) -> None:
    v = np.asarray(col.to_numpy(zero_copy_only=False), dtype=float)
    present = np.asarray(pc.is_valid(col))
    i = _first(present & ~np.isfinite(v))
    if i is not None:
        _fail(table, i, name, f"value {v[i]:g} is not a finite number", file)
    if name == "pulse_width_s":
        i = _first(v <= 0)
        if i is not None:
            _fail(table, i, name, f"pulse width must be > 0 s, found {v[i]:g}", file)
    if name == "conductance_s":
        i = _first(siemens & (v <= 0))
        if i is not None:
            _fail(table, i, name, f"conductance must be > 0 S, found {v[i]:g}", file)
        i = _first(siemens & (v > CONDUCTANCE_MAX_S))
        if i is not None:
            _fail(table, i, name, f"conductance {v[i]:g} S is implausible "
                  f"(> {CONDUCTANCE_MAX_S} S): wrong unit?", file)
    if name in PLAUSIBLE:
        lo, hi = PLAUSIBLE[name]
        i = _first(present & ((v < lo) | (v > hi)))
        if i is not None:
            _fail(table, i, name, f"value {v[i]:g} outside the plausible range "
                  f"[{lo:g}, {hi:g}]: wrong unit?", file)


def _check_sets(table: pa.Table, file: str) -> None:
    for name, allowed in (("state_unit", STATE_UNITS), ("direction", DIRECTIONS)):
        col = table.column(name)
        bad = np.asarray(pc.is_valid(col)) & ~np.asarray(pc.is_in(col, value_set=pa.array(allowed)))
        i = _first(bad)
        if i is not None:
            _fail(table, i, name, f"{col[i].as_py()!r} is not one of {allowed}", file)
    i = _first(np.asarray(pc.is_null(table.column("direction"))))
    if i is not None:
        _fail(table, i, "direction", "direction unknown: no direction column and the write "
              "amplitude is zero or missing", file)


_SERIES = ("source_sha256", *KEY[:-1])  # rows of one series: same file, device, width, cycle


def _check_order(table: pa.Table, file: str) -> None:
    n = table.num_rows
    new_group = np.zeros(n, bool)
    new_group[0] = True
    if n > 1:
        for k in _SERIES:
            col = table.column(k)
            new_group[1:] |= np.asarray(pc.not_equal(col.slice(1), col.slice(0, n - 1)))
    pulse = np.asarray(table.column("pulse"), dtype=np.int64)
    step_ok = np.r_[True, pulse[1:] > pulse[:-1]]
    i = _first(~new_group & ~step_ok)
    if i is not None:
        _fail(table, i, "pulse", f"pulse index {pulse[i]} does not increase within its cycle "
              f"(previous row has {pulse[i - 1]})", file)
    run = np.cumsum(new_group) - 1
    sizes = np.bincount(run)
    i = _first(sizes[run] < 2)
    if i is not None:
        cycle = table.column("cycle")[i].as_py()
        _fail(table, i, "cycle", f"cycle {cycle} has a single pulse; a cycle needs at least two", file)
    # Within a run pulses strictly increase, so a duplicated key needs a series that
    # occurs in two runs; only then pay for the full check.
    starts = table.select(list(_SERIES)).take(pa.array(np.flatnonzero(new_group)))
    if starts.group_by(list(_SERIES)).aggregate([]).num_rows == starts.num_rows:
        return
    df = table.select([*_SERIES, "pulse"]).to_pandas()
    i = _first(df.duplicated().to_numpy())
    if i is not None:
        _fail(table, i, "pulse", "duplicated row: the same wafer, die, device, pulse width, "
              "cycle and pulse appear earlier", file)
