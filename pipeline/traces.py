"""Segmentation of a device's pulse series into traces, and its step map dG(G).

A *series* is every row of one device at one pulse width, in (cycle, pulse) order. The
*step map* pairs the state before each pulse with the step that pulse caused; steps are
only taken between consecutive reads of the same cycle. A row with direction ``read``
(a read without a pulse, e.g. a staircase's 0 V row) causes no step; its state is the
state before the next pulse.

Two protocols (``protocol``), both fitted:

- identical-pulse trains: a *trace* is a run of identical pulses within a cycle
  (cycle, direction, amplitude);
- amplitude staircases (incremental step pulse programming: the amplitude changes every
  pulse or every few pulses, median run of identical pulses under ``MIN_RUN``): fitted as
  their makers do, each staircase step one update, so a trace is a run of one direction
  within a cycle whatever the amplitudes. Its steps can still be grouped by amplitude
  with ``step_map(..., by_amplitude=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import InputError
from .schema import READ

SERIES_KEY = ["wafer", "die", "device", "pulse_width_s"]
MIN_RUN = 5  # identical pulses needed for a trace


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
    pulse: np.ndarray | None = None   # bool, False for reads without a pulse; None: all pulses

    @property
    def key(self) -> tuple:
        return (self.wafer, self.die, self.device, self.pulse_width_s)

    @property
    def pulsed(self) -> np.ndarray:
        return np.ones(len(self.state), bool) if self.pulse is None else self.pulse


@dataclass(frozen=True)
class Trace:
    cycle: int
    up: bool
    amplitude: float
    state_before: float      # read before the first pulse (nan at a cycle start)
    states: np.ndarray       # reads after each pulse
    rows: np.ndarray | None = None  # positions of its pulses in the series


@dataclass(frozen=True)
class StepMap:
    g: np.ndarray            # state before the pulse
    dg: np.ndarray           # step caused by the pulse
    up: np.ndarray           # bool
    amplitude: np.ndarray
    index: np.ndarray        # position of the pulse in the series


def series_from_frame(df: pd.DataFrame) -> list[Series]:
    """Split canonical rows into device series (sorted by cycle, pulse)."""
    out = []
    df = df.sort_values([*SERIES_KEY, "cycle", "pulse"], kind="stable")
    for key, g in df.groupby(SERIES_KEY, sort=True):
        reads = (g["direction"] == READ).to_numpy()
        x = g["die_x"].iloc[0] if "die_x" in g else None
        y = g["die_y"].iloc[0] if "die_y" in g else None
        out.append(Series(
            wafer=key[0], die=key[1], device=key[2], pulse_width_s=float(key[3]),
            state=g["conductance_s"].to_numpy(float), up=(g["direction"] == "up").to_numpy(),
            cycle=g["cycle"].to_numpy(), amplitude=g["pulse_amplitude_v"].to_numpy(float),
            state_unit=str(g["state_unit"].iloc[0]) if "state_unit" in g else "S",
            energy_j=g["energy_j"].to_numpy(float) if "energy_j" in g else None,
            area_m2=_first_value(g, "device_area_m2"),
            die_x=None if x is None or pd.isna(x) else int(x),
            die_y=None if y is None or pd.isna(y) else int(y),
            pulse=~reads if reads.any() else None))
    return out


def _runs(s: Series, by_amplitude: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the pulses, start flags of runs among them): runs of one direction within
    a cycle, and of one amplitude too when ``by_amplitude``."""
    rows = np.flatnonzero(s.pulsed)
    cycle, up = s.cycle[rows], s.up[rows]
    new = np.ones(len(rows), bool)
    new[1:] = (cycle[1:] != cycle[:-1]) | (up[1:] != up[:-1])
    if by_amplitude:
        amp = np.nan_to_num(s.amplitude[rows], nan=0.0)
        new[1:] |= amp[1:] != amp[:-1]
    return rows, new


def protocol(s: Series) -> str:
    """``staircase`` when the median run of identical pulses is shorter than ``MIN_RUN``,
    else ``identical``."""
    rows, new = _runs(s)
    lengths = np.diff(np.r_[np.flatnonzero(new), len(rows)])
    return "staircase" if len(lengths) and np.median(lengths) < MIN_RUN else "identical"


def check_protocol(s: Series) -> None:
    """Raise InputError when no trace has two pulses (directions alternate every pulse):
    neither protocol then has a trace to re-simulate."""
    rows, new = _runs(s, by_amplitude=protocol(s) == "identical")
    lengths = np.diff(np.r_[np.flatnonzero(new), len(rows)])
    if not len(lengths) or lengths.max() < 2:
        raise InputError(f"{s.wafer}/{s.die}/{s.device} at {s.pulse_width_s:g} s has no two "
                         "consecutive pulses of one direction: no trace to fit")


def amplitude_ranges(s: Series) -> dict:
    """Protocol and write-amplitude range per direction (what a model version records)."""
    out = {"protocol": protocol(s)}
    for name, mask in (("up", s.up), ("down", ~s.up)):
        amp = s.amplitude[mask & s.pulsed]
        amp = amp[np.isfinite(amp)]
        out[f"amplitude_{name}_min_v"] = float(amp.min()) if len(amp) else float("nan")
        out[f"amplitude_{name}_max_v"] = float(amp.max()) if len(amp) else float("nan")
    return out


def traces(s: Series) -> list[Trace]:
    """Identical-pulse runs, or for a staircase each direction's run within a cycle."""
    staircase = protocol(s) == "staircase"
    rows, new = _runs(s, by_amplitude=not staircase)
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(rows)]
    out = []
    for a, b in zip(starts, ends):
        first = rows[a]
        before = s.state[first - 1] if first > 0 and s.cycle[first - 1] == s.cycle[first] else np.nan
        amplitude = float("nan") if staircase else float(s.amplitude[first])
        out.append(Trace(int(s.cycle[first]), bool(s.up[first]), amplitude, float(before),
                         s.state[rows[a:b]], rows[a:b]))
    return out


def step_map(s: Series, by_amplitude: bool = False) -> StepMap | dict[float, StepMap]:
    same_cycle = (s.cycle[1:] == s.cycle[:-1]) & s.pulsed[1:]
    idx = np.flatnonzero(same_cycle) + 1
    sm = StepMap(g=s.state[idx - 1], dg=s.state[idx] - s.state[idx - 1], up=s.up[idx],
                 amplitude=s.amplitude[idx], index=idx)
    if not by_amplitude:
        return sm
    return {float(a): StepMap(sm.g[m], sm.dg[m], sm.up[m], sm.amplitude[m], sm.index[m])
            for a in np.unique(sm.amplitude) for m in [sm.amplitude == a]}


def _first_value(df: pd.DataFrame, column: str) -> float | None:
    if column not in df:
        return None
    values = df[column].dropna()
    return float(values.iloc[0]) if len(values) else None
