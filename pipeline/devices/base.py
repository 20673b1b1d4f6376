"""What every device-update model family provides (DOMAIN.md section 3).

All families work on a normalised state ``g`` (the fitting code maps conductance onto
[0, 1] by the data range, which keeps lmfit well conditioned) and give the expected step
of one pulse in each direction: positive for up (potentiation), negative for down.
"""

from __future__ import annotations

import inspect
import math
from typing import NamedTuple

import numpy as np
from scipy.optimize import brentq

from ..lazy import lmfit
from ..traces import StepMap
from . import geometric


class ParamSpec(NamedTuple):
    """One parameter of a family: the lmfit bounds a fit may use, its unit and meaning.

    States are in normalised units (``g``: the data range mapped onto [0, 1]), so a
    bound of 20 means twenty data ranges. ``fitted=False``: set from the data, not fitted.
    """

    name: str
    lo: float
    hi: float
    unit: str
    doc: str
    fitted: bool = True


def bounds_into_data(data: StepMap, low: str, high: str) -> dict:
    """``narrow`` bounds for a family's pair of state bounds that may sit inside the data:
    the low one stays below the largest read, the high one above the smallest."""
    return {low: (None, float(data.g.max()) - 1e-3), high: (float(data.g.min()) + 1e-3, None)}


class DeviceModel:
    name: str = ""
    equation: str = ""
    params: tuple[ParamSpec, ...] = ()

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.params)

    # --- to implement -----------------------------------------------------------
    def step(self, g, up, **p) -> np.ndarray:
        raise NotImplementedError

    def guess(self, data: StepMap) -> lmfit.Parameters:
        raise NotImplementedError

    def state_range(self, p: dict) -> tuple[float, float]:
        """(low, high) bounds of the state the model saturates toward."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------
    def parameters(self, start: dict, narrow: dict | None = None) -> lmfit.Parameters:
        """lmfit parameters from start values, bounded as declared in ``params``.

        ``narrow``: name -> (lo, hi) that replace a declared bound where not None (bounds
        that depend on the data at hand).
        """
        narrow = narrow or {}
        p = lmfit.Parameters()
        for s in self.params:
            lo, hi = narrow.get(s.name, (None, None))
            if s.fitted:
                p.add(s.name, start[s.name], min=s.lo if lo is None else lo, max=s.hi if hi is None else hi)
            else:
                p.add(s.name, start[s.name], vary=False)
        return p

    def model(self) -> lmfit.Model:
        names = self.param_names

        def func(g, up, **p):
            return self.step(g, up, **p)

        func.__name__ = self.name
        # lmfit reads parameter names from the signature: give it an explicit one.
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        func.__signature__ = inspect.Signature(
            [inspect.Parameter(n, kind) for n in ("g", "up", *names)])
        return lmfit.Model(func, independent_vars=["g", "up"])

    def symmetry_point(self, p: dict) -> float:
        """State where |up step| = |down step|: closed form where the family has one."""
        geo = self.geometric(p)
        if geo is None:
            return self.root_symmetry_point(p)
        k_up, k_dn = geo[0], geo[1]
        return float(geometric.symmetry_point(*geo)) if k_up + k_dn > 0 else math.nan

    def root_symmetry_point(self, p: dict) -> float:
        """Symmetry point as the bracketed root on the state range (any family): where the
        net step turns from up to down (the stable crossing, where random updates drift).
        A staircase's pooled step map also crosses the other way near its bottom."""
        lo, hi = self.state_range(p)
        grid = np.linspace(lo, hi, 401)
        net = self.step(grid, np.ones_like(grid, bool), **p) + self.step(grid, np.zeros_like(grid, bool), **p)
        cross = np.flatnonzero((net[:-1] > 0) & (net[1:] <= 0))
        if len(cross) == 0:
            return float("nan")
        i = cross[0]

        def f(x):
            return float(self.step(np.array([x]), np.array([True]), **p)[0]
                         + self.step(np.array([x]), np.array([False]), **p)[0])

        if f(grid[i + 1]) == 0:
            return float(grid[i + 1])
        return float(brentq(f, grid[i], grid[i + 1], xtol=1e-12))

    def response(self, p: dict, g0: float, n: int, up: bool) -> np.ndarray:
        """States after 1..n identical pulses from ``g0`` (noise free)."""
        geo = self.geometric(p)
        if geo is not None:
            k_up, k_dn, b_up, b_dn = geo
            k, b = (k_up, b_up) if up else (k_dn, b_dn)
            return geometric.response(k, b, g0, np.arange(1, n + 1))
        out = np.empty(n)
        g = g0
        flag = np.array([up])
        for i in range(n):
            g = g + float(self.step(np.array([g]), flag, **p)[0])
            out[i] = g
        return out

    def run(self, p: dict, start: np.ndarray, up: np.ndarray, length: int) -> np.ndarray:
        """States after 1..length pulses for many traces at once.

        ``start`` has shape (..., n_traces) and parameters broadcast against it (a batch
        of parameter sets for a finite-difference Jacobian has shape (batch, 1)).
        Returns shape ``start.shape + (length,)``. Families with a closed-form
        response (``geometric``) skip the loop.
        """
        geo = self.geometric(p)
        if geo is not None:
            return geometric.run(*geo, start, up, length)
        g = np.asarray(start, dtype=float)
        out = np.empty(g.shape + (length,))
        for j in range(length):
            g = g + self.step(g, up, **p)
            out[..., j] = g
        return out

    def geometric(self, p: dict):
        """(k_up, k_down, b_up, b_down) when steps are ``k (b - g)``: soft-bounds-type
        families, whose n-pulse response has a closed form; None otherwise."""
        return None
