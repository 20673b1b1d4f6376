"""A few long series among short ones: the batched fit with and without length batches.

Generates a wafer (default 8 x 8 dies x 4 devices x 2 pulse widths: 512 series of 600
steps), then, in one process and the same run, fits the series (``fit_series_list``,
batch engine, one worker):

- equal: every series as generated (the baseline);
- mixed: the same wafer with ``--long`` series (default 2) made ``--times`` (10) times
  longer, their cycles repeated, as a device measured for more cycles would be; series
  whose step maps differ by more than ``batchfit.LENGTH_SPREAD`` are solved apart;
- mixed, padded: the same, with every partition solved as one batch padded to its
  longest series (``LENGTH_SPREAD`` infinite: the behaviour before length batches).

Prints the CPU time of each and their ratios to the baseline.

    python bench/fit_lengths.py [--dies 8] [--long 2] [--times 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import batchfit
from pipeline.fitting import FitConfig, fit_series_list
from pipeline.generator import GeneratorConfig, generate_wafer
from pipeline.ingest import ingest
from pipeline.store import MeasurementStore
from pipeline.traces import Series, series_from_frame


def longer(s: Series, times: int) -> Series:
    """``s`` with its cycles repeated ``times`` times (numbered on)."""
    def rep(a):
        return None if a is None else np.tile(a, times)
    cycles = np.concatenate([s.cycle + k * (int(s.cycle.max()) + 1) for k in range(times)])
    return dataclasses.replace(s, state=rep(s.state), up=rep(s.up), cycle=cycles,
                               amplitude=rep(s.amplitude), energy_j=rep(s.energy_j), pulse=rep(s.pulse))


def cpu_seconds(series: list[Series]) -> float:
    t = time.process_time()
    fit_series_list(series, FitConfig(workers=1))
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dies", type=int, default=8, help="dies per side (default 8)")
    ap.add_argument("--long", type=int, default=2, help="series made longer (default 2)")
    ap.add_argument("--times", type=int, default=10, help="how many times longer (default 10)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_wafer(GeneratorConfig(dies_x=args.dies, dies_y=args.dies, devices_per_die=4,
                                       pulse_widths_s=(20e-9, 2e-6), seed=5), tmp / "raw")
        store = MeasurementStore(tmp / "store")
        ingest([tmp / "raw"], store, tmp / "quarantine")
        series = series_from_frame(store.read())
    step = max(1, len(series) // max(args.long, 1))
    mixed = [longer(s, args.times) if i % step == 0 and i // step < args.long else s
             for i, s in enumerate(series)]
    equal = cpu_seconds(series)
    batched = cpu_seconds(mixed)
    spread, batchfit.LENGTH_SPREAD = batchfit.LENGTH_SPREAD, float("inf")
    try:
        padded = cpu_seconds(mixed)
    finally:
        batchfit.LENGTH_SPREAD = spread
    print(f"series: {len(series)}, {args.long} of them {args.times}x longer in the mixed runs")
    rows = [("equal lengths", equal), (f"mixed, batched by length (<= {spread:g}x)", batched),
            ("mixed, one padded batch per partition", padded)]
    for label, seconds in rows:
        print(f"{label + ':':<40} {seconds:6.2f} s CPU  ratio {seconds / equal:.2f}")


if __name__ == "__main__":
    main()
