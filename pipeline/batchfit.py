"""Step-map fits of many series at once: a batched Levenberg-Marquardt in numpy.

Each device series is a tiny least-squares problem (2-16 parameters, a few hundred
steps), so one ``lmfit.Model.fit`` per series spends most of its time in Python
overhead. Here all series of a partition are solved together per family: step maps
are padded into (series, step) matrices with zero weight on the padding, every family's
``step`` formula is evaluated once per iteration for the whole batch (parameters as
(series, 1) columns), and the Jacobian comes from analytic step gradients
(``GRADIENTS``), or from batched differences for a family without them.

lmfit stays the definition and the reference (``FitConfig(engine="lmfit")``); this
solver reproduces what it reports:

- bounds: lmfit's MINUIT transform ``x = lo + (sin(u) + 1)(hi - lo)/2``; the damped
  Gauss-Newton steps are taken in ``u``, so fits approach bounds the way lmfit's do;
- covariance: ``redchi * inv(J^T J)`` with ``J`` the Jacobian of the weighted
  residual in the external parameters (lmfit transforms MINPACK's internal covariance
  with the same gradient, which is the same matrix); a Jacobian column that is all
  zero gives no covariance, as MINPACK's triangular inverse fails there;
- chisqr, redchi, AIC, BIC by lmfit's formulas.

A series the solver does not bring to convergence comes back as ``None``: the caller
fits it with lmfit.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import FunctionType, SimpleNamespace

import numpy as np

from .devices import StepMap, DeviceModel, family, geometric
from .devices.neurosim import P_MAX
from .fitrecords import FamilyFit, FitTarget

# lmfit's settings for MINPACK's lmdif (Minimizer.leastsq, Model.fit's max_nfev 4000)
FTOL = XTOL = 1.5e-8
EPSFCN = 1e-10      # forward-difference step sqrt(epsfcn) |u| in the internal coordinates
FACTOR = 100.0      # initial step bound: FACTOR |D u|
MAXFEV = 4000       # then lmfit takes over (and stops there too)
EPSMCH, DWARF = np.finfo(float).eps, np.finfo(float).tiny
COMPACT_MIN = 16    # rows below which lmdif no longer compacts its arrays to the live series
GRID_ROWS = 1024    # parameter sets per symmetry-point grid search
LENGTH_SPREAD = 1.5  # longest / shortest step map solved in one batch (padding costs)
BISECTIONS = 44     # a grid cell (1/400 of the range) halved to below brentq's xtol 1e-12


@dataclass
class StepBatch:
    """Step maps of many series, padded to one length; ``w`` is 0 on padding."""

    g: np.ndarray      # (B, N)
    dg: np.ndarray     # (B, N)
    up: np.ndarray     # (B, N) bool
    w: np.ndarray      # (B, N) fit weights
    n: np.ndarray      # (B,) real points per series

    @classmethod
    def build(cls, datas: list[StepMap], weights: list[np.ndarray]) -> "StepBatch":
        n = np.array([len(d.g) for d in datas])
        shape = (len(datas), int(n.max()))
        g, dg, w = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        up = np.zeros(shape, bool)
        for i, (d, wt) in enumerate(zip(datas, weights)):
            k = n[i]
            # padding repeats the first point: finite wherever the model is
            g[i], up[i] = d.g[0], d.up[0]
            g[i, :k], dg[i, :k], up[i, :k], w[i, :k] = d.g, d.dg, d.up, wt
        return cls(g, dg, up, w, n)

    @property
    def mask(self) -> np.ndarray:
        return np.arange(self.g.shape[1]) < self.n[:, None]


# --- starting values --------------------------------------------------------------------
@dataclass
class Start:
    """What a fit needs of one ``lmfit.Parameter``: value, bounds, whether it varies."""

    name: str
    value: float
    vary: bool = True
    min: float = -np.inf
    max: float = np.inf


class StartValues(dict):
    """The part of ``lmfit.Parameters`` a family's ``guess`` uses, without lmfit's
    symbol table and name checks (which cost more than the batched fit of a series)."""

    def add(self, name, value=None, vary=True, min=-np.inf, max=np.inf, **_):  # noqa: A002
        # lmfit clips a starting value into its bounds
        self[name] = Start(name, float(max_(min, min_(max, value))), vary, min, max)

    def valuesdict(self) -> dict:
        return {k: p.value for k, p in self.items()}


min_, max_ = min, max  # the builtins, which add()'s lmfit-style argument names shadow
_LIGHT_LMFIT = SimpleNamespace(Parameters=StartValues)


def _with_light_lmfit(fn):
    """``fn`` with the name ``lmfit`` bound to a namespace whose Parameters is StartValues."""
    return FunctionType(fn.__code__, dict(fn.__globals__, lmfit=_LIGHT_LMFIT), fn.__name__,
                        fn.__defaults__, fn.__closure__)


def _light(cls: type) -> type:
    """``cls`` whose ``parameters`` (the one place a family builds lmfit.Parameters)
    builds StartValues, with its ``guess`` calling light versions of the families it
    builds on (e.g. SoftBounds)."""
    if cls in _LIGHT:
        return _LIGHT[cls]
    light = _LIGHT[cls] = type(cls.__name__, (cls,), {})
    guess = cls.guess
    env = dict(guess.__globals__, lmfit=_LIGHT_LMFIT)
    for name, value in guess.__globals__.items():
        if isinstance(value, type) and issubclass(value, DeviceModel) and value is not DeviceModel:
            env[name] = _light(value)
    light.guess = _remembered(FunctionType(guess.__code__, env, guess.__name__, guess.__defaults__,
                                           guess.__closure__))
    light.parameters = _with_light_lmfit(cls.parameters)
    return light


_LIGHT: dict[type, type] = {}
_GUESSES: dict[tuple, tuple] = {}  # (class, id(data), ...) -> (data, starting values)
GUESS_CACHE = 2048  # a partition of 256 series makes 5 per series (bounded memory)


def _remembered(guess):
    """``guess`` remembering its answer per (class, data object, attributes): families
    start from the soft-bounds guess, so a series' one is otherwise computed once for the
    noise weights and once more per family. Nothing edits starting values once built."""
    def remembered(self, data):
        key = (type(self), id(data), tuple(sorted(self.__dict__.items())))
        hit = _GUESSES.get(key)
        if hit is not None and hit[0] is data:
            return hit[1]
        if len(_GUESSES) >= GUESS_CACHE:
            _GUESSES.clear()
        out = guess(self, data)
        _GUESSES[key] = (data, out)  # holding data keeps its id from being reused
        return out
    return remembered


def starting_values(model: DeviceModel, data: StepMap):
    """``model.guess(data)``: the same names, values, bounds and vary flags, built as
    StartValues where the family's guess allows it."""
    try:
        light = _light(type(model))
        obj = light.__new__(light)
        obj.__dict__.update(model.__dict__)
        return obj.guess(data)
    except (AttributeError, TypeError):  # a guess using more of lmfit: the real thing
        return model.guess(data)


