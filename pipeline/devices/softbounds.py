"""Soft bounds (IBM aihwkit ``SoftBoundsDevice``; DOMAIN.md section 3).

    dg+ = k_p (b_hi - g)        dg- = -k_d (g - b_lo)

``k_p``, ``k_d`` are the shares of the remaining range one pulse moves (the step-size
parameters); ``b_hi``/``b_lo`` the states the device saturates toward. In aihwkit terms
``alpha+ = k_p (b_hi - w)`` at ``w = 0``, ``w_max = b_hi``, ``w_min = b_lo``. The step is
linear in the state, so a linear least-squares fit of dg on g per direction is the exact
least-squares solution (used as the start, and as the fast trace fit).

Symmetry point (closed form): ``g* = (k_p b_hi + k_d b_lo) / (k_p + k_d)``.
Pulse response (closed form): ``g_n = b - (b - g_0)(1 - k)^n`` toward ``b``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import StepMap, DeviceModel, ParamSpec
from .xp import ops_for

if TYPE_CHECKING:  # annotations only: lmfit is imported where a fit uses it
    import lmfit


def line_fit(g: np.ndarray, dg: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of dg against g."""
    gm, dm = g.mean(), dg.mean()
    var = ((g - gm) ** 2).sum()
    slope = ((g - gm) * (dg - dm)).sum() / var if var > 0 else 0.0
    return slope, dm - slope * gm


class SoftBounds(DeviceModel):
    name = "softbounds"
    equation = "dg+ = k_p (b_hi - g); dg- = -k_d (g - b_lo)"
    params = (
        ParamSpec("k_p", 0.0, 1.0, "1", "share of the distance to b_hi one up pulse moves"),
        ParamSpec("k_d", 0.0, 1.0, "1", "share of the distance to b_lo one down pulse moves"),
        # wide: a trace far from saturation puts its asymptote far outside the data
        ParamSpec("b_hi", -10.0, 20.0, "g", "state up pulses saturate toward"),
        ParamSpec("b_lo", -20.0, 10.0, "g", "state down pulses saturate toward"),
    )

    def step(self, g, up, k_p, k_d, b_hi, b_lo):
        return ops_for(g).where(up, k_p * (b_hi - g), -k_d * (g - b_lo))

    def guess(self, data: StepMap) -> lmfit.Parameters:
        values = {}
        for is_up, (k, b) in ((True, ("k_p", "b_hi")), (False, ("k_d", "b_lo"))):
            m = data.up == is_up
            slope, icpt = line_fit(data.g[m], data.dg[m]) if m.sum() > 2 else (-0.05, 0.05)
            rate = float(np.clip(-slope, 1e-6, 0.99))
            values[k], values[b] = rate, icpt / rate
        # start asymptotes one unit inside their bounds
        values["b_hi"] = float(np.clip(values["b_hi"], -9.0, 19.0))
        values["b_lo"] = float(np.clip(values["b_lo"], -19.0, 9.0))
        return self.parameters(values)

    def state_range(self, p):
        xp = ops_for(p["b_lo"])
        return xp.minimum(p["b_lo"], p["b_hi"]), xp.maximum(p["b_lo"], p["b_hi"])

    def geometric(self, p):
        return p["k_p"], p["k_d"], p["b_hi"], p["b_lo"]
