"""Hardware-aware training of an MLP on simulated devices, batched over runs.

Algorithms (DOMAIN.md section 5), one strategy each in ``algorithms.py``, combinable
with symmetry-point shifting (``shift``) for the analog ones:

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

from .algorithms import get_algorithm
from .catalog import algorithm_info, algorithm_names
from .datasets import Dataset
from .devices import DTYPE, DeviceSpec

ALGORITHMS = algorithm_names()  # names only, kept for callers that import them from here


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
        analog = algorithm_info(self.algorithm).analog
        if analog and self.device is None:
            raise ValueError(f"{self.algorithm} needs a device model")
        if not analog and self.shift:
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
        self.sizes = [data.n_features, *cfg.hidden, data.n_classes]
        seeds = [r.seed for r in runs]
        w0 = _init_weights(self.sizes, seeds)
        self.bias = [torch.zeros(len(runs), n, dtype=DTYPE) for n in self.sizes[1:]]
        self.act, self.dact = _activation(cfg.activation)
        self.gen = torch.Generator().manual_seed(int(sum(seeds) * 7919 + len(runs)))
        self.algorithm = get_algorithm(algos.pop())(runs, w0, cfg)
        self.x_train = torch.tensor(data.x_train, dtype=DTYPE)  # float32: see devices.DTYPE
        self.y_train = torch.tensor(data.y_train)
        self.x_test = torch.tensor(data.x_test, dtype=DTYPE)
        self.y_test = torch.tensor(data.y_test)
        self.rngs = [np.random.default_rng([s, 11]) for s in seeds]

    def forward(self, x: torch.Tensor, weights) -> list[torch.Tensor]:
        """Activations per layer for x of shape (R, in, n), samples as columns (the
        per-sample step is n = 1); the last are logits."""
        acts = [x]
        for i, (w, b) in enumerate(zip(weights, self.bias)):
            z = torch.baddbmm(b.unsqueeze(-1), w, acts[-1])
            acts.append(z if i == len(weights) - 1 else self.act(z))
        return acts

    def evaluate(self, x: torch.Tensor, y: torch.Tensor):
        cols = x.T.expand(len(self.runs), *x.T.shape)
        logits = self.forward(cols, self.algorithm.weights())[-1].transpose(1, 2)
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
        algo = self.algorithm
        weights = algo.weights()
        acts = [a.squeeze(-1) for a in self.forward(x.unsqueeze(-1), weights)]
        delta = torch.softmax(acts[-1], dim=-1) - target
        lr = self.cfg.lr
        deltas = [None] * len(weights)
        for i in range(len(weights) - 1, -1, -1):
            deltas[i] = delta
            prev = (torch.bmm(delta.unsqueeze(1), weights[i]).squeeze(1) * self.dact(acts[i])) if i else None
            algo.update(i, acts[i], delta)
            self.bias[i] -= lr * delta
            delta = prev
        algo.after_backprop(acts[:-1], deltas, self.gen)


def train(runs: list[RunSpec], data: Dataset, cfg: TrainConfig, progress=None,
          threads: int = 1) -> BatchResult:
    """Train a batch of runs; ``progress(epoch, epochs, record)`` after each epoch.

    Torch runs on ``threads`` threads meanwhile (the caller's setting is restored
    after): per-sample tensors are tiny, so more threads only add overhead.
    """
    from .diagnostics import epoch_diagnostics, layer_offsets

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        batch = Batch(runs, data, cfg)
        offsets = layer_offsets(batch)
        result = BatchResult(runs)
        for epoch in range(1, cfg.epochs + 1):
            t = time.perf_counter()
            batch.train_epoch()
            wall = time.perf_counter() - t
            tr_acc, _ = batch.evaluate(batch.x_train, batch.y_train)
            te_acc, loss = batch.evaluate(batch.x_test, batch.y_test)
            rec = EpochRecord(epoch, tr_acc, te_acc, loss, batch.algorithm.pulses(),
                              batch.algorithm.energy(), wall, epoch_diagnostics(batch, offsets))
            result.epochs.append(rec)
            if progress:
                progress(epoch, cfg.epochs, rec)
        return result
    finally:
        torch.set_num_threads(previous)