@dataclass
class Bounds:
    """Varying parameters of a family over a batch, and lmfit's transform of them."""

    names: list[str]         # varying, in lmfit's order
    fixed: dict              # name -> (B,) values of parameters that do not vary
    lo: np.ndarray           # (B, P)
    hi: np.ndarray           # (B, P)

    @classmethod
    def from_params(cls, params: list) -> tuple["Bounds", np.ndarray]:
        """From each series' ``lmfit.Parameters`` (or StartValues)."""
        names = [k for k, p in params[0].items() if p.vary]
        if any([k for k, p in ps.items() if p.vary] != names for ps in params):
            raise ValueError("series of one family vary different parameters")
        fixed = {k: np.array([ps[k].value for ps in params]) for k, p in params[0].items()
                 if not p.vary}
        lo = np.array([[ps[k].min for k in names] for ps in params])
        hi = np.array([[ps[k].max for k in names] for ps in params])
        x0 = np.clip(np.array([[ps[k].value for k in names] for ps in params]), lo, hi)
        return cls(names, fixed, lo, hi), x0

    def external(self, u, rows=slice(None)):
        lo, hi = self.lo[rows], self.hi[rows]
        return lo + (np.sin(u) + 1) * (hi - lo) / 2

    def internal(self, x, rows=slice(None)):
        lo, hi = self.lo[rows], self.hi[rows]
        return np.arcsin(np.clip(2 * (x - lo) / (hi - lo) - 1, -1.0, 1.0))

    def values(self, x, rows=slice(None)) -> dict:
        """Keyword arguments of the family's ``step`` as (rows, 1) columns; (S, rows, 1)
        for a stack ``x`` of S parameter sets per row."""
        out = {k: x[..., i:i + 1] for i, k in enumerate(self.names)}
        out.update({k: v[rows][:, None] for k, v in self.fixed.items()})
        return out


def _lookup_grad(g, up, g_lo, g_hi, **nodes):
    """Each node's hat weight at g (the model is linear in the node steps): a point
    weighs its segment's two nodes of its own direction by 1 - t and t."""
    n = len(nodes) // 2
    u = np.clip((g - g_lo) / (g_hi - g_lo), 0.0, 1.0) * (n - 1)
    j = np.clip(np.floor(u), 0, n - 2)
    t = u - j
    left = j.astype(int) + np.where(up, 0, n)  # columns: up_0 .. up_{n-1}, down_0 .. down_{n-1}
    out = np.zeros((g.shape[0], 2 * n, g.shape[1]))
    rows, points = np.indices(g.shape, sparse=True)
    out[rows, left, points] = 1 - t
    out[rows, left + 1, points] = t
    names = [f"{d}_{i}" for d in ("up", "down") for i in range(n)]
    return {k: out[:, i] for i, k in enumerate(names)}


# The analytic Jacobian of a family linear in its varying parameters: one Jacobian
# serves its whole fit (checked against differences in tests/test_batchfit.py).
GRADIENTS = {"lookup": _lookup_grad}
LINEAR = set(GRADIENTS)


# Pairs (up parameter, down parameter) of which each enters only its own direction's
# steps: one evaluation moving both gives both forward differences (the up points' change
# is the up parameter's column, the down points' the down one's), the same numbers as
# two evaluations. The other varying parameters are moved together in one stacked
# evaluation, with the factors they do not enter computed once.
SPLIT = {
    "softbounds": (("k_p", "k_d"), ("b_hi", "b_lo")),
    "neurosim": (("A_p", "A_d"),),
    "powstep": (("a_p", "a_d"), ("gamma_p", "gamma_d")),
    "beta": (("A_p", "A_d"), ("alpha_p", "alpha_d"), ("beta_p", "beta_d")),
}


