"""Register a device model from published parameters (``ferroflow models import FILE.toml``).

A parameter file describes one model as a paper gives it: a family of
``pipeline/devices`` with its per-direction parameters on the normalised state
(``W = (G - Gmin) / (Gmax - Gmin)`` in [0, 1]), the pulse width, the conductance bounds
(in siemens, or only the dynamic range Gmax/Gmin), the energy per pulse (or the inputs
of ``energy.pulse_energy``), c2c and d2d spreads where the source gives them, and the
citation. Example (``pipeline/published/`` ships three)::

    citation = "Garg et al. 2025, arXiv 2509.18121"
    stack = "hzo"
    wafer = "garg2025"
    family = "beta"
    pulse_width_s = 20e-9

    [parameters]                      # the family's names; bounds default to [0, 1]
    A_p = 0.249
    ...
    [bounds]
    dynamic_range = 2.65              # or gmin_state = ..., gmax_state = ...
    [energy]
    energy_per_pulse_j = 3e-12        # or amplitude_v, area_m2, conductance_siemens, ...
    [variability]
    c2c_rel = 0.0
    [variability.d2d]                 # relative spread (sd / median) per parameter
    A_p = 0.05

The file is checked as a fit is (finite values, within the bounds the family's fit
allows, steps of the right sign, a symmetry point inside the state range); every problem
is one line naming the file and the key. The registered version has the registry's
fitted-version format: one device row (die ``published``) holding the parameters, and a
population whose medians are the parameters and whose spreads are the d2d spreads, so
``simulate``, ``report`` and ``models search`` read it as they read a fitted model. The
citation is its lineage ("imported from <citation>"), with the file's SHA-256.
"""

from __future__ import annotations

import hashlib
import math
import stat
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .devices import DeviceModel, StepMap, family as get_family
from .energy import EnergyConstants, pulse_energy
from .errors import InputError
from .fitrecords import DeviceFit, FamilyFit
from .publish import DEFAULT_STACK
from .registry import Ref, Registry, model_name
from .schema import upgrade_columns

PUBLISHED = "published"  # package folder of the shipped parameter files
MAX_BYTES = 1 << 20  # a parameter file is a few hundred bytes
# the parameters that set a family's state range, in normalised units
RANGE_PARAMS = {"beta": ("g_min", "g_max"), "softbounds": ("b_lo", "b_hi"),
                "powstep": ("b_lo", "b_hi"), "lookup": ("g_lo", "g_hi"), "neurosim": ("Gmin", "Gmax")}
_TOP_KEYS = {"citation", "source", "stack", "wafer", "family", "pulse_width_s", "description",
             "parameters", "bounds", "energy", "variability"}
_ENERGY_INPUTS = {"amplitude_v", "conductance_siemens", "area_m2", "switched_fraction", "eps_r",
                  "thickness_m", "pr_c_per_m2"}


@dataclass(frozen=True)
class Published:
    """A validated parameter file."""

    path: Path
    sha256: str
    citation: str
    stack: str
    wafer: str
    family: str
    pulse_width_s: float
    params: dict[str, float]          # the family's parameters, normalised state
    gmin: float                       # conductance bounds in ``state_unit``
    gmax: float
    state_unit: str                   # "S", or "Gmin" when only Gmax/Gmin is known
    energy_per_pulse_j: float
    energy_source: str
    c2c_rel: float
    d2d_rel: dict[str, float]
    description: str = ""

    @property
    def name(self) -> str:
        return model_name(self.stack, self.wafer, self.pulse_width_s)


@dataclass(frozen=True)
class Imported:
    ref: Ref
    created: bool
    model: Published


