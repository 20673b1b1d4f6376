"""The measurement store: one Delta Lake table (delta-rs), local folder or ``s3://`` URL.

Layout under the store root (a standard Delta table, partitioned by wafer and pulse width)::

    _delta_log/00000000000000000000.json ...   the transaction log: the only source of truth
    wafer=W01/pulse_width_s=2e-08/part-<commit>-<n>.parquet

Read it with ``MeasurementStore.read``/``dataset``, ``deltalake.DeltaTable(root)``,
``polars.scan_delta(root)``, or duckdb over ``store.dataset()``. Parquet files that the
log does not reference (a writer killed before its commit, a rewritten part) are never
read through the log; ``MeasurementStore.vacuum`` deletes them once old enough.

Exactly-once per raw file. The ledger is the table itself: every row carries the SHA-256
of its raw file (``source_sha256``), so a file's hash is committed in the same Delta
commit as its rows, and "which files are stored" is answered from the committed rows
(cached per data file, which never changes once written). Every commit also carries a
Delta application transaction with one fixed app id; delta-rs then refuses a commit when
another commit carrying that id landed after the version the writer read ("concurrent
transaction"). So ferroflow commits are serialised: on such a conflict the batch reloads
the table, re-checks its files against what landed meanwhile (a file now stored is
reported as already stored, cycles now stored from other bytes as an overlap), rewrites the
parts without them and commits again.

Re-exports. A series is (wafer, die, device, pulse width); the ledger holds the set of
cycles each file gave each series (as ranges). A new file whose cycles are all stored for
its series is a re-export, and one whose cycles are partly stored would duplicate rows:
both are refused as overlaps, naming the series and the stored cycles. A file of new
cycles only (a cycle missing from an earlier export, delivered later) is stored. Appends by other tools do not carry the app id and
are not serialised against; ferroflow's exactly-once holds among ferroflow writers.

Schema: the table is created with ``pipeline.schema.SCHEMA`` and opening a table with any
other schema is refused; delta-rs refuses appends of other schemas by other writers.

Time travel: ``version()`` is the table version, ``read(..., as_of=V)`` reads version V.
"""

from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, Transaction

from .errors import InputError, probe_writable
from .schema import COLUMNS, KEY, LEGACY_COLUMNS, PARTITION, SCHEMA, SERIES, rows_equal, upgrade_columns
from .storage import arrow_fs, delta_options, is_url, location

APP_ID = "ferroflow-store"   # the application transaction every ferroflow commit carries
COMMIT_KEY = "ferroflow.commit"
_DATA_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in PARTITION])
# tables created before the unit rule keep their column names (today's name -> that name):
# they are read upgraded and written with the names they have
_LEGACY_NAME = {new: old for old, new in LEGACY_COLUMNS.items() if new in COLUMNS}
_LEGACY_SCHEMA = pa.schema([f.with_name(_LEGACY_NAME.get(f.name, f.name)) for f in SCHEMA])
_LEGACY_DATA_SCHEMA = pa.schema([f for f in _LEGACY_SCHEMA if f.name not in PARTITION])
_TEXT_COLUMNS = [f.name for f in _DATA_SCHEMA if pa.types.is_string(f.type)]
_SERIES = list(SERIES)
# ``cycles``: the series' cycle numbers in the file as ranges ("1-3,5"), so a re-export
# is told from a missing cycle delivered later without keeping one ledger row per cycle
_LEDGER_COLUMNS = ["path", "sha256", "name", *_SERIES, "rows", "cycle_min", "cycle_max", "cycles",
                   "state_unit"]


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
    already: tuple[str, ...]           # SHA-256 of files the store already had
    overlaps: dict                     # sha -> reason: rows the store already holds
    partitions: tuple[tuple[str, float], ...]
    rows: int
    version: int | None = None         # table version of this commit (None: nothing to commit)


