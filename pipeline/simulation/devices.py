"""Crossbar layers of simulated devices, batched over runs (torch).

Every weight is one device following a registered model (DOMAIN.md sections 3-4):

    w = gain * (g - g_ref)

``g`` is the device state in the model's normalised units, ``g_ref`` a fixed reference:
mid-range by default (the middle of the population's state range), or the device's own
symmetry point when symmetry-point shifting is on (Kim et al. 2019; aihwkit
``SoftBoundsReferenceDevice(subtract_symmetry_point=True)``). ``gain`` maps the
population's state range onto weights in [-weight_range, weight_range] (default 3: a
small MLP's weights stay within about +-1, so they use the central, more linear part of
a soft-bounded device, as aihwkit's weight scaling does; with 1 the step-size
nonlinearity acts as a strong weight decay and even mixed precision stalls near 0.85 on
the sample devices).

A pulse moves ``g`` by the model's expected step at the current state, times
``1 + c2c * xi`` (multiplicative cycle-to-cycle noise, the fitted ``c2c_rel``), clipped
to the device's state range (hard bounds). When one update fires n > 1 pulses on a
device of a soft-bounds-type family (soft bounds, NeuroSim: steps ``k (b - g)``), the n
pulses are applied in closed form: the distance to the bound shrinks by
``(1 - k)^n`` exactly in the mean, and the n noise factors combine into one lognormal
factor ``exp(-k c2c sqrt(n) xi / (1 - k))``, which equals the pulse-by-pulse product to
first order in ``k c2c``. Other families step pulse by pulse.

Device-to-device variation: every parameter
of every device is drawn from the registered population, lognormally around the median
for parameters that are positive in every fitted device (relative spread
``spread / median``), normally otherwise. Tensors carry a leading run dimension R so
that runs with different models and seeds advance together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ..devices import DeviceModel, family, geometric
from ..registry import ModelVersion

DTYPE = torch.float32  # states, weights and noise; float64 buys nothing at these step sizes
SP_ITERATIONS = 48  # bisection steps for the symmetry point of every device


@dataclass
class DeviceSpec:
    """What one run needs from a registered model version."""

    family: str
    median: dict[str, float]
    spread: dict[str, float]
    positive: dict[str, bool]
    c2c: float
    energy_per_pulse_j: float
    ref: str
    pulse_width_s: float = float("nan")

    @classmethod
    def from_version(cls, v: ModelVersion) -> "DeviceSpec":
        model = family(v.family)
        params = v.params()
        median, spread, positive = {}, {}, {}
        for name in model.param_names:
            values = params[name].to_numpy(float) if name in params else np.array([np.nan])
            median[name] = v.population_value(name, "median")
            spread[name] = v.population_value(name, "spread")
            if not np.isfinite(median[name]):
                median[name] = float(np.nanmedian(values))
            if not np.isfinite(spread[name]):
                spread[name] = 0.0
            positive[name] = bool(np.all(values > 0))
        c2c = v.population_value("c2c_rel")
        return cls(v.family, median, spread, positive, float(c2c) if np.isfinite(c2c) else 0.0,
                   v.energy_per_pulse_j, v.ref, v.pulse_width_s)


def sample_params(spec: DeviceSpec, shape: tuple[int, ...], rng: np.random.Generator,
                  d2d: bool = True) -> dict[str, np.ndarray]:
    out = {}
    for name, med in spec.median.items():
        sd = spec.spread[name] if d2d else 0.0
        xi = np.clip(rng.standard_normal(shape), -3, 3)
        if spec.positive[name] and med > 0:
            out[name] = med * np.exp((sd / med) * xi)
        else:
            out[name] = med + sd * xi
    return out


def symmetry_points(model: DeviceModel, p: dict, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Per-device symmetry point on [lo, hi]: the family's closed form where it has one,
    bisection otherwise."""
    geo = model.geometric(p)
    if geo is not None:
        return torch.clamp(geometric.symmetry_point(*geo), min=lo, max=hi)
    a, b = lo.clone(), hi.clone()
    up = torch.ones_like(a, dtype=torch.bool)

    def net(g):
        return model.step(g, up, **p) + model.step(g, ~up, **p)

    f_a = net(a)
    for _ in range(SP_ITERATIONS):
        m = (a + b) / 2
        f_m = net(m)
        left = torch.sign(f_m) == torch.sign(f_a)
        a = torch.where(left, m, a)
        f_a = torch.where(left, f_m, f_a)
        b = torch.where(left, b, m)
    return (a + b) / 2


class Direction(NamedTuple):
    """Closed-form pulse constants of one direction, per device (steps ``k (b - g)``)."""

    log_keep: torch.Tensor  # log(1 - k): n pulses keep (1 - k)^n of the distance to the bound
    bound: torch.Tensor     # b, the state approached
    noise: torch.Tensor     # k c2c / (1 - k): lognormal noise coefficient per sqrt(pulse)

    @classmethod
    def of(cls, k: torch.Tensor, b: torch.Tensor, c2c: torch.Tensor) -> "Direction":
        return cls(torch.log1p(-k), b, k * c2c / (1 - k))


