"""Convert a store of the earlier layout (hive folders + ``_ledger.sqlite``) into the
Delta table store, in one commit: ``ferroflow store convert OLD``."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError
from .schema import conform, upgrade_columns
from .store import Commit, MeasurementStore

LEGACY_LEDGER = "_ledger.sqlite"


def convert_legacy(old: str | Path, new: MeasurementStore) -> Commit:
    """Copy every committed part of the legacy store ``old`` into ``new`` (one commit)."""
    old = Path(old)
    ledger = old / LEGACY_LEDGER
    if not ledger.is_file():
        raise InputError(f"{old} has no {LEGACY_LEDGER}: not a store of the earlier layout")
    with closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)) as con:
        parts = con.execute("SELECT path, wafer, pulse_width_s FROM parts ORDER BY path").fetchall()
    with new.batch() as batch:
        for rel, wafer, pw in parts:
            table = pq.read_table(_committed_part(old / rel))
            n = table.num_rows
            table = table.append_column("wafer", pa.repeat(pa.scalar(wafer), n)) \
                         .append_column("pulse_width_s", pa.repeat(pa.scalar(float(pw)), n))
            batch.adopt(conform(upgrade_columns(table)))  # parts may predate the unit rule
        return batch.commit()


def _committed_part(final: Path) -> Path:
    """A committed part, or its temp name when the old commit was cut before the rename."""
    if final.exists():
        return final
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        return tmp
    raise InputError(f"part {final} is in the ledger but missing on disk")
