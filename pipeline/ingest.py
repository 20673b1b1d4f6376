"""Ingestion: raw files -> canonical tables -> validation -> store, bad files quarantined.

A bad file never stops the batch: it is quarantined with a sidecar naming the reason
(file, row, column), and the other files go on. Files in the landing folder are *moved*
(to ``quarantine/`` when bad, to ``processed/`` once stored); files named explicitly
elsewhere are left where they are and a bad one is *copied* to quarantine.

Files larger than ``big_file_bytes`` (64 MiB by default) are read and stored block by
block, each in a commit of its own, so memory stays bounded whatever their size
(``pipeline.readers.stream``).

Landing-folder rule for files still being written: a file is picked up when it has a
``<name>.done`` marker beside it, or when its size and modification time have not
changed for ``min_age_s`` seconds (default 5 s; two looks, ``min_age_s`` apart).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path

from .errors import InputError
from .readers import Mapping, TraceOptions, load, read_raw
from .readers.stream import BIG_FILE_BYTES, iter_blocks, sha256_of
from .store import MeasurementStore, Pending
from .validation import StreamValidator, validate_batch

WINDOW = 32  # files read ahead at a time
SUFFIXES = (".txt", ".csv", ".tsv", ".dat", ".parquet", ".gz")
DONE_MARKER = ".done"


class Outcome(StrEnum):
    """What became of one file. A str: summaries and JSON show the value."""
    STORED = "stored"
    DUPLICATE = "duplicate"  # its bytes are stored already
    QUARANTINED = "quarantined"


@dataclass
class FileOutcome:
    path: str
    status: Outcome
    rows: int = 0
    sha256: str | None = None
    reason: str | None = None
    error: InputError | None = field(default=None, repr=False, compare=False)

    @classmethod
    def quarantined(cls, path: Path, error: InputError, sha256: str | None) -> "FileOutcome":
        return cls(str(path), Outcome.QUARANTINED, 0, sha256, error.one_line(), error=error)


@dataclass
class IngestReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    partitions: set = field(default_factory=set)

    def count(self, status: Outcome) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def rows(self) -> int:
        return sum(o.rows for o in self.outcomes if o.status == Outcome.STORED)

    def summary(self) -> str:
        return (f"{self.count(Outcome.STORED)} file(s) stored ({self.rows} rows), "
                f"{self.count(Outcome.DUPLICATE)} already stored, "
                f"{self.count(Outcome.QUARANTINED)} quarantined")

    def to_json(self) -> dict:
        counts = {str(status): self.count(status) for status in Outcome}
        return {**counts, "rows": self.rows,
                "partitions": sorted([w, pw] for w, pw in self.partitions),
                "files": [{k: str(v) if k == "status" else v for k, v in asdict(o).items()
                           if k != "error"} for o in self.outcomes]}


def discover(paths: list[str | Path]) -> list[Path]:
    """Measurement files under ``paths`` (files or folders, recursive), sorted.

    Names starting with ``_`` or ``.`` are not measurements (ground truth, markers).
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [f for f in sorted(p.rglob("*")) if f.is_file() and _is_measurement(f)]
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return found


def _is_measurement(path: Path) -> bool:
    return (not path.name.startswith(("_", "."))) and path.suffix.lower() in SUFFIXES


def ready_files(folder: Path, min_age_s: float = 5.0, now: float | None = None) -> list[Path]:
    """Files in the landing folder that are complete (module docstring rule)."""
    if not folder.is_dir():
        return []
    first = {f: _signature(f) for f in discover([folder])}
    if not first:
        return []
    waited = {f for f in first if f.with_name(f.name + DONE_MARKER).exists()}
    now = time.time() if now is None else now
    candidates = [f for f in first if f not in waited and first[f] and now - first[f][1] >= min_age_s]
    if candidates and min_age_s > 0:
        time.sleep(min(min_age_s, 1.0))
    stable = {f for f in candidates if _signature(f) == first[f]}
    return sorted(waited | stable)


def _signature(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime)