class MeasurementStore:
    def __init__(self, root: str | Path):
        self.root = location(root)
        self.uri = str(self.root) if is_url(self.root) else str(Path(self.root).absolute())
        if not is_url(self.root) and Path(self.uri).exists() and not Path(self.uri).is_dir():
            # delta-rs would say the path "does not exist"
            raise InputError(f"store {self.uri} is a file, not a folder (see --store, FERRO_STORE)")
        self.options = delta_options(self.uri)
        self.fs, self.base = arrow_fs(self.uri)
        self._ledgers: dict[str, pd.DataFrame] = {}  # data file -> its ledger rows

    # --- the table ------------------------------------------------------------------
    def table(self, as_of: int | None = None) -> DeltaTable | None:
        """The Delta table (at version ``as_of``), or None while nothing was ever stored."""
        try:
            dt = DeltaTable(self.uri, version=as_of, storage_options=self.options)
        except OverflowError:  # a version beyond 64 bits: no table has it
            raise InputError(f"store {self.uri} has no version {as_of}") from None
        except TableNotFoundError:
            if as_of is not None:
                raise InputError(f"store {self.uri} has no version {as_of} (it is empty)") from None
            return None
        except DeltaError as exc:
            if as_of is not None and "version" in str(exc).lower():
                raise InputError(f"store {self.uri} has no version {as_of}") from None
            raise
        _check_schema(dt, self.uri)
        return dt

    def check_writable(self) -> None:
        """ReadOnlyError (one line naming the store) when the OS refuses new files in a
        local store; asked before a batch writes anything (object storage says at write)."""
        if not is_url(self.uri):
            probe_writable(self.uri, "store")

    def _writable(self) -> DeltaTable:
        self.check_writable()
        dt = self.table()
        if dt is None:
            try:
                DeltaTable.create(self.uri, SCHEMA, mode="ignore", partition_by=list(PARTITION),
                                  name="measurements", storage_options=self.options)
            except DeltaError:  # another writer created it first
                pass
            dt = self.table()
        return dt

    def version(self) -> int | None:
        """Current table version (None for an empty store): what a fit records it read."""
        dt = self.table()
        return None if dt is None else dt.version()

    def vacuum(self, retention_hours: int = 168) -> list[str]:
        """Delete parquet files the log does not reference that are older than the
        retention (uncommitted parts of killed writers, parts rewritten on a conflict).
        The retention must exceed the longest batch: a running writer's parts are not
        referenced until it commits."""
        dt = self.table()
        if dt is None:
            return []
        self.check_writable()
        return dt.vacuum(retention_hours=retention_hours, dry_run=False,
                         enforce_retention_duration=False, full=True)

    # --- the ledger (derived from committed rows) ---------------------------------
    def ledger(self, dt: DeltaTable | None = None) -> pd.DataFrame:
        """One row per (data file, raw file, series): sha256, name, rows, cycle span and
        the cycles as ranges."""
        dt = dt if dt is not None else self.table()
        if dt is None:
            return pd.DataFrame(columns=_LEDGER_COLUMNS)
        actions = _add_actions(dt)
        new = [a for a in actions if a["path"] not in self._ledgers]
        if new:
            self._ledgers.update(self._read_ledgers(new))
        frames = [self._ledgers[a["path"]] for a in actions]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=_LEDGER_COLUMNS)
        return pd.concat(frames, ignore_index=True)

    def _read_ledgers(self, actions: list[dict]) -> dict[str, pd.DataFrame]:
        return dict(zip([a["path"] for a in actions], self._per_file(self._file_ledger, actions)))

    def _per_file(self, read, actions: list[dict]) -> list:
        """``read(action)`` of each data file. Threads hide an object store's latency; on a
        local disk they only cost CPU (2.5x the serial time for a 2,000-series wafer)."""
        threads = 8 if is_url(self.uri) else 1
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(read, actions))

    def _file_ledger(self, action: dict) -> pd.DataFrame:
        """Ledger rows of one data file: its raw files, their series' cycles (read from
        the rows, so stores written before the ``cycles`` column have it too) and state units."""
        table = pq.read_table(f"{self.base}/{action['path']}", filesystem=self.fs,
                              columns=["source_sha256", "source_file", "die", "device", "cycle",
                                       "state_unit"], use_threads=is_url(self.uri))
        g = table.group_by(["source_sha256", "source_file", "die", "device", "state_unit"]).aggregate(
            [("cycle", "count"), ("cycle", "min"), ("cycle", "max"), ("cycle", "distinct")])
        cycles = [ranges_text(_ranges(c)) for c in g.column("cycle_distinct").to_pylist()]
        g = g.drop_columns(["cycle_distinct"]).to_pandas().assign(cycles=cycles)
        g = g.rename(columns={"source_sha256": "sha256", "source_file": "name", "cycle_count": "rows"})
        g = g.assign(path=action["path"], wafer=action["wafer"], pulse_width_s=action["pulse_width_s"])
        return g[_LEDGER_COLUMNS]

    def known_files(self) -> set[str]:
        """SHA-256 of every file stored so far."""
        return set(self.ledger()["sha256"])

    def ingested_files(self) -> pd.DataFrame:
        """One row per stored raw file: sha256, name, rows, commit, ingested_at."""
        led = self.ledger()
        files = led.groupby("sha256", as_index=False).agg(
            name=("name", "first"), rows=("rows", "sum"), path=("path", "first"))
        files["commit"] = files["path"].str.extract(r"part-([0-9a-f]+)-", expand=False)
        when = {}
        dt = self.table()
        for h in (dt.history() if dt is not None else []):
            if COMMIT_KEY in h:
                when[h[COMMIT_KEY]] = pd.Timestamp(h["timestamp"], unit="ms", tz="UTC").isoformat()
        files["ingested_at"] = files["commit"].map(when)
        return files.drop(columns="path").sort_values(["ingested_at", "name"]).reset_index(drop=True)

    # --- writing ------------------------------------------------------------
    def batch(self) -> "Batch":
        """A write batch: ``with store.batch() as b: b.add(p); ...; b.commit()``.

        Rows are streamed to parquet parts as they are added, so memory stays bounded
        by one buffer per partition; nothing is visible until ``commit``.
        """
        return Batch(self)

    def commit(self, pending: list[Pending], **hooks) -> Commit:
        """Store ``pending`` files exactly once (a one-shot batch)."""
        with self.batch() as b:
            for p in pending:
                b.add(p)
            return b.commit(**hooks)

    # --- reading ------------------------------------------------------------
    def dataset(self, as_of: int | None = None) -> ds.Dataset:
        """The committed rows (at version ``as_of``) as a pyarrow dataset; a table created
        before the unit rule has its legacy column names here (``read`` upgrades them)."""
        dt = self.table(as_of)
        if dt is None:
            return ds.dataset(SCHEMA.empty_table())
        return dt.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(self.base, self.fs),
                                     schema=_LEGACY_SCHEMA if _is_legacy(dt) else SCHEMA)

    def read(self, wafer: str | None = None, pulse_width_s: float | None = None,
             columns: list[str] | None = None, as_of: int | None = None,
             sort: bool = True) -> pd.DataFrame:
        """Rows of the store (at version ``as_of``) in canonical column order, sorted by key
        (``sort=False``: in storage order, for a caller that orders them itself)."""
        dset = self.dataset(as_of)
        expr = None
        if wafer is not None:
            expr = ds.field("wafer") == wafer
        if pulse_width_s is not None:
            e = ds.field("pulse_width_s") == float(pulse_width_s)
            expr = e if expr is None else expr & e
        cols = columns or list(COLUMNS)
        if LEGACY_COLUMNS.keys() & set(dset.schema.names):
            cols = [_LEGACY_NAME.get(c, c) for c in cols]
        df = upgrade_columns(dset.to_table(filter=expr, columns=cols)).to_pandas()
        if not sort:
            return df
        by = [c for c in KEY if c in df]
        return df.sort_values(by, kind="stable").reset_index(drop=True)

    def data_files(self) -> list[str]:
        """Parquet files of the current version, relative to the root."""
        dt = self.table()
        return [] if dt is None else sorted(a["path"] for a in _add_actions(dt))

    def rows(self) -> int:
        dt = self.table()
        return 0 if dt is None else sum(a["rows"] for a in _add_actions(dt))

    def partitions(self) -> list[tuple[str, float]]:
        dt = self.table()
        if dt is None:
            return []
        return sorted({(a["wafer"], a["pulse_width_s"]) for a in _add_actions(dt)})

    def partition_key(self, wafer: str, pulse_width_s: float) -> str:
        """Content key of a partition: changes exactly when its stored files change."""
        import hashlib

        led = self.ledger()
        shas = sorted(set(led[(led.wafer == wafer) & (led.pulse_width_s == float(pulse_width_s))].sha256))
        return hashlib.sha256("\n".join(shas).encode()).hexdigest()[:24]

    def source_files(self, wafer: str, pulse_width_s: float | None = None) -> pd.DataFrame:
        """Raw files (name, SHA-256) that fed a wafer or one of its partitions: lineage.
        Reads the names and hashes of that partition's data files only (a fit registers
        its lineage with this; the whole ledger also aggregates every series' cycles)."""
        dt = self.table()
        actions = [] if dt is None else [
            a for a in _add_actions(dt) if a["wafer"] == wafer
            and (pulse_width_s is None or a["pulse_width_s"] == float(pulse_width_s))]
        frames = self._per_file(self._file_sources, [a for a in actions if a["path"] not in self._ledgers])
        frames += [self._ledgers[a["path"]][["name", "sha256"]] for a in actions if a["path"] in self._ledgers]
        out = (pd.concat(frames, ignore_index=True) if frames else
               pd.DataFrame({"name": pd.Series(dtype=object), "sha256": pd.Series(dtype=object)}))
        return out.drop_duplicates().sort_values(["name", "sha256"]).reset_index(drop=True)

    def _file_sources(self, action: dict) -> pd.DataFrame:
        columns = ["source_file", "source_sha256"]
        # as dictionaries: a file's few distinct names are decoded once, not per row
        table = pq.read_table(f"{self.base}/{action['path']}", filesystem=self.fs, columns=columns,
                              read_dictionary=columns, use_threads=is_url(self.uri))
        g = table.unify_dictionaries().combine_chunks().group_by(columns).aggregate([])
        return pd.DataFrame({"name": g["source_file"].cast(pa.string()).to_pylist(),
                             "sha256": g["source_sha256"].cast(pa.string()).to_pylist()})


