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
from .schema import StateScale

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
    """Pairs (state before a pulse, step it caused): what the model families fit.

    ``scale`` None: ``g`` and ``dg`` are in the series' state unit (``step_map``);
    otherwise they are normalised and ``scale.state(g)`` is the state (``normalised``).
    """

    g: np.ndarray                       # state before the pulse
    dg: np.ndarray                      # step caused by the pulse
    up: np.ndarray                      # bool
    amplitude: np.ndarray | None = None
    index: np.ndarray | None = None     # position of the pulse in the series
    scale: StateScale | None = None

    def normalised(self, scale: StateScale) -> "StepMap":
        """The same steps in the normalised g of ``scale``."""
        return StepMap(scale.g(self.g), scale.g_step(self.dg), self.up, self.amplitude,
                       self.index, scale)

    def select(self, mask: np.ndarray) -> "StepMap":
        def pick(a):
            return None if a is None else a[mask]
        return StepMap(self.g[mask], self.dg[mask], self.up[mask], pick(self.amplitude),
                       pick(self.index), self.scale)


def series_from_frame(df: pd.DataFrame) -> list[Series]:
    """Split canonical rows into device series (sorted by cycle, pulse)."""
    out = []
    df = df.sort_values([*SERIES_KEY, "cycle", "pulse"], kind="stable")
    for key, g in df.groupby(SERIES_KEY, sort=True):
        x = g["die_x"].iloc[0] if "die_x" in g else None
        y = g["die_y"].iloc[0] if "die_y" in g else None
        out.append(Series(
            wafer=key[0], die=key[1], device=key[2], pulse_width_s=float(key[3]),
            state=g["conductance_state"].to_numpy(float), up=(g["direction"] == "up").to_numpy(),
            cycle=g["cycle"].to_numpy(), amplitude=g["pulse_amplitude_v"].to_numpy(float),
            state_unit=str(g["state_unit"].iloc[0]) if "state_unit" in g else "S",
            energy_j=g["energy_j"].to_numpy(float) if "energy_j" in g else None,
            area_m2=_first_value(g, "device_area_m2"),
            die_x=None if x is None or pd.isna(x) else int(x),
            die_y=None if y is None or pd.isna(y) else int(y)))
    return out


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
    return {float(a): sm.select(sm.amplitude == a) for a in np.unique(sm.amplitude)}


def _first_value(df: pd.DataFrame, column: str) -> float | None:
    if column not in df:
        return None
    values = df[column].dropna()
    return float(values.iloc[0]) if len(values) else None
