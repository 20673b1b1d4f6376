"""The measurement store: hive-partitioned parquet plus a ledger of ingested files.

Layout under the store root::

    wafer=W01/pulse_width_s=2e-08/part-<commit>.parquet
    _ledger.sqlite      files ingested (by SHA-256), parts committed, series covered
    _lock               advisory lock held while committing

Readable by ``pyarrow.dataset`` (``MeasurementStore.dataset``), pandas and duckdb
(``read_parquet('<root>/**/*.parquet', hive_partitioning=true)``). Partition columns
live in the directory names only, as hive layouts do.

Exactly-once: a commit runs under the lock; it first deletes parts no ledger row points
at (left by a crashed commit), drops files whose SHA-256 is already in the ledger, writes
each part to a hidden temp file and renames it into place, and updates the ledger last,
in one transaction. A crash at any point leaves either the old state or the new one
once the next commit has cleaned up.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .schema import COLUMNS, PARTITION, PARTITION_SCHEMA, SCHEMA

LEDGER = "_ledger.sqlite"
LOCK = "_lock"
_DATA_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in PARTITION])
_TEXT_COLUMNS = [f.name for f in _DATA_SCHEMA if pa.types.is_string(f.type)]

_DDL = """
CREATE TABLE IF NOT EXISTS files (
    sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, rows INTEGER NOT NULL,
    commit_id TEXT NOT NULL, ingested_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parts (
    path TEXT PRIMARY KEY, commit_id TEXT NOT NULL, wafer TEXT NOT NULL,
    pulse_width_s REAL NOT NULL, rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    wafer TEXT NOT NULL, die TEXT NOT NULL, device TEXT NOT NULL, pulse_width_s REAL NOT NULL,
    cycle_min INTEGER NOT NULL, cycle_max INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS series_key ON series (wafer, die, device, pulse_width_s);
"""


def partition_dir(wafer: str, pulse_width_s: float) -> str:
    return f"wafer={wafer}/pulse_width_s={float(pulse_width_s)!r}"


@dataclass(frozen=True)
class Pending:
    """A validated file waiting to be stored."""

    name: str
    sha256: str
    table: pa.Table


@dataclass(frozen=True)
class Commit:
    stored: tuple[str, ...]            # SHA-256 of files stored now
    already: tuple[str, ...]           # SHA-256 of files the ledger already had
    overlaps: dict                     # sha -> reason: rows the store already holds
    partitions: tuple[tuple[str, float], ...]
    rows: int


class MeasurementStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- ledger -------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.root / LEDGER, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(_DDL)
        return con

    def known_files(self) -> set[str]:
        """SHA-256 of every file stored so far."""
        with closing(self._connect()) as con:
            return {r[0] for r in con.execute("SELECT sha256 FROM files")}

    def ingested_files(self) -> pd.DataFrame:
        with closing(self._connect()) as con:
            return pd.read_sql_query("SELECT * FROM files ORDER BY ingested_at, name", con)

    # --- writing ------------------------------------------------------------
    def batch(self) -> "Batch":
        """A write batch: ``with store.batch() as b: b.add(p); ...; b.commit()``.

        Holds the store lock from entry to exit. Rows are streamed to hidden temp files
        as they are added, so memory stays bounded by one buffer per partition.
        """
        return Batch(self)

    def commit(self, pending: list[Pending], before_ledger=None) -> Commit:
        """Store ``pending`` files exactly once (a one-shot batch)."""
        with self.batch() as b:
            for p in pending:
                b.add(p)
            return b.commit(before_ledger=before_ledger)

    # --- reading ------------------------------------------------------------
    # --- reading ------------------------------------------------------------
    def dataset(self) -> ds.Dataset:
        """The committed parts as a pyarrow dataset (partition columns typed)."""
        with closing(self._connect()) as con:
            rels = [r[0] for r in con.execute("SELECT path FROM parts ORDER BY path")]
        files = [str(self.root / r) for r in rels]
        part = ds.partitioning(PARTITION_SCHEMA, flavor="hive")
        return ds.dataset(files, schema=pa.schema(list(_DATA_SCHEMA) + list(PARTITION_SCHEMA)),
                          format="parquet", partitioning=part, partition_base_dir=str(self.root))

    def read(self, wafer: str | None = None, pulse_width_s: float | None = None,
             columns: list[str] | None = None) -> pd.DataFrame:
        """Rows of the store in canonical column order, sorted by key."""
        dset = self.dataset()
        expr = None
        if wafer is not None:
            expr = ds.field("wafer") == wafer
        if pulse_width_s is not None:
            e = ds.field("pulse_width_s") == float(pulse_width_s)
            expr = e if expr is None else expr & e
        cols = columns or list(COLUMNS)
        table = dset.to_table(filter=expr, columns=cols)
        df = table.to_pandas()
        sort = [c for c in ("wafer", "die", "device", "pulse_width_s", "cycle", "pulse") if c in df]
        return df.sort_values(sort, kind="stable").reset_index(drop=True)

    def rows(self) -> int:
        with closing(self._connect()) as con:
            return int(con.execute("SELECT COALESCE(SUM(rows), 0) FROM parts").fetchone()[0])

    def partitions(self) -> list[tuple[str, float]]:
        with closing(self._connect()) as con:
            return [(w, pw) for w, pw in con.execute(
                "SELECT DISTINCT wafer, pulse_width_s FROM parts ORDER BY wafer, pulse_width_s")]

    def partition_key(self, wafer: str, pulse_width_s: float) -> str:
        """Content key of a partition: changes exactly when its stored files change."""
        with closing(self._connect()) as con:
            shas = sorted(r[0] for r in con.execute(
                "SELECT DISTINCT sha256 FROM series WHERE wafer = ? AND pulse_width_s = ?",
                (wafer, float(pulse_width_s))))
        return hashlib.sha256("\n".join(shas).encode()).hexdigest()[:24]

    def source_files(self, wafer: str, pulse_width_s: float | None = None) -> pd.DataFrame:
        """Raw files (name, SHA-256) that fed a wafer or one of its partitions: lineage."""
        sql = ("SELECT DISTINCT f.name, f.sha256 FROM series s JOIN files f USING (sha256) "
               "WHERE s.wafer = ?")
        args: list = [wafer]
        if pulse_width_s is not None:
            sql += " AND s.pulse_width_s = ?"
            args.append(float(pulse_width_s))
        with closing(self._connect()) as con:
            return pd.read_sql_query(sql + " ORDER BY f.name", con, params=args)


def _single(col: pa.ChunkedArray):
    """The one value of a column, or None when it holds several."""
    first = col[0]
    return first.as_py() if pc.all(pc.equal(col, first)).as_py() else None


def _split_by_partition(table: pa.Table):
    """[((wafer, pulse_width_s), rows)]; a file usually holds one partition."""
    wafer, pw = _single(table.column("wafer")), _single(table.column("pulse_width_s"))
    if wafer is not None and pw is not None:
        return [((wafer, float(pw)), table)]
    keys = table.select(list(PARTITION)).group_by(list(PARTITION)).aggregate([]).to_pylist()
    return [((k["wafer"], float(k["pulse_width_s"])),
             table.filter(pc.and_(pc.equal(table.column("wafer"), k["wafer"]),
                                  pc.equal(table.column("pulse_width_s"), k["pulse_width_s"]))))
            for k in keys]


def _series_spans(table: pa.Table):
    """((wafer, die, device, pulse_width_s), cycle_min, cycle_max) per series in a file."""
    names = ["wafer", "die", "device", "pulse_width_s"]
    single = [_single(table.column(c)) for c in names]
    if all(v is not None for v in single):
        lo, hi = pc.min_max(table.column("cycle")).values()
        return [((single[0], single[1], single[2], float(single[3])), lo.as_py(), hi.as_py())]
    g = table.select([*names, "cycle"]).group_by(names).aggregate([("cycle", "min"), ("cycle", "max")])
    return [((r["wafer"], r["die"], r["device"], float(r["pulse_width_s"])),
             int(r["cycle_min"]), int(r["cycle_max"])) for r in g.to_pylist()]


class Batch:
    """One locked write session on the store (see ``MeasurementStore.batch``)."""

    ROW_GROUP = 65_536  # rows buffered per partition before a row group is written

    def __init__(self, store: MeasurementStore):
        self.store = store
        self.commit_id = uuid.uuid4().hex[:20]
        self._lock = None
        self._con: sqlite3.Connection | None = None
        self._known: set[str] = set()
        self._added: list[tuple[Pending, list]] = []
        self._already: list[str] = []
        self._overlaps: dict[str, str] = {}
        self._claimed: dict[tuple, list[tuple[int, int, str]]] = {}
        self._buffers: dict[tuple[str, float], list[pa.Table]] = {}
        self._buffered: dict[tuple[str, float], int] = {}
        self._writers: dict[tuple[str, float], tuple[pq.ParquetWriter, Path, str]] = {}
        self._rows: dict[tuple[str, float], int] = {}
        self._done = False

    def __enter__(self) -> "Batch":
        root = self.store.root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = open(root / LOCK, "a+")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._con = self.store._connect()
        self._remove_orphans()
        self._known = {r[0] for r in self._con.execute("SELECT sha256 FROM files")}
        return self

    def __exit__(self, *exc) -> None:
        try:
            if not self._done:
                self._abort()
        finally:
            self._con.close()
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def _remove_orphans(self) -> None:
        """Delete parts no ledger row points at: leftovers of a crashed batch (we hold
        the lock, so no other writer is mid-batch)."""
        committed = {r[0] for r in self._con.execute("SELECT path FROM parts")}
        for path in self.store.root.glob("wafer=*/pulse_width_s=*/*"):
            rel = path.relative_to(self.store.root).as_posix()
            if path.name.startswith(".tmp-") or (path.suffix == ".parquet" and rel not in committed):
                path.unlink(missing_ok=True)

    def add(self, p: Pending) -> str:
        """Queue a file's rows: returns ``stored``, ``duplicate`` or ``overlap``
        (rows of the same device, pulse width and cycles are stored already)."""
        if p.sha256 in self._known:
            self._already.append(p.sha256)
            return "duplicate"
        spans = _series_spans(p.table)
        reason = self._overlap(spans)
        if reason:
            self._overlaps[p.sha256] = reason
            return "overlap"
        self._known.add(p.sha256)
        for key, lo, hi in spans:
            self._claimed.setdefault(key, []).append((lo, hi, p.name))
        for key, rows in _split_by_partition(p.table):
            self._buffer(key, rows.drop_columns(list(PARTITION)))
        self._added.append((p, spans))
        return "stored"

    def overlap_reason(self, sha256: str) -> str:
        return self._overlaps[sha256]

    def _overlap(self, spans) -> str | None:
        for key, lo, hi in spans:
            row = self._con.execute(
                "SELECT f.name FROM series s JOIN files f USING (sha256) WHERE s.wafer=? AND "
                "s.die=? AND s.device=? AND s.pulse_width_s=? AND s.cycle_min<=? AND "
                "s.cycle_max>=? LIMIT 1", (*key, hi, lo)).fetchone()
            clash = row[0] if row else next(
                (name for lo2, hi2, name in self._claimed.get(key, ()) if lo2 <= hi and hi2 >= lo), None)
            if clash:
                return (f"rows for wafer {key[0]} die {key[1]} device {key[2]} pulse width "
                        f"{key[3]:g} s cycles {lo}-{hi} are already stored (from {clash})")
        return None

    def _buffer(self, key, rows: pa.Table) -> None:
        self._buffers.setdefault(key, []).append(rows)
        self._buffered[key] = self._buffered.get(key, 0) + rows.num_rows
        if self._buffered[key] >= self.ROW_GROUP:
            self._flush(key)

    def _flush(self, key) -> None:
        tables = self._buffers.pop(key, [])
        self._buffered.pop(key, None)
        if not tables:
            return
        if key not in self._writers:
            rel = f"{partition_dir(*key)}/part-{self.commit_id}.parquet"
            target = self.store.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
            # Dictionary-encode only the text columns: on floats it costs time, saves nothing.
            writer = pq.ParquetWriter(tmp, _DATA_SCHEMA, compression="zstd",
                                      use_dictionary=_TEXT_COLUMNS)
            self._writers[key] = (writer, tmp, rel)
        table = pa.concat_tables(tables)
        self._writers[key][0].write_table(table)
        self._rows[key] = self._rows.get(key, 0) + table.num_rows

    def commit(self, before_ledger=None) -> Commit:
        """Make the batch visible: finish the parts, rename them, record the ledger.
        ``before_ledger`` is a test hook run after the renames, before the ledger."""
        for key in list(self._buffers):
            self._flush(key)
        parts = []
        for key, (writer, tmp, rel) in sorted(self._writers.items()):
            writer.close()
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.store.root / rel)
            parts.append((rel, key[0], key[1], self._rows[key]))
        if before_ledger:
            before_ledger()
        now = datetime.now(timezone.utc).isoformat()
        with self._con:
            self._con.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)", [
                (p.sha256, p.name, p.table.num_rows, self.commit_id, now) for p, _ in self._added])
            self._con.executemany("INSERT INTO parts VALUES (?, ?, ?, ?, ?)",
                                  [(rel, self.commit_id, w, pw, n) for rel, w, pw, n in parts])
            self._con.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?)", [
                (*k, lo, hi, p.sha256) for p, spans in self._added for k, lo, hi in spans])
        self._done = True
        return Commit(tuple(p.sha256 for p, _ in self._added), tuple(self._already),
                      dict(self._overlaps), tuple(sorted(self._writers)),
                      sum(p.table.num_rows for p, _ in self._added))

    def _abort(self) -> None:
        for writer, tmp, _ in self._writers.values():
            try:
                writer.close()
            finally:
                tmp.unlink(missing_ok=True)
