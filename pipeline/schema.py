"""The canonical measurement table: one row per (pulse, read).

This module is the single definition of column names, types and units. Units are SI and
live in the column names.

``conductance_s`` holds conductance in siemens when ``state_unit`` is ``"S"`` (the
default). Some sources give a device state in other units, e.g. the normalised states in
about [-1, 1] of the Gong et al. ReRAM trace; those rows carry ``state_unit =
"normalized"``, the positivity check is waived for them, and every later stage works in
that unit without pretending it is a conductance.
"""

from __future__ import annotations

import numpy as np
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
    "conductance_s": pa.float64(),
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
# Hive partitioning of the store.
PARTITION = ("wafer", "pulse_width_s")
PARTITION_SCHEMA = pa.schema([(c, COLUMNS[c]) for c in PARTITION])
IDENTIFIERS = ("wafer", "die", "device")
DIRECTIONS = ("up", "down")
# A row read without a pulse before it (``[format] zero_amplitude = "read"``): its state
# is the state before the next pulse, and it causes no step.
READ = "read"

DEFAULT_STATE_UNIT = "S"


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