def _is_legacy(dt: DeltaTable) -> bool:
    return bool(LEGACY_COLUMNS.keys() & set(pa.schema(dt.schema().to_arrow()).names))


def _check_schema(dt: DeltaTable, uri: str) -> None:
    got = pa.schema(dt.schema().to_arrow())
    want = {f.name: f.type for f in (_LEGACY_SCHEMA if _is_legacy(dt) else SCHEMA)}
    have = {f.name: f.type for f in got}
    if have != want:
        diff = sorted(set(have.items()) ^ set(want.items()), key=str)
        raise InputError(f"{uri} is a Delta table with another schema than the measurement "
                         f"schema (differs in {', '.join(f'{n}: {t}' for n, t in diff[:4])})")


def _add_actions(dt: DeltaTable) -> list[dict]:
    t = pa.table(dt.get_add_actions(flatten=True))
    return [{"path": p, "rows": n or 0, "wafer": w, "pulse_width_s": float(pw)} for p, n, w, pw in zip(
        t["path"].to_pylist(), t["num_records"].to_pylist(), t["partition.wafer"].to_pylist(),
        t["partition.pulse_width_s"].to_pylist())]


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


def _series_cycles(table: pa.Table):
    """((wafer, die, device, pulse_width_s), cycle ranges, rows) per series in a file."""
    single = [_single(table.column(c)) for c in _SERIES]
    if all(v is not None for v in single):
        cycles = table.column("cycle").to_numpy()
        return [((single[0], single[1], single[2], float(single[3])), _ranges(cycles),
                 table.num_rows)]
    g = table.select([*_SERIES, "cycle"]).group_by(_SERIES).aggregate(
        [("cycle", "distinct"), ("cycle", "count")])
    return [((r["wafer"], r["die"], r["device"], float(r["pulse_width_s"])),
             _ranges(r["cycle_distinct"]), int(r["cycle_count"])) for r in g.to_pylist()]


