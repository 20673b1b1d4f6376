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
changed for ``min_age_s`` seconds (default 5 s; two looks, ``min_age_s`` apart). The
marker goes with its file, so a later file of the same name waits for its own marker.

One file, one outcome: whatever goes wrong with one file (its name, its kind, reading,
hashing, quarantining, archiving) is that file's outcome and the batch goes on. Special
files and links leaving the folder being ingested are *skipped* without being opened;
``processed/`` and ``quarantine/`` names are unique, so no raw file is ever overwritten
(``pipeline.rawfiles``).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path

from .errors import InputError
from .rawfiles import DONE_MARKER, Refused, consume_marker, inside, place, shown, take, walk
from .readers import Mapping, TraceOptions, load, read_raw
from .readers.stream import BIG_FILE_BYTES, iter_blocks, sha256_of
from .store import MeasurementStore, Pending
from .validation import StreamValidator, validate_batch

WINDOW = 32  # files read ahead at a time
SUFFIXES = (".txt", ".csv", ".tsv", ".dat", ".parquet", ".gz")


class Outcome(StrEnum):
    """What became of one file. A str: summaries and JSON show the value."""
    STORED = "stored"
    DUPLICATE = "duplicate"  # its bytes are stored already
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"  # not opened: a special file, an escaping link, unreadable


@dataclass
class FileOutcome:
    path: str
    status: Outcome
    rows: int = 0
    sha256: str | None = None
    reason: str | None = None
    error: InputError | None = field(default=None, repr=False, compare=False)
    source: Path | None = field(default=None, repr=False, compare=False)  # the real path

    @classmethod
    def of(cls, path: Path, status: Outcome, rows: int = 0, sha256: str | None = None,
           error: InputError | None = None) -> "FileOutcome":
        """``path`` shown printable (``rawfiles.shown``), the real one kept in ``source``."""
        reason = error.one_line() if error else None
        return cls(shown(path), status, rows, sha256, reason, error=error, source=path)

    @classmethod
    def quarantined(cls, path: Path, error: InputError, sha256: str | None) -> "FileOutcome":
        return cls.of(path, Outcome.QUARANTINED, 0, sha256, _printable(error))

    @classmethod
    def skipped(cls, refused: Refused) -> "FileOutcome":
        return cls.of(refused.path, Outcome.SKIPPED,
                      error=InputError(refused.reason, file=shown(refused.path)))


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
        text = (f"{self.count(Outcome.STORED)} file(s) stored ({self.rows} rows), "
                f"{self.count(Outcome.DUPLICATE)} already stored, "
                f"{self.count(Outcome.QUARANTINED)} quarantined")
        skipped = self.count(Outcome.SKIPPED)
        return f"{text}, {skipped} skipped" if skipped else text

    @property
    def refused(self) -> int:
        """Files not stored for a reason of their own: quarantined or skipped."""
        return self.count(Outcome.QUARANTINED) + self.count(Outcome.SKIPPED)

    def to_json(self) -> dict:
        counts = {str(status): self.count(status) for status in Outcome}
        return {**counts, "rows": self.rows,
                "partitions": sorted([w, pw] for w, pw in self.partitions),
                "files": [{k: str(v) if k == "status" else v for k, v in asdict(o).items()
                           if k not in ("error", "source")} for o in self.outcomes]}


def discover(paths: list[str | Path]) -> tuple[list[Path], list[Refused]]:
    """Measurement files under ``paths`` (files or folders, recursive), sorted, and the
    entries refused without being opened (``rawfiles.walk``).

    Names starting with ``_`` or ``.`` are not measurements (ground truth, markers). A
    file named directly counts its own folder as the folder being ingested.
    """
    found: list[Path] = []
    refused: list[Refused] = []
    for p in map(Path, paths):
        if os.path.isdir(p):
            files, bad = walk(p, _is_measurement)
            found += files
            refused += bad
        elif os.path.lexists(p):
            take(p, p.parent, found, refused)
        else:
            raise FileNotFoundError(f"no such file or folder: {shown(p)}")
    return found, refused


