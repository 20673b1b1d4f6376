"""Two-column up/down trace files, e.g. ``shared/data/real/gong_et_al_reram.csv``.

No header; column 1 is the trace under repeated potentiation pulses, column 2 the trace
under repeated depression pulses, consecutive reads. The file says nothing about the
device, so wafer, die, device and pulse width come from the caller. The values are
device states in the unit the caller declares (default ``normalized``: the Gong et al.
trace holds states in about [-1, 1], not siemens). The write amplitude is unknown unless
given; the rows then carry no amplitude and an explicit direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..schema import STATE_UNITS
from .common import RawFile, decode, finish, first_line, parse_table, sniff_delimiter


@dataclass(frozen=True)
class TraceOptions:
    wafer: str
    device: str
    pulse_width_s: float
    die: str = "X00Y00"
    amplitude_v: float | None = None
    state_unit: str = "normalized"
    direction: str | None = None   # set for a digitised one-direction trace (``digitised``)


def looks_like(first_line: str) -> bool:
    parts = first_line.replace("\t", ",").replace(";", ",").split(",")
    if len(parts) != 2:
        return False
    try:
        [float(p) for p in parts]
    except ValueError:
        return False
    return True


def read_updown(raw: RawFile, opts: TraceOptions | None) -> pa.Table:
    if opts is None:
        raise InputError("two-column up/down trace: give --wafer, --device and --pulse-width "
                         "(the file itself names no device)", file=raw.name)
    if opts.state_unit not in STATE_UNITS:
        raise InputError(f"state unit must be one of {STATE_UNITS}", file=raw.name)
    text = decode(raw)
    delimiter = sniff_delimiter(first_line(text))
    table, lines = parse_table(text, delimiter=delimiter, first_line=1, file=raw.name,
                               numeric=("up", "down"), header=False, names=["up", "down"])
    up = np.asarray(table.column("up"), float)
    down = np.asarray(table.column("down"), float)
    n = len(up)
    state = np.concatenate([up, down])
    amp = pa.nulls(2 * n, pa.float64()) if opts.amplitude_v is None else pa.array(np.concatenate(
        [np.full(n, abs(opts.amplitude_v)), np.full(n, -abs(opts.amplitude_v))]))
    fields = {
        "wafer": opts.wafer, "die": opts.die, "device": opts.device,
        "pulse_width_s": float(opts.pulse_width_s),
        "pulse_amplitude_v": amp,
        # Two separate measurements, not one continuous series: cycle 1 holds the up
        # trace, cycle 2 the down trace, so no step is taken across the seam.
        "cycle": pa.array(np.repeat(np.array([1, 2], np.int32), n)),
        "pulse": pa.array(np.tile(np.arange(1, n + 1, dtype=np.int32), 2)),
        "conductance_state": pa.array(state),
        "direction": pa.array(["up"] * n + ["down"] * n),
        "state_unit": opts.state_unit,
    }
    # Each line gives a row of column 1 and one of column 2: both keep the line's number.
    return finish(fields, 2 * n, raw, np.tile(lines, 2))