# --- reading and checking -------------------------------------------------------------------
class _File:
    """One-line errors that name the file and the key."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, message: str) -> InputError:
        return InputError(f"key {key!r}: {message}", file=str(self.path))

    def number(self, table: dict, key: str, prefix: str = "", *, positive: bool = False,
               required: bool = True, default: float = math.nan) -> float:
        full = f"{prefix}{key}"
        if key not in table:
            if required:
                raise self.error(full, "missing")
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(full, f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise self.error(full, f"must be finite, got {value}")
        if positive and value <= 0:
            raise self.error(full, f"must be positive, got {value:g}")
        return value

    def table(self, doc: dict, key: str, required: bool = True) -> dict:
        value = doc.get(key, None)
        if value is None:
            if required:
                raise self.error(key, "missing table")
            return {}
        if not isinstance(value, dict):
            raise self.error(key, "must be a table ([" + key + "])")
        return value

    def text(self, doc: dict, key: str, default: str | None = None) -> str:
        value = doc.get(key, default)
        if value is None:
            raise self.error(key, "missing")
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be non-empty text, got {value!r}")
        return value.strip()

    def unknown(self, table: dict, allowed, prefix: str = "") -> None:
        extra = sorted(set(table) - set(allowed))
        if extra:
            raise self.error(prefix + extra[0], f"unknown key (expected one of {', '.join(sorted(allowed))})")


def _read_bounded(path: Path) -> bytes:
    """The file's bytes: a regular file (a FIFO or device is refused, never opened) of at
    most MAX_BYTES, so a wrong or hostile path cannot hang or exhaust memory."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise InputError("not a regular file", file=str(path))
    with open(path, "rb") as fh:
        raw = fh.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise InputError(f"larger than {MAX_BYTES // 1024} KiB: not a parameter file", file=str(path))
    return raw


def read_published(path: str | Path) -> Published:
    """Parse and validate a parameter file (module docstring); raises InputError."""
    path = Path(path)
    raw = _read_bounded(path)
    f = _File(path)
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"not a valid TOML file: {exc}", file=str(path)) from None
    f.unknown(doc, _TOP_KEYS)
    fam_name = f.text(doc, "family")
    try:
        model = get_family(fam_name)
    except ValueError as exc:
        raise f.error("family", str(exc)) from None
    params = _parameters(f, f.table(doc, "parameters"), model)
    # legacy-name: files written before the unit rule name bounds gmin_s, gmax_s, energy conductance_s
    gmin, gmax, unit = _bounds(f, upgrade_columns(f.table(doc, "bounds")))
    pw = f.number(doc, "pulse_width_s", positive=True)
    energy_table = f.table(doc, "energy", required=False)
    if "conductance_s" in energy_table and "conductance_siemens" not in energy_table:  # legacy-name
        energy_table = {("conductance_siemens" if k == "conductance_s" else k): v  # legacy-name
                        for k, v in energy_table.items()}
    energy, source = _energy(f, energy_table, pw, gmin, gmax, unit)
    var = f.table(doc, "variability", required=False)
    f.unknown(var, {"c2c_rel", "d2d"}, "variability.")
    c2c = f.number(var, "c2c_rel", "variability.", required=False, default=0.0)
    if c2c < 0:
        raise f.error("variability.c2c_rel", f"must be >= 0, got {c2c:g}")
    d2d_table = var.get("d2d", {})
    if not isinstance(d2d_table, dict):
        raise f.error("variability.d2d", "must be a table ([variability.d2d])")
    f.unknown(d2d_table, model.param_names, "variability.d2d.")
    d2d = {k: f.number(d2d_table, k, "variability.d2d.") for k in d2d_table}
    for k, v in d2d.items():
        if v < 0:
            raise f.error(f"variability.d2d.{k}", f"must be >= 0, got {v:g}")
    _check_model(f, model, params)
    stack = f.text(doc, "stack", DEFAULT_STACK)
    wafer = f.text(doc, "wafer")
    try:
        model_name(stack, wafer, pw)
    except InputError as exc:
        raise f.error("wafer", exc.message) from None
    return Published(path=path, sha256=hashlib.sha256(raw).hexdigest(),
                     citation=f.text(doc, "citation"), stack=stack, wafer=wafer, family=fam_name,
                     pulse_width_s=pw, params=params, gmin=gmin, gmax=gmax, state_unit=unit,
                     energy_per_pulse_j=energy, energy_source=source, c2c_rel=c2c, d2d_rel=d2d,
                     description=str(doc.get("description", doc.get("source", ""))))


def _parameters(f: _File, table: dict, model: DeviceModel) -> dict[str, float]:
    f.unknown(table, model.param_names, "parameters.")
    lo_name, hi_name = RANGE_PARAMS[model.name]
    defaults = {lo_name: 0.0, hi_name: 1.0}
    out = {}
    for name in model.param_names:
        if name in table:
            out[name] = f.number(table, name, "parameters.")
        elif name in defaults:
            out[name] = defaults[name]
        else:
            raise f.error(f"parameters.{name}", f"missing (family {model.name} needs "
                                                f"{', '.join(model.param_names)})")
    return out


