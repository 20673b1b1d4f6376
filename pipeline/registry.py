"""The device-model registry: immutable, versioned parquet device models.

A *name* is one (stack, wafer, pulse width), e.g. ``hzo-W01-20ns``; names are validated
identifiers because they become paths. Each registered *version* is one parquet file
holding a row per device (the population family's parameters and standard errors, the
device's symmetry point, noise, energy per pulse and fit statistics); the population
summary (medians and robust d2d spreads) and the metadata sit in the file's key-value
metadata, and the columns that searches use sit in the index too.

Files are content-addressed (``<root>/<name>/<sha16>.parquet``): written to a hidden temp
file and renamed into place *before* the index row exists, so a crash leaves at worst an
unreferenced complete file, never a half-written one and never an index row that points
at a missing file. The index (``pipeline.registry_index``) is SQLite by default (WAL,
``<root>/index.sqlite``) or PostgreSQL, shared by several machines
(``FERRO_REGISTRY_DB=postgresql://...``), parameterised SQL only: versions 1, 2, 3... per
name assigned inside one write transaction that serialises writers of the name, an
automatic ``latest`` alias, movable user aliases, tags, lineage (SHA-256 of every raw
file, the fit configuration hash, the code version; the store version a fit read sits in
the file's metadata) and downstream simulation runs. Registering content identical to
an existing version of the name returns that version.

The root may be any fsspec URL (``memory://``, ``s3://...``); the index is then given by
the ``index`` argument or ``FERRO_REGISTRY_DB`` (a SQLite file or a PostgreSQL URL).

References: ``name`` (latest), ``name@3`` (version 3) or ``name@production`` (alias).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .errors import InputError, probe_writable
from .identifiers import check_identifier
from .registry_index import open_index
from .schema import upgrade_columns

LATEST = "latest"
META_KEY = b"ferroflow"
MAX_VERSION = 2**63 - 1  # SQLite's and PostgreSQL's BIGINT

_SET_ALIAS = ("INSERT INTO aliases VALUES (?, ?, ?) ON CONFLICT (name, alias) "
              "DO UPDATE SET version = excluded.version")
_ADD_TAG = "INSERT INTO tags VALUES (?, ?, ?) ON CONFLICT DO NOTHING"


@dataclass(frozen=True)
class Ref:
    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Ref":
        name, sep, tail = text.partition("@")
        check_identifier(name, "model name")
        if not sep:
            return cls(name, alias=LATEST)
        number = tail.removeprefix("-")
        if number.isascii() and number.isdigit():  # '³' and '٣' are str digits too
            version = int(tail)
            if not 1 <= version <= MAX_VERSION:
                raise InputError(f"model ref {text!r}: versions are numbered from 1 "
                                 f"(to {MAX_VERSION}), got {tail}")
            return cls(name, version=version)
        return cls(name, alias=check_identifier(tail, "alias"))

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.version is None else f"{self.name}@{self.version}"


@dataclass(frozen=True)
class ModelVersion:
    """A registered version as the simulator consumes it."""

    name: str
    version: int
    family: str
    pulse_width_s: float
    state_unit: str
    devices: pd.DataFrame          # one row per device: p_<param>, e_<param>, sp_*, noise...
    population: pd.DataFrame       # param, median, spread, rel_spread, n
    meta: dict

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def params(self) -> pd.DataFrame:
        """Per-device parameters of the model family (columns named as the family's)."""
        cols = [c for c in self.devices.columns if c.startswith("p_")]
        return self.devices[cols].rename(columns=lambda c: c[2:])

    def population_value(self, param: str, what: str = "median") -> float:
        row = self.population[self.population.param == param]
        return float(row[what].iloc[0]) if len(row) else float("nan")

    @property
    def energy_per_pulse_j(self) -> float:
        value = self.meta.get("energy_per_pulse_j")  # None when the source gave none
        return float("nan") if value is None else float(value)


def model_name(stack: str, wafer: str, pulse_width_s: float) -> str:
    """``hzo-W01-20ns``: the registry grain is (stack, wafer, pulse width)."""
    for unit, scale in (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        value = pulse_width_s / scale
        if value < 1000 or unit == "s":
            text = f"{value:.6g}".replace(".", "p")
            return check_identifier(f"{stack}-{wafer}-{text}{unit}", "model name")
    raise AssertionError("unreachable")


def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


class Registry:
    def __init__(self, root: str | Path, index: str | Path | None = None):
        self.root = str(root)
        self.fs, self.base = fsspec.core.url_to_fs(self.root)
        if self.fs.exists(self.base) and not self.fs.isdir(self.base):
            raise InputError(f"registry {self.root} is a file, not a folder (see --registry, "
                             "FERRO_REGISTRY)")
        index = index if index is not None else os.environ.get("FERRO_REGISTRY_DB") or None
        if index is None:
            if "://" in self.root and not self.root.startswith("file://"):
                raise ValueError("a remote registry root needs an index: set FERRO_REGISTRY_DB "
                                 "to postgresql://... or a SQLite file (or pass index=...)")
            index = Path(self.base) / "index.sqlite"
        self.db = open_index(index)

    def close(self) -> None:
        self.db.close()

    def path(self, *parts: str) -> str:
        """A file beside the versions (``runs/``, ``reproductions/``), in ``self.fs``."""
        return "/".join([self.base.rstrip("/"), *parts])

    def location(self, path: str) -> str:
        """``path`` (in ``self.fs``) as any reader opens it: a plain local path, or the URL
        on object storage (what lineage records)."""
        local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        return path if local else self.fs.unstrip_protocol(path)

    def _query(self, sql: str, args=()) -> pd.DataFrame:
        return self.db.query(sql, args)

    # --- register -----------------------------------------------------------------------
    def register(self, name: str, devices: pd.DataFrame, population: pd.DataFrame, meta: dict, *,
                 raw_files: pd.DataFrame | None = None, tags: tuple[str, ...] = (),
                 description: str = "", before_index=None) -> tuple[Ref, bool]:
        """Store a new version (or return the identical existing one).

        Returns (ref, created). ``before_index`` is a test hook run after the file is
        in place and before the index transaction.
        """
        check_identifier(name, "model name")
        for tag in tags:
            check_identifier(tag, "tag")
        # one chunk per column: frames built from a worker pool's results hold several,
        # and the content hash must not depend on how the rows were split
        table = pa.Table.from_pandas(devices.reset_index(drop=True), preserve_index=False).combine_chunks()
        pop_json = population.to_json(orient="records", double_precision=15)
        content_sha = _content_sha(table, pop_json, meta)
        rel = f"{name}/{content_sha[:16]}.parquet"
        full = f"{self.base.rstrip('/')}/{rel}"
        doc = {**_jsonable(meta), "name": name, "content_sha": content_sha,
               "population": json.loads(pop_json)}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               META_KEY: json.dumps(doc).encode()})
        self.check_writable()  # before the file: a refused index leaves nothing behind
        if not self.fs.exists(full):
            self._write_atomic(table, full)
        if before_index:
            before_index()
        db = self.db
        with db.transaction(name):
            row = db.execute("SELECT version FROM versions WHERE name = ? AND content_sha = ?",
                             (name, content_sha)).fetchone()
            if row:
                return Ref(name, version=int(row[0])), False
            version = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = ?",
                                 (name,)).fetchone()[0]
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, version, content_sha, rel, meta.get("stack"), meta.get("wafer"),
                 meta.get("pulse_width_s"), meta.get("family"), meta.get("state_unit"),
                 int(meta.get("n_devices", len(devices))), int(meta.get("n_failed", 0)),
                 _float(meta.get("sp_norm_median")), _float(meta.get("r2_median")),
                 _float(meta.get("energy_per_pulse_j")), description,
                 datetime.now(timezone.utc).isoformat(), meta.get("fit_config_hash"), code_version()))
            db.execute(_SET_ALIAS, (name, LATEST, version))
            db.executemany(_ADD_TAG, [(name, version, t) for t in tags])
            if raw_files is not None and len(raw_files):
                db.executemany("INSERT INTO raw_files VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               [(name, version, r.sha256, r.name) for r in raw_files.itertuples()])
        return Ref(name, version=int(version)), True

    def check_writable(self) -> None:
        """ReadOnlyError (one line naming the path) when the OS refuses writes to this
        registry's folder or its index; asked before anything is written."""
        if self.location(self.base) == self.base:  # a local folder (object storage says at write)
            probe_writable(self.base, "registry")
        self.db.check_writable()

    def _write_atomic(self, table: pa.Table, full: str) -> None:
        parent = full.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}.parquet"
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        with self.fs.open(tmp, "wb") as fh:
            fh.write(buf.getvalue())
            if hasattr(fh, "flush"):
                fh.flush()
            if hasattr(fh, "fileno"):
                try:
                    os.fsync(fh.fileno())
                except (OSError, io.UnsupportedOperation):
                    pass
        self.fs.mv(tmp, full)

    # --- lookups --------------------------------------------------------------------------
    def resolve(self, ref: str | Ref) -> Ref:
        """The concrete ``name@version`` a reference points at."""
        ref = Ref.parse(ref) if isinstance(ref, str) else ref
        con = self.db
        if ref.version is not None:
            row = con.execute("SELECT version FROM versions WHERE name = ? AND version = ?",
                              (ref.name, ref.version)).fetchone()
        else:
            row = con.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?",
                              (ref.name, ref.alias)).fetchone()
        if row is None:
            raise KeyError(f"no model version {ref}")
        return Ref(ref.name, version=int(row[0]))

    def get(self, ref: str | Ref) -> dict:
        """Index row of a version (fast: no file is read)."""
        ref = Ref.parse(ref) if isinstance(ref, str) else ref
        con = self.db
        if ref.version is not None:
            cur = con.execute("SELECT * FROM versions WHERE name = ? AND version = ?",
                              (ref.name, ref.version))
        else:
            cur = con.execute("SELECT v.* FROM versions v JOIN aliases a ON a.name = v.name AND "
                              "a.version = v.version WHERE a.name = ? AND a.alias = ?",
                              (ref.name, ref.alias))
        row = cur.fetchone()
        if row is None:
            raise KeyError(f"no model version {ref}")
        out = dict(zip([d[0] for d in cur.description], row))
        out["ref"] = f"{out['name']}@{out['version']}"
        out["aliases"] = [r[0] for r in con.execute(
            "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias",
            (out["name"], out["version"]))]
        out["tags"] = [r[0] for r in con.execute(
            "SELECT tag FROM tags WHERE name = ? AND version = ? ORDER BY tag", (out["name"], out["version"]))]
        return out

    def load(self, ref: str | Ref) -> ModelVersion:
        """A version as the simulator consumes it (reads its parquet file)."""
        info = self.get(ref)
        path = f"{self.base.rstrip('/')}/{info['path']}"
        with self.fs.open(path, "rb") as fh:
            table = pq.read_table(fh)
        doc = json.loads(table.schema.metadata[META_KEY])
        # versions registered before the unit rule carry legacy column and metric names
        population = upgrade_columns(pd.DataFrame(doc.pop("population")))
        return ModelVersion(name=info["name"], version=info["version"], family=doc["family"],
                            pulse_width_s=float(doc["pulse_width_s"]), state_unit=doc["state_unit"],
                            devices=upgrade_columns(table.to_pandas()), population=population, meta=doc)

    def list(self) -> pd.DataFrame:
        return self._query(
            "SELECT v.name, v.version AS latest, v.wafer, v.pulse_width_s, v.family, v.n_devices, "
            "v.n_failed, v.sp_norm_median, v.created_at, (SELECT COUNT(*) FROM versions w "
            "WHERE w.name = v.name) AS versions FROM versions v JOIN aliases a ON a.name = v.name "
            "AND a.version = v.version AND a.alias = ? ORDER BY v.name", (LATEST,))

    def history(self, name: str) -> pd.DataFrame:
        check_identifier(name, "model name")
        found = self._query("SELECT name, version, content_sha, family, n_devices, n_failed, "
                           "sp_norm_median, created_at, description FROM versions WHERE name = ? "
                           "ORDER BY version", (name,))
        if found.empty:  # a mistyped name is not a model without versions
            raise KeyError(f"no model named {name!r}")
        return found

    def search(self, *, wafer: str | None = None, pulse_width_min: float | None = None,
               pulse_width_max: float | None = None, tags: tuple[str, ...] = (),
               family: str | None = None, min_r2: float | None = None,
               max_failed: int | None = None, latest_only: bool = True) -> pd.DataFrame:
        """Versions matching every given criterion (parameterised SQL)."""
        where, args = [], []
        for clause, value in (("v.wafer = ?", wafer), ("v.pulse_width_s >= ?", pulse_width_min),
                              ("v.pulse_width_s <= ?", pulse_width_max), ("v.family = ?", family),
                              ("v.r2_median >= ?", min_r2), ("v.n_failed <= ?", max_failed)):
            if value is not None:
                where.append(clause)
                args.append(value)
        for tag in tags:
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND "
                         "t.version = v.version AND t.tag = ?)")
            args.append(tag)
        if latest_only:
            where.append("EXISTS (SELECT 1 FROM aliases a WHERE a.name = v.name AND "
                         "a.version = v.version AND a.alias = ?)")
            args.append(LATEST)
        sql = ("SELECT v.name, v.version, v.wafer, v.pulse_width_s, v.family, v.n_devices, v.n_failed, "
               "v.sp_norm_median, v.r2_median, v.energy_per_pulse_j FROM versions v")
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._query(sql + " ORDER BY v.wafer, v.pulse_width_s, v.name, v.version", args)

    # --- aliases, tags, lineage -----------------------------------------------------------
    def set_alias(self, ref: str | Ref, alias: str) -> Ref:
        check_identifier(alias, "alias")
        if alias.lower() == LATEST:
            raise InputError("'latest' is maintained by the registry and cannot be moved")
        if alias.isdigit():  # NAME@7 is version 7: such an alias could never be used
            raise InputError(f"alias {alias!r} is a number: NAME@{alias} means version {alias}")
        target = self.resolve(ref)
        self.db.write(_SET_ALIAS, (target.name, alias, target.version))
        return target

    def remove_alias(self, name: str, alias: str) -> None:
        if alias == LATEST:
            raise InputError("'latest' is maintained by the registry and cannot be removed")
        cur = self.db.write("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
        if cur.rowcount == 0:
            raise KeyError(f"no alias {name}@{alias}")

    def add_tag(self, ref: str | Ref, tag: str) -> None:
        check_identifier(tag, "tag")
        target = self.resolve(ref)
        self.db.write(_ADD_TAG, (target.name, target.version, tag))

    def add_run(self, ref: str | Ref, run_id: str, kind: str, path: str) -> None:
        """Record a downstream simulation run of a version (lineage: version -> runs)."""
        target = self.resolve(ref)
        self.db.write("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name, version, "
                      "run_id) DO UPDATE SET kind = excluded.kind, path = excluded.path, "
                      "created_at = excluded.created_at",
                      (target.name, target.version, run_id, kind, path,
                       datetime.now(timezone.utc).isoformat()))

    def runs(self, ref: str | Ref) -> pd.DataFrame:
        target = self.resolve(ref)
        return self._query("SELECT run_id, kind, path, created_at FROM runs WHERE name = ? AND "
                           "version = ? ORDER BY created_at", (target.name, target.version))

    def lineage(self, ref: str | Ref) -> dict:
        info = self.get(ref)
        raw = self._query("SELECT file_name, sha256 FROM raw_files WHERE name = ? AND version = ? "
                          "ORDER BY file_name", (info["name"], info["version"]))
        return {"ref": info["ref"], "description": info["description"],
                "fit_config_hash": info["fit_config_hash"],
                "store_version": self.load(info["ref"]).meta.get("store_version"),
                "code_version": info["code_version"], "content_sha": info["content_sha"],
                "raw_files": raw.to_dict(orient="records"),
                "runs": self.runs(info["ref"]).to_dict(orient="records")}

    def check(self) -> list[str]:
        """Problems between index and files (empty when they agree)."""
        problems = []
        con = self.db
        for name, version, rel in con.execute("SELECT name, version, path FROM versions"):
            if not self.fs.exists(f"{self.base.rstrip('/')}/{rel}"):
                problems.append(f"{name}@{version}: file {rel} is missing")
        for name, alias, version in con.execute(
                "SELECT a.name, a.alias, a.version FROM aliases a LEFT JOIN versions v ON "
                "v.name = a.name AND v.version = a.version WHERE v.name IS NULL"):
            problems.append(f"alias {name}@{alias} points at missing version {version}")
        return problems


# Recorded with a version but not part of its content: refitting unchanged data after
# other wafers were ingested (a new store version) must find the existing version.
_NOT_CONTENT = ("store_version",)


def _content_sha(table: pa.Table, population_json: str, meta: dict) -> str:
    meta = {k: v for k, v in meta.items() if k not in _NOT_CONTENT}
    h = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
        writer.write_table(table.replace_schema_metadata(None))
    h.update(sink.getvalue().to_pybytes())
    h.update(population_json.encode())
    h.update(json.dumps(_jsonable(meta), sort_keys=True).encode())
    return h.hexdigest()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _float(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None
