"""Fit device-update models, select the best, and summarise a wafer's population.

For each device series (one device at one pulse width):

1. map the state onto ``g`` in [0, 1] by the data range (``G = lo + span * g``);
2. fit every family of ``pipeline.devices`` on the step map (up and down jointly,
   shared bounds), from analytic starting values: with the ``batch`` engine all series
   of a partition at once (``pipeline.batchfit``, lmfit's results without its per-fit
   overhead), with the ``lmfit`` engine (the reference) one lmfit fit at a time;
3. report values and standard errors, chi-square, reduced chi-square, AIC, BIC, R^2 of
   the steps and of the trajectories (each trace re-simulated from its first read);
4. flag implausible fits (failed, a parameter at its bound, trajectory R^2 below the
   threshold, no symmetry point inside the range, steps of the wrong sign, too few
   points) and never stop the batch;
5. choose the family with the lowest BIC among unflagged fits (AIC is reported too;
   BIC's ln(n) penalty keeps extra shape parameters out unless the data need them);
6. symmetry point of the chosen model with a propagated (delta-method, from lmfit's
   covariance) uncertainty; c2c and read noise from the step residuals; energy per pulse.

Noise (from residuals ``r`` of measured steps around the fitted step ``f``): the
variance model ``r_i^2 ~ a^2 f_i^2 + b^2`` is fitted by non-negative least squares.
``a`` is the relative c2c noise (multiplicative, DOMAIN.md section 3); a read error
enters two consecutive steps, so ``b^2 = 2 sigma_read^2``. ``c2c_abs`` is the c2c part
of the residual spread, ``sqrt(mean(r^2) - b^2)``. The same model gives the fit weights
``1/sqrt(a^2 f^2 + b^2)`` (from a first soft-bounds pass). Where read noise swamps the
steps (short pulses, small steps) ``a`` is poorly determined: compare its spread.

Population per (wafer, pulse width): median and robust spread (1.4826 * MAD) of every
parameter of the family most devices chose, across its unflagged devices: the d2d
variation a simulator samples from.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from .batchfit import fit_steps, quality_flag, starting_values, wrong_sign
from .devices import FAMILIES, StepMap, family
from .energy import energy_per_pulse
from .errors import InputError
from .fitrecords import (ENGINES, DeviceFit, FamilyFit, FitTarget, PopulationStat, SeriesFit, SeriesInfo,
                         records_frame, state_summary)
from .lazy import lmfit
from .schema import SERIES, StateScale, upgrade_columns
from .traces import Series, amplitude_ranges, check_protocol, series_from_frame, step_map, traces
from .workers import keep_freed_arrays, parent_objects_frozen, process_pool, workers_lost_explained

SERIES_COLUMNS = list(SERIES)
CRITERIA = ("bic", "aic")
PARTITION = 256  # series fitted together by the batched engine: one progress step each
READ_DOMINATED = 2.0
TRAJECTORY_MAX_NFEV = 400  # each evaluation simulates every pulse; a fit still short of
                           # convergence then is flagged, not waited for


@dataclass(frozen=True)
class FitConfig:
    families: tuple[str, ...] = tuple(FAMILIES)
    criterion: str = "bic"          # or "aic"
    r2_min: float = 0.9             # trajectory R^2 below this flags a fit
    workers: int = 0                # 0: one process per core; 1: in this process
    engine: str = "batch"           # step-map fits: "batch" (pipeline.batchfit) or "lmfit"

    def __post_init__(self):
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"unknown fit families {unknown or list(self.families)}; "
                             f"choose from {', '.join(FAMILIES)}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {self.criterion!r}; choose from {', '.join(CRITERIA)}")
        if not (isinstance(self.r2_min, (int, float)) and self.r2_min <= 1.0):  # NaN fails too
            raise ValueError(f"r2_min {self.r2_min!r} must be a number at most 1 (an R^2 threshold)")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown fit engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers {self.workers!r} must be 0 (one per core) or a positive count")

    def hash(self) -> str:
        import hashlib
        import json

        doc = {"families": self.families, "criterion": self.criterion, "r2_min": self.r2_min}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class FitResult:
    """Tables of a fit run; every table carries the series key columns."""

    fits: pd.DataFrame          # one row per (series, family)
    params: pd.DataFrame        # one row per (series, family, parameter)
    devices: pd.DataFrame       # one row per series: chosen model, SP, noise, energy
    population: pd.DataFrame    # one row per (wafer, pulse width, parameter)
    traces: pd.DataFrame = field(default_factory=pd.DataFrame)  # per-trace soft-bounds fits

    TABLES = ("fits", "params", "devices", "population", "traces")

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.TABLES:
            getattr(self, name).to_parquet(folder / f"{name}.parquet", index=False)

    @classmethod
    def load(cls, folder: Path) -> "FitResult":
        """Tables saved by ``save``, legacy column names upgraded (``schema.LEGACY_COLUMNS``)."""
        return cls(**{n: upgrade_columns(pd.read_parquet(Path(folder) / f"{n}.parquet"))
                      for n in cls.TABLES})


# --- one family on one series ----------------------------------------------------------
def _at_bound(params: lmfit.Parameters) -> str | None:
    for p in params.values():
        if not p.vary:
            continue
        tol = 1e-6 * max(1.0, abs(p.max - p.min) if np.isfinite(p.max - p.min) else 1.0)
        if (np.isfinite(p.min) and p.value - p.min < tol) or (np.isfinite(p.max) and p.max - p.value < tol):
            return p.name
    return None


def _trajectory_r2(model, p: dict, ts: TraceSet, fitted: dict | None = None) -> float:
    """R^2 of every trace re-simulated (noise free) from its start: the fitted start
    states of a trajectory fit, else the read before the trace's second pulse."""
    if not ts.mask.any():
        return float("nan")
    if fitted is not None:
        start = np.array([fitted[f"start_{i}"] for i in range(len(ts.up))])
        sim = ts.simulate(model, p, start)
        meas = ts.states
    else:  # from the first read: predict reads 2..n
        sim = TraceSet(ts.up, ts.states[:, 1:], ts.mask[:, 1:]).simulate(model, p, ts.states[:, 0])
        meas = ts.states[:, 1:]
    m = np.isfinite(meas)
    ss_tot = ((meas[m] - meas[m].mean()) ** 2).sum()
    return float(1 - ((meas[m] - sim[m]) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")


def _sp_uncertainty(model, result: lmfit.model.ModelResult) -> float:
    """Delta method: gradient of the symmetry point times lmfit's covariance."""
    if result.covar is None:
        return float("nan")
    base = result.params.valuesdict()
    sp_of = lambda v: model.symmetry_point(_model_values(model, v))  # noqa: E731
    grad = np.empty(len(result.var_names))
    for i, name in enumerate(result.var_names):
        h = 1e-6 * max(abs(base[name]), 1e-3)
        hi, lo_ = dict(base), dict(base)
        hi[name] += h
        lo_[name] -= h
        grad[i] = (sp_of(hi) - sp_of(lo_)) / (2 * h)
    var = float(grad @ result.covar @ grad)
    return float(np.sqrt(var)) if np.isfinite(var) and var >= 0 else float("nan")


def noise_weights(data: StepMap) -> tuple[np.ndarray, FitTarget]:
    """Weights 1/sigma_i from a two-part noise model fitted to soft-bounds residuals:
    ``sigma_i^2 = (a * step_i)^2 + b^2`` (multiplicative c2c noise plus additive read
    noise, DOMAIN.md section 3). Every family is fitted with the same weights, so their
    chi-square, AIC and BIC stay comparable; without them the few large, noisy steps
    of fast-saturating devices dominate and flexible families fit that noise.

    Also returns the fit target: ``steps`` normally, ``trajectory`` when the additive
    (read) noise is larger than ``READ_DOMINATED`` times the typical step."""
    sb = family("softbounds")
    pred = sb.step(data.g, data.up, **starting_values(sb, data).valuesdict())
    a2, b2 = noise_model(data.dg - pred, pred)
    floor = max(b2, 1e-6 * float(np.mean((data.dg - pred) ** 2)) + 1e-30)
    # Read noise more than twice the typical step: a step map is mostly noise, and the
    # trajectories (where read noise does not accumulate) carry the information.
    read_dominated = b2 > READ_DOMINATED ** 2 * float(np.mean(pred ** 2))
    target = FitTarget.TRAJECTORY if read_dominated else FitTarget.STEPS
    return 1.0 / np.sqrt(a2 * pred ** 2 + floor), target


@dataclass(frozen=True)
class TraceSet:
    """Traces in normalised units, padded into a matrix for vectorised simulation."""

    up: np.ndarray           # (n_traces,)
    states: np.ndarray       # (n_traces, max_len), nan-padded: reads after each pulse
    mask: np.ndarray         # valid entries of ``states``

    @classmethod
    def build(cls, trs, scale: StateScale) -> "TraceSet":
        trs = [t for t in trs if len(t.states) >= 2]
        n = max((len(t.states) for t in trs), default=0)
        states = np.full((len(trs), n), np.nan)
        for i, t in enumerate(trs):
            states[i, :len(t.states)] = scale.g(t.states)
        return cls(np.array([t.up for t in trs], bool), states, np.isfinite(states))

    def simulate(self, model, p: dict, start: np.ndarray) -> np.ndarray:
        """States after each pulse from ``start`` (state before the first pulse);
        ``start`` may carry leading batch dimensions (see ``DeviceModel.run``)."""
        return model.run(p, start, self.up, self.states.shape[1])


def _model_values(model, values: dict) -> dict:
    return {k: values[k] for k in model.param_names}


def _run_fit(model, params, data: StepMap, ts: TraceSet, target: FitTarget, weights):
    """lmfit on the step map (``steps``) or on the trajectories (``trajectory``: each
    trace re-simulated from a fitted start state; right when read noise swamps steps)."""
    if target is FitTarget.STEPS:
        return model.model().fit(data.dg, params, g=data.g, up=data.up, weights=weights,
                                 max_nfev=4000)
    first = ts.states[:, 0]
    for i, g0 in enumerate(first):
        params.add(f"start_{i}", float(g0), min=float(g0) - 1.0, max=float(g0) + 1.0)

    n_tr = len(first)

    def residual(pars):
        v = pars.valuesdict()
        start = np.array([v[f"start_{i}"] for i in range(n_tr)])
        return (ts.simulate(model, _model_values(model, v), start) - ts.states)[ts.mask]

    def jacobian(pars):
        """Forward differences for all varying parameters in one batched simulation."""
        v = pars.valuesdict()
        names = [n for n, q in pars.items() if q.vary]
        h = np.array([1e-7 * max(abs(v[n]), 1e-3) for n in names])
        batch = {k: np.full((len(names) + 1, 1), v[k], dtype=float) for k in model.param_names}
        start = np.tile([v[f"start_{i}"] for i in range(n_tr)], (len(names) + 1, 1))
        for i, n in enumerate(names):
            if n.startswith("start_"):
                start[i + 1, int(n[6:])] += h[i]
            else:
                batch[n][i + 1, 0] += h[i]
        sim = ts.simulate(model, batch, start)[:, ts.mask]
        return ((sim[1:] - sim[0]) / h[:, None]).T

    return lmfit.Minimizer(residual, params).minimize(method="leastsq", Dfun=jacobian,
                                                      max_nfev=TRAJECTORY_MAX_NFEV)


def smooth_start(model, reference: StepMap) -> lmfit.Parameters:
    """Starting values for a trajectory fit: the family fitted to a noise-free step map
    (``reference``, from the soft-bounds trajectory fit). Guesses taken from a step map
    that is mostly read noise send trajectory fits to poor local minima."""
    params = model.guess(reference)
    try:
        fitted = model.model().fit(reference.dg, params, g=reference.g, up=reference.up,
                                   max_nfev=2000)
        return fitted.params
    except (ValueError, FloatingPointError, np.linalg.LinAlgError):
        return params


def fit_family(name: str, data: StepMap, ts: TraceSet, cfg: FitConfig,
               weights: np.ndarray | None = None, target: FitTarget = FitTarget.STEPS,
               reference: StepMap | None = None, judge: str = "r2_trace") -> FamilyFit:
    model = family(name)
    params = model.guess(data) if reference is None else smooth_start(model, reference)
    n_var = sum(p.vary for p in params.values())
    n_points = int(len(data.g) if target is FitTarget.STEPS else ts.mask.sum())
    failed = FamilyFit(name, target, n_points)
    if n_points < 2 * n_var + 2:
        return replace(failed, flag=f"too few points ({n_points}) for {n_var} parameters")
    try:
        result = _run_fit(model, params, data, ts, target, weights)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return replace(failed, flag=f"fit failed: {exc}")
    values = result.params.valuesdict()
    p = _model_values(model, values)
    resid = data.dg - model.step(data.g, data.up, **p)
    ss_tot = ((data.dg - data.dg.mean()) ** 2).sum()
    sp = model.symmetry_point(p)
    lo_r, hi_r = model.state_range(p)
    fit = replace(
        failed, success=bool(result.success), nfev=int(result.nfev),
        chisqr=float(result.chisqr), redchi=float(result.redchi),
        aic=float(result.aic), bic=float(result.bic),
        r2_steps=float(1 - (resid ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        r2_trace=_trajectory_r2(model, p, ts, values if target is FitTarget.TRAJECTORY else None),
        sp_g=sp, sp_g_err=_sp_uncertainty(model, result) if np.isfinite(sp) else float("nan"),
        range_lo_g=float(lo_r), range_hi_g=float(hi_r),
        values={k: float(v) for k, v in p.items()},
        stderr={k: (float(result.params[k].stderr) if result.params[k].stderr is not None
                    else float("nan")) for k in p},
        resid=resid,
    )
    return replace(fit, flag=_flag(result, fit, cfg, judge) or _wrong_sign(model, p, lo_r, hi_r, data))


def _wrong_sign(model, p: dict, lo: float, hi: float, data: StepMap) -> str:
    """Up steps must raise and down steps lower the state over the measured range."""
    one = lambda v: np.array([float(v)])  # noqa: E731 (a batch of one series)
    return wrong_sign(model, {k: one(v) for k, v in p.items()}, one(lo), one(hi),
                      one(data.g.min()), one(data.g.max()))[0]


def _flag(result, fit: FamilyFit, cfg: FitConfig, judge: str = "r2_trace") -> str:
    """``judge``: the R^2 that must reach ``r2_min``; ``r2_steps`` for staircases, whose
    trajectories follow the amplitude ramp that a state-only model does not see."""
    if not result.success:
        return f"fit failed: {result.message}"
    return quality_flag(_at_bound(result.params), fit, cfg.r2_min, judge)


# --- one series ---------------------------------------------------------------------------
def noise_model(resid: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(a^2, b^2) of ``resid_i^2 ~ a^2 pred_i^2 + b^2`` by non-negative least squares."""
    coef, _ = nnls(np.column_stack([pred ** 2, np.ones_like(pred)]), resid ** 2)
    return float(coef[0]), float(coef[1])


def _noise(resid: np.ndarray, pred: np.ndarray, scale: StateScale) -> dict:
    """c2c and read noise from the residual variance model (module docstring)."""
    a2, b2 = noise_model(resid, pred)
    c2c_abs = np.sqrt(max(float(np.mean(resid ** 2)) - b2, 0.0))
    return {"c2c_rel": float(np.sqrt(a2)), "c2c_abs_state": float(scale.state_step(c2c_abs)),
            # a read error enters two consecutive steps: b^2 = 2 sigma_read^2
            "read_noise_state": float(scale.state_step(np.sqrt(b2 / 2)))}


def _read_noise(best: FamilyFit, scale: StateScale) -> float:
    """Read-noise dominated series: c2c is not resolvable (reported as NaN); the read
    noise is the spread of the reads around the fitted trajectories."""
    return float(scale.state_step(np.sqrt(best.chisqr / max(best.n_points - 1, 1))))


def _dynamic_range(scale: StateScale, r_lo: float, r_hi: float) -> float:
    """Gmax / Gmin of the model's state range: conductances only."""
    gmin = scale.state(r_lo)
    return scale.state(r_hi) / gmin if scale.unit == "S" and gmin > 0 else np.nan


@dataclass(frozen=True)
class _Prepared:
    """A series ready to fit: normalised step map, traces, weights and fit target."""

    info: SeriesInfo
    device: DeviceFit
    data: StepMap
    ts: TraceSet
    weights: np.ndarray
    target: FitTarget
    scale: StateScale
    judge: str  # the R^2 a fit must reach: "r2_trace", or "r2_steps" for staircases


def _prepare(s: Series, cfg: FitConfig, trs: list | None = None) -> _Prepared | SeriesFit:
    """Normalise one series for fitting; a series that cannot be fitted comes back as
    its (flagged) SeriesFit. ``trs``: its ``traces(s)`` if known."""
    info = SeriesInfo(*s.key, die_x=s.die_x, die_y=s.die_y, state_unit=s.state_unit)
    scale = StateScale.of(s.state, s.state_unit)
    pulsed = s.pulsed  # reads without a pulse cost no write energy
    energy = energy_per_pulse(s.energy_j[pulsed] if s.energy_j is not None else [np.nan],
                              s.amplitude[pulsed], s.state[pulsed], s.pulse_width_s,
                              s.state_unit, s.area_m2)
    ranges = amplitude_ranges(s)
    device = DeviceFit(n_pulses=int(pulsed.sum()), energy_per_pulse_j=energy.energy_j,
                       energy_source=energy.source, norm_lo=scale.lo, norm_span=scale.span, **ranges)
    sm = step_map(s)
    problem = _series_problem(s, scale.span, sm)
    if problem:
        return SeriesFit(info, tuple(FamilyFit(f, flag=problem) for f in cfg.families),
                         replace(device, flag=problem))
    data = sm.normalised(scale)
    weights, target = noise_weights(data)
    # A staircase is fitted as its makers do (each step one update) and judged on its steps.
    judge = "r2_steps" if s.protocol == "staircase" else "r2_trace"
    trs = trs if trs is not None else traces(s)
    return _Prepared(info, device, data, TraceSet.build(trs, scale), weights, target, scale, judge)


def fit_series(s: Series, cfg: FitConfig = FitConfig()) -> SeriesFit:
    """All families on one series with lmfit: the rows of the fits, params and devices tables."""
    prep = _prepare(s, cfg)
    if isinstance(prep, SeriesFit):
        return prep
    return _choose(prep, _fit_all(prep.data, prep.ts, cfg, prep.weights, prep.target, prep.judge), cfg)


def _choose(prep: _Prepared, rows: list[FamilyFit], cfg: FitConfig) -> SeriesFit:
    """Rank the families' fits, pick the best and derive the device row from it."""
    info, device, data, target, scale = prep.info, prep.device, prep.data, prep.target, prep.scale
    ok = [r for r in rows if r.success and not r.flag]
    # Ties (soft bounds and NeuroSim are one step map in two parametrisations) go to
    # the family listed first.
    order = {f: i for i, f in enumerate(cfg.families)}
    ranked = sorted(ok, key=lambda r: (round(getattr(r, cfg.criterion), 3), order[r.family]))
    rank = {r.family: i + 1 for i, r in enumerate(ranked)}
    # residuals serve the noise estimate below; the tables (and workers' replies) drop them
    fits = tuple(replace(r, rank=rank.get(r.family), chosen=rank.get(r.family) == 1, resid=None)
                 for r in rows)
    if not ranked:
        reasons = "; ".join(f"{r.family}: {r.flag}" for r in rows)
        return SeriesFit(info, fits, replace(device, flag=f"no acceptable fit ({reasons})"))
    best = ranked[0]
    second = ranked[1] if len(ranked) > 1 else None
    pred = family(best.family).step(data.g, data.up, **best.values)
    r_lo, r_hi = best.range_lo_g, best.range_hi_g
    up_mean = data.dg[data.up].mean() if data.up.any() else np.nan
    down_mean = data.dg[~data.up].mean() if (~data.up).any() else np.nan
    sb = next((r for r in rows if r.family == "softbounds" and r.values), None)
    crit = cfg.criterion
    device = replace(
        device, family=best.family, runner_up=second.family if second else None,
        criterion=crit, delta_criterion=getattr(second, crit) - getattr(best, crit) if second else np.nan,
        r2_trace=best.r2_trace, r2_steps=best.r2_steps, sp_g=best.sp_g, sp_g_err=best.sp_g_err,
        **state_summary(scale, best.sp_g, best.sp_g_err, r_lo, r_hi),
        dynamic_range=_dynamic_range(scale, r_lo, r_hi),
        mean_step_up=scale.state_step(up_mean), mean_step_down=scale.state_step(down_mean),
        asymmetry=(sb.values["k_d"] / sb.values["k_p"]) if sb and sb.values["k_p"] > 0 else np.nan,
        flag="",
        **(_noise(best.resid, pred, scale) if target is FitTarget.STEPS else
           {"c2c_rel": np.nan, "c2c_abs_state": np.nan, "read_noise_state": _read_noise(best, scale)}),
        fit_target=target,
    )
    return SeriesFit(info, fits, device)


def _fit_all(data: StepMap, ts: TraceSet, cfg: FitConfig, weights, target: FitTarget,
             judge: str = "r2_trace") -> list[FamilyFit]:
    if target is FitTarget.STEPS:
        return [fit_family(f, data, ts, cfg, weights, target, judge=judge) for f in cfg.families]
    # Trajectory fits start from the soft-bounds trajectory fit's smooth step map.
    first = fit_family("softbounds", data, ts, cfg, weights, target, judge=judge)
    grid = np.linspace(data.g.min(), data.g.max(), 64)
    ref = None
    if first.values:
        both = np.r_[grid, grid]
        up = np.r_[np.ones(64, bool), np.zeros(64, bool)]
        ref = StepMap(both, family("softbounds").step(both, up, **first.values), up, scale=data.scale)
    rows = {"softbounds": first}
    for f in cfg.families:
        if f not in rows:
            rows[f] = fit_family(f, data, ts, cfg, weights, target, reference=ref, judge=judge)
    return [rows[f] for f in cfg.families]


def _series_problem(s: Series, span: float, sm) -> str | None:
    if len(s.state) < 10:
        return f"too few pulses ({len(s.state)})"
    if not np.isfinite(span) or span <= 0:
        return "constant state: no steps to fit"
    try:
        check_protocol(s)
    except InputError as exc:  # a protocol we cannot fit: flagged, not raised
        return exc.message
    if sm.up.any() and sm.dg[sm.up].mean() <= 0:
        return "steps of the wrong sign: up pulses lower the state on average"
    if (~sm.up).any() and sm.dg[~sm.up].mean() >= 0:
        return "steps of the wrong sign: down pulses raise the state on average"
    return None


# --- many series ------------------------------------------------------------------------
def _fit_partition(series: list[Series], cfg: FitConfig, split: list[list]) -> list[SeriesFit]:
    """Fit a partition of series (``split``: each one's traces). With the batch engine
    every family's step-map fits are solved together (``pipeline.batchfit``); trajectory
    fits, staircases, and series the batched solver leaves unanswered, go to lmfit."""
    preps = [_prepare(s, cfg, trs) for s, trs in zip(series, split)]
    todo = [p for p in preps if isinstance(p, _Prepared)]
    # Staircases stay on lmfit: on their hump-shaped step maps the batched solver was seen
    # to stop in other minima (softbounds R^2 0.51 against lmfit's 0.87).
    steps = ([p for p in todo if p.target is FitTarget.STEPS and p.judge == "r2_trace"]
             if cfg.engine == "batch" else [])
    rows: dict[int, list[FamilyFit]] = {}
    if steps:
        by_family = [fit_steps(f, [p.data for p in steps], [p.weights for p in steps],
                               [p.ts for p in steps], cfg.r2_min, [p.judge for p in steps])
                     for f in cfg.families]
        for i, p in enumerate(steps):
            rows[id(p)] = [fits[i] or fit_family(f, p.data, p.ts, cfg, p.weights, p.target, judge=p.judge)
                           for f, fits in zip(cfg.families, by_family)]
    out = []
    for p in preps:
        if isinstance(p, SeriesFit):
            out.append(p)
            continue
        fits = rows.get(id(p)) or _fit_all(p.data, p.ts, cfg, p.weights, p.target, p.judge)
        out.append(_choose(p, fits, cfg))
    return out


def fit_frame(df: pd.DataFrame, cfg: FitConfig = FitConfig(), progress=None) -> FitResult:
    """Fit every device series in canonical rows ``df`` (see ``fit_series_list``)."""
    return fit_series_list(series_from_frame(df), cfg, progress)


def fit_series_list(series: list[Series], cfg: FitConfig = FitConfig(), progress=None) -> FitResult:
    """Fit device series in partitions of ``PARTITION`` series spread over
    ``cfg.workers`` processes; ``progress(done, total)`` after each partition."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # more processes than cores only add forks and cut the batches smaller: --workers 200
    # on 2 cores fitted 2,000 series in 12.9 s instead of 4.3 s
    workers = min(cfg.workers or cores, cores)
    size = PARTITION if cfg.engine == "batch" else 8
    # a small wafer still gives every worker a partition
    size = max(1, min(size, -(-len(series) // workers)))
    parts = [series[i:i + size] for i in range(0, len(series), size)]
    if workers == 1 or len(parts) <= 1:
        done = map(_partition_tables, parts, [cfg] * len(parts))
        tables = _collect(done, len(series), progress)
    else:
        if cfg.engine == "lmfit":
            lmfit.load()  # once here, not once in every forked worker
        token = object()
        _FORKED[id(token)] = parts
        try:
            with process_pool(workers) as pool, workers_lost_explained("fit"):
                with parent_objects_frozen():  # map's first submit forks the workers
                    done = pool.map(*_tasks(parts, cfg, id(token)))
                tables = _collect(done, len(series), progress)
        finally:
            del _FORKED[id(token)]
    tables = tables or [_partition_tables([], cfg)]  # no series: empty tables, same columns
    fits, devices, params = (_concat([t[i] for t in tables]) for i in range(3))
    traces = [t[3] for t in tables if len(t[3])]
    return FitResult(fits=fits, params=params, devices=devices,
                     population=population(devices, params),
                     traces=_concat(traces) if traces else pd.DataFrame())


# Partitions of the fit_series_list calls in progress, by call: forked workers inherit
# them, so a task names its partition instead of pickling its series (about 18 kB each).
_FORKED: dict[int, list] = {}


def _tasks(parts: list, cfg: FitConfig, key: int) -> tuple:
    """(function, *argument lists) of ``pool.map`` over ``parts``: partition numbers where
    workers are forked (they hold the partitions already), else the partitions."""
    if multiprocessing.get_start_method() == "fork":
        return _forked_partition_tables, [key] * len(parts), range(len(parts)), [cfg] * len(parts)
    return _partition_tables, parts, [cfg] * len(parts)


def _forked_partition_tables(key: int, i: int, cfg: FitConfig) -> tuple[pd.DataFrame, ...]:
    return _partition_tables(_FORKED[key][i], cfg)


def _partition_tables(series: list[Series], cfg: FitConfig) -> tuple[pd.DataFrame, ...]:
    """(fits, devices, params, trace fits) rows of a partition: built in the worker, so
    the parent only concatenates (and frames travel between processes faster than
    records). Each trace fit is its own least-squares problem, so partitions' trace fits
    concatenated are the wafer's."""
    keep_freed_arrays()
    split = [traces(s) for s in series]  # for the model fits and the trace fits
    results = _fit_partition(series, cfg, split)
    return (records_frame([(r.info, f) for r in results for f in r.fits], (SeriesInfo, FamilyFit)),
            records_frame([(r.info, r.device) for r in results], (SeriesInfo, DeviceFit)),
            params_frame(results), fit_traces(series, split))


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Partitions' rows as one table, with the column types one frame of all rows gets
    (a column all None in one partition is object there, float or int elsewhere)."""
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return out.infer_objects()


def _collect(parts, total: int, progress) -> list:
    out, done = [], 0
    for tables in parts:
        out.append(tables)
        done += len(tables[1])  # one devices row per series
        if progress:
            progress(done, total)
    return out


def params_frame(results: list[SeriesFit]) -> pd.DataFrame:
    """One row per (series, family, parameter): every fitted value and its standard error."""
    rows = [(*r.info.key, f.family, name, value, f.stderr.get(name, np.nan))
            for r in results for f in r.fits for name, value in f.values.items()]
    return pd.DataFrame(rows, columns=[*SERIES_COLUMNS, "family", "param", "value", "stderr"])


def population(devices: pd.DataFrame, params: pd.DataFrame) -> pd.DataFrame:
    """Median and robust spread of each parameter per (wafer, pulse width)."""
    rows = []
    for (wafer, pw), devs in devices.groupby(["wafer", "pulse_width_s"], sort=True):
        good = devs[devs["family"].notna()]
        failed = int(len(devs) - len(good))
        fam = good["family"].mode().iloc[0] if len(good) else None
        base = PopulationStat(wafer, pw, fam, int(len(devs)), failed)
        if fam is None:
            rows.append((base,))
            continue
        keys = set(map(tuple, good[["die", "device"]].to_numpy()))
        p = params[(params.wafer == wafer) & (params.pulse_width_s == pw) & (params.family == fam)]
        p = p[[k in keys for k in zip(p.die, p.device)]]
        extra = good[list(DeviceFit.POPULATION_METRICS)]
        series = {name: grp["value"].to_numpy() for name, grp in p.groupby("param")}
        series.update({c: extra[c].to_numpy(float) for c in extra.columns})
        for name, values in series.items():
            v = values[np.isfinite(values)]
            med = float(np.median(v)) if len(v) else np.nan
            spread = float(1.4826 * np.median(np.abs(v - med))) if len(v) else np.nan
            rows.append((replace(base, param=name, median=med, spread=spread,
                                 rel_spread=spread / abs(med) if med else np.nan, n=int(len(v))),))
    return records_frame(rows, (PopulationStat,))


# --- trace-level soft-bounds fits (vectorised) -----------------------------------------
def trace_states(series: list[Series], min_reads: int = 4, split: list[list] | None = None):
    """(series, trace, normalised reads incl. the one before the trace, scale) for
    every trace with at least ``min_reads`` reads: what a trace fit sees. ``split``:
    each series' ``traces(s)`` if known."""
    for i, s in enumerate(series):
        scale = StateScale.of(s.state, s.state_unit)
        scale = scale if scale.span else replace(scale, span=1.0)  # constant: any span will do
        for t in (split[i] if split is not None else traces(s)):
            states = t.states if np.isnan(t.state_before) else np.r_[t.state_before, t.states]
            if len(states) >= min_reads:
                yield s, t, scale.g(states), scale


def fit_traces(series: list[Series], split: list[list] | None = None) -> pd.DataFrame:
    """Soft-bounds fit of every trace: ``dg = k (b - g)`` per (cycle, direction) run.

    The model is linear in (slope = -k, intercept = k b), so the least-squares solution
    is closed form; all traces are solved at once with segment sums. Standard errors come
    from the regression covariance, propagated to (k, b). ``bench/fit.py`` checks that
    lmfit from generic starting values converges to the same parameters.
    """
    rows, gs, dgs, ids = [], [], [], []
    for s, t, g, scale in trace_states(series, split=split):
        rows.append({**dict(zip(SERIES_COLUMNS, s.key)), "cycle": t.cycle,
                     "direction": "up" if t.up else "down", "norm_lo": scale.lo,
                     "norm_span": scale.span})
        gs.append(g[:-1])
        dgs.append(np.diff(g))
        ids.append(np.full(len(g) - 1, len(rows) - 1))
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    k, b, k_err, b_err, n, r2 = solve_linear_steps(np.concatenate(gs), np.concatenate(dgs),
                                                   np.concatenate(ids), len(rows))
    out["k"], out["b"], out["k_err"], out["b_err"], out["n_steps"], out["r2_steps"] = k, b, k_err, b_err, n, r2
    return out


def solve_linear_steps(g, dg, ids, n_groups):
    """Per group, least squares of ``dg = k (b - g)``; returns k, b, their errors, n, R^2."""
    n = np.bincount(ids, minlength=n_groups).astype(float)
    sx = np.bincount(ids, g, n_groups)
    sy = np.bincount(ids, dg, n_groups)
    sxx = np.bincount(ids, g * g, n_groups)
    sxy = np.bincount(ids, g * dg, n_groups)
    syy = np.bincount(ids, dg * dg, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        sxx_c = sxx - sx * sx / n
        syy_c = syy - sy * sy / n
        slope = (sxy - sx * sy / n) / sxx_c
        icpt = (sy - slope * sx) / n
        rss = np.maximum(syy_c - slope * (sxy - sx * sy / n), 0.0)
        s2 = rss / (n - 2)
        var_slope = s2 / sxx_c
        xbar = sx / n
        var_icpt = s2 * (1 / n + xbar ** 2 / sxx_c)
        cov = -xbar * var_slope
        k = -slope
        b = icpt / k
        # b = -icpt/slope: gradient (db/dslope, db/dicpt) = (icpt/slope^2, -1/slope)
        db_ds, db_di = icpt / slope ** 2, -1 / slope
        b_var = db_ds ** 2 * var_slope + db_di ** 2 * var_icpt + 2 * db_ds * db_di * cov
        r2 = 1 - rss / syy_c
    return k, b, np.sqrt(var_slope), np.sqrt(b_var), n.astype(int), r2
