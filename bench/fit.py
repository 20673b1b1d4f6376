"""Trace-fitting throughput: ferroflow against a naive lmfit loop, in the same run.

Both fit the same soft-bounds model ``dg = k (b - g)`` to every (cycle, direction) trace
of a generated wafer (>= 2,000 traces):

- naive: ``lmfit.Model.fit`` per trace from generic starting values (k = 0.1, b = 0.5);
- ferroflow: ``pipeline.fitting.fit_traces`` (closed-form least squares for all traces
  at once, standard errors from the regression covariance).

Prints fits/s of both, the ratio (target >= 4) and the largest relative disagreement of
the fitted parameters over traces where lmfit converged (target <= 1e-3).

    python bench/fit.py [--cycles 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lmfit
import numpy as np

from pipeline.fitting import fit_traces, trace_states
from pipeline.generator import GeneratorConfig, generate_wafer
from pipeline.ingest import ingest
from pipeline.store import MeasurementStore
from pipeline.traces import series_from_frame


def step(g, k, b):
    return k * (b - g)


def naive(series) -> list[tuple[float, float, bool]]:
    model = lmfit.Model(step)
    out = []
    for _, _, g, _ in trace_states(series):
        r = model.fit(np.diff(g), model.make_params(k=0.1, b=0.5), g=g[:-1])
        out.append((r.params["k"].value, r.params["b"].value, r.success))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=4, help="cycles per file (4 -> 2,000 traces)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_wafer(GeneratorConfig(cycles=args.cycles, seed=5), tmp / "raw")
        store = MeasurementStore(tmp / "store")
        ingest([tmp / "raw"], store, tmp / "q")
        series = series_from_frame(store.read())

    t = time.perf_counter()
    slow = naive(series)
    t_naive = time.perf_counter() - t
    t = time.perf_counter()
    fast = fit_traces(series)
    t_fast = time.perf_counter() - t

    assert len(fast) == len(slow), (len(fast), len(slow))
    k_n, b_n, ok = map(np.array, zip(*slow))
    rel = np.maximum(np.abs(fast.k.to_numpy() / k_n - 1), np.abs(fast.b.to_numpy() / b_n - 1))
    n = len(fast)
    print(f"traces: {n} ({len(series)} device series)")
    print(f"naive lmfit loop: {n / t_naive:10.1f} fits/s  ({t_naive:.2f} s)")
    print(f"ferroflow:        {n / t_fast:10.1f} fits/s  ({t_fast:.3f} s)")
    print(f"ratio: {t_naive / t_fast:.1f}  (target >= 4)")
    print(f"lmfit converged on {ok.sum()} of {n}; largest relative parameter disagreement "
          f"there: {rel[ok].max():.2e}  (target <= 1e-3)")


if __name__ == "__main__":
    main()