class Problem:
    """One family over a batch: weighted residuals and their Jacobian."""

    def __init__(self, model: DeviceModel, batch: StepBatch, bounds: Bounds, x0: np.ndarray):
        self.model, self.b, self.bounds = model, batch, bounds
        # (index, direction) of the varying parameters of each SPLIT pair; the rest together
        self.split = [[(bounds.names.index(k), up) for k, up in zip(pair, (True, False))
                       if k in bounds.names] for pair in SPLIT.get(model.name, ())]
        self.split = [pair for pair in self.split if pair]
        paired = {j for pair in self.split for j, _ in pair}
        self.rest = [j for j in range(len(bounds.names)) if j not in paired]
        self.down = ~batch.up
        self.linear = None
        if model.name in LINEAR:
            rows = np.arange(len(x0))
            with np.errstate(all="ignore"):
                parts = GRADIENTS[model.name](batch.g, batch.up, **bounds.values(x0))
            jac = np.stack([parts[k] for k in bounds.names], 1) * batch.w[:, None, :]
            self.linear = (x0, self._eval(x0, rows), jac)

    def subset(self, rows: np.ndarray) -> "Problem":
        """The same problem for the series ``rows`` only."""
        out = Problem.__new__(Problem)
        b, bd = self.b, self.bounds
        out.model, out.split, out.rest, out.down = self.model, self.split, self.rest, self.down[rows]
        out.b = StepBatch(b.g[rows], b.dg[rows], b.up[rows], b.w[rows], b.n[rows])
        out.bounds = Bounds(bd.names, {k: v[rows] for k, v in bd.fixed.items()}, bd.lo[rows],
                            bd.hi[rows])
        out.linear = None if self.linear is None else tuple(a[rows] for a in self.linear)
        return out

    def _eval(self, x, rows):
        """Weighted residuals at ``x`` (rows, P)."""
        return self._eval_at(self.bounds.values(x, rows), rows)

    def _eval_at(self, values: dict, rows):
        """Weighted residuals for the step's keyword arguments ``values`` ((rows, 1)
        columns, or (S, rows, 1) for S parameter sets)."""
        b = self.b
        with np.errstate(all="ignore"):
            pred = self.model.step(b.g[rows], b.up[rows], **values)
        pred -= b.dg[rows]
        pred *= b.w[rows]
        return pred

    def residual(self, x, rows=slice(None)):
        if self.linear is None:
            return self._eval(x, rows)
        x0, r0, j0 = self.linear
        return r0[rows] + ((x - x0[rows])[:, None, :] @ j0[rows])[:, 0]

    def jacobian(self, u, f, rows):
        """lmdif's forward-difference Jacobian of the weighted residual in lmfit's internal
        coordinates ``u`` (step ``sqrt(EPSFCN) |u|``), transposed: (rows, P, N). ``f``:
        the residual at ``u``. lmfit's path depends on these differences: with the
        analytic Jacobian the kinked families were seen to stop in other minima."""
        bounds = self.bounds
        eps = np.sqrt(max(EPSFCN, EPSMCH))
        h = eps * np.abs(u)
        h[h == 0] = eps
        x, moved = bounds.external(u, rows), bounds.external(u + h, rows)
        if self.linear is not None:  # linear in x: moving x_j moves the residual along J_j
            return self.linear[2][rows] * ((moved - x) / h)[:, :, None]
        out = np.empty((len(u), u.shape[1], f.shape[1]))
        names = bounds.names
        for pair in self.split:
            cols = bounds.values(x, rows)
            cols.update({names[j]: moved[:, j:j + 1] for j, _ in pair})
            diff = self._eval_at(cols, rows)
            diff -= f
            for j, is_up in pair:
                # zero on the other direction's points (there the difference is zero)
                col = out[:, j]
                np.multiply(diff, self.b.up[rows] if is_up else self.down[rows], out=col)
                col /= h[:, j, None]
        if self.rest:
            # one evaluation of S parameter sets: set s moves parameter rest[s]; the
            # others enter as (rows, 1) columns, so what they alone determine is
            # computed once, not per set
            group = self.rest
            xs = np.repeat(x[None, :, group], len(group), 0)
            xs[np.arange(len(group)), :, np.arange(len(group))] = moved[:, group].T
            cols = bounds.values(x, rows)
            cols.update({names[j]: xs[:, :, s:s + 1] for s, j in enumerate(group)})
            diff = self._eval_at(cols, rows).transpose(1, 0, 2)
            diff -= f[:, None, :]
            out[:, group] = diff / h[:, group, None]
        return out


