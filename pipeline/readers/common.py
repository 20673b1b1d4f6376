"""Pieces every reader shares: raw bytes, table parsing with row-exact errors, lineage."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..errors import InputError
from ..schema import COLUMNS, READ, conform

MAX_HEADER_LINES = 200
MAX_HEADER_BYTES = 64 * 1024
MAX_INFLATED_BYTES = 256 << 20  # a gzip file read whole may expand to this much, no more
_DIE_XY = re.compile(r"^\s*X(-?\d+)\s*Y(-?\d+)\s*$", re.I)
_DIE_PAIR = re.compile(r"^\s*\(\s*(-?\d+)\s*[,;]\s*(-?\d+)\s*\)\s*$")
_LINE_END = r"\r\n|\r|\n"  # a line ends as pyarrow's CSV parser ends it
EOL = re.compile(_LINE_END.encode())
_COMMENT = ord("#")


@dataclass(frozen=True)
class RawFile:
    """A file's bytes (decompressed when gzip) and the SHA-256 of the bytes on disk."""

    path: Path
    data: bytes
    sha256: str
    size_on_disk: int = 0

    @property
    def name(self) -> str:
        return str(self.path)


def load(path: str | Path) -> RawFile:
    path = Path(path)
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    data = raw
    if raw[:2] == b"\x1f\x8b":
        data = _inflate(raw, str(path))
    if not data.strip():
        raise InputError("file is empty", file=str(path))
    if b"\x00" in data[:8192] and data[:4] != b"PAR1":
        raise InputError("binary file (NUL bytes), not a text measurement file", file=str(path))
    return RawFile(path=path, data=data, sha256=sha, size_on_disk=len(raw))


def _inflate(raw: bytes, file: str, limit: int = MAX_INFLATED_BYTES) -> bytes:
    """Decompress gzip ``raw`` (every member), refusing to expand past ``limit`` bytes:
    a small gzip bomb must not exhaust memory. Inflated 16 MiB at a time, so the peak
    stays near ``limit``."""
    out, rest = bytearray(), raw
    try:
        while rest:
            d = zlib.decompressobj(wbits=31)
            while True:
                piece = d.decompress(rest, min(16 << 20, limit + 1 - len(out)))
                out += piece
                if len(out) > limit:
                    raise InputError(f"gzip file expands beyond {limit / 2**20:g} MiB (a gzip "
                                     "bomb?); not read", file=file)
                rest = d.unconsumed_tail
                if d.eof or not (rest or piece):
                    break
            if not d.eof:
                raise EOFError("compressed file ended before the end-of-stream marker")
            rest = d.unused_data.lstrip(b"\x00")  # members may follow; padding may not
    except (zlib.error, EOFError) as exc:
        raise InputError(f"corrupt gzip file ({exc})", file=file) from None
    return bytes(out)


def decode(raw: RawFile) -> str:
    """UTF-8 text; a leading byte-order mark is accepted and dropped."""
    try:
        return raw.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.data[: exc.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text (byte 0x{raw.data[exc.start]:02x})",
                         file=raw.name, row=line) from None


def first_line(text: str) -> str:
    """The first line of ``text``, whatever its line ending (``\\n``, ``\\r\\n`` or ``\\r``)."""
    return re.split(_LINE_END, text, maxsplit=1)[0]


def scan_lines(data: bytes, first: int) -> tuple[bytes, np.ndarray, int]:
    """(``data`` without its comment lines, the file line of each line left that is not
    empty, the number of lines in ``data``); ``first`` is the file line of its first line.

    Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` and empty lines are skipped, as
    pyarrow's CSV parser does, so the n-th row it parses is the n-th line counted here.
    A comment line starts with ``#`` (a note among the rows) and is dropped."""
    a = np.frombuffer(data, np.uint8)
    lf = np.flatnonzero(a == 10)
    cr = np.flatnonzero(a == 13)
    crlf = np.isin(lf - 1, cr) if len(cr) else np.zeros(len(lf), bool)
    last = lf if not len(cr) else np.sort(np.r_[lf, cr[~np.isin(cr + 1, lf)]])
    begin = last - np.isin(last, lf[crlf]) if len(cr) else last  # where each ending begins
    starts = np.r_[0, last + 1]
    ends = np.r_[begin, len(a)]
    if starts[-1] == len(a):     # nothing after the last line ending
        starts, ends = starts[:-1], ends[:-1]
    full = ends > starts
    comment = np.zeros(len(starts), bool)
    comment[full] = a[starts[full]] == _COMMENT
    lines = first + np.flatnonzero(full & ~comment).astype(np.int64)
    if comment.any():
        nxt = np.r_[starts[1:], len(a)]
        keep, pos = [], 0
        for i in np.flatnonzero(comment):
            keep.append(data[pos:starts[i]])
            pos = nxt[i]
        data = b"".join(keep) + data[pos:]
    return data, lines, len(starts)


def sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in ("\t", ",", ";")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def parse_table(data: bytes | str, *, delimiter: str, first_line: int, file: str,
                numeric: tuple[str, ...] = (), header: bool = True,
                names: list[str] | None = None) -> tuple[pa.Table, np.ndarray]:
    """Parse a delimited table: (table, the file line of each row). Errors name the file
    line and column; blank and comment lines (``scan_lines``) may sit among the rows.

    ``first_line`` is the 1-based line number of the table's first line (its header row
    when ``header``). Numeric columns named in ``numeric`` must parse as numbers.
    """
    if isinstance(data, str):
        data = data.encode()
    original = data
    data, lines, _ = scan_lines(data, first_line)
    # One file per thread: the ingest pool parallelises across files, and pyarrow's own
    # threads would only add hand-off waits on tables this small.
    read_opts = pacsv.ReadOptions(autogenerate_column_names=not header and names is None,
                                  column_names=names, use_threads=False)
    parse_opts = pacsv.ParseOptions(delimiter=delimiter)

    def read(typ):
        return pacsv.read_csv(io.BytesIO(data), read_options=read_opts, parse_options=parse_opts,
                              convert_options=pacsv.ConvertOptions(
                                  column_types={c: typ for c in numeric}, strings_can_be_null=False,
                                  null_values=[""]))

    try:
        table = read(pa.float64())  # the fast path: clean numbers
    except pa.ArrowInvalid:
        try:
            table = read(pa.string())  # locate the bad cell, or accept padded numbers
        except pa.ArrowInvalid:
            try:
                text = original.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError("not UTF-8 text", file=file, row=first_line - 1 + scan_lines(
                    original[: exc.start + 1], 1)[2]) from None
            _raise_shape_error(text, delimiter, first_line, file, header)
            raise InputError("table could not be parsed", file=file) from None
    rows = lines[1:] if header else lines
    if table.num_rows == 0:
        raise InputError("table has a header but no data rows", file=file,
                         row=int(lines[0]) if len(lines) else first_line)
    if len(rows) != table.num_rows:  # e.g. quoted line breaks: lineage would be wrong
        raise InputError(f"{table.num_rows} rows parsed from {len(rows)} lines (a line break "
                         "inside a quoted value?)", file=file)
    columns = {}
    for name in table.column_names:
        col = table.column(name)
        if name in numeric and not pa.types.is_floating(col.type):
            col = _to_float(col, name, rows, file)
        columns[name] = col
    return pa.table(columns), rows