def _ranges(cycles) -> tuple[tuple[int, int], ...]:
    """Cycle numbers (any order, repeats allowed) as sorted runs ((first, last), ...)."""
    # a short list (one series' distinct cycles) is quicker in Python than through numpy
    unique = sorted(set(cycles)) if isinstance(cycles, list) else np.unique(cycles).tolist()
    runs: list[list[int]] = []
    for c in unique:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return tuple((lo, hi) for lo, hi in runs)


def _merge(ranges) -> tuple[tuple[int, int], ...]:
    """Union of (first, last) runs, adjacent runs joined."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def ranges_text(ranges) -> str:
    """``((1, 3), (5, 5))`` -> ``"1-3,5"`` (how the ledger and messages show cycles)."""
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def _parse_ranges(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in filter(None, str(text).split(",")):
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi or lo)))
    return tuple(out)


def _cycles(ranges) -> str:
    return f"cycle{'s' if _count(ranges) > 1 else ''} {ranges_text(ranges)}"


def _count(ranges) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


def _stamped(table: pa.Table, sha256: str) -> pa.Table:
    """Rows whose ``source_sha256`` is the file's hash: the ledger is read from it."""
    if _single(table.column("source_sha256")) == sha256:
        return table
    i = table.schema.get_field_index("source_sha256")
    return table.set_column(i, "source_sha256", pa.array([sha256] * table.num_rows, pa.string()))