def _bounds(f: _File, table: dict) -> tuple[float, float, str]:
    f.unknown(table, {"gmin_state", "gmax_state", "dynamic_range"}, "bounds.")
    if "gmin_state" in table or "gmax_state" in table:
        gmin = f.number(table, "gmin_state", "bounds.", positive=True)
        gmax = f.number(table, "gmax_state", "bounds.", positive=True)
        if gmax <= gmin:
            raise f.error("bounds.gmax_state", f"must exceed bounds.gmin_state ({gmax:g} <= {gmin:g})")
        if "dynamic_range" in table and not np.isclose(table["dynamic_range"], gmax / gmin, rtol=1e-3):
            raise f.error("bounds.dynamic_range", f"contradicts gmax_state / gmin_state = {gmax / gmin:.4g}")
        return gmin, gmax, "S"
    ratio = f.number(table, "dynamic_range", "bounds.")
    if ratio <= 1:
        raise f.error("bounds.dynamic_range", f"Gmax/Gmin must exceed 1, got {ratio:g}")
    return 1.0, ratio, "Gmin"  # state in units of Gmin: the ratio is all that is known


def _energy(f: _File, table: dict, pw: float, gmin: float, gmax: float, unit: str) -> tuple[float, str]:
    f.unknown(table, {"energy_per_pulse_j"} | _ENERGY_INPUTS, "energy.")
    if "energy_per_pulse_j" in table:
        return f.number(table, "energy_per_pulse_j", "energy.", positive=True), "published"
    if not table:
        return math.nan, "unavailable (not published)"
    amp = f.number(table, "amplitude_v", "energy.", positive=True)
    if "conductance_siemens" in table:  # the energy formula takes siemens, whatever the state unit
        g = f.number(table, "conductance_siemens", "energy.", positive=True)
    elif unit == "S":
        g = (gmin + gmax) / 2
    else:
        raise f.error("energy.conductance_siemens", "missing (bounds give no conductance in siemens)")
    c = EnergyConstants(**{k: f.number(table, k, "energy.", positive=True)
                           for k in ("eps_r", "thickness_m", "pr_c_per_m2") if k in table})
    area = f.number(table, "area_m2", "energy.", positive=True, required=False, default=c.area_m2)
    switched = f.number(table, "switched_fraction", "energy.", required=False, default=0.0)
    return float(pulse_energy(amp, g, pw, switched, area, c)), "formula"


def _check_model(f: _File, model: DeviceModel, p: dict[str, float]) -> None:
    """As a fit is checked: within the family's fit bounds, steps of the right sign over
    the state range, a symmetry point inside it."""
    lo, hi = (float(x) for x in model.state_range(p))
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise f.error("parameters", f"no valid state range (low {lo:g}, high {hi:g})")
    grid = np.linspace(lo, hi, 201)[1:-1]
    up = np.asarray(model.step(grid, np.ones(len(grid), bool), **p), float)
    down = np.asarray(model.step(grid, np.zeros(len(grid), bool), **p), float)
    if not (np.isfinite(up).all() and np.isfinite(down).all()):
        raise f.error("parameters", "steps are not finite over the state range")
    if (up <= 0).any():
        raise f.error("parameters", f"up steps not positive near g = {grid[np.argmax(up <= 0)]:.3f}")
    if (down >= 0).any():
        raise f.error("parameters", f"down steps not negative near g = {grid[np.argmax(down >= 0)]:.3f}")
    both = np.r_[grid, grid]
    is_up = np.r_[np.ones(len(grid), bool), np.zeros(len(grid), bool)]
    limits = model.guess(StepMap(both, np.r_[up, down], is_up))  # the bounds a fit would allow
    for name, value in p.items():
        lim = limits[name] if name in limits else None
        if lim is not None and not (lim.min <= value <= lim.max):
            raise f.error(f"parameters.{name}", f"{value:g} outside the {model.name} family's "
                                                f"bounds [{lim.min:g}, {lim.max:g}]")
    sp = model.symmetry_point(p)
    if not (np.isfinite(sp) and lo < sp < hi):
        raise f.error("parameters", "no symmetry point inside the state range")