def quarantine(path: Path, reason: InputError | str, folder: Path, move: bool, sha: str | None) -> Path:
    """Put ``path`` into ``folder`` with a ``.reason.json`` sidecar; never overwrite."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        target = folder / f"{(sha or 'x')[:12]}-{path.name}"
    if move:
        shutil.move(str(path), target)
    else:
        shutil.copy2(path, target)
    err = reason if isinstance(reason, InputError) else InputError(str(reason), file=str(path))
    sidecar = {"file": str(path), "row": err.row, "column": err.column, "reason": err.message,
               "error": err.one_line(), "sha256": sha,
               "quarantined_at": datetime.now(timezone.utc).isoformat()}
    target.with_name(target.name + ".reason.json").write_text(json.dumps(sidecar, indent=1))
    return target


def ingest(paths: list[str | Path], store: MeasurementStore, quarantine_dir: Path, *,
           mapping: Mapping | None = None, trace: TraceOptions | None = None,
           move_from: Path | None = None, processed_dir: Path | None = None,
           batch_rows: int = 1_000_000, workers: int = 2, big_file_bytes: int = BIG_FILE_BYTES,
           overrides: dict[str, str] | None = None, progress=None) -> IngestReport:
    """Ingest files; see the module docstring. ``progress(done, total)`` per file.

    Files under ``move_from`` (the landing folder) are moved, as described above.
    ``overrides`` (canonical field -> text, e.g. ``{"die": "X05Y29"}``) replace what
    every file says (``ferroflow ingest --set``).
    """
    every = discover(paths)
    big = [f for f in every if _is_big(f, big_file_bytes)]
    streamed = set(big)
    files = [f for f in every if f not in streamed]
    report = IngestReport()

    def moved(path: Path) -> bool:
        return move_from is not None and _inside(path, move_from)

    known = store.known_files()  # a cheap first filter; the batch checks again at commit
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        windows = _read_ahead(files, pool, lambda p: _prepare(p, known, mapping, trace, overrides))
        current = next(windows, None)
        while current is not None:
            settled: list[FileOutcome] = []  # archived once the batch is committed
            with store.batch() as batch:
                rows = 0
                while current is not None and rows < batch_rows:
                    window, results = current
                    _validate_window(window, results)
                    for path, result in zip(window, results):
                        outcome = _stage(path, result, batch)
                        if outcome.status == Outcome.QUARANTINED:
                            quarantine(path, outcome.error, quarantine_dir, moved(path), outcome.sha256)
                            report.outcomes.append(outcome)
                        else:
                            settled.append(outcome)
                            rows += outcome.rows
                        done += 1
                        if progress:
                            progress(done, len(every))
                    current = next(windows, None)
                commit = batch.commit()
            report.partitions.update(commit.partitions)
            for outcome in settled:
                outcome = _settle(outcome, commit)
                report.outcomes.append(outcome)
                if outcome.status == Outcome.QUARANTINED:
                    quarantine(Path(outcome.path), outcome.error, quarantine_dir,
                               moved(Path(outcome.path)), outcome.sha256)
                else:
                    _archive(Path(outcome.path), moved(Path(outcome.path)), processed_dir)
    for path in big:
        outcome, partitions = _ingest_big(path, store, known, mapping, overrides)
        report.outcomes.append(outcome)
        report.partitions.update(partitions)
        if outcome.status == Outcome.QUARANTINED:
            quarantine(path, outcome.error, quarantine_dir, moved(path), outcome.sha256)
        else:
            _archive(path, moved(path), processed_dir)
        done += 1
        if progress:
            progress(done, len(every))
    order = {str(f): i for i, f in enumerate(every)}
    report.outcomes.sort(key=lambda o: order.get(o.path, 0))
    return report


def ingest_ltp_ltd(ltp: str | Path | None, ltd: str | Path | None, store: MeasurementStore,
                   quarantine_dir: Path, trace: TraceOptions, **kwargs) -> IngestReport:
    """A device's digitised LTP (up, cycle 1) and LTD (down, cycle 2) files
    (``readers.digitised``); ``kwargs`` as for ``ingest``."""
    report = IngestReport()
    for path, direction in ((ltp, "up"), (ltd, "down")):
        if path is not None:
            part = ingest([path], store, quarantine_dir, trace=replace(trace, direction=direction),
                          **kwargs)
            report.outcomes += part.outcomes
            report.partitions |= part.partitions
    return report


def _is_big(path: Path, limit: int) -> bool:
    try:
        return path.suffix.lower() != ".parquet" and path.stat().st_size > limit
    except OSError:
        return False


def _ingest_big(path: Path, store: MeasurementStore, known: set[str], mapping, overrides=None):
    """Stream one big file into a commit of its own: (outcome, partitions)."""
    sha = None
    try:
        size = path.stat().st_size
        sha = sha256_of(path)
        if sha in known:
            return FileOutcome(str(path), Outcome.DUPLICATE, 0, sha), ()
        checker = StreamValidator(str(path))

        def blocks():
            for table in iter_blocks(path, sha, mapping, overrides=overrides):
                yield checker.check(table)
            checker.finish()

        with store.batch() as batch:
            status = batch.add_blocks(path.name, sha, blocks())
            _check_unchanged(path, size)
            commit = batch.commit()
    except InputError as exc:
        return FileOutcome.quarantined(path, exc.located(str(path)), sha), ()
    except OSError as exc:
        err = InputError(f"cannot read file ({exc.strerror})", file=str(path))
        return FileOutcome.quarantined(path, err, sha), ()
    return _settle(FileOutcome(str(path), Outcome(status), commit.rows, sha), commit), commit.partitions


def _read_ahead(files: list[Path], pool: ThreadPoolExecutor, prepare):
    """Yield (window, prepared results) while the next window is already being read:
    the pool parses files (pyarrow, mostly outside the GIL) while the caller validates
    and writes the previous window. At most two windows are in memory."""
    windows = [files[i:i + WINDOW] for i in range(0, len(files), WINDOW)]
    if not windows:
        return
    queue = deque((w, [pool.submit(prepare, p) for p in w]) for w in windows[:2])
    for nxt in windows[2:] + [None]:
        window, futures = queue.popleft()
        if nxt is not None:
            queue.append((nxt, [pool.submit(prepare, p) for p in nxt]))
        yield window, [f.result() for f in futures]
    while queue:
        window, futures = queue.popleft()
        yield window, [f.result() for f in futures]


def _stage(path: Path, result, batch) -> FileOutcome:
    """Add a prepared file to the batch; its outcome."""
    if isinstance(result, InputError):
        return FileOutcome.quarantined(path, result, getattr(result, "sha256", None))
    if isinstance(result, str):  # SHA-256 of a file already stored
        return FileOutcome(str(path), Outcome.DUPLICATE, 0, result)
    status = batch.add(result)
    if status == "overlap":
        err = InputError(batch.overlap_reason(result.sha256), file=str(path))
        return FileOutcome.quarantined(path, err, result.sha256)
    outcome = Outcome(status)  # the batch answers stored or duplicate
    rows = result.table.num_rows if outcome == Outcome.STORED else 0
    return FileOutcome(str(path), outcome, rows, result.sha256)


def _settle(outcome: FileOutcome, commit) -> FileOutcome:
    """The final outcome of a file staged as stored: another writer may have stored it
    (or rows of its series) between staging and commit."""
    if outcome.status != Outcome.STORED:
        return outcome
    if outcome.sha256 in commit.overlaps:
        err = InputError(commit.overlaps[outcome.sha256], file=outcome.path)
        return FileOutcome.quarantined(Path(outcome.path), err, outcome.sha256)
    if outcome.sha256 in commit.already:
        return FileOutcome(outcome.path, Outcome.DUPLICATE, 0, outcome.sha256)
    return outcome


def _validate_window(paths: list[Path], results: list) -> None:
    """Validate the tables read from ``paths`` in one go; errors replace their Pending."""
    idx = [i for i, r in enumerate(results) if isinstance(r, Pending)]
    checked = validate_batch([results[i].table for i in idx], [str(paths[i]) for i in idx])
    for i, outcome in zip(idx, checked):
        if isinstance(outcome, InputError):
            outcome.sha256 = results[i].sha256
            results[i] = outcome


def _prepare(path: Path, known: set[str], mapping, trace, overrides=None):
    """Pending (not yet validated) rows of a new file, the SHA-256 of a known one, or
    the InputError."""
    try:
        raw = load(path)
    except InputError as exc:
        return exc
    except OSError as exc:
        return InputError(f"cannot read file ({exc.strerror})", file=str(path))
    if raw.sha256 in known:
        return raw.sha256
    try:
        table = read_raw(raw, mapping, trace, overrides)
        _check_unchanged(path, raw.size_on_disk)
    except InputError as exc:
        err = exc.located(str(path))
        err.sha256 = raw.sha256
        return err
    return Pending(path.name, raw.sha256, table)


def _check_unchanged(path: Path, size_read: int) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError("file disappeared while being read", file=str(path)) from None
    if size != size_read:
        raise InputError("file changed while being read (size differs); it will be "
                         "picked up again once complete", file=str(path))


def _archive(path: Path, move: bool, processed_dir: Path | None) -> None:
    if move and processed_dir is not None and path.exists():
        processed_dir.mkdir(parents=True, exist_ok=True)
        target = processed_dir / path.name
        if target.exists():
            target.unlink()
        os.replace(path, target)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