class GeometricTable:
    """Per-device constants of the closed-form pulse (module docstring), one row per device.

    Rows are stored as one (N, 8) block, the up ``Direction``, the down one, then the
    state range (lo, hi), so that the pulsed devices are gathered in one index op
    (per-sample work is dispatch-bound).
    """

    def __init__(self, packed: torch.Tensor):
        self.packed = packed

    @classmethod
    def build(cls, up: Direction, down: Direction, lo: torch.Tensor, hi: torch.Tensor) -> "GeometricTable":
        return cls(torch.stack([*up, *down, lo, hi], 1))

    @classmethod
    def cat(cls, tables: list["GeometricTable"]) -> "GeometricTable":
        return cls(torch.cat([t.packed for t in tables]))

    def move(self, g, idx, up, n, xi, gen):
        """States of devices ``idx`` (now ``g``) after ``n`` pulses each (up where ``up``)."""
        rows = self.packed[idx]
        d = Direction(*torch.where(up.unsqueeze(1), rows[:, 0:3], rows[:, 3:6]).unbind(1))
        keep = torch.exp(n * d.log_keep - d.noise * torch.sqrt(n) * xi)
        return torch.clamp(geometric.approach(g, d.bound, keep), min=rows[:, 6], max=rows[:, 7])


class StepTable(NamedTuple):
    """Per-device parameters for families without a closed form: pulse by pulse."""

    model: DeviceModel
    p: dict[str, torch.Tensor]
    lo: torch.Tensor
    hi: torch.Tensor
    c2c: torch.Tensor

    @classmethod
    def cat(cls, tables: list["StepTable"]) -> "StepTable":
        first = tables[0]
        return cls(first.model, {k: torch.cat([t.p[k] for t in tables]) for k in first.p},
                   *(torch.cat([getattr(t, f) for t in tables]) for f in ("lo", "hi", "c2c")))

    def move(self, g, idx, up, n, xi, gen):
        p = {k: v[idx] for k, v in self.p.items()}
        lo, hi, c2c = self.lo[idx], self.hi[idx], self.c2c[idx]
        for j in range(int(n.max())):
            if j:
                xi = torch.randn(g.shape, generator=gen, dtype=g.dtype)
            moved = torch.clamp(g + self.model.step(g, up, **p) * (1 + c2c * xi), min=lo, max=hi)
            g = torch.where(n > j, moved, g)
        return g


class DeviceLayer:
    """One crossbar: R runs x (out x in) devices of one model family."""

    def __init__(self, specs: list[DeviceSpec], shape: tuple[int, int], seeds: list[int],
                 shift: bool, w_init: torch.Tensor, d2d: bool = True, weight_range: float = 3.0):
        fam = {s.family for s in specs}
        if len(fam) != 1:
            raise ValueError(f"runs batched together must share a model family, got {fam}")
        self.model = family(fam.pop())
        r = len(specs)
        rngs = [np.random.default_rng([seed, 7]) for seed in seeds]
        samples = [sample_params(s, shape, g, d2d) for s, g in zip(specs, rngs)]
        self.p = {k: torch.tensor(np.stack([s[k] for s in samples]), dtype=DTYPE)
                  for k in self.model.param_names}
        lo, hi = self.model.state_range(self.p)
        self.lo, self.hi = lo, hi
        med = [{k: torch.tensor(v, dtype=DTYPE) for k, v in s.median.items()} for s in specs]
        ranges = [self.model.state_range(m) for m in med]
        lo_m = torch.tensor([float(a) for a, _ in ranges], dtype=DTYPE).view(r, 1, 1)
        hi_m = torch.tensor([float(b) for _, b in ranges], dtype=DTYPE).view(r, 1, 1)
        self.gain = 2 * weight_range / (hi_m - lo_m)
        self.g_ref = symmetry_points(self.model, self.p, lo, hi) if shift else \
            ((lo_m + hi_m) / 2).expand(r, *shape).clone()
        self.c2c = torch.tensor([s.c2c for s in specs], dtype=DTYPE).view(r, 1, 1)
        self.energy = torch.tensor([s.energy_per_pulse_j for s in specs], dtype=torch.float64)
        self.g = torch.clamp(self.g_ref + w_init.to(DTYPE) / self.gain, lo, hi).contiguous()
        self._g_flat = self.g.view(-1)  # g is updated in place through this view
        self.table = self._pulse_table(r, shape)
        # pulses fired: up = (|n| + n) / 2, down = (|n| - n) / 2, summed; float64 keeps
        # the counts exact past 2^24
        self._signed_sum = torch.zeros(r, dtype=torch.float64)
        self._abs_sum = torch.zeros(r, dtype=torch.float64)
        # smallest programmable weight change: the mean |step| at the reference state
        ref_state = ((lo_m + hi_m) / 2)
        up = torch.ones_like(ref_state, dtype=torch.bool)
        med_p = {k: torch.tensor([m[k] for m in [s.median for s in specs]],
                                 dtype=DTYPE).view(r, 1, 1) for k in self.model.param_names}
        steps = (self.model.step(ref_state, up, **med_p).abs()
                 + self.model.step(ref_state, ~up, **med_p).abs()) / 2
        self.dw_min = (self.gain * steps).view(r)

    def weights(self) -> torch.Tensor:
        return self.gain * (self.g - self.g_ref)

    def _pulse_table(self, r: int, shape: tuple[int, int]) -> GeometricTable | StepTable:
        """Flat per-device tables for the sparse pulse path (built once)."""
        c2c = self.c2c.expand(r, *shape).reshape(-1)
        lo, hi = self.lo.reshape(-1), self.hi.reshape(-1)
        geo = self.model.geometric(self.p)
        if geo is None:
            return StepTable(self.model, {k: v.reshape(-1) for k, v in self.p.items()}, lo, hi, c2c)
        k_up, k_dn, b_up, b_dn = (t.expand(r, *shape).reshape(-1) for t in geo)
        return GeometricTable.build(Direction.of(k_up, b_up, c2c), Direction.of(k_dn, b_dn, c2c), lo, hi)

    def adopt_state(self, flat: torch.Tensor) -> None:
        """Keep the state in ``flat`` from now on: a slice, already holding the current
        state, of a buffer that several layers share (``Crossbars``)."""
        self._g_flat = flat
        self.g = flat.view(self.g.shape)

    def pulse(self, n_signed: torch.Tensor, gen: torch.Generator) -> None:
        """Fire |n| pulses on every device, up where n > 0 (module docstring)."""
        self.count(n_signed)
        fire(self._g_flat, n_signed.reshape(-1), gen, self.table)

    def count(self, n_signed: torch.Tensor) -> None:
        self._signed_sum += n_signed.sum(dim=(1, 2))
        self._abs_sum += n_signed.abs().sum(dim=(1, 2))

    def add_tally(self, signed: torch.Tensor, absolute: torch.Tensor) -> None:
        """Add per-device (signed, absolute) pulse sums, shaped like ``g`` or flat."""
        r = self.g.shape[0]
        self._signed_sum += signed.view(r, -1).sum(-1, dtype=torch.float64)
        self._abs_sum += absolute.view(r, -1).sum(-1, dtype=torch.float64)

    @property
    def pulses_up(self) -> torch.Tensor:
        return (self._abs_sum + self._signed_sum) / 2

    @property
    def pulses_down(self) -> torch.Tensor:
        return (self._abs_sum - self._signed_sum) / 2

    @property
    def energy_j(self) -> torch.Tensor:
        return (self.pulses_up + self.pulses_down) * self.energy


