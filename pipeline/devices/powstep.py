"""Power step (aihwkit ``PowStepDevice``, Fusi-Abbott; DOMAIN.md section 3).

    w = (b_hi - g) / (b_hi - b_lo)
    dg+ = a_p w^gamma_p          dg- = -a_d (1 - w)^gamma_d

With ``gamma = 1`` it is soft bounds (``a_p = k_p (b_hi - b_lo)``); the exponents bend
the step map. Symmetry point: bracketed root of ``a_p w^gp = a_d (1 - w)^gd``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import StepMap, DeviceModel, ParamSpec, bounds_into_data
from .xp import ops_for
from .softbounds import SoftBounds

if TYPE_CHECKING:  # annotations only: lmfit is imported where a fit uses it
    import lmfit


class PowStep(DeviceModel):
    name = "powstep"
    equation = "w = (b_hi - g)/(b_hi - b_lo); dg+ = a_p w^gamma_p; dg- = -a_d (1 - w)^gamma_d"
    params = (
        ParamSpec("a_p", 0.0, 2.0, "g/pulse", "up step at the low bound (w = 1)"),
        ParamSpec("a_d", 0.0, 2.0, "g/pulse", "down step at the high bound (w = 0)"),
        ParamSpec("gamma_p", 0.05, 10.0, "1", "exponent bending the up step map"),
        ParamSpec("gamma_d", 0.05, 10.0, "1", "exponent bending the down step map"),
        # the data-side bounds are set per fit: just inside the data range
        ParamSpec("b_hi", -20.0, 20.0, "g", "high bound of the state"),
        ParamSpec("b_lo", -20.0, 20.0, "g", "low bound of the state"),
    )

    def step(self, g, up, a_p, a_d, gamma_p, gamma_d, b_hi, b_lo):
        xp = ops_for(g)
        w = xp.clip((b_hi - g) / (b_hi - b_lo), 0.0, 1.0)
        # one power per point: each point's direction picks its parameters first
        return xp.where(up, a_p, -a_d) * xp.where(up, w, 1 - w) ** xp.where(up, gamma_p, gamma_d)

    def guess(self, data: StepMap) -> lmfit.Parameters:
        sb = SoftBounds().guess(data)
        hi, lo = sb["b_hi"].value, sb["b_lo"].value
        if not hi > lo:
            lo, hi = float(data.g.min()), float(data.g.max())
        hi, lo = max(hi, float(data.g.max()) + 1e-3), min(lo, float(data.g.min()) - 1e-3)
        span = hi - lo
        start = {"a_p": max(sb["k_p"].value * span, 1e-6), "a_d": max(sb["k_d"].value * span, 1e-6),
                 "gamma_p": 1.0, "gamma_d": 1.0, "b_hi": min(hi, 19.0), "b_lo": max(lo, -19.0)}
        # Bounds may sit inside the data (w is clipped to [0, 1]), so a fit is never
        # pinned to the data's extremes.
        return self.parameters(start, bounds_into_data(data, "b_lo", "b_hi"))

    def state_range(self, p):
        return p["b_lo"], p["b_hi"]
