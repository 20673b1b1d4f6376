"""Why symmetry-point shifting helps or not (DOMAIN.md section 4), per run and layer.

Under plain analog SGD a weight drifts toward its device's symmetry point: with the
reference at mid-range that is the weight ``gain (SP - g_ref)``, the *SP offset*
(positive when the SP lies above mid-range); with shifting the reference sits at the SP
and the offset is 0. Where the offset pushes hidden units depends on the inputs'
signs: with non-negative pixels a positive offset drives sigmoid units toward 1, a
negative one toward 0, and saturated units stop learning (their derivative vanishes).
So every epoch records, per run:

- ``sp_offset_l<i>``: mean SP offset of layer i's devices, in weight units, signed;
- ``mean_w_l<i>``: mean weight of layer i (where the drift has taken it);
- ``sat_low_h<k>``, ``sat_high_h<k>``: share of hidden layer k's activations on the
  test set below 0.05 / above 0.95 (sigmoid, or tanh mapped onto [0, 1]).

An offset in the output layer adds the same amount to every logit of a sample only when
the inputs of that layer are equal; even then softmax ignores a common shift.
"""

from __future__ import annotations

import numpy as np
import torch

from .devices import symmetry_points

SATURATED = 0.05  # below this (or above 1 - this) a sigmoid unit counts as saturated


def sp_offsets(layers) -> list[np.ndarray]:
    """Per layer, per run: mean ``gain (SP - g_ref)`` over the layer's devices."""
    out = []
    for layer in layers:
        sp = symmetry_points(layer.model, layer.p, layer.lo, layer.hi)
        out.append((layer.gain * (sp - layer.g_ref)).mean(dim=(1, 2)).double().numpy())
    return out


def saturation(hidden: list[torch.Tensor], activation: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per hidden layer, per run: (share < 0.05, share > 0.95) of its activations."""
    out = []
    for a in hidden:
        if activation == "tanh":
            a = (a + 1) / 2
        elif activation != "sigmoid":  # unbounded (relu): saturation is not defined
            nan = np.full(a.shape[0], np.nan)
            out.append((nan, nan))
            continue
        flat = a.reshape(a.shape[0], -1)
        out.append(((flat < SATURATED).double().mean(-1).numpy(),
                    (flat > 1 - SATURATED).double().mean(-1).numpy()))
    return out


def layer_offsets(batch) -> list[np.ndarray]:
    """SP offsets of a batch (fixed during training: computed once); NaN for FP."""
    from .algorithms import Analog

    if isinstance(batch.algorithm, Analog):
        return sp_offsets(batch.algorithm.layers)
    return [np.full(len(batch.runs), np.nan)] * (len(batch.sizes) - 1)


def epoch_diagnostics(batch, offsets: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The module docstring's columns for every run of a batch, now."""
    weights = batch.algorithm.weights()
    r = len(batch.runs)
    out = {}
    for i, (w, off) in enumerate(zip(weights, offsets)):
        out[f"sp_offset_l{i}"] = off
        out[f"mean_w_l{i}"] = w.mean(dim=(1, 2)).double().numpy()
    acts = batch.forward(batch.x_test.T.expand(r, *batch.x_test.T.shape), weights)  # samples as columns
    for k, (low, high) in enumerate(saturation(acts[1:-1], batch.cfg.activation)):
        out[f"sat_low_h{k}"] = low
        out[f"sat_high_h{k}"] = high
    return out
