"""The measurement store: hive-partitioned parquet plus a ledger of ingested files.

Layout under the store root::

    wafer=W01/pulse_width_s=2e-08/part-<commit>.parquet
    _ledger.sqlite      files ingested (by SHA-256), parts committed, series covered
    _lock               advisory lock held while committing

Readable by ``pyarrow.dataset`` (``MeasurementStore.dataset``), pandas and duckdb
(``read_parquet('<root>/**/*.parquet', hive_partitioning=true)``). Partition columns
live in the directory names only, as hive layouts do.

Exactly-once: a commit runs under the lock. It writes each part to a hidden temp file
(``.part-<commit>.parquet.tmp``, which parquet readers skip), syncs it, records files,
parts and series in the ledger in one transaction, and only then renames the parts into
place. A crash before the ledger transaction leaves temp files that the next batch
deletes; a crash after it leaves committed parts under their temp names, which the next
batch (or ``dataset()``) renames forward. So a reader never sees a part the ledger does
not hold, and nothing is stored twice.
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

from .errors import InputError
from .schema import COLUMNS, LEGACY_COLUMNS, PARTITION, PARTITION_SCHEMA, SCHEMA, upgrade_columns

LEDGER = "_ledger.sqlite"
LOCK = "_lock"
_DATA_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in PARTITION])
_TEXT_COLUMNS = [f.name for f in _DATA_SCHEMA if pa.types.is_string(f.type)]
# parts written before the unit rule: today's column -> the name such a part has
_LEGACY_NAME = {new: old for old, new in LEGACY_COLUMNS.items() if new in COLUMNS}
_LEGACY_DATA_SCHEMA = pa.schema([f.with_name(_LEGACY_NAME.get(f.name, f.name)) for f in _DATA_SCHEMA])
_LEGACY_PARTS: dict[tuple, bool] = {}  # (part path, mtime, size) -> has legacy names

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


def temp_path(final: Path) -> Path:
    """Where a part is written before its commit renames it to ``final``."""
    return final.with_name(f".{final.name}.tmp")


def roll_forward(final: Path) -> None:
    """Rename a committed part still under its temp name (a commit cut short)."""
    if not final.exists():
        try:
            os.replace(temp_path(final), final)
        except FileNotFoundError:  # renamed meanwhile by another process, or truly lost
            pass


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

    def commit(self, pending: list[Pending], **hooks) -> Commit:
        """Store ``pending`` files exactly once (a one-shot batch)."""
        with self.batch() as b:
            for p in pending:
                b.add(p)
            return b.commit(**hooks)

    # --- reading ------------------------------------------------------------
    def _part_files(self) -> list[str]:
        with closing(self._connect()) as con:
            rels = [r[0] for r in con.execute("SELECT path FROM parts ORDER BY path")]
        for rel in rels:
            roll_forward(self.root / rel)
        return [str(self.root / r) for r in rels]

    def dataset(self, legacy: bool = False) -> ds.Dataset:
        """The committed parts as a pyarrow dataset (partition columns typed).

        Parts written before the unit rule have legacy column names: ``legacy=True`` gives
        those, under their own names (``read`` upgrades them); by default they are left out.
        """
        files = [f for f in self._part_files() if _is_legacy_part(f) == legacy]
        data = _LEGACY_DATA_SCHEMA if legacy else _DATA_SCHEMA
        part = ds.partitioning(PARTITION_SCHEMA, flavor="hive")
        return ds.dataset(files, schema=pa.schema(list(data) + list(PARTITION_SCHEMA)),
                          format="parquet", partitioning=part, partition_base_dir=str(self.root))

    def read(self, wafer: str | None = None, pulse_width_s: float | None = None,
             columns: list[str] | None = None) -> pd.DataFrame:
        """Rows of the store in canonical column order, sorted by key."""
        expr = None
        if wafer is not None:
            expr = ds.field("wafer") == wafer
        if pulse_width_s is not None:
            e = ds.field("pulse_width_s") == float(pulse_width_s)
            expr = e if expr is None else expr & e
        cols = columns or list(COLUMNS)
        table = self.dataset().to_table(filter=expr, columns=cols)
        old = self.dataset(legacy=True)
        if old.files:
            legacy = old.to_table(filter=expr, columns=[_LEGACY_NAME.get(c, c) for c in cols])
            table = pa.concat_tables([table, upgrade_columns(legacy).cast(table.schema)])
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


def _is_legacy_part(path: str) -> bool:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _LEGACY_PARTS:
        _LEGACY_PARTS[key] = bool(LEGACY_COLUMNS.keys() & set(pq.read_schema(path).names))
    return _LEGACY_PARTS[key]


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
        self._added: list[tuple[str, str, int, list]] = []  # name, sha256, rows, series spans
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
        self._recover()
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

    def _recover(self) -> None:
        """Finish what a crashed batch left (we hold the lock, so no other writer is
        mid-batch): committed parts still under temp names are renamed forward, every
        other temp file and any part the ledger does not hold is deleted."""
        committed = {r[0] for r in self._con.execute("SELECT path FROM parts")}
        for path in self.store.root.glob("wafer=*/pulse_width_s=*/*"):
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                final = path.with_name(path.name[1:-len(".tmp")])
                if final.relative_to(self.store.root).as_posix() in committed:
                    roll_forward(final)
                    continue
                path.unlink(missing_ok=True)
            elif path.name.startswith(".") or (
                    path.suffix == ".parquet"
                    and path.relative_to(self.store.root).as_posix() not in committed):
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
        self._queue(p.table)
        self._added.append((p.name, p.sha256, p.table.num_rows, spans))
        return "stored"

    def add_blocks(self, name: str, sha256: str, blocks) -> str:
        """Queue a big file that arrives as an iterable of canonical tables: ``stored``
        or ``duplicate``. An InputError from ``blocks``, or rows the store already holds,
        raise; the caller then leaves the batch without committing, which discards all
        of its rows, so a file streamed this way gets a batch of its own."""
        if sha256 in self._known:
            self._already.append(sha256)
            return "duplicate"
        spans: dict[tuple, list[int]] = {}
        rows = 0
        for table in blocks:
            for key, lo, hi in _series_spans(table):
                span = spans.setdefault(key, [lo, hi])
                span[0], span[1] = min(span[0], lo), max(span[1], hi)
            self._queue(table)
            rows += table.num_rows
        merged = [(key, lo, hi) for key, (lo, hi) in spans.items()]
        reason = self._overlap(merged)
        if reason:
            raise InputError(reason, file=name)
        self._known.add(sha256)
        self._added.append((name, sha256, rows, merged))
        return "stored"

    def _queue(self, table: pa.Table) -> None:
        for key, rows in _split_by_partition(table):
            self._buffer(key, rows.drop_columns(list(PARTITION)))

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
            tmp = temp_path(target)
            # Dictionary-encode only the text columns: on floats it costs time, saves nothing.
            writer = pq.ParquetWriter(tmp, _DATA_SCHEMA, compression="zstd",
                                      use_dictionary=_TEXT_COLUMNS)
            self._writers[key] = (writer, tmp, rel)
        table = pa.concat_tables(tables)
        self._writers[key][0].write_table(table)
        self._rows[key] = self._rows.get(key, 0) + table.num_rows

    def commit(self, before_ledger=None, before_rename=None) -> Commit:
        """Make the batch visible: finish the parts, record the ledger, rename the parts
        into place. ``before_ledger`` and ``before_rename`` are test hooks (crash points)."""
        for key in list(self._buffers):
            self._flush(key)
        parts = []
        for key, (writer, tmp, rel) in sorted(self._writers.items()):
            writer.close()
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            parts.append((rel, key[0], key[1], self._rows[key]))
        if before_ledger:
            before_ledger()
        now = datetime.now(timezone.utc).isoformat()
        with self._con:
            self._con.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)", [
                (sha, name, n, self.commit_id, now) for name, sha, n, _ in self._added])
            self._con.executemany("INSERT INTO parts VALUES (?, ?, ?, ?, ?)",
                                  [(rel, self.commit_id, w, pw, n) for rel, w, pw, n in parts])
            self._con.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?)", [
                (*k, lo, hi, sha) for _, sha, _, spans in self._added for k, lo, hi in spans])
        self._done = True
        if before_rename:
            before_rename()
        for rel, *_ in parts:
            roll_forward(self.store.root / rel)
        return Commit(tuple(sha for _, sha, _, _ in self._added), tuple(self._already),
                      dict(self._overlaps), tuple(sorted(self._writers)),
                      sum(n for _, _, n, _ in self._added))

    def _abort(self) -> None:
        for writer, tmp, _ in self._writers.values():
            try:
                writer.close()
            finally:
                tmp.unlink(missing_ok=True)
