"""Memory a sweep will need, estimated before any work starts (no torch here).

Per run, ``training.Batch`` holds the training set gathered in the run's own order
(``train_epoch``: inputs and one-hot targets), the activations of a full-set evaluation,
and per weight its device state (``devices.DeviceLayer``: parameters, range, state,
reference and pulse table, about 24 float32 values, plus the float64 samples they were
drawn from). Float32 throughout; the factor 2 covers the temporaries of each step.
"""

from __future__ import annotations

import os

BYTES_PER_WEIGHT = 24 * 4 + 6 * 8
DATASET_SHAPES = {"digits": (1437, 64, 10), "mnist5k": (4000, 784, 10),
                  "mnist": (60000, 784, 10)}  # train rows, inputs, classes


def run_bytes(hidden: tuple[int, ...], dataset: str = "digits") -> int:
    """Estimated peak bytes of one run."""
    n, features, classes = DATASET_SHAPES[dataset]
    sizes = [features, *hidden, classes]
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    per_sample = features + classes + sum(sizes[1:])
    return 2 * 4 * n * per_sample + BYTES_PER_WEIGHT * weights


def memory_bytes() -> int:
    """Physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_sweep(runs: int, hidden: tuple[int, ...], dataset: str = "digits",
                available: int | None = None) -> None:
    """Refuse a sweep whose estimate exceeds half of this machine's memory."""
    need = runs * run_bytes(hidden, dataset)
    have = memory_bytes() if available is None else available
    if need > have / 2:
        raise ValueError(f"{runs} runs need about {need / 2**30:.1f} GiB (estimate), more than "
                         f"half of this machine's {have / 2**30:.0f} GiB; use fewer seeds, "
                         "models or hidden units")