def _solve(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Batched ``M x = v``; least squares for rows where M is singular."""
    try:
        return np.linalg.solve(M, v[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(m, x, rcond=None)[0] for m, x in zip(M, v)])


@dataclass
class Solution:
    x: np.ndarray            # (B, P) external values
    converged: np.ndarray    # (B,) bool
    nfev: np.ndarray         # (B,) residual evaluations
    normal: np.ndarray       # (B, P, P) J^T J of the last Jacobian, internal coordinates
    dxdu: np.ndarray         # (B, P) gradient of lmfit's bound transform at the optimum


def _rows(index: np.ndarray, n: int):
    """``index`` as a slice when it takes every row: gathers of whole (B, N) arrays
    then become views."""
    return slice(None) if len(index) == n else index


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("bi,bi->b", v, v))


def _quadratic(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``v^T M^-1 v`` per row; NaN where M is singular."""
    try:
        return np.einsum("bi,bi->b", v, np.linalg.solve(M, v[..., None])[..., 0])
    except np.linalg.LinAlgError:
        out = np.full(len(v), np.nan)
        for i, (m, x) in enumerate(zip(M, v)):
            try:
                out[i] = x @ np.linalg.solve(m, x)
            except np.linalg.LinAlgError:
                pass
        return out


def lmpar(A, g, D, delta, par):
    """MINPACK's ``lmpar`` for a batch: the Levenberg-Marquardt parameter ``par`` whose
    step ``x = (A + par D^2)^-1 g`` has ``|D x|`` within 10 % of ``delta`` (par = 0 when
    the Gauss-Newton step is shorter), by MINPACK's safeguarded Newton iteration.
    ``A = J^T J``, ``g = J^T f``: MINPACK works on the QR factors of J, which give the
    same quantities. Solved in D-scaled variables ``y = D x`` (``A`` with a near-unit
    diagonal), which keeps the normal equations about as well conditioned as the QR."""
    A = A / (D[:, :, None] * D[:, None, :])
    g = g / D
    y = _solve(A, g)
    ynorm = _norm(y)
    fp = ynorm - delta
    out = np.zeros(len(g))
    todo = np.flatnonzero(~(fp <= 0.1 * delta))
    if len(todo):
        out[todo], y[todo] = _lmpar_search(A[todo], g[todo], y[todo], ynorm[todo], fp[todo],
                                           delta[todo], par[todo])
    return out, y / D


def _lmpar_search(A, g, y, ynorm, fp, delta, par):
    """lmpar's iteration where the Gauss-Newton step is too long (scaled variables)."""
    eye = np.eye(A.shape[1])
    q = _quadratic(A, y / ynorm[:, None])
    parl = np.where(np.isfinite(q) & (q > 0), fp / delta / q, 0.0)  # 0: J is rank deficient
    gnorm = _norm(g)
    paru = gnorm / delta
    paru = np.where(paru == 0, DWARF / np.minimum(delta, 0.1), paru)
    p = np.minimum(np.maximum(par, parl), paru)
    p = np.where(p == 0, gnorm / ynorm, p)
    act = np.arange(len(g))
    for it in range(1, 11):
        p[act] = np.where(p[act] == 0, np.maximum(DWARF, 0.001 * paru[act]), p[act])
        M = A[act] + p[act, None, None] * eye
        ya = _solve(M, g[act])
        y[act] = ya
        yn = _norm(ya)
        prev, fp[act] = fp[act], yn - delta[act]
        f_a = fp[act]
        stop = ((np.abs(f_a) <= 0.1 * delta[act]) | ((parl[act] == 0) & (f_a <= prev) & (prev < 0))
                | (it == 10) | ~np.isfinite(f_a))
        if stop.all():
            break
        go = ~stop
        act, f_a = act[go], f_a[go]
        parc = f_a / delta[act] / _quadratic(M[go], ya[go] / yn[go][:, None])
        parl[act] = np.where(f_a > 0, np.maximum(parl[act], p[act]), parl[act])
        paru[act] = np.where(f_a < 0, np.minimum(paru[act], p[act]), paru[act])
        p[act] = np.maximum(parl[act], p[act] + parc)
    return p, y


def lmdif(prob: Problem, x0: np.ndarray) -> Solution:
    """MINPACK's ``lmdif`` (what lmfit's ``leastsq`` runs, with lmfit's settings) for
    every series at once, in lmfit's internal coordinates: the same trust region with
    column-norm scaling, the same step acceptance and bound updates, the same stopping
    tests. Following lmfit's path matters: on the kinked step maps of powstep and beta
    another step control stops in other minima. A series that ends on one of MINPACK's
    failure tests comes back unconverged (lmfit then reports what it reports)."""
    n_ser, n_par = x0.shape
    bounds = full = prob.bounds
    u = bounds.internal(x0)
    f = prob.residual(bounds.external(u))
    fnorm = _norm(f)
    nfev = np.ones(n_ser, int)
    done = ~np.isfinite(fnorm)
    converged = np.zeros(n_ser, bool)
    first, need_jac = np.ones(n_ser, bool), np.ones(n_ser, bool)
    A, g = np.zeros((n_ser, n_par, n_par)), np.zeros((n_ser, n_par))
    D, gnorm = np.ones((n_ser, n_par)), np.zeros(n_ser)
    delta, par, xnorm = np.zeros(n_ser), np.zeros(n_ser), np.zeros(n_ser)
    index = np.arange(n_ser)  # the series of each row of the arrays above
    out_u, out_ok, out_nfev, out_A = np.empty_like(u), np.zeros(n_ser, bool), nfev.copy(), A.copy()

    def keep_results():
        out_u[index], out_ok[index], out_nfev[index], out_A[index] = (
            u, converged & np.isfinite(fnorm), nfev, A)

    while True:
        act = np.flatnonzero(~done)
        if not len(act):
            break
        if len(act) <= len(index) // 2 and len(index) > COMPACT_MIN:
            # most series have ended: go on with the rest only, so every evaluation
            # works on whole arrays (views) instead of gathering the rows it needs
            keep_results()
            index, prob = index[act], prob.subset(act)
            bounds = prob.bounds
            u, f, fnorm, nfev, done, converged, first, need_jac, A, g, D, gnorm, delta, par, xnorm = (
                v[act] for v in (u, f, fnorm, nfev, done, converged, first, need_jac, A, g, D,
                                 gnorm, delta, par, xnorm))
            act = np.arange(len(act))
        fresh = act[need_jac[act]]
        if len(fresh):
            Jt = prob.jacobian(u[fresh], f[fresh], _rows(fresh, len(index)))
            nfev[fresh] += n_par
            A[fresh] = Jt @ Jt.transpose(0, 2, 1)
            g[fresh] = (Jt @ f[fresh][..., None])[..., 0]
            cn = np.sqrt(np.einsum("bii->bi", A[fresh]))  # column norms of J
            new = fresh[first[fresh]]
            D[new] = np.where(cn[first[fresh]] == 0, 1.0, cn[first[fresh]])
            xnorm[new] = _norm(D[new] * u[new])
            delta[new] = np.where(xnorm[new] == 0, FACTOR, FACTOR * xnorm[new])
            with np.errstate(all="ignore"):
                ratio_g = np.abs(g[fresh]) / (cn * fnorm[fresh][:, None])
            gnorm[fresh] = np.where(cn > 0, ratio_g, 0.0).max(1)
            flat = fresh[(fnorm[fresh] == 0) | (gnorm[fresh] == 0)]  # gtol = 0: info 4
            converged[flat], done[flat] = True, True
            D[fresh] = np.maximum(D[fresh], cn)
            need_jac[fresh] = False
            act = np.flatnonzero(~done)
            if not len(act):
                break
        p, x = lmpar(A[act], g[act], D[act], delta[act], par[act])
        step = -x
        pnorm = _norm(D[act] * step)
        dl = np.where(first[act], np.minimum(delta[act], pnorm), delta[act])
        u_new = u[act] + step
        rows = _rows(act, len(index))
        f_new = prob.residual(bounds.external(u_new, rows), rows)
        nfev[act] += 1
        fnorm1, fn = _norm(f_new), fnorm[act]
        with np.errstate(all="ignore"):
            actred = np.where(0.1 * fnorm1 < fn, 1 - (fnorm1 / fn) ** 2, -1.0)
            t1 = np.einsum("bi,bij,bj->b", step, A[act], step) / fn ** 2
            t2 = p * pnorm ** 2 / fn ** 2
            prered, dirder = t1 + 2 * t2, -(t1 + t2)
            ratio = np.where(prered != 0, actred / prered, 0.0)
            temp = np.where(actred >= 0, 0.5, 0.5 * dirder / (dirder + 0.5 * actred))
        temp = np.where((0.1 * fnorm1 >= fn) | (temp < 0.1), 0.1, temp)
        low = ratio <= 0.25
        high = ~low & ((p == 0) | (ratio >= 0.75))
        dl = np.where(low, temp * np.minimum(dl, pnorm / 0.1), np.where(high, pnorm / 0.5, dl))
        delta[act] = dl
        par[act] = np.where(low, p / temp, np.where(high, 0.5 * p, p))
        ok = ratio >= 1e-4
        acc = act[ok]
        u[acc], f[acc], fnorm[acc] = u_new[ok], f_new[ok], fnorm1[ok]
        xnorm[acc] = _norm(D[acc] * u[acc])
        first[acc], need_jac[acc] = False, True
        small = (np.abs(actred) <= FTOL) & (prered <= FTOL) & (0.5 * ratio <= 1)
        end = small | (dl <= XTOL * xnorm[act])
        converged[act[end]], done[act[end]] = True, True
        failed = ~end & ((nfev[act] >= MAXFEV) | (dl <= EPSMCH * xnorm[act]) | (gnorm[act] <= EPSMCH)
                         | ((np.abs(actred) <= EPSMCH) & (prered <= EPSMCH) & (0.5 * ratio <= 1)))
        done[act[failed]] = True
    keep_results()
    dxdu = np.cos(out_u) * (full.hi - full.lo) / 2
    return Solution(full.external(out_u), out_ok, out_nfev, out_A, dxdu)


def covariance(sol: Solution, redchi: np.ndarray) -> np.ndarray:
    """lmfit's scaled covariance per series: the inverse of lmdif's last ``J^T J`` (in
    the internal coordinates), times ``dx/du`` at the optimum on both sides (lmfit's
    ``_int2ext_cov_x``) and the reduced chi-square; NaN where MINPACK gives none (a
    Jacobian column all zero). Inverted with unit diagonal, as conditioned as can be."""
    A = sol.normal
    d = np.sqrt(np.einsum("bii->bi", A))
    cov = np.full_like(A, np.nan)
    rows = np.flatnonzero((d > 0).all(1) & np.isfinite(A).all((1, 2)))
    dd = d[rows][:, :, None] * d[rows][:, None, :]
    g = sol.dxdu[rows]
    scale = g[:, :, None] * g[:, None, :] * redchi[rows, None, None] / dd
    try:  # all at once; one singular matrix sends the batch through the loop below
        cov[rows] = np.linalg.inv(A[rows] / dd) * scale
        return cov
    except np.linalg.LinAlgError:
        pass
    for j, i in enumerate(rows):
        try:
            cov[i] = np.linalg.inv(A[i] / dd[j]) * scale[j]
        except np.linalg.LinAlgError:
            pass
    return cov


# --- what fit_family reports, for a whole batch ------------------------------------------
def _columns(p: dict, rows=slice(None)) -> dict:
    return {k: v[rows][:, None] for k, v in p.items()}


def _net(model, x, p):
    return (model.step(x, np.ones(x.shape, bool), **p) + model.step(x, np.zeros(x.shape, bool), **p))


def symmetry_points(model: DeviceModel, p: dict, near: np.ndarray | None = None) -> np.ndarray:
    """``model.symmetry_point`` for (B,) parameter arrays: the closed form of geometric
    families, else the bracketed root (first sign change on a 401-point grid, then bisection to
    machine precision where the reference calls brentq) for the whole batch at once.

    ``near``: (B, 2) brackets to try first (the cell of nearby parameters' root); rows
    whose bracket holds no sign change search the grid."""
    n = len(next(iter(p.values())))
    if type(model).symmetry_point is not DeviceModel.symmetry_point:  # a family's own rule
        return np.array([model.symmetry_point({k: float(v[i]) for k, v in p.items()})
                         for i in range(n)])
    with np.errstate(all="ignore"):
        geo = model.geometric(p)
        if geo is not None:  # DeviceModel.symmetry_point's closed form, for arrays
            return np.where(geo[0] + geo[1] > 0, geometric.symmetry_point(*geo), np.nan)
    cols = _columns(p)
    with np.errstate(all="ignore"):
        a, b = np.full(n, np.nan), np.full(n, np.nan)
        todo = np.ones(n, bool)
        if near is not None:
            fa, fb = (_net(model, near[:, k:k + 1], cols)[:, 0] for k in (0, 1))
            hit = (fa > 0) & (fb < 0)
            a[hit], b[hit] = near[hit, 0], near[hit, 1]
            todo = ~hit
        # the grid holds (rows, 401) states (times the node count for lookup): in chunks
        for rows in np.array_split(np.flatnonzero(todo), max(1, int(todo.sum()) // GRID_ROWS + 1)):
            if len(rows):
                a[rows], b[rows] = _grid_bracket(model, {k: v[rows] for k, v in p.items()})
        return _bisect(model, cols, a, b)


def _grid_bracket(model, p):
    """First grid cell (401 points over the state range) where the net step turns from up
    to down (``DeviceModel.root_symmetry_point``)."""
    n = len(next(iter(p.values())))
    lo, hi = (np.broadcast_to(np.asarray(v, float), (n,)) for v in model.state_range(p))
    grid = lo[:, None] + (hi - lo)[:, None] / 400 * np.arange(401)
    grid[:, -1] = hi  # as np.linspace
    net = _net(model, grid, _columns(p))
    cross = (net[:, :-1] > 0) & (net[:, 1:] <= 0)  # the stable crossing, as the reference
    i = np.argmax(cross, 1)
    rows = np.arange(n)
    a, b = grid[rows, i], grid[rows, i + 1]
    exact = net[rows, i + 1] == 0  # the reference returns a grid point with a zero net step
    a = np.where(exact, b, a)
    missing = ~cross.any(1)
    return np.where(missing, np.nan, a), np.where(missing, np.nan, b)


def _bisect(model, cols, a, b):
    """Each row's root in its bracket [a, b] to at least the precision of ``BISECTIONS``
    halvings, by Illinois false position (a few steps where the net step is smooth, not
    44), halving where a secant point falls outside the bracket; only rows not yet
    converged are evaluated."""
    fa = _net(model, a[:, None], cols)[:, 0]
    fb = _net(model, b[:, None], cols)[:, 0]
    tol = np.abs(b - a) * 2.0 ** -BISECTIONS
    live = np.flatnonzero(np.isfinite(a) & np.isfinite(b) & (a != b) & (fa != 0) & (fb != 0))
    side = np.zeros(len(a), int)  # which end the last step kept: +1 a, -1 b
    for _ in range(4 * BISECTIONS):
        if not len(live):
            break
        la, lb, lfa, lfb = a[live], b[live], fa[live], fb[live]
        x = la - lfa * (lb - la) / (lfb - lfa)
        # at least a tolerance from either end: a secant point that lands on the root
        # from one side then closes the bracket from the other, instead of creeping
        margin = np.maximum(tol[live] / 2, 2 * EPSMCH * np.maximum(np.abs(la), np.abs(lb)))
        x = np.minimum(np.maximum(x, la + margin), lb - margin)
        half = (la + lb) / 2
        x = np.where(np.isfinite(x) & (x > la) & (x < lb), x, half)
        fx = _net(model, x[:, None], {k: v[live] for k, v in cols.items()})[:, 0]
        zero = fx == 0
        left = (np.sign(fx) == np.sign(lfa)) & ~zero     # the root lies in [x, b]
        a[live] = np.where(left | zero, x, la)
        b[live] = np.where(left, lb, x)
        # Illinois: an end kept twice in a row has its value halved, so the next secant
        # point falls beyond the root and both ends close in
        keep_b, keep_a = left, ~left & ~zero
        fa[live] = np.where(left, fx, np.where(keep_a & (side[live] == 1), lfa / 2, lfa))
        fb[live] = np.where(keep_a, fx, np.where(keep_b & (side[live] == -1), lfb / 2, lfb))
        side[live] = np.where(keep_b, -1, np.where(keep_a, 1, 0))
        width = b[live] - a[live]
        mid = (a[live] + b[live]) / 2
        done = zero | (width <= tol[live]) | (mid == a[live]) | (mid == b[live])
        live = live[~done]
    return (a + b) / 2


def sp_uncertainty(model, p: dict, names: list[str], cov: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Delta method as ``fitting._sp_uncertainty``: central differences of the symmetry
    point (all perturbed parameter sets in one batch) times the covariance; NaN where
    there is no symmetry point."""
    out = np.full(len(sp), np.nan)
    ok = np.flatnonzero(np.isfinite(sp))
    if not len(ok):
        return out
    p = {key: v[ok] for key, v in p.items()}
    n, k = len(ok), len(names)
    stacked = {key: np.tile(v, 2 * k) for key, v in p.items()}
    steps = np.empty((k, n))
    for j, name in enumerate(names):
        h = 1e-6 * np.maximum(np.abs(p[name]), 1e-3)
        steps[j] = h
        stacked[name][2 * j * n:(2 * j + 1) * n] += h
        stacked[name][(2 * j + 1) * n:(2 * j + 2) * n] -= h
    lo, hi = (np.broadcast_to(np.asarray(v, float), (n,)) for v in model.state_range(p))
    cell = (hi - lo) / 400
    near = np.tile(np.c_[sp[ok] - cell, sp[ok] + cell], (2 * k, 1))
    sp_h = symmetry_points(model, stacked, near).reshape(2 * k, n)
    grad = ((sp_h[0::2] - sp_h[1::2]) / (2 * steps)).T          # (n, k)
    with np.errstate(invalid="ignore"):
        var = np.einsum("bi,bij,bj->b", grad, cov[ok], grad)
    out[ok] = np.where(np.isfinite(var) & (var >= 0), np.sqrt(np.abs(var)), np.nan)
    return out


def trajectory_r2(model, p: dict, tracesets: list) -> np.ndarray:
    """``fitting._trajectory_r2`` from the first read, every series' traces at once
    (traces padded to (series, trace, read) with a mask)."""
    n_tr = max(len(ts.up) for ts in tracesets)
    length = max(ts.states.shape[1] for ts in tracesets)
    states = np.full((len(tracesets), n_tr, length), np.nan)
    up = np.zeros((len(tracesets), n_tr), bool)
    for i, ts in enumerate(tracesets):
        states[i, :len(ts.up), :ts.states.shape[1]] = ts.states
        up[i, :len(ts.up)] = ts.up
    if length < 2:
        return np.full(len(tracesets), np.nan)
    # padded traces start inside the range: every family is finite there (masked below)
    start = np.where(np.isfinite(states[:, :, 0]), states[:, :, 0], 0.5)
    params = {k: v[:, None] for k, v in p.items()}
    with np.errstate(all="ignore"):
        sim = model.run(params, start, up, length - 1)
    meas = states[:, :, 1:]
    m = np.isfinite(meas)
    cnt = m.sum((1, 2))
    meas0 = np.where(m, meas, 0.0)
    mean = meas0.sum((1, 2)) / np.maximum(cnt, 1)
    ss_tot = (np.where(m, meas0 - mean[:, None, None], 0.0) ** 2).sum((1, 2))
    ss_res = (np.where(m, meas0 - sim, 0.0) ** 2).sum((1, 2))
    with np.errstate(all="ignore"):
        r2 = 1 - ss_res / ss_tot
    return np.where((ss_tot > 0) & (cnt > 0), r2, np.nan)


def wrong_sign(model, p: dict, lo, hi, g_min, g_max) -> list[str]:
    """Per series, where up steps fail to raise or down steps to lower the state on the
    measured range (``lo``..``hi`` clipped to ``g_min``..``g_max``); "" when nowhere."""
    a, b = np.maximum(lo, g_min), np.minimum(hi, g_max)
    grid = a[:, None] + (b - a)[:, None] / 100 * np.arange(101)
    grid[:, -1] = b
    cols = _columns(p)
    with np.errstate(all="ignore"):
        up = model.step(grid, np.ones(grid.shape, bool), **cols)
        down = model.step(grid, np.zeros(grid.shape, bool), **cols)
    tol = 1e-9 * np.max(np.abs(np.c_[up, down]), 1)[:, None]
    out = []
    for i in range(len(grid)):
        neg, pos = up[i] < -tol[i], down[i] > tol[i]
        out.append(f"up steps negative near g = {grid[i][np.argmax(neg)]:.3f}" if neg.any() else
                   f"down steps positive near g = {grid[i][np.argmax(pos)]:.3f}" if pos.any() else "")
    return out


def at_bound(bounds: Bounds, x: np.ndarray) -> list[str | None]:
    """``fitting._at_bound`` for a batch: the first varying parameter at a bound."""
    tol = 1e-6 * np.maximum(1.0, np.abs(bounds.hi - bounds.lo))
    hit = (x - bounds.lo < tol) | (bounds.hi - x < tol)
    return [bounds.names[int(np.argmax(h))] if h.any() else None for h in hit]


def fit_steps(name: str, datas: list[StepMap], weights: list[np.ndarray], tracesets: list,
              r2_min: float, judges: list[str] | None = None) -> list[FamilyFit | None]:
    """``fitting.fit_family`` on the step map for many series of one family at once.

    Returns one row per series in ``fit_family``'s layout, or None where this solver
    does not answer (too few points, no convergence, non-finite model): fit those
    with lmfit. ``judges``: per series, the R^2 a fit must reach (``quality_flag``)."""
    judges = judges or ["r2_trace"] * len(datas)
    model = family(name)
    params = [starting_values(model, d) for d in datas]
    out: list[FamilyFit | None] = [None] * len(datas)
    n_var = sum(p.vary for p in params[0].values())
    keep = [i for i, d in enumerate(datas) if len(d.g) >= 2 * n_var + 2]
    for group in length_groups([len(datas[i].g) for i in keep], LENGTH_SPREAD):
        rows = [keep[j] for j in group]
        fits = _fit_batch(model, [datas[i] for i in rows], [weights[i] for i in rows],
                          [tracesets[i] for i in rows], [params[i] for i in rows],
                          [judges[i] for i in rows], r2_min, n_var)
        for i, fit in zip(rows, fits):
            out[i] = fit
    return out


def length_groups(lengths: list[int], spread: float) -> list[list[int]]:
    """Positions of ``lengths`` in groups whose longest is at most ``spread`` times their
    shortest. A batch is padded to its longest series: one series ten times longer than
    the rest of its partition made the partition's fit six times slower."""
    groups: list[list[int]] = []
    for j in sorted(range(len(lengths)), key=lengths.__getitem__):  # stable: equal lengths keep order
        if groups and lengths[j] <= spread * lengths[groups[-1][0]]:
            groups[-1].append(j)
        else:
            groups.append([j])
    return groups


def _fit_batch(model: DeviceModel, datas: list[StepMap], weights: list, tracesets: list,
               params: list, judges: list[str], r2_min: float, n_var: int) -> list[FamilyFit | None]:
    """``fit_steps`` for series of similar length."""
    out: list[FamilyFit | None] = [None] * len(datas)
    batch = StepBatch.build(datas, weights)
    bounds, x0 = Bounds.from_params(params)
    if not (np.isfinite(bounds.lo).all() and np.isfinite(bounds.hi).all()):
        return out  # only lmfit's two-sided bound transform is reproduced here
    prob = Problem(model, batch, bounds, x0)
    sol = lmdif(prob, x0)
    st = _statistics(prob, sol, n_var)
    p = {k: sol.x[:, i] for i, k in enumerate(bounds.names)}
    p.update(bounds.fixed)
    p = {k: p[k] for k in model.param_names}
    r2_trace = trajectory_r2(model, p, tracesets)
    sp = symmetry_points(model, p)
    sp_err = sp_uncertainty(model, p, bounds.names, st["cov"], sp)
    lo_r, hi_r = (np.broadcast_to(np.asarray(v, float), sp.shape) for v in model.state_range(p))
    signs = wrong_sign(model, p, lo_r, hi_r, np.array([d.g.min() for d in datas]),
                       np.array([d.g.max() for d in datas]))
    bound = at_bound(bounds, sol.x)
    names = list(model.param_names)
    has_cov = np.isfinite(st["cov"]).all((1, 2))
    with np.errstate(invalid="ignore"):
        var_err = np.sqrt(np.einsum("bii->bi", st["cov"]))
    # lmfit gives fixed parameters a zero error when it has a covariance
    errs = np.column_stack([var_err[:, bounds.names.index(k)] if k in bounds.names else
                            np.where(has_cov, 0.0, np.nan) for k in names]).tolist()
    vals = np.column_stack([p[k] for k in names]).tolist()
    # per-row Python floats in one pass (tolist), not one float() per number
    cols = {k: st[k].tolist() for k in ("chisqr", "redchi", "aic", "bic", "r2_steps")}
    cols.update(r2_trace=r2_trace.tolist(), sp_g=sp.tolist(), sp_g_err=sp_err.tolist(),
                range_lo_g=lo_r.tolist(), range_hi_g=hi_r.tolist())
    nfev, n_points = sol.nfev.tolist(), batch.n.tolist()
    ok = sol.converged & st["finite"]
    for j in range(len(datas)):
        if not ok[j]:
            continue
        fit = dict(family=model.name, fit_target=FitTarget.STEPS, n_points=n_points[j], success=True,
                   nfev=nfev[j], **{k: v[j] for k, v in cols.items()},
                   values=dict(zip(names, vals[j])), stderr=dict(zip(names, errs[j])),
                   resid=st["resid"][j, :n_points[j]].copy())
        # the flag from the row's numbers, so the row is built once (replace() costs)
        flag = quality_flag(bound[j], SimpleNamespace(**fit), r2_min, judges[j]) or signs[j]
        out[j] = FamilyFit(**fit, flag=flag)
    return out


def _statistics(prob: Problem, sol: Solution, n_var: int) -> dict:
    """Per series: lmfit's chisqr, redchi, AIC, BIC and scaled covariance, R^2 of the
    steps, unweighted residuals, and whether the model is finite on every point."""
    b, x = prob.b, sol.x
    chisqr = (prob.residual(x) ** 2).sum(1)
    redchi = chisqr / np.maximum(1, b.n - n_var)
    chisqr = np.maximum(chisqr, 1e-250 * b.n)
    neg2ll = b.n * np.log(chisqr / b.n)
    with np.errstate(all="ignore"):
        pred = prob.model.step(b.g, b.up, **prob.bounds.values(x))
    resid, mask = b.dg - pred, b.mask
    dg = np.where(mask, b.dg, 0.0)
    ss_tot = (np.where(mask, dg - dg.sum(1, keepdims=True) / b.n[:, None], 0) ** 2).sum(1)
    with np.errstate(all="ignore"):
        r2 = np.where(ss_tot > 0, 1 - (np.where(mask, resid, 0) ** 2).sum(1) / ss_tot, np.nan)
    return {"chisqr": chisqr, "redchi": redchi, "aic": neg2ll + 2 * n_var,
            "bic": neg2ll + np.log(b.n) * n_var, "cov": covariance(sol, redchi),
            "r2_steps": r2, "resid": resid,
            "finite": np.isfinite(chisqr) & np.where(mask, np.isfinite(pred), True).all(1)}


def quality_flag(bound: str | None, fit: FamilyFit, r2_min: float, judge: str = "r2_trace") -> str:
    """The flag of a converged fit (both engines): a parameter at its bound, a poor R^2
    (``judge``: the trajectories', or the steps' for staircases, whose trajectories follow
    an amplitude ramp a state-only model does not see), or no symmetry point inside the
    state range; "" when none."""
    if bound:
        return f"parameter {bound} at its bound"
    r2 = getattr(fit, judge)
    if not np.isfinite(r2) or r2 < r2_min:
        return f"{'trajectory' if judge == 'r2_trace' else 'step'} R^2 {r2:.3f} below {r2_min}"
    if not np.isfinite(fit.sp_g) or not fit.range_lo_g <= fit.sp_g <= fit.range_hi_g:
        return "no symmetry point inside the state range"
    return ""
