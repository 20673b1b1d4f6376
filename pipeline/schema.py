"""The canonical measurement table: one row per (pulse, read).

This module is the single definition of column names, types and units. Units are SI and
live in the column names, by one rule: ``_s`` is seconds only, ``_siemens`` always
siemens, ``_state`` a value in the series' own state unit (its ``state_unit``: ``"S"``
or ``"normalized"``), ``_g`` the normalised state of the model families.

``conductance_state`` holds conductance in siemens when ``state_unit`` is ``"S"`` (the
default). Some sources give a device state in other units, e.g. the normalised states in
about [-1, 1] of the Gong et al. ReRAM trace; those rows carry ``state_unit =
"normalized"``, the positivity check is waived for them, and every later stage works in
that unit without pretending it is a conductance. ``StateScale`` is the one conversion
between a series' states and the normalised ``g``.

Names written before that rule stay readable: ``LEGACY_COLUMNS`` maps them to today's
names and ``upgrade_columns`` renames them where data enters (canonical files, mapping files, store parts, registry versions, fit tables).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

STATE_UNITS = ("S", "normalized")

REQUIRED = {
    "wafer": pa.string(),
    "die": pa.string(),
    "device": pa.string(),
    "pulse_width_s": pa.float64(),
    "pulse_amplitude_v": pa.float64(),
    "cycle": pa.int32(),
    "pulse": pa.int32(),
    "conductance_state": pa.float64(),
}

OPTIONAL = {
    "state_unit": pa.string(),
    "direction": pa.string(),
    "read_voltage_v": pa.float64(),
    "energy_j": pa.float64(),
    "die_x": pa.int32(),
    "die_y": pa.int32(),
    "device_area_m2": pa.float64(),
    "measured_at": pa.timestamp("us", tz="UTC"),
}

LINEAGE = {
    "source_file": pa.string(),
    "source_sha256": pa.string(),
    "source_row": pa.int64(),
}

COLUMNS = {**REQUIRED, **OPTIONAL, **LINEAGE}
SCHEMA = pa.schema(list(COLUMNS.items()))

# Columns that identify a row: no two rows of the store share them.
KEY = ("wafer", "die", "device", "pulse_width_s", "cycle", "pulse")
SERIES = KEY[:4]  # one device measured at one pulse width
# Hive partitioning of the store.
PARTITION = ("wafer", "pulse_width_s")
PARTITION_SCHEMA = pa.schema([(c, COLUMNS[c]) for c in PARTITION])
IDENTIFIERS = ("wafer", "die", "device")
DIRECTIONS = ("up", "down")
# A row read without a pulse before it (``[format] zero_amplitude = "read"``): its state
# is the state before the next pulse, and it causes no step.
READ = "read"

DEFAULT_STATE_UNIT = "S"


def rows_equal(table: pa.Table, values: dict) -> pa.ChunkedArray:
    """Mask of the rows of ``table`` whose columns hold ``values`` (column -> value)."""
    return functools.reduce(pc.and_, [pc.equal(table.column(k), v) for k, v in values.items()])


def tidy_float(x: float) -> float:
    """Round to 12 significant digits so 200 * 1e-9 is stored as 2e-07, not 2.0000000000000002e-07.

    Pulse widths are partition keys and registry names: equal widths must compare equal.
    """
    return float(f"{x:.12g}")


def conform(table: pa.Table) -> pa.Table:
    """Cast ``table`` to the canonical schema, adding absent optional columns as nulls.

    Columns outside the schema are dropped (documented: unknown columns are ignored).
    Raises KeyError naming a missing required or lineage column.
    """
    n = table.num_rows
    present = set(table.column_names)
    arrays = []
    for name, typ in COLUMNS.items():
        if name in present:
            col = table.column(name)
            col = col if col.type == typ else col.cast(typ)
            if name == "pulse_width_s":
                col = _tidy_column(col)
            arrays.append(col)
        elif name in OPTIONAL:
            if name == "state_unit":
                arrays.append(pa.array([DEFAULT_STATE_UNIT] * n, pa.string()))
            else:
                arrays.append(pa.nulls(n, typ))
        else:
            raise KeyError(name)
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _tidy_column(col: pa.ChunkedArray) -> pa.Array:
    first = col[0].as_py() if len(col) else None
    if first is not None and first == tidy_float(first) and pc.all(pc.equal(col, first)).as_py():
        return col  # the usual case: one tidy pulse width per file
    values = np.asarray(col.to_numpy(zero_copy_only=False), dtype=float)
    uniq, inverse = np.unique(values, return_inverse=True)
    tidy = np.array([tidy_float(u) if np.isfinite(u) else u for u in uniq])
    mask = np.asarray(col.is_null()) if col.null_count else None
    return pa.array(tidy[inverse], pa.float64(), mask=mask)


# --- units ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StateScale:
    """How a series' states map onto the normalised state ``g`` the model families use:
    ``state = lo + span * g`` (``lo``, ``span`` in ``unit``, the series' state unit).

    The fits take ``lo`` and ``span`` from the data range, so ``g`` runs over [0, 1] on
    the measured states; they are stored as the ``norm_lo`` and ``norm_span`` columns.
    """

    lo: float
    span: float
    unit: str = DEFAULT_STATE_UNIT

    @classmethod
    def of(cls, states: np.ndarray, unit: str = DEFAULT_STATE_UNIT) -> "StateScale":
        """The data range of ``states``: g = 0 at the lowest read, 1 at the highest."""
        lo, hi = float(np.min(states)), float(np.max(states))
        return cls(lo, hi - lo, unit)

    @classmethod
    def of_row(cls, row) -> "StateScale":
        """The scale a fit table or registry row stores (``norm_lo``, ``norm_span``)."""
        unit = row["state_unit"] if "state_unit" in row else DEFAULT_STATE_UNIT
        return cls(float(row["norm_lo"]), float(row["norm_span"]), str(unit))

    def state(self, g):
        """Normalised g -> state."""
        return self.lo + self.span * g

    def g(self, state):
        """State -> normalised g."""
        return (state - self.lo) / self.span

    def state_step(self, dg):
        """A step or spread in g -> the same in state units."""
        return self.span * dg

    def g_step(self, d):
        """A step or spread in state units -> the same in g."""
        return d / self.span


# --- names written before the unit rule ---------------------------------------------------
LEGACY_COLUMNS = {
    "conductance_s": "conductance_state",
    "sp_conductance_s": "sp_state",
    "sp_conductance_err_s": "sp_state_err",
    "gmin_s": "gmin_state",
    "gmax_s": "gmax_state",
    "read_noise_s": "read_noise_state",
    "c2c_abs_s": "c2c_abs_state",
}


def upgrade_name(name: str) -> str:
    """Today's name of a column (or population parameter) that may be a legacy one."""
    return LEGACY_COLUMNS.get(name, name)


def upgrade_columns(table):
    """Rename legacy columns of a pyarrow Table or pandas DataFrame (or legacy keys of a
    dict) to today's names; a legacy name whose new name is also present is dropped.

    A ``param`` column (population tables name metrics in it) is upgraded too.
    """
    if isinstance(table, dict):
        return {upgrade_name(k): v for k, v in table.items()
                if not (k in LEGACY_COLUMNS and LEGACY_COLUMNS[k] in table)}
    names = list(table.column_names if isinstance(table, pa.Table) else table.columns)
    stale = [n for n in names if n in LEGACY_COLUMNS and LEGACY_COLUMNS[n] in names]
    if isinstance(table, pa.Table):
        table = table.drop_columns(stale) if stale else table
        if not LEGACY_COLUMNS.keys() & set(table.column_names):
            return table
        return table.rename_columns([upgrade_name(n) for n in table.column_names])
    out = table.drop(columns=stale) if stale else table
    if LEGACY_COLUMNS.keys() & set(out.columns):
        out = out.rename(columns=LEGACY_COLUMNS)
    if "param" in out.columns and out["param"].isin(list(LEGACY_COLUMNS)).any():
        out = out.assign(param=out["param"].map(lambda p: upgrade_name(p) if isinstance(p, str) else p))
    return out