def _to_float(col: pa.ChunkedArray, name: str, rows: np.ndarray, file: str) -> pa.Array:
    stripped = pc.utf8_trim_whitespace(col)
    try:
        return pc.cast(stripped, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = stripped.to_numpy(zero_copy_only=False)
        for i, v in enumerate(values):
            try:
                float(v)
            except (TypeError, ValueError):
                raise InputError(f"not a number: {v!r}", file=file, row=int(rows[i]),
                                 column=name) from None
        raise InputError("column could not be read as numbers", file=file, column=name) from None


def _raise_shape_error(text: str, delimiter: str, first_line: int, file: str, header: bool):
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    expected = None
    try:
        for row in rows:
            if not row or row[0].startswith("#"):  # blank or comment (``scan_lines``)
                continue
            if expected is None:
                expected = len(row)
                continue
            if len(row) != expected:
                raise InputError(f"expected {expected} fields, found {len(row)}"
                                 + (" (truncated row?)" if len(row) < expected else ""),
                                 file=file, row=first_line + rows.line_num - 1)
    except csv.Error as exc:
        raise InputError(f"malformed table ({exc})", file=file,
                         row=first_line + max(rows.line_num - 1, 0)) from None


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is UTC. ValueError when it is not one."""
    ts = datetime.fromisoformat(text.strip())
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def timestamps(values, name: str, lines: np.ndarray, file: str) -> pa.Array:
    """A column of times (ISO 8601 text, or parquet timestamps) as the schema's UTC
    timestamps; naive times are UTC. A value that is not a time is an error at its row
    (``lines``: the file line of each value)."""
    typ = COLUMNS["measured_at"]
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if pa.types.is_timestamp(values.type):
        if values.type.tz is None:
            values = pc.assume_timezone(values, "UTC")
        return pc.cast(values, typ)
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), typ)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise InputError(f"holds {values.type}, expected a timestamp (ISO 8601 text)",
                         file=file, column=name)
    distinct = pc.unique(values)  # a file holds few distinct times: parse each once
    parsed = []
    for v in distinct.to_pylist():
        try:
            parsed.append(None if v is None else parse_timestamp(v))
        except ValueError:
            i = int(np.argmax(np.asarray(pc.equal(values, v).fill_null(False))))
            raise InputError(f"timestamp {v!r} is not ISO 8601", file=file,
                             row=int(lines[i]), column=name) from None
    return pa.array(parsed, typ).take(pc.index_in(values, value_set=distinct))


def die_position(die: str) -> tuple[str, int | None, int | None]:
    """Normalise a die name; ``X03Y05`` and ``(3, 5)`` both give ("X03Y05", 3, 5)."""
    for pattern in (_DIE_XY, _DIE_PAIR):
        m = pattern.match(die)
        if m:
            x, y = int(m.group(1)), int(m.group(2))
            return (f"X{x:02d}Y{y:02d}" if x >= 0 and y >= 0 else die.strip()), x, y
    return die.strip(), None, None


def derive_direction(amplitude, positive_is_up: bool = True, zero_is_read: bool = False) -> pa.Array:
    """Direction from the write amplitude sign, by the declared convention.

    Some HZO tunnel junctions lower G under positive pulses: their mapping declares
    ``positive_amplitude = "down"``. Zero or missing amplitudes give no direction, or
    ``"read"`` for a zero amplitude when ``zero_is_read`` (a read without a pulse).
    """
    amp = pa.array(amplitude, pa.float64()) if not isinstance(amplitude, (pa.Array, pa.ChunkedArray)) \
        else amplitude
    up = pc.greater(amp, 0.0) if positive_is_up else pc.less(amp, 0.0)
    down = pc.less(amp, 0.0) if positive_is_up else pc.greater(amp, 0.0)
    none = pa.scalar(None, pa.string())
    rest = pc.if_else(pc.equal(amp, 0.0), READ, none) if zero_is_read else none
    return pc.if_else(up, "up", pc.if_else(down, "down", rest))


def number_loops(direction, state: dict) -> np.ndarray:
    """Cycle numbers for rows in file order: a new cycle starts where the pulse direction
    returns to the file's first direction after the other one. A read takes the loop of
    the pulse after it. ``state`` carries the count across the blocks of one file (a read
    that ends a block joins the loop before it)."""
    d = np.asarray(pa.array(direction, pa.string()).to_pylist(), dtype=object)
    code = np.where(d == "up", 1, np.where(d == "down", -1, 0))
    idx = np.where(code != 0, np.arange(len(code)), len(code))
    nxt = np.minimum.accumulate(idx[::-1])[::-1]  # next pulse at or after each row
    last = state.get("last", 0)
    eff = np.where(nxt < len(code), code[np.minimum(nxt, len(code) - 1)], 0)
    if (eff == 0).any():  # reads after the block's last pulse
        pulses = np.flatnonzero(code)
        eff[eff == 0] = code[pulses[-1]] if len(pulses) else last
    first = state.get("first") or (int(eff[eff != 0][0]) if (eff != 0).any() else 0)
    prev = np.r_[last, eff[:-1]]
    cycle = state.get("cycle", 1) + np.cumsum((eff == first) & (prev == -first) & (first != 0))
    state.update(first=first, last=int(eff[-1]) if len(eff) else last,
                 cycle=int(cycle[-1]) if len(cycle) else state.get("cycle", 1))
    return cycle

def finish(columns: dict[str, pa.Array | object], n: int, raw: RawFile,
           lines: np.ndarray) -> pa.Table:
    """Broadcast scalars, add lineage columns (``lines``: the file line of each row) and
    cast to the canonical schema."""
    arrays = {}
    for name, value in columns.items():
        if isinstance(value, (pa.Array, pa.ChunkedArray, np.ndarray)):
            arrays[name] = value
        else:
            arrays[name] = pa.repeat(pa.scalar(value), n) if value is not None else pa.nulls(n)
    arrays["source_file"] = pa.repeat(pa.scalar(raw.path.name), n)
    arrays["source_sha256"] = pa.repeat(pa.scalar(raw.sha256), n)
    arrays["source_row"] = pa.array(np.asarray(lines, dtype=np.int64))
    try:
        return number_across_directions(conform(pa.table(arrays)))
    except KeyError as exc:
        raise InputError(f"required column {exc.args[0]!r} is missing", file=raw.name,
                         column=exc.args[0]) from None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"wrong value type ({exc})", file=raw.name) from None


_RUN = ("wafer", "die", "device", "pulse_width_s", "cycle")


def number_across_directions(table: pa.Table) -> pa.Table:
    """Pulses numbered 1..N per direction within a cycle (many tidy exports: 1..N up,
    then 1..N down) become one count per cycle: where the number falls back exactly as
    the direction changes, the new direction's pulses continue after the last one.
    A fall-back without a direction change is left for validation to refuse.
    (Streamed big files are converted block by block; such a fall-back at a block's
    first row is not seen here, and validation refuses it.)"""
    pulse = np.asarray(table.column("pulse").to_numpy(zero_copy_only=False))
    if len(pulse) < 2 or table.column("pulse").null_count:
        return table
    back = np.flatnonzero(pulse[1:] <= pulse[:-1]) + 1
    if not len(back):
        return table  # the usual case
    direction = np.asarray(table.column("direction").to_pylist(), dtype=object)
    new_run = np.zeros(len(pulse), bool)
    new_run[0] = True
    for k in _RUN:
        col = table.column(k)
        new_run[1:] |= np.asarray(pc.not_equal(col.slice(1), col.slice(0, len(pulse) - 1))
                                  .fill_null(True))
    turn = (direction[back] != direction[back - 1]) & ~new_run[back] \
        & np.isin(direction[back], ("up", "down")) & np.isin(direction[back - 1], ("up", "down"))
    restarts = back[turn]
    if not len(restarts):
        return table
    run_end = np.r_[np.flatnonzero(new_run)[1:], len(pulse)]
    adjusted = pulse.astype(np.int64)
    for r in restarts:
        end = run_end[np.searchsorted(run_end, r, side="right")]
        adjusted[r:end] += adjusted[r - 1] - adjusted[r] + 1
    i = table.schema.get_field_index("pulse")
    return table.set_column(i, "pulse", pa.array(adjusted, COLUMNS["pulse"]))


def override_fields(table: pa.Table, overrides: dict[str, str] | None) -> pa.Table:
    """``table`` with each ``field -> text`` of ``overrides`` as a constant column
    (canonical files; instrument files take overrides through their mapping)."""
    from .mapping import parse_override

    for target, text in (overrides or {}).items():
        value = parse_override(target, text)
        columns = {target: value}
        if target == "die":
            columns["die"], columns["die_x"], columns["die_y"] = die_position(value)
        for name, v in columns.items():
            col = pa.array([v] * table.num_rows, COLUMNS[name])
            table = table.set_column(table.schema.get_field_index(name), name, col)
    return table
