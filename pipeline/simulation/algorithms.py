"""Training algorithms as strategies, and their registry (DOMAIN.md section 5).

A ``Batch`` (training.py) runs the forward pass, backpropagates the error and updates
the digital biases; the algorithm owns the weights and decides how each sample's
update reaches them, through three hooks:

- ``weights()``: the weights the forward pass uses (R, out, in) per layer;
- ``update(i, x, delta)``: during backprop, layer i's input and error;
- ``after_backprop(xs, deltas, gen)``: once per sample, after every layer's error.

One instance serves one batch of runs. A new algorithm (e.g. Tiki-Taka) is a subclass
listed in ``catalog.CATALOG`` (its name, whether it is analog, its class here).
"""

from __future__ import annotations


import numpy as np
import torch

from .catalog import CATALOG, algorithm_info, algorithm_names  # noqa: F401 (re-exported)
from .devices import DTYPE, Crossbars, DeviceLayer


class Algorithm:

    def __init__(self, runs, w0: list[torch.Tensor], cfg):
        self.r, self.lr = len(runs), cfg.lr

    def weights(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def update(self, i: int, x: torch.Tensor, delta: torch.Tensor) -> None:
        """Layer i's input x (R, in) and error delta (R, out), during backprop."""

    def after_backprop(self, xs: list[torch.Tensor], deltas: list[torch.Tensor], gen: torch.Generator) -> None:
        """Every layer's input and error of this sample, after backprop."""

    def pulses(self) -> dict[str, np.ndarray]:
        """Pulses fired so far per layer and direction ("l0_up" -> per run)."""
        return {}

    def energy(self) -> np.ndarray:
        """Training energy so far per run (J)."""
        return np.zeros(self.r)


class FloatingPoint(Algorithm):
    """Floating-point SGD: same network, data, order and initial weights."""

    def __init__(self, runs, w0, cfg):
        super().__init__(runs, w0, cfg)
        self.w = w0

    def weights(self):
        return self.w

    def update(self, i, x, delta):
        self.w[i] -= self.lr * delta.unsqueeze(-1) * x.unsqueeze(1)


class Analog(Algorithm):
    """Weights on simulated devices (``DeviceLayer``): every layer's pulses fire in one
    sparse pass after backprop, into counts the subclass writes."""

    def __init__(self, runs, w0, cfg):
        super().__init__(runs, w0, cfg)
        specs, seeds = [r.device for r in runs], [r.seed for r in runs]
        self.layers = [DeviceLayer(specs, tuple(w.shape[1:]), seeds, runs[0].shifts(i), w, cfg.d2d,
                                   cfg.weight_range) for i, w in enumerate(w0)]
        self.crossbars = Crossbars(self.layers)

    def weights(self):
        return [layer.weights() for layer in self.layers]

    def after_backprop(self, xs, deltas, gen):
        self.crossbars.pulse(gen)

    def pulses(self):
        self.crossbars.flush()
        out = {}
        for i, layer in enumerate(self.layers):
            out[f"l{i}_up"] = layer.pulses_up.numpy().copy()
            out[f"l{i}_down"] = layer.pulses_down.numpy().copy()
        return out

    def energy(self):
        self.crossbars.flush()
        return sum(layer.energy_j for layer in self.layers).numpy().copy()


class AnalogSGD(Analog):
    """Gokmen & Vlasov 2016: per sample, a rank-one update by stochastic pulse trains
    (``PulseTrains``); every coincidence is one pulse through the device model."""

    def __init__(self, runs, w0, cfg):
        super().__init__(runs, w0, cfg)
        self.trains = PulseTrains(self.layers, cfg.lr, cfg.bl)

    def after_backprop(self, xs, deltas, gen):
        self.trains.counts(xs, deltas, gen, self.crossbars.views)
        super().after_backprop(xs, deltas, gen)


class MixedPrecision(Analog):
    """Nandakumar et al. 2018/2020: ``chi += -lr x delta^T`` in digital memory; where
    ``|chi| >= dw_min`` fire ``n = trunc(chi / dw_min)`` pulses with its sign and
    subtract ``n dw_min``."""

    def __init__(self, runs, w0, cfg):
        super().__init__(runs, w0, cfg)
        self.chi = [torch.zeros_like(w) for w in w0]

    def update(self, i, x, delta):
        eps = self.layers[i].dw_min.view(-1, 1, 1)
        self.chi[i] -= self.lr * delta.unsqueeze(-1) * x.unsqueeze(1)
        n = torch.trunc(self.chi[i] / eps, out=self.crossbars.views[i])
        self.chi[i] -= n * eps


class PulseTrains:
    """Stochastic pulse trains of every layer at once (Gokmen & Vlasov 2016).

    Per layer, input i fires in each of ``bl`` slots with probability ``A |x_i|`` and
    error j with ``B |delta_j|``; with update management ``A = s sqrt(max|delta| /
    max|x|)``, ``B = s / sqrt(...)``, ``s = sqrt(lr / (dw_min bl))`` (aihwkit's
    ``update_management``), so the expected update is ``lr |x| |delta|``. The signs ride
    on the bits (``sign(x)``, ``-sign(delta)``), so one batched product of the two trains
    gives ``-sum_slots sign(x_i) sign(delta_j)`` coincidences, the signed pulse count of
    every device. All layers' inputs and errors sit side by side in one vector: one draw,
    one compare, and a segmented max give every layer's trains (few, larger tensor ops
    instead of many small ones: per-sample work is dispatch-bound).
    """

    def __init__(self, layers: list[DeviceLayer], lr: float, bl: int):
        r = layers[0].g.shape[0]
        lengths, self.slices, offset = [], [], 0
        for layer in layers:
            n_out, n_in = layer.g.shape[1:]
            lengths += [n_in, n_out]
            self.slices.append((slice(offset, offset + n_in), slice(offset + n_in, offset + n_in + n_out)))
            offset += n_in + n_out
        self.r, self.n_layers, self.bl, self.width = r, len(layers), bl, offset
        self.lengths = torch.tensor(lengths).expand(r, -1).contiguous()
        self.segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        self.flip = torch.tensor([1.0, -1.0] * len(layers), dtype=DTYPE)[self.segment]
        self.scale = torch.stack([torch.sqrt(lr / (layer.dw_min * bl)) for layer in layers], 1)

    def counts(self, xs: list[torch.Tensor], deltas: list[torch.Tensor], gen: torch.Generator,
               out: list[torch.Tensor]) -> None:
        """Write every layer's signed pulse counts into ``out`` (one (R, out, in) each)."""
        v = torch.cat([t for pair in zip(xs, deltas) for t in pair], -1)
        a = v.abs()
        m = torch.segment_reduce(a, "max", lengths=self.lengths, axis=1, unsafe=True)
        m = m.clamp_min_(1e-12).view(self.r, self.n_layers, 2)
        root = torch.sqrt(m[..., 1] / m[..., 0])
        per_segment = torch.stack([self.scale * root, self.scale / root], -1).view(self.r, -1)
        p = (a * per_segment[:, self.segment]).clamp_(max=1.0)
        bits = (torch.rand(self.r, self.bl, self.width, generator=gen, dtype=v.dtype)
                < p.unsqueeze(1)) * (torch.sign(v) * self.flip).unsqueeze(1)
        for (x_part, d_part), target in zip(self.slices, out):
            torch.bmm(bits[:, :, d_part].transpose(1, 2), bits[:, :, x_part], out=target)


ALGORITHMS: dict[str, type[Algorithm]] = {name: globals()[info.impl] for name, info in CATALOG.items()}


def get_algorithm(name: str) -> type[Algorithm]:
    return ALGORITHMS[algorithm_info(name).name]
