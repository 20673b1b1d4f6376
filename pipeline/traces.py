"""Segmentation of a device's pulse series into traces, and its step map dG(G).

A *series* is every row of one device at one pulse width, in (cycle, pulse) order. The
*step map* pairs the state before each pulse with the step that pulse caused; steps are
only taken between consecutive reads of the same cycle. A row with direction ``read``
(a read without a pulse, e.g. a staircase's 0 V row) causes no step; its state is the
state before the next pulse.

Two protocols (``Series.protocol``), both fitted:

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
from functools import cached_property

import numpy as np
import pandas as pd

from .errors import InputError
from .schema import READ, SERIES, StateScale

SERIES_KEY = list(SERIES)
MIN_RUN = 5  # identical pulses needed for a trace
# the canonical columns series_from_frame reads: all a fit needs from the store
FRAME_COLUMNS = [*SERIES_KEY, "cycle", "pulse", "conductance_state", "direction", "pulse_amplitude_v",
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
    pulse: np.ndarray | None = None   # bool, False for reads without a pulse; None: all pulses

    @property
    def key(self) -> tuple:
        return (self.wafer, self.die, self.device, self.pulse_width_s)

    @property
    def pulsed(self) -> np.ndarray:
        return np.ones(len(self.state), bool) if self.pulse is None else self.pulse

    @cached_property
    def protocol(self) -> str:
        """``staircase`` when the median run of identical pulses is shorter than
        ``MIN_RUN``, else ``identical``. Computed once: traces, checks and the model
        version's record all ask."""
        rows, new = _runs(self)
        lengths = np.diff(np.r_[np.flatnonzero(new), len(rows)])
        return "staircase" if len(lengths) and np.median(lengths) < MIN_RUN else "identical"


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

    state, amp, energy = column("conductance_state", float), column("pulse_amplitude_v", float), column("energy_j", float)
    up = (df["direction"] == "up").to_numpy(bool)[order]
    cycle = column("cycle")
    area = (pd.to_numeric(df["device_area_m2"], errors="coerce").to_numpy(float)[order]
            if "device_area_m2" in df else None)
    keys = [first[k].to_numpy() for k in SERIES_KEY]
    unit = first["state_unit"].to_numpy() if "state_unit" in df else None
    xy = {c: first[c].to_numpy() for c in ("die_x", "die_y") if c in df}
    out = []
    reads = (df["direction"] == READ).to_numpy(bool)[order]
    for i, (a, b) in enumerate(zip(starts, ends)):
        out.append(Series(
            wafer=keys[0][i], die=keys[1][i], device=keys[2][i], pulse_width_s=float(keys[3][i]),
            state=state[a:b], up=up[a:b], cycle=cycle[a:b], amplitude=amp[a:b],
            state_unit=str(unit[i]) if unit is not None else "S",
            energy_j=energy[a:b] if energy is not None else None,
            area_m2=_first_finite(area, a, b),
            die_x=_int_or_none(xy, "die_x", i), die_y=_int_or_none(xy, "die_y", i),
            pulse=~reads[a:b] if reads[a:b].any() else None))
    return out


def _int_or_none(col: dict, name: str, i: int) -> int | None:
    if name not in col or pd.isna(col[name][i]):
        return None
    return int(col[name][i])



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


def check_protocol(s: Series) -> None:
    """Raise InputError when no trace has two pulses (directions alternate every pulse):
    neither protocol then has a trace to re-simulate."""
    rows, new = _runs(s, by_amplitude=s.protocol == "identical")
    lengths = np.diff(np.r_[np.flatnonzero(new), len(rows)])
    if not len(lengths) or lengths.max() < 2:
        raise InputError(f"{s.wafer}/{s.die}/{s.device} at {s.pulse_width_s:g} s has no two "
                         "consecutive pulses of one direction: no trace to fit")


def amplitude_ranges(s: Series) -> dict:
    """Protocol and write-amplitude range per direction (what a model version records)."""
    out = {"protocol": s.protocol}
    for name, mask in (("up", s.up), ("down", ~s.up)):
        amp = s.amplitude[mask & s.pulsed]
        amp = amp[np.isfinite(amp)]
        out[f"amplitude_{name}_min_v"] = float(amp.min()) if len(amp) else float("nan")
        out[f"amplitude_{name}_max_v"] = float(amp.max()) if len(amp) else float("nan")
    return out


def traces(s: Series) -> list[Trace]:
    """Identical-pulse runs, or for a staircase each direction's run within a cycle."""
    staircase = s.protocol == "staircase"
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
    return {float(a): sm.select(sm.amplitude == a) for a in np.unique(sm.amplitude)}


def _first_finite(values: np.ndarray | None, a: int, b: int) -> float | None:
    if values is None:
        return None
    finite = np.flatnonzero(np.isfinite(values[a:b]))
    return float(values[a + finite[0]]) if len(finite) else None