def fire(g_flat: torch.Tensor, flat: torch.Tensor, gen: torch.Generator,
         table: GeometricTable | StepTable, tally=None) -> None:
    """Move the devices with pulses (``flat`` signed counts, aligned with ``g_flat``).

    Only devices with pulses are touched (a rank-one update fires on a few percent of
    them): their state and parameters are gathered, moved, and scattered back.
    ``tally``: per-device (signed, absolute) pulse sums to add the counts to.
    """
    idx = flat.nonzero().squeeze(1)
    if idx.numel() == 0:
        return
    signed = flat[idx]
    up = signed > 0
    n = signed.abs()
    if tally is not None:
        tally[0].index_add_(0, idx, signed)
        tally[1].index_add_(0, idx, n)
    g = g_flat[idx]
    xi = torch.randn(g.shape, generator=gen, dtype=g.dtype)
    g_flat[idx] = table.move(g, idx, up, n, xi, gen)


class Crossbars:
    """All layers of a network, pulsed in one sparse pass per update.

    The layers' states become views of one flat buffer, so a layer's own ``pulse`` and
    this combined one move the same devices. Pulse counts are written into ``views``
    (one flat buffer, a view per layer), fired, and tallied per device; ``flush`` moves
    the tallies into the layers' counters (float32 per device is exact to 2^24 pulses,
    so flushing once per epoch is plenty).
    """

    def __init__(self, layers: list[DeviceLayer]):
        self.layers = layers
        self.g = torch.cat([layer.g.reshape(-1) for layer in layers])
        self.counts = torch.zeros_like(self.g)
        self._tally = (torch.zeros_like(self.g), torch.zeros_like(self.g))
        self.views, self._spans, offset = [], [], 0
        for layer in layers:
            n = layer.g.numel()
            layer.adopt_state(self.g[offset:offset + n])
            self.views.append(self.counts[offset:offset + n].view(layer.g.shape))
            self._spans.append((offset, offset + n))
            offset += n
        self.table = type(layers[0].table).cat([layer.table for layer in layers])

    def pulse(self, gen: torch.Generator) -> None:
        """Fire the counts written into ``views`` (one (R, out, in) view per layer)."""
        fire(self.g, self.counts, gen, self.table, self._tally)

    def flush(self) -> None:
        signed, absolute = self._tally
        for layer, (a, b) in zip(self.layers, self._spans):
            layer.add_tally(signed[a:b], absolute[a:b])
        signed.zero_()
        absolute.zero_()