def _is_measurement(name: str) -> bool:
    return (not name.startswith(("_", "."))) and Path(name).suffix.lower() in SUFFIXES


def ready_files(folder: Path, min_age_s: float = 5.0, now: float | None = None) -> list[Path]:
    """Files in the landing folder that are complete (module docstring rule)."""
    if not folder.is_dir():
        if os.path.lexists(folder):  # a file or a dangling link: every scan would find nothing
            raise InputError(f"landing folder {shown(folder)} is not a folder (see FERRO_INCOMING)")
        return []  # not made yet: nothing delivered
    files, refused = walk(folder, _is_measurement)
    first = {f: _signature(f) for f in files}
    waited = {f for f in first if _marked(f)}
    now = time.time() if now is None else now
    candidates = [f for f in first if f not in waited and first[f] and now - first[f][1] >= min_age_s]
    if candidates and min_age_s > 0:
        time.sleep(min(min_age_s, 1.0))
    stable = {f for f in candidates if _signature(f) == first[f]}
    return sorted(waited | stable | {r.path for r in refused})  # refused: reported by ingest


def _marked(path: Path) -> bool:
    try:
        return os.path.lexists(path.with_name(path.name + DONE_MARKER))
    except (OSError, ValueError):  # a name one marker too long cannot have one
        return False


def _signature(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime)


def quarantine(path: Path, reason: InputError | str, folder: Path, move: bool, sha: str | None) -> Path:
    """Put ``path`` into ``folder`` under a unique name with a ``.reason.json`` sidecar."""
    target = place(path, folder, move)
    if move:
        consume_marker(path)
    err = reason if isinstance(reason, InputError) else InputError(str(reason), file=shown(path))
    sidecar = {"file": shown(path), "row": err.row, "column": err.column, "reason": err.message,
               "error": err.one_line(), "sha256": sha,
               "quarantined_at": datetime.now(timezone.utc).isoformat()}
    with open(target.with_name(target.name + ".reason.json"), "x") as fh:  # never over another
        fh.write(json.dumps(sidecar, indent=1))
    return target


def _quarantine(outcome: FileOutcome, folder: Path, move: bool) -> None:
    """Quarantine the outcome's file; a failure (full disk...) is noted in its reason
    and the file stays where it is."""
    try:
        quarantine(outcome.source, outcome.error, folder, move, outcome.sha256)
    except OSError as exc:
        outcome.reason += f" (not quarantined: {exc.strerror or exc}; left in place)"


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
    every, refused = discover(paths)
    if every:
        store.check_writable()  # before any file is read, moved or quarantined
    big = [f for f in every if _is_big(f, big_file_bytes)]
    streamed = set(big)
    files = [f for f in every if f not in streamed]
    report = IngestReport([FileOutcome.skipped(r) for r in refused])

    def moved(path: Path) -> bool:
        return move_from is not None and inside(path, move_from)

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
                        if outcome.status == Outcome.QUARANTINED and not os.path.lexists(path):
                            outcome.status = Outcome.SKIPPED  # taken meanwhile (another scan)
                        if outcome.status == Outcome.QUARANTINED:
                            _quarantine(outcome, quarantine_dir, moved(path))
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
                    _quarantine(outcome, quarantine_dir, moved(outcome.source))
                else:
                    _archive(outcome, moved(outcome.source), processed_dir)
    for path in big:
        outcome, partitions = _ingest_big(path, store, known, mapping, overrides)
        report.outcomes.append(outcome)
        report.partitions.update(partitions)
        if outcome.status == Outcome.QUARANTINED:
            _quarantine(outcome, quarantine_dir, moved(path))
        else:
            _archive(outcome, moved(path), processed_dir)
        done += 1
        if progress:
            progress(done, len(every))
    order = {f: i for i, f in enumerate(every)}
    report.outcomes.sort(key=lambda o: order.get(o.source, -1))
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
            return FileOutcome.of(path, Outcome.DUPLICATE, 0, sha), ()
        checker = StreamValidator(str(path))

        def blocks():
            for table in iter_blocks(path, sha, mapping, overrides=overrides):
                yield checker.check(table)
            checker.finish()

        with store.batch() as batch:
            status = batch.add_blocks(shown(path.name), sha, blocks())
            _check_unchanged(path, size)
            commit = batch.commit()
    except InputError as exc:
        return FileOutcome.quarantined(path, exc.located(str(path)), sha), ()
    except OSError as exc:
        err = InputError(f"cannot read file ({exc.strerror})", file=str(path))
        return FileOutcome.quarantined(path, err, sha), ()
    return _settle(FileOutcome.of(path, Outcome(status), commit.rows, sha), commit), commit.partitions


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
        return FileOutcome.of(path, Outcome.DUPLICATE, 0, result)
    try:
        status = batch.add(result)
    except InputError as exc:  # a series stored with another state unit
        return FileOutcome.quarantined(path, exc.located(str(path)), result.sha256)
    if status == "overlap":
        err = InputError(batch.overlap_reason(result.sha256), file=str(path))
        return FileOutcome.quarantined(path, err, result.sha256)
    outcome = Outcome(status)  # the batch answers stored or duplicate
    rows = result.table.num_rows if outcome == Outcome.STORED else 0
    return FileOutcome.of(path, outcome, rows, result.sha256)