def _cycle_index(ledger: pd.DataFrame) -> dict[tuple, list[tuple[int, int, str]]]:
    """Series -> [(first, last, file name)] of the cycles the ledger holds."""
    out: dict[tuple, list] = {}
    for r in ledger.itertuples(index=False):  # every ledger has ``cycles``: it is rebuilt from rows
        out.setdefault((r.wafer, r.die, r.device, float(r.pulse_width_s)), []).extend(
            (lo, hi, r.name) for lo, hi in _parse_ranges(r.cycles))
    return out


def _unit_index(ledger: pd.DataFrame) -> dict[tuple, tuple[str, str]]:
    """Series -> (state unit, a file that stored it)."""
    return {(r.wafer, r.die, r.device, float(r.pulse_width_s)): (r.state_unit, r.name)
            for r in ledger.itertuples(index=False)}


def _series_units(table: pa.Table) -> dict[tuple, str]:
    """Series -> state unit of a file's rows (validation allows one per series)."""
    cols = [*_SERIES, "state_unit"]
    single = [_single(table.column(c)) for c in cols]
    if all(v is not None for v in single):
        return {(single[0], single[1], single[2], float(single[3])): single[4]}
    g = table.select(cols).group_by(cols).aggregate([]).to_pylist()
    return {(r["wafer"], r["die"], r["device"], float(r["pulse_width_s"])): r["state_unit"]
            for r in g}


def _unit_error(units: dict, index: dict, table: pa.Table) -> InputError | None:
    """The error for a series whose state unit differs from the one ``index`` holds,
    at the series' first row in ``table`` (the caller knows the file)."""
    for key, unit in units.items():
        other, where = index.get(key, (unit, None))
        if other == unit:
            continue
        row = table.column("source_row").filter(rows_equal(table, dict(zip(_SERIES, key))))[0].as_py()
        source = f" (from {where})" if where else ""
        return InputError(f"state unit {unit!r} differs from {other!r}, the state unit already "
                          f"taken for wafer {key[0]} die {key[1]} device {key[2]} pulse width "
                          f"{key[3]:g} s{source}: a series has one state unit",
                          row=row, column="state_unit")
    return None


def _held(index: dict, key, ranges) -> tuple[tuple[tuple[int, int], ...], list[str]]:
    """(the cycles of ``ranges`` that ``index`` holds for series ``key``, the files holding them)."""
    hits, names = [], []
    for lo, hi in ranges:
        for lo2, hi2, file in index.get(key, ()):
            if lo2 <= hi and hi2 >= lo:
                hits.append((max(lo, lo2), min(hi, hi2)))
                names += [] if file in names else [file]
    return _merge(hits), names


def _minus(ranges, taken) -> tuple[tuple[int, int], ...]:
    """The cycles of ``ranges`` not in ``taken`` (both merged runs)."""
    out = []
    for lo, hi in ranges:
        for lo2, hi2 in taken:
            if lo2 <= hi and hi2 >= lo:
                if lo < lo2:
                    out.append((lo, lo2 - 1))
                lo = hi2 + 1
        if lo <= hi:
            out.append((lo, hi))
    return tuple(out)


