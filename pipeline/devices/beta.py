"""Beta kernel, as used by the paper's group for HZO FTJs (DOMAIN.md section 3).

    W = (g - g_min) / (g_max - g_min)
    dg+ = A_p W^(alpha_p - 1) (1 - W)^(beta_p - 1)
    dg- = -A_d W^(alpha_d - 1) (1 - W)^(beta_d - 1)

fitted per direction on shared bounds. Soft bounds is ``alpha_p = 1, beta_p = 2`` and
``alpha_d = 2, beta_d = 1``. Symmetry point: bracketed root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import StepMap, DeviceModel, ParamSpec, bounds_into_data
from .xp import ops_for
from .softbounds import SoftBounds

if TYPE_CHECKING:  # annotations only: lmfit is imported where a fit uses it
    import lmfit


class Beta(DeviceModel):
    name = "beta"
    equation = "W = (g - g_min)/(g_max - g_min); dg = +/-A W^(alpha-1) (1 - W)^(beta-1)"
    params = (
        ParamSpec("A_p", 0.0, 2.0, "g/pulse", "up step scale"),
        ParamSpec("alpha_p", 0.2, 10.0, "1", "up kernel exponent at the low bound (W^(alpha-1))"),
        ParamSpec("beta_p", 0.2, 10.0, "1", "up kernel exponent at the high bound ((1 - W)^(beta-1))"),
        ParamSpec("A_d", 0.0, 2.0, "g/pulse", "down step scale"),
        ParamSpec("alpha_d", 0.2, 10.0, "1", "down kernel exponent at the low bound"),
        ParamSpec("beta_d", 0.2, 10.0, "1", "down kernel exponent at the high bound"),
        # the data-side bounds are set per fit: just inside the data range
        ParamSpec("g_min", -20.0, 20.0, "g", "low bound of the state (W = 0)"),
        ParamSpec("g_max", -20.0, 20.0, "g", "high bound of the state (W = 1)"),
    )

    def step(self, g, up, A_p, alpha_p, beta_p, A_d, alpha_d, beta_d, g_min, g_max):
        xp = ops_for(g)
        w = xp.clip((g - g_min) / (g_max - g_min), 1e-6, 1 - 1e-6)
        # each point's direction picks its parameters first: two powers per point, not four
        # (the same numbers as evaluating both directions and picking one)
        return (xp.where(up, A_p, -A_d) * w ** xp.where(up, alpha_p - 1, alpha_d - 1)
                * (1 - w) ** xp.where(up, beta_p - 1, beta_d - 1))

    def guess(self, data: StepMap) -> lmfit.Parameters:
        sb = SoftBounds().guess(data)
        lo = min(sb["b_lo"].value, float(data.g.min()) - 1e-3)
        hi = max(sb["b_hi"].value, float(data.g.max()) + 1e-3)
        span = hi - lo
        # starts at soft bounds (alpha_p = 1, beta_p = 2, alpha_d = 2, beta_d = 1)
        start = {"A_p": max(sb["k_p"].value * span, 1e-6), "alpha_p": 1.0, "beta_p": 2.0,
                 "A_d": max(sb["k_d"].value * span, 1e-6), "alpha_d": 2.0, "beta_d": 1.0,
                 "g_min": max(lo, -19.0), "g_max": min(hi, 19.0)}
        # W is clipped to (0, 1): the bounds need not enclose every read.
        return self.parameters(start, bounds_into_data(data, "g_min", "g_max"))

    def state_range(self, p):
        return p["g_min"], p["g_max"]
