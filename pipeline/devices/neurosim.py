"""Exponential model of MLP+NeuroSim (``nonlinear_fit.m``; DOMAIN.md section 3).

    up:   G(P) = B_p (1 - exp(-P/A_p)) + Gmin
    down: G(P) = Gmax - B_d (1 - exp(-P/A_d))
    B = (Gmax - Gmin) / (1 - exp(-Pmax/A))

``Pmax`` is the number of pulses that spans the range (fixed, default 100, the sample
protocol). Per pulse: ``dG+ = (Gmin + B_p - G)(1 - e^(-1/A_p))`` and
``dG- = -(G - Gmax + B_d)(1 - e^(-1/A_d))``: a soft-bounds step map in another
parametrisation, so on the same data it reaches the same least squares as soft bounds
(model selection then sees a tie and keeps the family listed first).

Symmetry point: ``G* = Gmin + (k_p B_p - k_d |B_d| + k_d (Gmax - Gmin)) / (k_p + k_d)``
with ``k = 1 - e^(-1/A)`` (DOMAIN.md section 4, written for the down branch anchored
at Gmax).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import StepMap, DeviceModel, ParamSpec
from .xp import NP, ops_for
from .softbounds import SoftBounds

if TYPE_CHECKING:  # annotations only: lmfit is imported where a fit uses it
    import lmfit

P_MAX = 100


def _b(xp, a, span, pmax=P_MAX):
    return span / (1 - xp.exp(-pmax / a))


class NeuroSim(DeviceModel):
    name = "neurosim"
    equation = "G(P) = B (1 - exp(-P/A)) + Gmin; B = (Gmax - Gmin) / (1 - exp(-Pmax/A))"
    params = (
        ParamSpec("A_p", 0.5, 1e5, "pulses", "up nonlinearity: pulses per e-fold of the distance to the bound"),
        ParamSpec("A_d", 0.5, 1e5, "pulses", "down nonlinearity: pulses per e-fold of the distance to the bound"),
        ParamSpec("Gmin", -2.0, 2.0, "g", "state at the start of the up curve"),
        ParamSpec("Gmax", -1.0, 3.0, "g", "state at the start of the down curve"),
    )

    def _pieces(self, A_p, A_d, Gmin, Gmax, xp=NP):  # noqa: N803
        span = Gmax - Gmin
        kp, kd = 1 - xp.exp(-1 / A_p), 1 - xp.exp(-1 / A_d)
        return kp, kd, Gmin + _b(xp, A_p, span), Gmax - _b(xp, A_d, span)

    def step(self, g, up, A_p, A_d, Gmin, Gmax):
        xp = ops_for(g)
        kp, kd, hi, lo = self._pieces(A_p, A_d, Gmin, Gmax, xp)
        return xp.where(up, kp * (hi - g), -kd * (g - lo))

    def guess(self, data: StepMap) -> lmfit.Parameters:
        sb = SoftBounds().guess(data)
        kp, kd = max(sb["k_p"].value, 1e-4), max(sb["k_d"].value, 1e-4)
        A_p, A_d = -1 / np.log(1 - kp), -1 / np.log(1 - kd)
        # Solve hi = Gmin + B_p, lo = Gmax - B_d for Gmin, Gmax (a 2x2 linear system).
        hi, lo = sb["b_hi"].value, sb["b_lo"].value
        cp, cd = 1 / (1 - np.exp(-P_MAX / A_p)), 1 / (1 - np.exp(-P_MAX / A_d))
        m = np.array([[1 - cp, cp], [cd, 1 - cd]])
        try:
            gmin, gmax = np.linalg.solve(m, [hi, lo])
        except np.linalg.LinAlgError:
            gmin, gmax = lo, hi
        if not gmax > gmin:
            gmin, gmax = lo, hi
        return self.parameters({"A_p": float(np.clip(A_p, 0.5, 1e5)), "A_d": float(np.clip(A_d, 0.5, 1e5)),
                                "Gmin": float(np.clip(gmin, -1.9, 1.9)), "Gmax": float(np.clip(gmax, -0.9, 2.9))})

    def state_range(self, p):
        xp = ops_for(p["A_p"])
        _, _, hi, lo = self._pieces(p["A_p"], p["A_d"], p["Gmin"], p["Gmax"], xp)
        return xp.minimum(lo, hi), xp.maximum(lo, hi)

    def geometric(self, p):
        return self._pieces(p["A_p"], p["A_d"], p["Gmin"], p["Gmax"], ops_for(p["A_p"]))