class Batch:
    """One write session on the store (see ``MeasurementStore.batch``)."""

    ROW_GROUP = 65_536   # rows buffered per partition before a row group is written
    ATTEMPTS = 200       # commits tried before giving up on a very busy table

    def __init__(self, store: MeasurementStore):
        self.store = store
        self.commit_id = uuid.uuid4().hex[:20]
        self._dt: DeltaTable | None = None
        self._known: set[str] = set()
        self._stored: dict[tuple, list] = {}   # series -> cycle ranges in the store
        self._claimed: dict[tuple, list] = {}  # series -> cycle ranges of this batch
        self._units: dict[tuple, tuple[str, str]] = {}  # series -> (state unit, file): store and batch
        self._added: list[tuple[str, str, int, list]] = []  # name, sha256, rows, series cycles
        self._already: list[str] = []
        self._adopted: dict[str, list] = {}    # sha -> [name, rows, {series: cycles}] (adopt)
        self._overlaps: dict[str, str] = {}
        self._buffers: dict[tuple[str, float], list[pa.Table]] = {}
        self._buffered: dict[tuple[str, float], int] = {}
        self._writers: dict[tuple[str, float], pq.ParquetWriter] = {}
        self._parts: dict[tuple[str, float], str] = {}   # partition -> part path in the table
        self._rows: dict[tuple[str, float], int] = {}
        self._serial = 0
        self._done = False
        self._legacy = False  # the table has the column names from before the unit rule

    def __enter__(self) -> "Batch":
        self._dt = self.store._writable()
        self._legacy = _is_legacy(self._dt)
        ledger = self.store.ledger(self._dt)
        self._known = set(ledger["sha256"])
        self._stored = _cycle_index(ledger)
        self._units = _unit_index(ledger)
        return self

    def __exit__(self, *exc) -> None:
        if not self._done:
            self._abort()

    def add(self, p: Pending) -> str:
        """Queue a file's rows: returns ``stored``, ``duplicate`` or ``overlap`` (some or
        all of its cycles of a device and pulse width are stored already, or come from an
        earlier file of this batch: a re-export). Raises InputError for a series whose
        state unit differs from the stored one."""
        if p.sha256 in self._known:
            self._already.append(p.sha256)
            return "duplicate"
        units = _series_units(p.table)
        err = _unit_error(units, self._units, p.table)
        if err:
            raise err
        series = _series_cycles(p.table)
        reason = self._overlap(series)
        if reason:
            self._overlaps[p.sha256] = reason
            return "overlap"
        self._claim(p.name, p.sha256, p.table.num_rows, series, units)
        self._queue(_stamped(p.table, p.sha256))
        return "stored"

    def add_blocks(self, name: str, sha256: str, blocks) -> str:
        """Queue a big file that arrives as an iterable of canonical tables: ``stored``
        or ``duplicate``. An InputError from ``blocks``, or rows the store already holds,
        raise; the caller then leaves the batch without committing, which discards all
        of its rows, so a file streamed this way gets a batch of its own."""
        if sha256 in self._known:
            self._already.append(sha256)
            return "duplicate"
        found: dict[tuple, list] = {}   # series -> [cycle ranges, rows]
        units: dict[tuple, str] = {}
        rows = 0
        for table in blocks:
            block_units = _series_units(table)
            err = _unit_error(block_units, self._units, table)
            if err:
                raise err
            units.update(block_units)
            for key, ranges, n in _series_cycles(table):
                seen = found.setdefault(key, [(), 0])
                seen[0], seen[1] = _merge(seen[0] + ranges), seen[1] + n
            self._queue(_stamped(table, sha256))
            rows += table.num_rows
        merged = [(key, ranges, n) for key, (ranges, n) in found.items()]
        reason = self._overlap(merged)
        if reason:
            raise InputError(reason, file=name)
        self._claim(name, sha256, rows, merged, units)
        return "stored"

    def adopt(self, table: pa.Table) -> None:
        """Queue canonical rows that another store held exactly once (a conversion):
        their files are claimed from the rows, and one file's rows may come in pieces."""
        g = table.group_by(["source_sha256", "source_file", *_SERIES]).aggregate(
            [("cycle", "count"), ("cycle", "distinct")])
        for r in g.to_pylist():
            sha = r["source_sha256"]
            if sha in self._known and sha not in self._adopted:
                raise InputError(f"file {r['source_file']} (SHA-256 {sha[:12]}) is in both stores: "
                                 "convert into an empty store")
            entry = self._adopted.setdefault(sha, [r["source_file"], 0, {}])
            entry[1] += r["cycle_count"]
            key = (r["wafer"], r["die"], r["device"], float(r["pulse_width_s"]))
            ranges, n = entry[2].get(key, ((), 0))
            entry[2][key] = (_merge(ranges + _ranges(r["cycle_distinct"])), n + r["cycle_count"])
        for key, unit in _series_units(table).items():
            self._units.setdefault(key, (unit, None))
        self._queue(table)

    def _claim(self, name: str, sha256: str, rows: int, series, units: dict) -> None:
        self._known.add(sha256)
        for key, unit in units.items():
            self._units.setdefault(key, (unit, name))
        for key, ranges, _ in series:
            self._claimed.setdefault(key, []).extend((lo, hi, name) for lo, hi in ranges)
        self._added.append((name, sha256, rows, series))

    def _queue(self, table: pa.Table) -> None:
        for key, rows in _split_by_partition(table):
            self._buffer(key, rows.drop_columns(list(PARTITION)))

    def overlap_reason(self, sha256: str) -> str:
        return self._overlaps[sha256]

    def _overlap(self, series, claimed: bool = True) -> str | None:
        """Why a file's cycles may not be stored (None: all are new). ``series`` is
        [(series, cycle ranges, rows)]; cycles claimed by this batch count as stored."""
        held, new = [], []
        for key, ranges, _ in series:
            hits, names = _held(self._stored, key, ranges)
            if claimed:
                more, others = _held(self._claimed, key, ranges)
                hits, names = _merge(hits + more), names + [n for n in others if n not in names]
            if hits:
                held.append((key, hits, names))
            if _count(hits) < _count(ranges):
                new.append(_minus(ranges, hits))
        if not held:
            return None
        (w, die, dev, pw), hits, names = held[0]
        files = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        what = (f"rows for wafer {w} die {die} device {dev} pulse width {pw:g} s "
                f"{_cycles(hits)} are already stored (from {files})")
        more = f" (and cycles of {len(held) - 1} more series)" if len(held) > 1 else ""
        if not new:
            return f"a re-export: {what}{more}; nothing new in this file"
        verb = "are" if _count(new[0]) > 1 else "is"
        return (f"{what}{more}, while its {_cycles(new[0])} {verb} new: storing the file "
                "would duplicate rows; deliver the new cycles in a file of their own")

    def _buffer(self, key, rows: pa.Table) -> None:
        self._buffers.setdefault(key, []).append(rows)
        self._buffered[key] = self._buffered.get(key, 0) + rows.num_rows
        if self._buffered[key] >= self.ROW_GROUP:
            self._flush(key)

    def _new_part(self, key) -> tuple[pq.ParquetWriter, str]:
        self._serial += 1
        rel = f"{partition_dir(*key)}/part-{self.commit_id}-{self._serial}.parquet"
        full = f"{self.store.base}/{rel}"
        self.store.fs.create_dir(full.rsplit("/", 1)[0], recursive=True)
        # Dictionary-encode only the text columns: on floats it costs time, saves nothing.
        schema = _LEGACY_DATA_SCHEMA if self._legacy else _DATA_SCHEMA
        writer = pq.ParquetWriter(full, schema, filesystem=self.store.fs, compression="zstd",
                                  use_dictionary=_TEXT_COLUMNS)
        return writer, rel

    def _flush(self, key) -> None:
        tables = self._buffers.pop(key, [])
        self._buffered.pop(key, None)
        if not tables:
            return
        if key not in self._writers:
            self._writers[key], self._parts[key] = self._new_part(key)
        table = pa.concat_tables(tables)
        if self._legacy:
            table = table.rename_columns([_LEGACY_NAME.get(n, n) for n in table.column_names])
        self._writers[key].write_table(table)
        self._rows[key] = self._rows.get(key, 0) + table.num_rows

    def _close_parts(self) -> None:
        for key in list(self._buffers):
            self._flush(key)
        for key, writer in sorted(self._writers.items()):
            writer.close()
            if not is_url(self.store.uri):  # durable before the log references it
                with open(f"{self.store.base}/{self._parts[key]}", "rb") as fh:
                    os.fsync(fh.fileno())
        self._writers.clear()

    def commit(self, before_commit=None) -> Commit:
        """Make the batch visible in one Delta commit, retried on conflicts (module
        docstring). ``before_commit`` is a test hook (a crash point)."""
        self._close_parts()
        self._added += [(name, sha, n, [(key, ranges, k) for key, (ranges, k) in series.items()])
                        for sha, (name, n, series) in self._adopted.items()]
        self._adopted.clear()
        if before_commit:
            before_commit()
        version = None
        for _ in range(self.ATTEMPTS):
            if not self._added:
                break
            try:
                version = self._try_commit()
                break
            except CommitFailedError:
                self._dt.update_incremental()
                self._recheck()
        else:
            raise RuntimeError(f"store {self.store.uri}: no commit after {self.ATTEMPTS} conflicts")
        self._done = True
        if version is not None:
            self.store._ledgers.update(self._ledger_rows())
        return Commit(tuple(sha for _, sha, _, _ in self._added), tuple(self._already),
                      dict(self._overlaps), tuple(sorted(k for k, n in self._rows.items() if n)),
                      sum(n for _, _, n, _ in self._added), version)

    def _ledger_rows(self) -> dict[str, pd.DataFrame]:
        """The ledger of the parts just committed, from what the batch knows (so the
        store need not read them back)."""
        rows = {rel: [] for rel in self._parts.values()}
        for name, sha, _, series in self._added:
            for (wafer, die, device, pw), ranges, n in series:
                unit = self._units.get((wafer, die, device, pw), (None,))[0]
                rows[self._parts[(wafer, pw)]].append((sha, name, wafer, die, device, pw, n,
                                                       ranges[0][0], ranges[-1][1],
                                                       ranges_text(ranges), unit))
        return {rel: pd.DataFrame([(rel, *r) for r in found], columns=_LEDGER_COLUMNS)
                for rel, found in rows.items()}

    def _try_commit(self) -> int:
        actions = [self._action(key, rel) for key, rel in sorted(self._parts.items())
                   if self._rows.get(key)]
        files = [[sha, name, n] for name, sha, n, _ in self._added]
        props = CommitProperties(
            custom_metadata={COMMIT_KEY: self.commit_id, "ferroflow.files": json.dumps(files)},
            app_transactions=[Transaction(APP_ID, self._dt.version() + 1)])
        self._dt.create_write_transaction(actions, "append", SCHEMA, partition_by=list(PARTITION),
                                          commit_properties=props)
        self._dt.update_incremental()
        return self._dt.version()

    def _action(self, key, rel: str) -> AddAction:
        info = self.store.fs.get_file_info(f"{self.store.base}/{rel}")
        stats = json.dumps({"numRecords": self._rows[key]})
        return AddAction(rel, info.size, {"wafer": key[0], "pulse_width_s": repr(float(key[1]))},
                         int(info.mtime_ns // 1_000_000) if info.mtime_ns else 0, True, stats)

    def _recheck(self) -> None:
        """After a conflict: drop files that another writer stored meanwhile."""
        ledger = self.store.ledger(self._dt)
        stored = set(ledger["sha256"])
        self._stored = _cycle_index(ledger)
        for key, unit in _unit_index(ledger).items():
            self._units.setdefault(key, unit)
        drop = set()
        for _, sha, _, series in self._added:
            reason = None if sha in stored else self._overlap(series, claimed=False)
            if sha in stored:
                self._already.append(sha)
            elif reason:
                self._overlaps[sha] = reason
            else:
                continue
            drop.add(sha)
        if drop:
            self._added = [a for a in self._added if a[1] not in drop]
            self._rewrite_without(drop)

    def _rewrite_without(self, drop: set[str]) -> None:
        """Rewrite the batch's parts without the rows of ``drop`` (files stored meanwhile)."""
        fs, base = self.store.fs, self.store.base
        for key, rel in list(self._parts.items()):
            table = pq.read_table(f"{base}/{rel}", filesystem=fs)
            keep = table.filter(pc.invert(pc.is_in(table["source_sha256"], pa.array(sorted(drop)))))
            if keep.num_rows == table.num_rows:
                continue
            fs.delete_file(f"{base}/{rel}")
            del self._parts[key]
            self._rows[key] = keep.num_rows
            if keep.num_rows:
                writer, self._parts[key] = self._new_part(key)
                writer.write_table(keep)
                writer.close()

    def _abort(self) -> None:
        for writer in self._writers.values():
            writer.close()
        for rel in self._parts.values():
            try:
                self.store.fs.delete_file(f"{self.store.base}/{rel}")
            except (FileNotFoundError, OSError):
                pass