def _settle(outcome: FileOutcome, commit) -> FileOutcome:
    """The final outcome of a file staged as stored: another writer may have stored it
    (or rows of its series) between staging and commit."""
    if outcome.status != Outcome.STORED:
        return outcome
    if outcome.sha256 in commit.overlaps:
        err = InputError(commit.overlaps[outcome.sha256], file=outcome.path)
        return FileOutcome.quarantined(outcome.source, err, outcome.sha256)
    if outcome.sha256 in commit.already and outcome.sha256 not in commit.stored:
        # (the same bytes twice in one batch: the first is stored, the second a duplicate)
        return FileOutcome.of(outcome.source, Outcome.DUPLICATE, 0, outcome.sha256)
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
    except (OSError, ValueError, MemoryError) as exc:
        return _as_input_error(exc, path)
    if raw.sha256 in known:
        return raw.sha256
    raw = replace(raw, path=Path(shown(path)))  # readers name it in errors and lineage
    try:
        table = read_raw(raw, mapping, trace, overrides)
        _check_unchanged(path, raw.size_on_disk)
    except (OSError, ValueError, MemoryError) as exc:
        err = _as_input_error(exc, path)
        err.sha256 = raw.sha256
        return err
    return Pending(shown(path.name), raw.sha256, table)


def _as_input_error(exc: Exception, path: Path) -> InputError:
    """Any failure reading one file as that file's one-line error."""
    if isinstance(exc, InputError):
        return exc.located(str(path))
    if isinstance(exc, OSError):
        return InputError(f"cannot read file ({exc.strerror or exc})", file=str(path))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return InputError(f"cannot read file ({type(exc).__name__}: {text})", file=str(path))


def _printable(err: InputError) -> InputError:
    """The same error with its file name made printable (``rawfiles.shown``)."""
    if not err.file:
        return err
    out = InputError(err.message, file=shown(err.file), row=err.row, column=err.column)
    out.sha256 = getattr(err, "sha256", None)
    return out


def _check_unchanged(path: Path, size_read: int) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        raise InputError("file disappeared while being read", file=str(path)) from None
    if size != size_read:
        raise InputError("file changed while being read (size differs); it will be "
                         "picked up again once complete", file=str(path))


def _archive(outcome: FileOutcome, move: bool, processed_dir: Path | None) -> None:
    """Move a stored (or already stored) landing file to ``processed/`` under a unique
    name, with its marker consumed; a failure leaves it in place (the next scan finds it
    stored) and is noted in the outcome."""
    path = outcome.source
    if not (move and processed_dir is not None and os.path.lexists(path)):
        return
    try:
        place(path, processed_dir, move=True)
        consume_marker(path)
    except OSError as exc:
        note = f"{shown(path)}: stored, but not moved to {shown(processed_dir)} ({exc.strerror or exc})"
        outcome.reason = note
