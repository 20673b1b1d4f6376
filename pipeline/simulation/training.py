"""Hardware-aware training of an MLP on simulated devices, batched over runs.

Algorithms (DOMAIN.md section 5), one switch each, combinable with symmetry-point
shifting (``shift``) for the two analog ones:

- ``fp``: floating-point SGD, same network, data, order and initial weights;
- ``analog-sgd``: Gokmen & Vlasov 2016. Per sample, a rank-one update by stochastic
  pulse trains of length ``bl``: input i fires in each slot with probability
  ``A |x_i|``, error j with ``B |delta_j|``, ``A B = lr / (dw_min bl)`` (expected update
  ``lr |x| |delta|``), update management ``A = sqrt(lr / (dw_min bl) * max|delta| / max|x|)``
  and ``B`` its mirror (aihwkit's ``update_management``). Every coincidence is one
  pulse through the device model, in the direction of ``-sign(x_i delta_j)``;
- ``mixed-precision``: Nandakumar et al. 2018/2020. ``chi += -lr x delta^T`` in digital
  memory; where ``|chi| >= dw_min`` fire ``n = trunc(chi / dw_min)`` pulses with its sign
  and subtract ``n dw_min``.

Each weight is a device (``devices.DeviceLayer``); biases stay digital (FP SGD). Batch
size 1 (per-sample updates), as in both papers. Every fired pulse is counted per layer
and direction; training energy = pulses x energy per pulse of the model.

Runs that share a model family and an algorithm advance together as one batch of
tensors (leading dimension R). Per run, data order, initial weights and d2d sampling
come from that run's seed only; c2c noise and pulse trains come from one generator per
batch, so a run is reproducible for the same sweep and seed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .datasets import Dataset
from .devices import DTYPE, Crossbars, DeviceLayer, DeviceSpec

ALGORITHMS = ("fp", "analog-sgd", "mixed-precision")


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] = (32,)
    activation: str = "sigmoid"      # or "relu", "tanh"
    epochs: int = 10
    lr: float = 0.1
    bl: int = 31                     # pulse-train length (aihwkit default)
    target_accuracy: float = 0.90    # test accuracy that counts as converged
    d2d: bool = True
    weight_range: float = 3.0        # weights span +-this over a device's state range

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunSpec:
    algorithm: str
    seed: int
    device: DeviceSpec | None = None   # None for fp
    shift: bool = False
    shift_layers: tuple[int, ...] | None = None  # with shift: only these layers (None: all)

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; use one of {ALGORITHMS}")
        if self.algorithm != "fp" and self.device is None:
            raise ValueError(f"{self.algorithm} needs a device model")
        if self.algorithm == "fp" and self.shift:
            raise ValueError("symmetry-point shifting applies to the analog algorithms only")

    @property
    def label(self) -> str:
        if not self.shift:
            return self.algorithm
        only = "" if self.shift_layers is None else "(l" + ",".join(map(str, self.shift_layers)) + ")"
        return f"{self.algorithm}+sp-shift{only}"

    def shifts(self, layer: int) -> bool:
        return self.shift and (self.shift_layers is None or layer in self.shift_layers)

    def run_id(self, cfg: TrainConfig, dataset: str) -> str:
        doc = {"ref": self.device.ref if self.device else None, "algorithm": self.algorithm,
               "shift": self.shift, "seed": self.seed, "config": cfg.hash(), "data": dataset}
        if self.shift_layers is not None:  # absent otherwise: earlier run ids stay valid
            doc["shift_layers"] = list(self.shift_layers)
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class EpochRecord:
    epoch: int
    train_accuracy: np.ndarray
    test_accuracy: np.ndarray
    loss: np.ndarray
    pulses: dict[str, np.ndarray]       # "l0_up" -> per run
    energy_j: np.ndarray
    wall_s: float
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)  # see diagnostics.py


@dataclass
class BatchResult:
    runs: list[RunSpec]
    epochs: list[EpochRecord] = field(default_factory=list)


def _activation(name: str):
    if name == "sigmoid":
        return torch.sigmoid, lambda a: a * (1 - a)
    if name == "tanh":
        return torch.tanh, lambda a: 1 - a * a
    if name == "relu":
        return torch.relu, lambda a: (a > 0).to(a.dtype)
    raise ValueError(f"unknown activation {name!r}")


def _init_weights(sizes, seeds):
    """Per run: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights, zero biases."""
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(fan_in)
        w = np.stack([np.random.default_rng([s, fan_in, fan_out]).uniform(-bound, bound, (fan_out, fan_in))
                      for s in seeds])
        layers.append(torch.tensor(w, dtype=DTYPE))
    return layers


class Batch:
    """R runs of one algorithm and one model family, trained together."""

    def __init__(self, runs: list[RunSpec], data: Dataset, cfg: TrainConfig):
        algos = {r.algorithm for r in runs}
        if len(algos) != 1 or len({(r.shift, r.shift_layers) for r in runs}) != 1:
            raise ValueError("a batch holds runs of one algorithm and one shift setting")
        self.runs, self.data, self.cfg = runs, data, cfg
        self.algorithm = algos.pop()
        self.sizes = [data.n_features, *cfg.hidden, data.n_classes]
        seeds = [r.seed for r in runs]
        w0 = _init_weights(self.sizes, seeds)
        self.bias = [torch.zeros(len(runs), n, dtype=DTYPE) for n in self.sizes[1:]]
        self.act, self.dact = _activation(cfg.activation)
        self.gen = torch.Generator().manual_seed(int(sum(seeds) * 7919 + len(runs)))
        if self.algorithm == "fp":
            self.w = w0
            self.layers = []
        else:
            specs = [r.device for r in runs]
            self.layers = [DeviceLayer(specs, tuple(w.shape[1:]), seeds, runs[0].shifts(i), w, cfg.d2d,
                                       cfg.weight_range) for i, w in enumerate(w0)]
            self.crossbars = Crossbars(self.layers)
            self.trains = PulseTrains(self.layers, cfg.lr, cfg.bl)
            self.chi = [torch.zeros_like(w) for w in w0]
        self.x_train = torch.tensor(data.x_train, dtype=DTYPE)  # float32: see devices.DTYPE
        self.y_train = torch.tensor(data.y_train)
        self.x_test = torch.tensor(data.x_test, dtype=DTYPE)
        self.y_test = torch.tensor(data.y_test)
        self.rngs = [np.random.default_rng([s, 11]) for s in seeds]

    def weights(self) -> list[torch.Tensor]:
        return self.w if self.algorithm == "fp" else [layer.weights() for layer in self.layers]

    def forward(self, x: torch.Tensor, weights) -> list[torch.Tensor]:
        """Activations per layer for x of shape (R, n, in); the last are logits."""
        acts = [x]
        for i, (w, b) in enumerate(zip(weights, self.bias)):
            z = torch.matmul(acts[-1], w.transpose(1, 2)) + b[:, None, :]
            acts.append(z if i == len(weights) - 1 else self.act(z))
        return acts

    def evaluate(self, x: torch.Tensor, y: torch.Tensor):
        logits = self.forward(x.expand(len(self.runs), *x.shape), self.weights())[-1]
        acc = (logits.argmax(-1) == y).double().mean(-1)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y.expand(len(self.runs), -1),
                                                 reduction="none").mean(-1)
        return acc.numpy(), loss.numpy()

    def train_epoch(self) -> None:
        n = len(self.x_train)
        order = torch.tensor(np.stack([g.permutation(n) for g in self.rngs]))
        # gathered once per epoch: (n, R, ...) so that step t is a plain view
        xs = self.x_train[order].transpose(0, 1).contiguous()
        targets = torch.nn.functional.one_hot(self.y_train[order], self.sizes[-1]).to(DTYPE)
        targets = targets.transpose(0, 1).contiguous()
        with torch.no_grad():
            for t in range(n):
                self._step(xs[t], targets[t])

    def _step(self, x: torch.Tensor, target: torch.Tensor) -> None:
        weights = self.weights()
        acts = [x]
        for i, (w, b) in enumerate(zip(weights, self.bias)):
            z = torch.baddbmm(b.unsqueeze(-1), w, acts[-1].unsqueeze(-1)).squeeze(-1)
            acts.append(z if i == len(weights) - 1 else self.act(z))
        delta = torch.softmax(acts[-1], dim=-1) - target
        lr = self.cfg.lr
        deltas = [None] * len(weights)
        for i in range(len(weights) - 1, -1, -1):
            deltas[i] = delta
            prev = (torch.bmm(delta.unsqueeze(1), weights[i]).squeeze(1) * self.dact(acts[i])) if i else None
            self._update(i, acts[i], delta)
            self.bias[i] -= lr * delta
            delta = prev
        if self.algorithm == "analog-sgd":
            self.trains.counts(acts[:-1], deltas, self.gen, self.crossbars.views)
        if self.algorithm != "fp":  # every layer's pulses in one pass, after backprop
            self.crossbars.pulse(self.gen)

    def _update(self, i: int, x: torch.Tensor, delta: torch.Tensor) -> None:
        """FP: apply the update. Mixed precision: accumulate, write layer i's pulse counts."""
        lr = self.cfg.lr
        if self.algorithm == "fp":
            self.w[i] -= lr * delta.unsqueeze(-1) * x.unsqueeze(1)
        elif self.algorithm == "mixed-precision":
            eps = self.layers[i].dw_min.view(-1, 1, 1)
            self.chi[i] -= lr * delta.unsqueeze(-1) * x.unsqueeze(1)
            n = torch.trunc(self.chi[i] / eps, out=self.crossbars.views[i])
            self.chi[i] -= n * eps

    def pulses(self) -> dict[str, np.ndarray]:
        if self.layers:
            self.crossbars.flush()
        out = {}
        for i, layer in enumerate(self.layers):
            out[f"l{i}_up"] = layer.pulses_up.numpy().copy()
            out[f"l{i}_down"] = layer.pulses_down.numpy().copy()
        return out

    def energy(self) -> np.ndarray:
        if not self.layers:
            return np.zeros(len(self.runs))
        self.crossbars.flush()
        return sum(layer.energy_j for layer in self.layers).numpy().copy()


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


def train(runs: list[RunSpec], data: Dataset, cfg: TrainConfig, progress=None) -> BatchResult:
    """Train a batch of runs; ``progress(epoch, epochs, record)`` after each epoch."""
    from .diagnostics import epoch_diagnostics, layer_offsets

    batch = Batch(runs, data, cfg)
    offsets = layer_offsets(batch)
    result = BatchResult(runs)
    for epoch in range(1, cfg.epochs + 1):
        t = time.perf_counter()
        batch.train_epoch()
        wall = time.perf_counter() - t
        tr_acc, _ = batch.evaluate(batch.x_train, batch.y_train)
        te_acc, loss = batch.evaluate(batch.x_test, batch.y_test)
        rec = EpochRecord(epoch, tr_acc, te_acc, loss, batch.pulses(), batch.energy(), wall,
                          epoch_diagnostics(batch, offsets))
        result.epochs.append(rec)
        if progress:
            progress(epoch, cfg.epochs, rec)
    return result
