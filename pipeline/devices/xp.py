"""The few array operations the model families need, for numpy and for torch.

Each family writes its step formula once, against ``xp``; fitting runs it on numpy
arrays, the training simulator on torch tensors.
"""

from __future__ import annotations

import numpy as np


class NumpyOps:
    where = staticmethod(np.where)
    exp = staticmethod(np.exp)
    floor = staticmethod(np.floor)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def clip(x, lo, hi):
        return np.clip(x, lo, hi)

    @staticmethod
    def stack_last(values):
        return np.stack(np.broadcast_arrays(*[np.asarray(v, float) for v in values]), axis=-1)

    @staticmethod
    def gather(values, index):
        """values[..., index] along the last axis, broadcasting values to index's shape."""
        values = np.broadcast_to(values, index.shape + values.shape[-1:])
        return np.take_along_axis(values, index.astype(np.intp)[..., None], -1)[..., 0]


class TorchOps:
    def __init__(self):
        import torch

        self.torch = torch
        self.exp = torch.exp
        self.floor = torch.floor
        self.minimum = torch.minimum
        self.maximum = torch.maximum

    def where(self, cond, a, b):
        t = self.torch
        return t.where(cond, t.as_tensor(a), t.as_tensor(b))

    def clip(self, x, lo, hi):
        t = self.torch
        return t.clamp(x, min=t.as_tensor(lo, dtype=x.dtype), max=t.as_tensor(hi, dtype=x.dtype))

    def stack_last(self, values):
        t = self.torch
        tensors = t.broadcast_tensors(*[t.as_tensor(v) for v in values])
        return t.stack(tensors, dim=-1)

    def gather(self, values, index):
        shape = tuple(index.shape) + (values.shape[-1],)
        return self.torch.gather(values.expand(shape), -1, index.long().unsqueeze(-1)).squeeze(-1)


NP = NumpyOps()
_TORCH = None


def torch_ops() -> TorchOps:
    global _TORCH
    if _TORCH is None:
        _TORCH = TorchOps()
    return _TORCH


def ops_for(x):
    """The ops matching ``x``'s type (torch tensors get torch)."""
    if type(x).__module__.startswith("torch"):
        return torch_ops()
    return NP
