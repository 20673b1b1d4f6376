"""Typed rows of the fit tables, and the one place that turns them into DataFrames.

A table row is the fields of one or more records side by side (the series first, then
what was fitted); its columns are those fields in order. Fields marked ``_HIDDEN`` travel
with a record but are not table columns. Adding a metric is adding a field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # pandas/numpy load on use: the CLI parser imports this module
    import numpy as np
    import pandas as pd

    from .schema import StateScale

NAN = float("nan")
_HIDDEN = {"column": False}


ENGINES = ("batch", "lmfit")  # step-map fit engines; lmfit is the reference (not hashed)


class FitTarget(StrEnum):
    """What lmfit fits: the step map, or the trajectories (read-noise dominated)."""

    STEPS = "steps"
    TRAJECTORY = "trajectory"


@dataclass(frozen=True)
class SeriesInfo:
    """One device at one pulse width: the key columns and where the die sits."""

    wafer: str
    die: str
    device: str
    pulse_width_s: float
    die_x: int | None = None
    die_y: int | None = None
    state_unit: str | None = None

    @property
    def key(self) -> tuple:
        """(wafer, die, device, pulse width): the series key columns."""
        return self.wafer, self.die, self.device, self.pulse_width_s


@dataclass(frozen=True)
class FamilyFit:
    """One family fitted to one series: a row of the ``fits`` table."""

    family: str
    fit_target: FitTarget | None = None
    n_points: int | None = None
    success: bool = False
    nfev: int | None = None
    chisqr: float = NAN
    redchi: float = NAN
    aic: float = NAN
    bic: float = NAN
    r2_steps: float = NAN
    r2_trace: float = NAN
    sp_g: float = NAN
    sp_g_err: float = NAN
    range_lo_g: float = NAN
    range_hi_g: float = NAN
    flag: str = ""
    rank: int | None = None          # among the series' unflagged fits, 1 is chosen
    chosen: bool | None = None
    values: dict = field(default_factory=dict, metadata=_HIDDEN)   # -> params table
    stderr: dict = field(default_factory=dict, metadata=_HIDDEN)
    resid: "np.ndarray | None" = field(default=None, metadata=_HIDDEN, repr=False)

    # what a registered version keeps of the chosen family's fit, in this order
    REGISTRY_COLUMNS: ClassVar[tuple[str, ...]] = (
        "n_points", "chisqr", "redchi", "aic", "bic", "r2_steps", "r2_trace", "sp_g",
        "sp_g_err", "range_lo_g", "range_hi_g", "flag")


@dataclass(frozen=True)
class DeviceFit:
    """The chosen model of one series, its symmetry point, noise and energy: a row of
    the ``devices`` table. ``family`` is None when no fit was acceptable."""

    n_pulses: int
    energy_per_pulse_j: float
    energy_source: str
    norm_lo: float
    norm_span: float
    family: str | None = None
    runner_up: str | None = None
    criterion: str | None = None
    delta_criterion: float = NAN
    r2_trace: float = NAN
    r2_steps: float = NAN
    sp_g: float = NAN
    sp_g_err: float = NAN
    sp_state: float = NAN
    sp_state_err: float = NAN
    sp_norm: float = NAN
    sp_norm_err: float = NAN
    gmin_state: float = NAN
    gmax_state: float = NAN
    dynamic_range: float = NAN
    mean_step_up: float = NAN
    mean_step_down: float = NAN
    asymmetry: float = NAN
    flag: str = ""
    c2c_rel: float = NAN
    c2c_abs_state: float = NAN
    read_noise_state: float = NAN
    fit_target: FitTarget | None = None
    # the measurement protocol (``traces.protocol``) and write amplitudes per direction
    protocol: str = "identical"
    amplitude_up_min_v: float = NAN
    amplitude_up_max_v: float = NAN
    amplitude_down_min_v: float = NAN
    amplitude_down_max_v: float = NAN

    # what a registered version keeps per device, in this order
    REGISTRY_COLUMNS: ClassVar[tuple[str, ...]] = (
        "die_x", "die_y", "state_unit", "family", "c2c_rel", "c2c_abs_state", "read_noise_state",
        "energy_per_pulse_j", "energy_source", "norm_lo", "norm_span", "fit_target")
    # ... and, after the chosen family's parameters, its symmetry point and state range
    REGISTRY_STATE_COLUMNS: ClassVar[tuple[str, ...]] = (
        "sp_norm", "sp_norm_err", "sp_state", "gmin_state", "gmax_state")
    # summarised across devices in the population table (besides the model parameters)
    POPULATION_METRICS: ClassVar[tuple[str, ...]] = (
        "sp_g", "sp_norm", "sp_state", "c2c_rel", "c2c_abs_state", "read_noise_state",
        "energy_per_pulse_j", "gmin_state", "gmax_state", "norm_lo", "norm_span")


def state_summary(scale: StateScale, sp_g, sp_g_err, range_lo_g, range_hi_g) -> dict:
    """A fit's symmetry point and state range in the series' state unit (``_state``), and
    the symmetry point as a share of the model's state range (``sp_norm``). Works on
    numbers or on table columns (``scale`` then holds columns too)."""
    width = range_hi_g - range_lo_g
    return {"sp_state": scale.state(sp_g), "sp_state_err": scale.state_step(sp_g_err),
            "sp_norm": (sp_g - range_lo_g) / width, "sp_norm_err": sp_g_err / width,
            "gmin_state": scale.state(range_lo_g), "gmax_state": scale.state(range_hi_g)}


@dataclass(frozen=True)
class PopulationStat:
    """Median and robust spread of one parameter or metric across a wafer's devices at
    one pulse width: a row of the ``population`` table (``param`` None: nothing fitted)."""

    wafer: str
    pulse_width_s: float
    family: str | None
    n_devices: int
    n_failed: int
    param: str | None = None
    median: float = NAN
    spread: float = NAN
    rel_spread: float = NAN
    n: int | None = None

    # what a fit's summary (flow artifact) shows
    HEADLINE_PARAMS: ClassVar[tuple[str, ...]] = ("sp_norm", "k_p", "k_d", "c2c_rel",
                                                  "energy_per_pulse_j")
    SUMMARY_COLUMNS: ClassVar[tuple[str, ...]] = ("param", "median", "spread", "n", "family",
                                                  "n_failed")


@dataclass(frozen=True)
class SeriesFit:
    """Everything fitted on one series."""

    info: SeriesInfo
    fits: tuple[FamilyFit, ...]
    device: DeviceFit


def columns(*kinds: type) -> list[str]:
    """Table columns of rows built from records of these kinds, in order."""
    return [f.name for k in kinds for f in fields(k) if f.metadata.get("column", True)]


@lru_cache(maxsize=None)
def _column_names(kind: type) -> tuple[str, ...]:
    return tuple(columns(kind))


def to_row(*records) -> dict:
    """One table row from records side by side; enum values are stored as their string."""
    row = {}
    for r in records:
        for name in _column_names(type(r)):
            v = getattr(r, name)
            row[name] = v.value if isinstance(v, Enum) else v
    return row


def records_frame(rows: list[tuple], kinds: tuple[type, ...]) -> "pd.DataFrame":
    """DataFrame of ``rows`` (tuples of records of ``kinds``), columns fixed by the kinds."""
    import pandas as pd

    return pd.DataFrame([to_row(*r) for r in rows], columns=columns(*kinds))
