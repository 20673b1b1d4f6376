"""Piecewise / lookup-table model (aihwkit ``PiecewiseStepDevice``, Sandia CrossSim).

Model-free: the mean step of each direction at ``n`` evenly spaced nodes over the data
range, linearly interpolated between nodes (and held beyond the end nodes). Linear in
its parameters, so least squares has a closed form (used as the start; lmfit then only
confirms it and supplies the covariance). The state range is the node span: the model
does not extrapolate bounds. Symmetry point: bracketed root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import StepMap, DeviceModel, ParamSpec
from .xp import ops_for

if TYPE_CHECKING:  # annotations only: lmfit is imported where a fit uses it
    import lmfit

N_NODES = 8


def hat_basis(g: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Linear-interpolation weights of each node at each g (rows sum to 1)."""
    g = np.clip(g, nodes[0], nodes[-1])
    out = np.zeros((len(g), len(nodes)))
    j = np.clip(np.searchsorted(nodes, g, side="right") - 1, 0, len(nodes) - 2)
    t = (g - nodes[j]) / (nodes[j + 1] - nodes[j])
    rows = np.arange(len(g))
    out[rows, j] = 1 - t
    out[rows, j + 1] += t
    return out


class Lookup(DeviceModel):
    name = "lookup"
    equation = "dg = linear interpolation of node steps (n nodes per direction)"

    def __init__(self, n_nodes: int = N_NODES):
        self.n = n_nodes
        self.params = (
            tuple(ParamSpec(f"up_{i}", -2.0, 2.0, "g/pulse", f"mean up step at node {i}") for i in range(n_nodes))
            + tuple(ParamSpec(f"down_{i}", -2.0, 2.0, "g/pulse", f"mean down step at node {i}")
                    for i in range(n_nodes))
            # the node span is the data range: fixed, not fitted
            + (ParamSpec("g_lo", -np.inf, np.inf, "g", "first node", fitted=False),
               ParamSpec("g_hi", -np.inf, np.inf, "g", "last node", fitted=False)))

    def step(self, g, up, **p):
        xp = ops_for(g)
        lo, hi = p["g_lo"], p["g_hi"]
        # evenly spaced nodes: the segment index is arithmetic, no search needed
        u = xp.clip((g - lo) / (hi - lo), 0.0, 1.0) * (self.n - 1)
        j = xp.clip(xp.floor(u), 0, self.n - 2)
        t = u - j

        # one table of both directions' nodes: each point reads its own direction's pair
        v = xp.stack_last([p[f"{d}_{i}"] for d in ("up", "down") for i in range(self.n)])
        j = j + xp.where(up, 0, self.n)
        a, b = xp.gather(v, j), xp.gather(v, j + 1)
        return a + t * (b - a)

    def guess(self, data: StepMap) -> lmfit.Parameters:
        lo, hi = float(data.g.min()), float(data.g.max())
        nodes = np.linspace(lo, hi, self.n)
        start = {"g_lo": lo, "g_hi": hi if hi > lo else lo + 1.0}
        for prefix, m in (("up", data.up), ("down", ~data.up)):
            values = np.zeros(self.n)
            if m.sum() >= 2:
                basis = hat_basis(data.g[m], nodes)
                values = np.linalg.lstsq(basis, data.dg[m], rcond=None)[0]
            start.update({f"{prefix}_{i}": float(v) for i, v in enumerate(values)})
        return self.parameters(start)

    def state_range(self, p):
        return p["g_lo"], p["g_hi"]
