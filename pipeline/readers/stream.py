"""Big files, read block by block so that memory stays bounded whatever the file's size.

Files larger than ``BIG_FILE_BYTES`` on disk take this path (``pipeline.ingest``):
instrument exports and canonical CSVs, gzip included. Each block becomes canonical rows
with the same conversion as the in-memory readers, and its ``source_row`` values are
the file's own line numbers: the file is read through ``LineSource``, which drops comment
lines and records the line of every row it hands on, whatever the line endings and
wherever a block ends. Two-column up/down traces and parquet files are always
read whole (traces are small; parquet is already compact).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import zlib
from collections import deque
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..errors import InputError
from . import canonical, instrument
from .common import EOL, MAX_HEADER_BYTES, RawFile, override_fields, scan_lines
from .mapping import Mapping, load_mapping

BIG_FILE_BYTES = 64 << 20   # on disk; smaller files are read whole (faster)
BLOCK_BYTES = 2 << 20       # text parsed per block (larger blocks: more memory, no faster)
MAX_LINE_BYTES = 64 << 20   # a longer line is refused, not buffered
_BOM = b"\xef\xbb\xbf"
_ROW = re.compile(r"Row #(\d+)")
_COLUMN = re.compile(r"column #(\d+)")
_NOT_NUMBER = re.compile(r"conversion error to double: invalid value (.*)$")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _open(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def iter_blocks(path: str | Path, sha256: str, mapping: Mapping | None = None,
                block_bytes: int | None = None,
                overrides: dict[str, str] | None = None) -> Iterator[pa.Table]:
    """Canonical tables, one per block of the file (not yet validated); ``overrides``
    as for ``read_raw``."""
    path = Path(path)
    file = str(path)
    raw = RawFile(path=path, data=b"", sha256=sha256, size_on_disk=path.stat().st_size)
    mapping = (mapping or load_mapping()).with_overrides(overrides)
    with _open(path) as fh:
        try:
            head = fh.read(MAX_HEADER_BYTES + 8192)
        except (OSError, EOFError) as exc:
            raise InputError(f"corrupt gzip file ({exc})", file=file) from None
        if b"\x00" in head[:8192]:
            raise InputError("binary file (NUL bytes), not a text measurement file", file=file)
        offset, table_line, convert, lay = _start(head, mapping, file, raw, overrides)
        fh.seek(offset)
        source = LineSource(fh, table_line, file)
        try:  # opening parses the first block: its errors are the file's too
            reader = pacsv.open_csv(
                source, read_options=pacsv.ReadOptions(block_size=block_bytes or BLOCK_BYTES,
                                                       use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=lay.delimiter),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.float64() for c in lay.numeric},
                    strings_can_be_null=False, null_values=[""]))
        except pa.ArrowInvalid as exc:
            raise _located(exc, lay.names, source, file) from None
        source.take(1)  # the table's header row
        rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                raise _located(exc, lay.names, source, file) from None
            yield convert(pa.Table.from_batches([batch]), source.take(batch.num_rows))
            rows += batch.num_rows
    if rows == 0:
        raise InputError("table has a header but no data rows", file=file, row=table_line)


def _start(head: bytes, mapping: Mapping, file: str, raw: RawFile, overrides=None):
    """(byte offset of the table's header row, its line, block converter, layout)."""
    skip = len(_BOM) if head.startswith(_BOM) else 0
    try:
        first = EOL.split(head[skip:skip + 4096], 1)[0].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=file, row=1) from None
    if instrument.looks_like(first):
        header, body, table_line = instrument.split_header(head, file)
        lay = instrument.layout(header, body, table_line, mapping, file)
        return (len(head) - len(body), table_line,
                lambda t, first_data: instrument.convert(t, lay, mapping, raw, first_data), lay)
    if canonical.looks_like(first):
        lay = instrument.Layout(*canonical.header_row(first), 1, {}, {})
        return skip, 1, lambda t, first_data: override_fields(
            canonical.convert(t, raw, first_data), overrides), lay
    raise InputError("a file this large must be an instrument export or a canonical CSV "
                     "(two-column traces and parquet files are read whole)", file=file, row=1)


def _located(exc: Exception, names: list[str], source: "LineSource", file: str) -> InputError:
    """pyarrow's parse error with its row (the n-th line it parsed, header included)
    turned into the file's line number."""
    text = str(exc)
    row = _ROW.search(text)
    col = _COLUMN.search(text)
    column = names[int(col.group(1))] if col and int(col.group(1)) < len(names) else None
    message = text.split(": ", 2)[-1] if row else text
    bad = _NOT_NUMBER.search(message)
    if bad:  # as the whole-file readers say it
        message = f"not a number: {bad.group(1)}"
    return InputError(message, file=file, row=source.line_of(int(row.group(1))) if row else None,
                      column=column)


class LineSource(io.RawIOBase):
    """A text file read through for pyarrow: comment lines are dropped and the file line
    of every non-empty line handed on is queued (``scan_lines``), so each parsed batch
    takes its rows' lines in order. Only lines read ahead of the parser are held."""

    CHUNK = 1 << 20

    def __init__(self, fh, first_line: int, file: str):
        self.fh, self.file = fh, file
        self.next_line = first_line   # file line of the first line not yet scanned
        self.carry = b""              # a line not yet ended (or a lone CR that may be CRLF)
        self.out = bytearray()
        self.queued: deque[np.ndarray] = deque()
        self.taken = 0                # lines handed to take() so far
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while len(self.out) < len(buf) and not self.eof:
            self._scan_more()
        n = min(len(buf), len(self.out))
        buf[:n] = self.out[:n]
        del self.out[:n]
        return n

    def _scan_more(self) -> None:
        try:
            chunk = self.fh.read(self.CHUNK)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise InputError(f"corrupt gzip file ({exc})", file=self.file) from None
        data = self.carry + chunk
        if chunk:
            ends = [data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)]
            cut = max(ends) + 1  # a CR at the very end waits: a LF may follow
            if cut == 0 and len(data) > MAX_LINE_BYTES:
                raise InputError(f"line longer than {MAX_LINE_BYTES >> 20} MiB", file=self.file,
                                 row=self.next_line)
        else:
            self.eof, cut = True, len(data)
        kept, lines, count = scan_lines(data[:cut], self.next_line)
        self.carry = data[cut:]
        self.next_line += count
        self.out += kept
        if len(lines):
            self.queued.append(lines)

    def take(self, n: int) -> np.ndarray:
        """File lines of the next ``n`` rows."""
        parts, need = [], n
        while need:
            head = self.queued[0]
            parts.append(head[:need])
            if len(head) <= need:
                self.queued.popleft()
            else:
                self.queued[0] = head[need:]
            need -= len(parts[-1])
        self.taken += n
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def line_of(self, row: int) -> int | None:
        """File line of the ``row``-th line handed on (1-based), if still queued."""
        i = row - 1 - self.taken
        for lines in self.queued:
            if 0 <= i < len(lines):
                return int(lines[i])
            i -= len(lines)
        return None
