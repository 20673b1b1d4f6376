"""Validation of canonical tables. The first broken rule raises an InputError that
names the file, the file line (``source_row``) and the column.

Rules (each has a test with a file that breaks it):

- required columns present and not null (``pulse_amplitude_v`` may be null when the
  row's ``direction`` is given: some trace files do not record the amplitude);
- ``wafer``, ``die``, ``device`` are safe identifiers (``pipeline.identifiers``);
- numbers finite; ``pulse_width_s`` > 0; ``conductance_state`` > 0 where ``state_unit`` is
  ``S``; ``state_unit`` and ``direction`` from their allowed sets (``direction`` may be
  ``read``: a read without a pulse, whose write amplitude must be zero or missing);
- plausible ranges (``PLAUSIBLE``, every numeric column): outside them a value is a unit
  mistake, not data; ``measured_at`` between 1990 and a day from now (``TIME_RANGE``);
- one state unit per series (wafer, die, device, pulse width) within a file;
- ``pulse`` strictly increasing within each (wafer, die, device, pulse width, cycle);
- every cycle has at least two pulses;
- no two rows share the key (``schema.KEY``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .identifiers import check_identifier
from .schema import DIRECTIONS, IDENTIFIERS, KEY, READ, REQUIRED, SERIES, STATE_UNITS, rows_equal

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
    "die_x": (-10**4, 10**4),
    "die_y": (-10**4, 10**4),
}
CONDUCTANCE_MAX_S = 10.0
NORMALIZED_MAX = 1e6  # |state| of a normalized series: about 1, or a few thousand Gmin
INTEGER_COLUMNS = ("cycle", "pulse", "die_x", "die_y")
# measured_at: no earlier than this, no later than this long after now (clocks drift)
EARLIEST = datetime(1990, 1, 1, tzinfo=timezone.utc)
FUTURE_SLACK = timedelta(days=1)
FLOAT_COLUMNS = ("pulse_width_s", "pulse_amplitude_v", "conductance_state", "read_voltage_v",
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
    _check_rows(table, file)
    _check_state_units(table, file)
    _check_order(table, file)
    return table


def _check_rows(table: pa.Table, file: str) -> None:
    """The rules each row obeys on its own (whole files and streamed blocks alike)."""
    _check_nulls(table, file)
    _check_identifiers(table, file)
    _check_numbers(table, file)
    _check_sets(table, file)


def _check_state_units(table: pa.Table, file: str, seen: dict | None = None) -> None:
    """One state unit per series (wafer, die, device, pulse width): S and normalized
    states of one device do not mix. ``seen`` (series -> unit) carries the series of a
    streamed file across its blocks."""
    units = table.column("state_unit")
    if seen is None:
        if pc.count_distinct(units).as_py() <= 1:
            return
        seen = {}
    cols = [*SERIES, "state_unit"]
    pairs = table.select(cols).group_by(cols, use_threads=False).aggregate([])  # in row order
    for r in pairs.to_pylist():
        key = tuple(r[k] for k in SERIES)
        first = seen.setdefault(key, r["state_unit"])
        if first != r["state_unit"]:
            mask = rows_equal(table, {k: r[k] for k in cols})
            _fail(table, _first(np.asarray(mask)), "state_unit",
                  f"state unit {r['state_unit']!r} differs from {first!r} earlier in the file "
                  f"for wafer {key[0]} die {key[1]} device {key[2]} pulse width {key[3]:g} s: "
                  "a series has one state unit", file)


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
    no_siemens = not pc.any(siemens_col).as_py()
    for name in FLOAT_COLUMNS:
        col = table.column(name)
        if col.null_count == len(col):
            continue
        if _numbers_ok(col, name, all_siemens, no_siemens):
            continue
        _locate_bad_number(table, col, name, np.asarray(siemens_col), file)
    for name in INTEGER_COLUMNS:
        lo, hi = PLAUSIBLE[name]
        mm = pc.min_max(table.column(name)).as_py()
        if mm["min"] is None or (lo <= mm["min"] and mm["max"] <= hi):
            continue
        col = table.column(name)
        bad = pc.or_(pc.less(col, lo), pc.greater(col, hi)).fill_null(False)
        i = _first(np.asarray(bad))
        _fail(table, i, name, f"value {col[i].as_py()} outside [{lo}, {hi}]", file)
    _check_times(table, file)


def _check_times(table: pa.Table, file: str) -> None:
    col = table.column("measured_at")
    if col.null_count == len(col):
        return
    mm = pc.min_max(col).as_py()
    latest = datetime.now(timezone.utc) + FUTURE_SLACK
    if EARLIEST <= mm["min"] and mm["max"] <= latest:
        return
    early = pc.less(col, pa.scalar(EARLIEST, col.type)).fill_null(False)
    late = pc.greater(col, pa.scalar(latest, col.type)).fill_null(False)
    i = _first(np.asarray(pc.or_(early, late)))
    when = col[i].as_py().isoformat()
    _fail(table, i, "measured_at", f"timestamp {when} is before 1990" if early[i].as_py() else
          f"timestamp {when} is more than a day in the future (a wrong clock or date format?)", file)


def _numbers_ok(col, name: str, all_siemens: bool, no_siemens: bool) -> bool:
    """Fast whole-column test; False sends the column to the row-locating slow path."""
    if not pc.all(pc.is_finite(col)).as_py():
        return False
    mm = pc.min_max(col).as_py()
    lo, hi = PLAUSIBLE.get(name, (-np.inf, np.inf))
    if name == "pulse_width_s":
        lo = max(lo, np.nextafter(0, 1))
    if name == "conductance_state":
        if no_siemens:
            return bool(-NORMALIZED_MAX <= mm["min"] and mm["max"] <= NORMALIZED_MAX)
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
    if name == "conductance_state":
        i = _first(siemens & (v <= 0))
        if i is not None:
            _fail(table, i, name, f"conductance must be > 0 S, found {v[i]:g}", file)
        i = _first(siemens & (v > CONDUCTANCE_MAX_S))
        if i is not None:
            _fail(table, i, name, f"conductance {v[i]:g} S is implausible "
                  f"(> {CONDUCTANCE_MAX_S} S): wrong unit?", file)
        i = _first(~siemens & present & (np.abs(v) > NORMALIZED_MAX))
        if i is not None:
            _fail(table, i, name, f"normalized state {v[i]:g} is implausible "
                  f"(|state| > {NORMALIZED_MAX:g}): wrong unit?", file)
    if name in PLAUSIBLE:
        lo, hi = PLAUSIBLE[name]
        i = _first(present & ((v < lo) | (v > hi)))
        if i is not None:
            _fail(table, i, name, f"value {v[i]:g} outside the plausible range "
                  f"[{lo:g}, {hi:g}]: wrong unit?", file)


def _check_sets(table: pa.Table, file: str) -> None:
    for name, allowed in (("state_unit", STATE_UNITS), ("direction", (*DIRECTIONS, READ))):
        col = table.column(name)
        bad = np.asarray(pc.is_valid(col)) & ~np.asarray(pc.is_in(col, value_set=pa.array(allowed)))
        i = _first(bad)
        if i is not None:
            _fail(table, i, name, f"{col[i].as_py()!r} is not one of {allowed}", file)
    i = _first(np.asarray(pc.is_null(table.column("direction"))))
    if i is not None:
        _fail(table, i, "direction", "direction unknown: no direction column and the write "
              "amplitude is zero or missing (a mapping may declare zero_amplitude = \"read\")",
              file)
    read = np.asarray(pc.equal(table.column("direction"), READ).fill_null(False))
    if read.any():
        amp = np.asarray(table.column("pulse_amplitude_v").to_numpy(zero_copy_only=False), float)
        i = _first(read & np.isfinite(amp) & (amp != 0))
        if i is not None:
            _fail(table, i, "pulse_amplitude_v", f"a read without a pulse has write amplitude "
                  f"{amp[i]:g} V; expected 0 or none", file)


_SERIES = ("source_sha256", *KEY[:-1])  # rows of one series: same file, device, width, cycle


def _check_order(table: pa.Table, file: str) -> None:
    new_group = _run_starts(table)
    pulse = np.asarray(table.column("pulse"), dtype=np.int64)
    _check_increasing(table, new_group, pulse, None, file)
    run = np.cumsum(new_group) - 1
    _check_run_sizes(table, run, np.bincount(run), file)
    _check_duplicates(table, new_group, file)


def _run_starts(table: pa.Table) -> np.ndarray:
    """True where a row starts a new run of one series (first row included)."""
    n = table.num_rows
    new_group = np.zeros(n, bool)
    new_group[0] = True
    if n > 1:
        for k in _SERIES:
            col = table.column(k)
            new_group[1:] |= np.asarray(pc.not_equal(col.slice(1), col.slice(0, n - 1)))
    return new_group


def _check_increasing(table, new_group, pulse, previous: int | None, file: str) -> None:
    """Pulses rise within a run; ``previous`` is the pulse before row 0 when row 0
    continues a run (then ``new_group[0]`` is False; otherwise it is not looked at)."""
    before = np.r_[previous if previous is not None else -1, pulse[:-1]]
    i = _first(~(new_group | (pulse > before)))
    if i is not None:
        _fail(table, i, "pulse", f"pulse index {pulse[i]} does not increase within its cycle "
              f"(previous row has {before[i]})", file)


def _check_run_sizes(table, run, sizes, file: str, still_open: int | None = None) -> None:
    """Every run has two pulses or more (``still_open``: a run the next block continues)."""
    short = sizes[run] < 2
    if still_open is not None:
        short &= run != still_open
    i = _first(short)
    if i is not None:
        cycle = table.column("cycle")[i].as_py()
        _fail(table, i, "cycle", f"cycle {cycle} has a single pulse; a cycle needs at least two", file)


def _check_duplicates(table, new_group, file: str) -> None:
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


class StreamValidator:
    """``validate`` for a file that arrives in blocks (``readers.stream``).

    Each block gets every row check; runs and their order are followed across block
    boundaries. One rule is stricter than for whole files: a series (device, pulse
    width, cycle) must be one contiguous run of rows, because checking a re-appearing
    series for duplicates would mean keeping all its pulses.
    """

    def __init__(self, file: str):
        self.file = file
        self.open: tuple | None = None       # series key of the run still open
        self.open_pulse = 0
        self.open_len = 0
        self.open_row = 0
        self.closed: set[tuple] = set()      # series keys whose run has ended
        self.units: dict[tuple, str] = {}    # (wafer, die, device, width) -> state unit

    def check(self, table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            return table
        _check_rows(table, self.file)
        _check_state_units(table, self.file, self.units)
        self._check_runs(table)
        return table

    def finish(self) -> None:
        """After the last block: the run still open must have two pulses."""
        if self.open is not None and self.open_len < 2:
            raise InputError(f"cycle {self.open[-1]} has a single pulse; a cycle needs at "
                             "least two", file=self.file, row=self.open_row, column="cycle")

    def _check_runs(self, table: pa.Table) -> None:
        new_group = _run_starts(table)
        rows = np.asarray(table.column("source_row"), dtype=np.int64)
        start_idx = np.flatnonzero(new_group)
        keys = [tuple(r.values()) for r in table.select(list(_SERIES)).take(
            pa.array(start_idx)).to_pylist()]
        continues = keys[0] == self.open
        new_group[0] = not continues
        pulse = np.asarray(table.column("pulse"), dtype=np.int64)
        _check_increasing(table, new_group, pulse, self.open_pulse if continues else None,
                          self.file)
        if not continues and self.open is not None:
            self.finish()
            self.closed.add(self.open)
        run = np.cumsum(new_group) - (0 if continues else 1)
        sizes = np.bincount(run)
        if continues:
            sizes[0] += self.open_len
        last = int(run[-1])
        _check_run_sizes(table, run, sizes, self.file, still_open=last)
        for j, (i, key) in enumerate(zip(start_idx, keys)):
            if key in self.closed:  # the open run's key is never in it
                raise InputError(f"rows of this series (device {key[3]}, cycle {key[5]}) appear "
                                 f"again after other rows; a file this large must keep each "
                                 f"series contiguous", file=self.file, row=int(rows[i]),
                                 column="cycle")
            if j < len(keys) - 1:
                self.closed.add(key)
        self.open = keys[-1]
        self.open_pulse = int(pulse[-1])
        self.open_len = int(sizes[last])
        self.open_row = int(rows[-1])
