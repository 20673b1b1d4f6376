"""Big files, read block by block so that memory stays bounded whatever the file's size.

Files larger than ``BIG_FILE_BYTES`` on disk take this path (``pipeline.ingest``):
instrument exports and canonical CSVs, gzip included. Each block becomes canonical rows
with the same conversion as the in-memory readers, and its ``source_row`` values are
the file's own line numbers. Two-column up/down traces and parquet files are always
read whole (traces are small; parquet is already compact).
"""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from ..errors import InputError
from . import canonical, instrument
from .common import MAX_HEADER_BYTES, RawFile, override_fields
from .mapping import Mapping, load_mapping

BIG_FILE_BYTES = 64 << 20   # on disk; smaller files are read whole (faster)
BLOCK_BYTES = 2 << 20       # text parsed per block (larger blocks: more memory, no faster)
_BOM = b"\xef\xbb\xbf"
_ROW = re.compile(r"Row #(\d+)")
_COLUMN = re.compile(r"column #(\d+)")


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
        reader = pacsv.open_csv(
            fh, read_options=pacsv.ReadOptions(block_size=block_bytes or BLOCK_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=lay.delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.float64() for c in lay.numeric},
                strings_can_be_null=False, null_values=[""]))
        rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                raise _located(exc, lay.names, table_line, file) from None
            yield convert(pa.Table.from_batches([batch]), table_line + 1 + rows)
            rows += batch.num_rows
    if rows == 0:
        raise InputError("table has a header but no data rows", file=file, row=table_line)


def _start(head: bytes, mapping: Mapping, file: str, raw: RawFile, overrides=None):
    """(byte offset of the table's header row, its line, block converter, layout)."""
    skip = len(_BOM) if head.startswith(_BOM) else 0
    try:
        first = head[skip:skip + 4096].split(b"\n", 1)[0].decode("utf-8").strip()
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


def _located(exc: Exception, names: list[str], table_line: int, file: str) -> InputError:
    """pyarrow's parse error with its row turned into the file's line number."""
    text = str(exc)
    row = _ROW.search(text)
    col = _COLUMN.search(text)
    column = names[int(col.group(1))] if col and int(col.group(1)) < len(names) else None
    message = text.split(": ", 2)[-1] if row else text
    return InputError(message, file=file, row=table_line - 1 + int(row.group(1)) if row else None,
                      column=column)
