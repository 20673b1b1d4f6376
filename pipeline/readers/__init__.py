"""Readers: every input format becomes the canonical table (``pipeline.schema``).

``read_file`` picks the reader from the file's content:

- ``.parquet``, or a CSV whose header names canonical columns: ``canonical``;
- a ``key:<TAB>value`` header block: ``instrument`` (with a mapping file);
- two numeric columns and no header: ``updown`` (needs ``TraceOptions``);
- a digitised literature trace, (pulse, state) pairs of one direction: ``digitised``
  (chosen by the caller: ``TraceOptions(direction=...)``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..errors import InputError
from . import canonical, digitised, instrument, updown
from .common import EOL, RawFile, load, override_fields
from .mapping import DEFAULT_MAPPING, Mapping, load_mapping
from .updown import TraceOptions

__all__ = ["read_file", "read_raw", "load", "RawFile", "TraceOptions", "Mapping",
           "load_mapping", "DEFAULT_MAPPING", "detect_format"]


def detect_format(raw: RawFile) -> str:
    if raw.path.suffix == ".parquet" or raw.data[:4] == b"PAR1":
        return "canonical"
    first = EOL.split(raw.data[:4096], 1)[0].decode("utf-8-sig", errors="replace").strip()
    if canonical.looks_like(first):
        return "canonical"
    if instrument.looks_like(first):
        return "instrument"
    if updown.looks_like(first):
        return "updown"
    raise InputError("unknown file format: expected a canonical CSV/parquet, an instrument "
                     "export with a 'key:<TAB>value' header, or a two-column up/down trace",
                     file=raw.name, row=1)


def read_raw(raw: RawFile, mapping: Mapping | None = None,
             trace: TraceOptions | None = None, overrides: dict[str, str] | None = None) -> pa.Table:
    """``overrides`` (canonical field -> text) replace what the file says, e.g. a die
    the export does not name: ``{"die": "X05Y29"}``."""
    if trace is not None and trace.direction is not None:
        return override_fields(digitised.read_digitised(raw, trace), overrides)
    kind = detect_format(raw)
    if kind == "instrument":
        return instrument.read_instrument(raw, (mapping or load_mapping()).with_overrides(overrides))
    table = canonical.read_canonical(raw) if kind == "canonical" else updown.read_updown(raw, trace)
    return override_fields(table, overrides)


def read_file(path: str | Path, mapping: Mapping | None = None,
              trace: TraceOptions | None = None, overrides: dict[str, str] | None = None) -> pa.Table:
    """Read one raw file into the canonical table (not yet validated)."""
    return read_raw(load(path), mapping, trace, overrides)