# --- registering ----------------------------------------------------------------------------
def version_tables(m: Published):
    """(devices, population, meta) in the format ``publish.version_tables`` gives a fit."""
    model = get_family(m.family)
    lo, hi = (float(x) for x in model.state_range(m.params))
    sp = model.symmetry_point(m.params)
    span_state = m.gmax - m.gmin  # normalised [0, 1] maps onto [Gmin, Gmax]
    row = {"wafer": m.wafer, "die": PUBLISHED, "device": PUBLISHED, "pulse_width_s": m.pulse_width_s,
           "die_x": np.nan, "die_y": np.nan, "state_unit": m.state_unit, "chosen_family": m.family,
           "c2c_rel": m.c2c_rel, "c2c_abs_state": np.nan, "read_noise_state": np.nan,
           "energy_per_pulse_j": m.energy_per_pulse_j, "energy_source": m.energy_source,
           "norm_lo": m.gmin, "norm_span": span_state, "fit_target": "published",
           "n_points": 0, "chisqr": np.nan, "redchi": np.nan, "aic": np.nan, "bic": np.nan,
           "r2_steps": np.nan, "r2_trace": np.nan, "sp_g": sp, "sp_g_err": np.nan,
           "range_lo_g": lo, "range_hi_g": hi, "flag": "",
           **{f"p_{k}": v for k, v in m.params.items()},
           **{f"e_{k}": np.nan for k in m.params},
           "sp_norm": (sp - lo) / (hi - lo), "sp_norm_err": np.nan,
           "sp_state": m.gmin + span_state * sp, "gmin_state": m.gmin + span_state * lo,
           "gmax_state": m.gmin + span_state * hi}
    # the columns and order publish.version_tables gives a fitted version
    columns = (["wafer", "die", "device", "pulse_width_s"]
               + [("chosen_family" if c == "family" else c) for c in DeviceFit.REGISTRY_COLUMNS]
               + list(FamilyFit.REGISTRY_COLUMNS) + [f"p_{k}" for k in m.params]
               + [f"e_{k}" for k in m.params]
               + ["sp_norm", "sp_norm_err", "sp_state", "gmin_state", "gmax_state"])
    devices = pd.DataFrame([row])[columns]
    extra = {"sp_g": sp, "sp_norm": row["sp_norm"], "c2c_rel": m.c2c_rel,
             "energy_per_pulse_j": m.energy_per_pulse_j, "norm_lo": m.gmin, "norm_span": span_state}
    if m.state_unit == "S":
        extra.update(sp_state=row["sp_state"], gmin_state=row["gmin_state"], gmax_state=row["gmax_state"])
    pop = []
    for name, value in {**m.params, **extra}.items():
        spread = abs(value) * m.d2d_rel.get(name, 0.0)
        pop.append({"family": m.family, "n_devices": 1, "n_failed": 0, "param": name,
                    "median": value, "spread": spread,
                    "rel_spread": spread / abs(value) if value else np.nan, "n": 1})
    meta = {"wafer": m.wafer, "pulse_width_s": m.pulse_width_s, "family": m.family,
            "equation": model.equation, "state_unit": m.state_unit, "n_devices": 1, "n_failed": 0,
            "sp_norm_median": row["sp_norm"], "r2_median": None,
            "energy_per_pulse_j": None if math.isnan(m.energy_per_pulse_j) else m.energy_per_pulse_j,
            "energy_source": m.energy_source, "stack": m.stack,
            "units": "parameters p_* are in normalised state g; state = norm_lo + norm_span * g"
                     + ("" if m.state_unit == "S" else "; state in units of Gmin"),
            "imported_from": m.citation, "fit_config_hash": f"imported:{m.sha256[:16]}"}
    return devices, pd.DataFrame(pop), meta


def import_model(registry: Registry, path: str | Path, tags: tuple[str, ...] = ()) -> Imported:
    """Validate a parameter file and register it; identical content is not duplicated."""
    m = read_published(path)
    devices, population, meta = version_tables(m)
    raw = pd.DataFrame([{"sha256": m.sha256, "name": f"{m.path.name} (imported from {m.citation})"}])
    ref, created = registry.register(m.name, devices, population, meta, raw_files=raw,
                                     tags=("imported", *tags), description=f"imported from {m.citation}")
    return Imported(ref, created, m)


def published_files() -> list[Path]:
    """The parameter files shipped with the package."""
    folder = resources.files("pipeline") / PUBLISHED
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml"))


def published_file(stem: str) -> Path:
    for p in published_files():
        if p.stem == stem:
            return p
    raise InputError(f"no shipped parameter file {stem!r}; shipped: "
                     f"{', '.join(p.stem for p in published_files())}")


__all__ = ["Published", "Imported", "read_published", "import_model", "version_tables",
           "published_files", "published_file"]
