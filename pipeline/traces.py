"""Segmentation of a device's pulse series into traces, and its step map dG(G).

A *series* is every row of one device at one pulse width, in (cycle, pulse) order. A
*trace* is a run of identical pulses within a cycle: (cycle, direction, amplitude). The
*step map* pairs the state before each pulse with the step that pulse caused; steps are
only taken between consecutive reads of the same cycle.

Amplitude staircases (the amplitude changes every few pulses) have no runs long enough
to fit a trace: ``check_protocol`` rejects them with a message naming the protocol; their
steps can still be grouped by amplitude with ``step_map(..., by_amplitude=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import InputError

SERIES_KEY = ["wafer", "die", "device", "pulse_width_s"]
MIN_RUN = 5  # identical pulses needed for a trace
# the canonical columns series_from_frame reads: all a fit needs from the store
FRAME_COLUMNS = [*SERIES_KEY, "cycle", "pulse", "conductance_s", "direction", "pulse_amplitude_v",
                 "state_unit", "energy_j", "die_x", "die_y", "device_area_m2"]


@dataclass(frozen=True)
class Series:
    wafer: str
    die: str
    device: str
    pulse_width_s: float
    state: np.ndarray        # conductance (or declared state unit) after each pulse
    up: np.ndarray           # bool, direction of each pulse
    cycle: np.ndarray
    amplitude: np.ndarray
    state_unit: str
    energy_j: np.ndarray | None = None
    area_m2: float | None = None
    die_x: int | None = None
    die_y: int | None = None

    @property
    def key(self) -> tuple:
        return (self.wafer, self.die, self.device, self.pulse_width_s)


@dataclass(frozen=True)
class Trace:
    cycle: int
    up: bool
    amplitude: float
    state_before: float      # read before the first pulse (nan at a cycle start)
    states: np.ndarray       # reads after each pulse


@dataclass(frozen=True)
class StepMap:
    g: np.ndarray            # state before the pulse
    dg: np.ndarray           # step caused by the pulse
    up: np.ndarray           # bool
    amplitude: np.ndarray
    index: np.ndarray        # position of the pulse in the series


def series_from_frame(df: pd.DataFrame) -> list[Series]:
    """Split canonical rows into device series (sorted by key, then cycle, pulse).

    Rows are ordered with one stable index sort and each series is a slice of numpy
    columns: per-group pandas indexing cost more than fitting a series, and string
    columns are never turned into Python objects row by row (at 10,000 series that was
    gigabytes)."""
    df = df.dropna(subset=SERIES_KEY)
    if len(df) == 0:
        return []
    group = df.groupby(SERIES_KEY, sort=True).ngroup().to_numpy()
    order = np.lexsort((df["pulse"].to_numpy(), df["cycle"].to_numpy(), group))  # stable
    group = group[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], len(group)]
    first = df.iloc[order[starts]]  # one row per series: keys and per-series columns

    def column(name, dtype=None):
        return df[name].to_numpy(dtype)[order] if name in df else None

    state, amp, energy = column("conductance_s", float), column("pulse_amplitude_v", float), column("energy_j", float)
    up = (df["direction"] == "up").to_numpy(bool)[order]
    cycle = column("cycle")
    area = (pd.to_numeric(df["device_area_m2"], errors="coerce").to_numpy(float)[order]
            if "device_area_m2" in df else None)
    keys = [first[k].to_numpy() for k in SERIES_KEY]
    unit = first["state_unit"].to_numpy() if "state_unit" in df else None
    xy = {c: first[c].to_numpy() for c in ("die_x", "die_y") if c in df}
    out = []
    for i, (a, b) in enumerate(zip(starts, ends)):
        out.append(Series(
            wafer=keys[0][i], die=keys[1][i], device=keys[2][i], pulse_width_s=float(keys[3][i]),
            state=state[a:b], up=up[a:b], cycle=cycle[a:b], amplitude=amp[a:b],
            state_unit=str(unit[i]) if unit is not None else "S",
            energy_j=energy[a:b] if energy is not None else None,
            area_m2=_first_finite(area, a, b),
            die_x=_int_or_none(xy, "die_x", i), die_y=_int_or_none(xy, "die_y", i)))
    return out


def _int_or_none(col: dict, name: str, i: int) -> int | None:
    if name not in col or pd.isna(col[name][i]):
        return None
    return int(col[name][i])


def _runs(s: Series) -> np.ndarray:
    """Start flags of runs of identical pulses within a cycle."""
    amp = np.nan_to_num(s.amplitude, nan=0.0)
    new = np.ones(len(s.state), bool)
    new[1:] = (s.cycle[1:] != s.cycle[:-1]) | (s.up[1:] != s.up[:-1]) | (amp[1:] != amp[:-1])
    return new


def check_protocol(s: Series) -> None:
    """Raise InputError for an amplitude staircase (no identical-pulse runs to fit)."""
    starts = np.flatnonzero(_runs(s))
    lengths = np.diff(np.r_[starts, len(s.state)])
    if np.median(lengths) < MIN_RUN:
        n_amp = len(np.unique(s.amplitude[np.isfinite(s.amplitude)]))
        raise InputError(
            f"{s.wafer}/{s.die}/{s.device} at {s.pulse_width_s:g} s looks like an amplitude "
            f"staircase ({n_amp} amplitudes, median run of {np.median(lengths):g} identical "
            f"pulses): identical-pulse model fits need runs of >= {MIN_RUN}; use "
            "step_map(..., by_amplitude=True) for its steps")


def traces(s: Series) -> list[Trace]:
    starts = np.flatnonzero(_runs(s))
    ends = np.r_[starts[1:], len(s.state)]
    out = []
    for a, b in zip(starts, ends):
        before = s.state[a - 1] if a > 0 and s.cycle[a - 1] == s.cycle[a] else np.nan
        out.append(Trace(int(s.cycle[a]), bool(s.up[a]), float(s.amplitude[a]), float(before),
                         s.state[a:b]))
    return out


def step_map(s: Series, by_amplitude: bool = False) -> StepMap | dict[float, StepMap]:
    same_cycle = s.cycle[1:] == s.cycle[:-1]
    idx = np.flatnonzero(same_cycle) + 1
    sm = StepMap(g=s.state[idx - 1], dg=s.state[idx] - s.state[idx - 1], up=s.up[idx],
                 amplitude=s.amplitude[idx], index=idx)
    if not by_amplitude:
        return sm
    return {float(a): StepMap(sm.g[m], sm.dg[m], sm.up[m], sm.amplitude[m], sm.index[m])
            for a in np.unique(sm.amplitude) for m in [sm.amplitude == a]}


def _first_finite(values: np.ndarray | None, a: int, b: int) -> float | None:
    if values is None:
        return None
    finite = np.flatnonzero(np.isfinite(values[a:b]))
    return float(values[a + finite[0]]) if len(finite) else None
