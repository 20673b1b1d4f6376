"""Digitised literature traces: (pulse, state) pairs read off a published LTP or LTD figure.

Device papers publish potentiation (LTP) and depression (LTD) curves as figures; a
digitiser (e.g. WebPlotDigitizer) turns each curve into a file of (pulse, state) pairs,
one pair per line, comma, tab or semicolon separated, with or without a header line.
Each file holds one direction (``TraceOptions.direction``); the two files may differ in
length. The device, pulse width and state unit come from the caller, as for two-column
traces (``updown``).

Digitised pulse numbers are fractional (the click is never exactly on the point): each is
rounded to the nearest whole pulse (halves round up), and points that round to the same
pulse are averaged into one read, whose ``source_row`` is the first of them. Rows are put
in pulse order. The LTP trace is cycle 1 and the LTD trace cycle 2: two measurements, so
no step is taken across the seam.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..schema import DIRECTIONS, STATE_UNITS
from .common import RawFile, decode, finish, first_line, parse_table, sniff_delimiter
from .updown import TraceOptions

CYCLE = {"up": 1, "down": 2}


def read_digitised(raw: RawFile, opts: TraceOptions) -> pa.Table:
    if opts.direction not in DIRECTIONS:
        raise InputError(f"digitised trace direction must be one of {DIRECTIONS}", file=raw.name)
    if opts.state_unit not in STATE_UNITS:
        raise InputError(f"state unit must be one of {STATE_UNITS}", file=raw.name)
    text = decode(raw)
    first = first_line(text)
    delimiter = sniff_delimiter(first)
    header = not _numeric_row(first, delimiter)
    table, lines = parse_table(text[len(first):] if header else text, delimiter=delimiter,
                               first_line=1, file=raw.name, numeric=("pulse", "state"),
                               header=False, names=["pulse", "state"])
    pulse, state, rows = average_rounded(np.asarray(table.column("pulse"), float),
                                         np.asarray(table.column("state"), float), lines)
    n = len(pulse)
    amp = (pa.nulls(n, pa.float64()) if opts.amplitude_v is None
           else pa.array(np.full(n, abs(opts.amplitude_v) * (1 if opts.direction == "up" else -1))))
    fields = {
        "wafer": opts.wafer, "die": opts.die, "device": opts.device,
        "pulse_width_s": float(opts.pulse_width_s), "pulse_amplitude_v": amp,
        "cycle": pa.array(np.full(n, CYCLE[opts.direction], np.int32)),
        "pulse": pa.array(pulse.astype(np.int32)), "conductance_state": pa.array(state),
        "direction": pa.array([opts.direction] * n), "state_unit": opts.state_unit,
    }
    return finish(fields, n, raw, rows)


def _numeric_row(line: str, delimiter: str) -> bool:
    try:
        [float(c) for c in line.strip().split(delimiter)]
    except ValueError:
        return False
    return True


def average_rounded(pulse: np.ndarray, state: np.ndarray, lines: np.ndarray | None = None):
    """(whole pulses ascending, mean state per pulse, file line of each pulse's first
    point): fractional pulse numbers rounded half up, duplicates averaged. ``lines``: the
    file line of each point (default 1, 2, ...)."""
    whole = np.floor(pulse + 0.5).astype(np.int64)
    uniq, first, inverse = np.unique(whole, return_index=True, return_inverse=True)
    mean = np.bincount(inverse, weights=state) / np.bincount(inverse)
    lines = np.arange(1, len(pulse) + 1) if lines is None else np.asarray(lines)
    return uniq, mean, lines[first].astype(np.int64)
