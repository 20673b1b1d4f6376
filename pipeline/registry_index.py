"""The registry index database: SQLite (embedded default) or PostgreSQL (shared).

The registry writes one SQL dialect, the subset both engines speak (``?`` placeholders,
``INSERT ... ON CONFLICT``); this module adapts placeholders and gives each engine's way
to serialise version numbering: SQLite's ``BEGIN IMMEDIATE`` (one writer at a time),
PostgreSQL's transaction-scoped advisory lock per model name (writers of other names go
on). One connection per thread, autocommit outside explicit transactions.

Reading never writes: a SQLite index is read through a read-only connection (``mode=ro``;
``immutable=1`` when its folder cannot take the ``-shm`` file WAL readers need, e.g. a
read-only mount), and a missing index reads as an empty one without creating anything.
The first write reopens the thread's connection for writing; when the OS refuses that
(read-only mount, no permission) the write fails with one ``ReadOnlyError`` line.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .errors import read_only

DDL = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, content_sha TEXT NOT NULL, path TEXT NOT NULL,
    stack TEXT, wafer TEXT, pulse_width_s DOUBLE PRECISION, family TEXT, state_unit TEXT,
    n_devices INTEGER, n_failed INTEGER, sp_norm_median DOUBLE PRECISION,
    r2_median DOUBLE PRECISION, energy_per_pulse_j DOUBLE PRECISION, description TEXT,
    created_at TEXT NOT NULL, fit_config_hash TEXT, code_version TEXT,
    PRIMARY KEY (name, version));
CREATE INDEX IF NOT EXISTS versions_sha ON versions (name, content_sha);
CREATE INDEX IF NOT EXISTS versions_wafer ON versions (wafer, pulse_width_s);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (name, alias));
CREATE TABLE IF NOT EXISTS tags (
    name TEXT NOT NULL, version INTEGER NOT NULL, tag TEXT NOT NULL,
    PRIMARY KEY (name, version, tag));
CREATE TABLE IF NOT EXISTS raw_files (
    name TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL, file_name TEXT,
    PRIMARY KEY (name, version, sha256));
CREATE TABLE IF NOT EXISTS runs (
    name TEXT NOT NULL, version INTEGER NOT NULL, run_id TEXT NOT NULL, kind TEXT,
    path TEXT, created_at TEXT NOT NULL, PRIMARY KEY (name, version, run_id))
"""

_SCHEMA_LOCK = 0x6665_72  # advisory lock key held while PostgreSQL creates the tables
WAIT_S = 60  # how long a SQLite connection waits for another process's lock


def is_postgres(target) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_index(target: str | Path) -> "SqliteIndex | PostgresIndex":
    return PostgresIndex(target) if is_postgres(target) else SqliteIndex(Path(target))


class _Index:
    def __init__(self):
        self._local = threading.local()

    def _con(self, write: bool = False):
        local = self._local
        con = getattr(local, "con", None)
        if con is not None and (local.writable or not write):
            return con
        self.close()
        con = self._connect(write)
        if con is not None:
            local.con, local.writable = con, write
            return con
        return self._empty()  # nothing to read yet: not kept, the index may appear later

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    def execute(self, sql: str, args=()):
        """A read (or, inside ``transaction``, a statement of that transaction)."""
        return self._con().execute(self._sql(sql), tuple(args))

    def write(self, sql: str, args=()):
        """One write statement outside a transaction."""
        with self._writing():
            return self._con(write=True).execute(self._sql(sql), tuple(args))

    def query(self, sql: str, args=()) -> pd.DataFrame:
        cur = self.execute(sql, args)
        return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])

    def _sql(self, sql: str) -> str:
        return sql

    @contextmanager
    def _writing(self):
        yield

    def check_writable(self) -> None:
        """A PostgreSQL index says what it refuses when written."""


def _busy(exc: BaseException) -> bool:
    """SQLITE_BUSY or one of its extended codes ("database is locked")."""
    code = getattr(exc, "sqlite_errorcode", None) or 0
    return isinstance(exc, sqlite3.OperationalError) and code & 0xFF == sqlite3.SQLITE_BUSY


class SqliteIndex(_Index):
    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.where = str(path)

    def _connect(self, write: bool):
        if write:
            return self._connect_rw()
        if not self.path.exists():
            if self.path.parent.exists() and not self.path.parent.is_dir():
                # a file where the registry folder should be: as creating it would say
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(self.path.parent))
            return None
        uri = self.path.absolute().as_uri()
        try:
            con = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=WAIT_S, isolation_level=None)
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            if self._refusal() is None:  # writable: a real error (busy, damaged...)
                raise
            # a WAL database whose folder cannot take the -shm file (a read-only mount,
            # no permission): nobody can write it there, so read it as immutable
            con = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        return con

    def _connect_rw(self):
        with self._writing():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + WAIT_S
            while True:
                con = sqlite3.connect(self.path, timeout=WAIT_S, isolation_level=None)
                try:
                    con.execute("PRAGMA journal_mode=WAL")
                    con.execute("PRAGMA synchronous=NORMAL")
                    con.executescript(DDL + ";")
                    return con
                except BaseException as exc:
                    con.close()
                    # SQLite answers a journal-mode switch that meets another process's
                    # lock at once, without its busy wait: seen when stations open a
                    # new index together ("database is locked"), so wait here instead
                    if not (_busy(exc) and time.monotonic() < deadline):
                        raise
                time.sleep(0.01)

    def _empty(self):
        con = sqlite3.connect(":memory:", isolation_level=None)
        con.executescript(DDL + ";")
        return con

    @contextmanager
    def _writing(self):
        """OS refusals of a write, and SQLite's (it names no errno), as ReadOnlyError."""
        try:
            yield
        except OSError as exc:
            raise read_only("registry index", self.path, exc) or exc from None
        except sqlite3.OperationalError as exc:
            refusal = self._refusal()
            if refusal is None:
                raise
            raise refusal from exc

    def _refusal(self):
        """Why the OS will not let this index be written, or None when it would."""
        probes = [lambda: tempfile.TemporaryFile(dir=self.path.parent).close()]
        if self.path.exists():
            probes.insert(0, lambda: open(self.path, "r+b").close())
        for probe in probes:
            try:
                probe()
            except OSError as exc:
                refusal = read_only("registry index", self.path, exc)
                if refusal:
                    return refusal
        return None

    def executemany(self, sql: str, rows) -> None:
        self._con(write=True).executemany(sql, rows)

    def check_writable(self) -> None:
        """Open the index for writing now (ReadOnlyError when the OS refuses)."""
        with self._writing():
            con = self._con(write=True)
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")

    @contextmanager
    def transaction(self, lock: str):
        """A write transaction; SQLite serialises all writers (``lock`` is not needed)."""
        with self._writing():
            con = self._con(write=True)
            con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


class PostgresIndex(_Index):
    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.where = url.split("@")[-1]  # no credentials in messages

    def _connect(self, write: bool = False):
        import psycopg

        con = psycopg.connect(self.url, autocommit=True)
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in DDL.split(";"):
                con.execute(statement)
        return con

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def executemany(self, sql: str, rows) -> None:
        with self._con().cursor() as cur:
            cur.executemany(self._sql(sql), rows)

    @contextmanager
    def transaction(self, lock: str):
        """A write transaction holding an advisory lock on ``lock`` (a model name)."""
        con = self._con()
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(lock.encode()),))
            yield
