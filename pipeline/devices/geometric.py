"""Closed forms of the soft-bounds-type families (steps ``k (b - g)``; DOMAIN.md sections 3-4).

Written once against plain arithmetic, so numpy arrays and torch tensors both work:
fitting and the report call them on numpy, the simulator on torch.
"""

from __future__ import annotations

import numpy as np


def approach(g0, b, keep):
    """State after pulses that keep the share ``keep`` of the distance to the bound ``b``:
    ``g_n = b - (b - g_0) keep``, with ``keep = (1 - k)^n`` for n noise-free pulses."""
    return b - (b - g0) * keep


def response(k, b, g0, n):
    """``g_n = b - (b - g_0)(1 - k)^n`` (numpy or torch, broadcasting)."""
    return approach(g0, b, (1 - k) ** n)


def run(k_up, k_dn, b_up, b_dn, start, up, length):
    """States after 1..length pulses of many traces: shape ``start.shape + (length,)``."""
    start = np.asarray(start, dtype=float)
    k = np.where(up, k_up, k_dn)[..., None]
    b = np.where(up, b_up, b_dn)[..., None]
    return response(k, b, start[..., None], np.arange(1, length + 1))


def symmetry_point(k_up, k_dn, b_up, b_dn):
    """``g* = (k_up b_up + k_dn b_dn) / (k_up + k_dn)``: where the two steps cancel."""
    return (k_up * b_up + k_dn * b_dn) / (k_up + k_dn)
