"""Wafer-scale fitting: the full ``ferroflow fit`` against a naive one-family lmfit loop.

Generates a wafer (default 10 x 10 dies x 4 devices x 5 pulse widths: 2,000 series),
ingests it, and in the same run times

- naive: soft bounds only, one ``lmfit.Model.fit`` per direction on each stored series'
  step map (``dg = k (b - g)`` in normalised units), serially, in this process;
- ferroflow: what ``ferroflow fit --wafer`` runs (``publish.fit_and_register``: five
  families, noise weighting, BIC selection, symmetry point with uncertainty,
  population, trace fits, registration) with the chosen engine (default ``batch``) and
  ``--workers`` processes (0: one per core), in a fresh child process.

The fit's memory (the child with its workers: proportional set sizes, sampled every
50 ms) is measured in a second, identical child run: reading every process's page
map 20 times a second costs CPU that the timed run's workers would lose (it made
the fit 0.4 s slower at 2,000 series).

Prints series/s of both, the ratio (target >= 1, stretch 3), the CPU time per series of
both (on a machine shared with other jobs the wall-clock ratio moves with their load)
and the peak memory.
``--devices 20`` gives 10,000 series (``--no-naive`` skips the slow baseline).

With ``--agreement`` it also fits the shipped sample wafer with both engines and prints
the largest parameter and standard-error disagreement per family (fits both engines
converged on and left unflagged), whether every device chose the same family, how many
fits carry the same flag, and how many fits the batched solver left to lmfit.

    python bench/fit_wafer.py [--dies 10] [--devices 4] [--engine batch] [--workers 0]
                              [--no-naive] [--agreement]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lmfit
import numpy as np
import psutil

from pipeline.fitting import FitConfig, fit_frame
from pipeline.generator import GeneratorConfig, generate_wafer
from pipeline.ingest import ingest
from pipeline.store import MeasurementStore
from pipeline.traces import series_from_frame, step_map

SAMPLE = Path(__file__).resolve().parents[1] / "raw_measurements" / "sample"
CHILD = r"""
import json, os, sys, time
from pipeline.fitting import FitConfig
from pipeline.publish import fit_and_register
from pipeline.registry import Registry
from pipeline.store import MeasurementStore
store, registry, wafer, engine, workers = sys.argv[1:6]
t, cpu0 = time.perf_counter(), os.times()
result, _ = fit_and_register(Registry(registry), MeasurementStore(store), wafer,
                             config=FitConfig(engine=engine, workers=int(workers)))
cpu1 = os.times()  # the workers have ended: their time is in the children's
cpu = sum(b - a for a, b in zip(cpu0[:4], cpu1[:4]))
print(json.dumps({"seconds": time.perf_counter() - t, "series": len(result.devices), "cpu": cpu}))
"""


def stored_frame(raw: list[Path], tmp: Path):
    store = MeasurementStore(tmp / "store")
    ingest(raw, store, tmp / "quarantine")
    return store.read()


def naive(series) -> int:
    """Soft bounds per direction, one lmfit fit each: what a script would do."""
    model = lmfit.Model(lambda g, k, b: k * (b - g))
    for s in series:
        sm = step_map(s)
        lo, span = float(np.min(s.state)), float(np.ptp(s.state))
        g, dg = (sm.g - lo) / span, sm.dg / span
        for m in (sm.up, ~sm.up):
            model.fit(dg[m], model.make_params(k=0.1, b=0.5), g=g[m])
    return len(series)


class PeakMemory:
    """Peak memory of a process plus its children, sampled in a thread: the sum of their
    proportional set sizes (PSS), which counts pages forked workers share once."""

    def __init__(self, pid: int, every_s: float = 0.05):
        self.pid, self.every, self.peak, self._stop = pid, every_s, 0, threading.Event()

    def _sample(self) -> None:
        me = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                total = me.memory_full_info().pss
                for child in me.children(recursive=True):
                    try:
                        total += child.memory_full_info().pss
                    except psutil.Error:  # a worker that just ended
                        pass
            except psutil.Error:  # the fit process ended
                break
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def fit_in_child(store: Path, registry: Path, engine: str, workers: int,
                 memory: bool = False) -> tuple[dict, int | None]:
    """``fit_and_register`` in a fresh process: its report, and with ``memory`` its peak
    memory (bytes)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(registry), "W01",
                             engine, str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if memory:
        with PeakMemory(proc.pid) as mem:
            out, err = proc.communicate()
    else:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"fit failed:\n{err}")
    return json.loads(out.strip().splitlines()[-1]), mem.peak if memory else None


def fallbacks(df) -> tuple[int, int]:
    """(fits the batched solver left to lmfit, step-map fits) over the series of ``df``."""
    from pipeline.batchfit import fit_steps
    from pipeline.fitting import FitTarget, _prepare

    cfg = FitConfig()
    preps = [p for p in map(lambda s: _prepare(s, cfg), series_from_frame(df))
             if not hasattr(p, "fits") and p.target is FitTarget.STEPS]
    left = 0
    for name in cfg.families:
        rows = fit_steps(name, [p.data for p in preps], [p.weights for p in preps],
                         [p.ts for p in preps], cfg.r2_min)
        left += sum(r is None for r in rows)
    return left, len(preps) * len(cfg.families)


def agreement(workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        df = stored_frame([SAMPLE], Path(tmp))
    ref = fit_frame(df, FitConfig(engine="lmfit", workers=workers))
    new = fit_frame(df, FitConfig(engine="batch", workers=workers))
    key = ["wafer", "die", "device", "pulse_width_s", "family"]
    fits = ref.fits.merge(new.fits, on=key, suffixes=("_ref", "_new"))
    same_flags = (fits.flag_ref.fillna("") == fits.flag_new.fillna("")).mean()
    good = fits[fits.success_ref & fits.success_new & (fits.flag_ref == "") & (fits.flag_new == "")]
    p = ref.params.merge(new.params, on=[*key, "param"], suffixes=("_ref", "_new")).merge(
        good[key], on=key)
    rel = (p.value_new - p.value_ref).abs() / p.value_ref.abs().clip(lower=1e-12)
    se = p[(p.stderr_ref > 0) & np.isfinite(p.stderr_ref)]
    rel_se = (se.stderr_new - se.stderr_ref).abs() / se.stderr_ref
    left, total = fallbacks(df)
    winners = ref.devices.family.fillna("-").to_numpy() == new.devices.family.fillna("-").to_numpy()
    print(f"sample wafer: {len(ref.devices)} devices, {len(fits)} family fits")
    print(f"same chosen family: {winners.sum()} of {len(winners)} devices")
    print(f"same flag: {same_flags * len(fits):.0f} of {len(fits)} fits")
    print(f"left to lmfit by the batched solver: {left} of {total} step-map fits")
    for fam, grp in rel.groupby(p.family):
        grp_se = rel_se[se.family == fam]
        print(f"  {fam:<10} largest relative parameter disagreement {grp.max():.2e}, "
              f"standard error {grp_se.max():.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dies", type=int, default=10, help="dies per side (default 10)")
    ap.add_argument("--devices", type=int, default=4, help="devices per die (4 -> 2,000 series)")
    ap.add_argument("--engine", default="batch", choices=["batch", "lmfit"])
    ap.add_argument("--workers", type=int, default=0, help="fit processes (0: one per core)")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    ap.add_argument("--agreement", action="store_true", help="also compare engines on the sample")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_wafer(GeneratorConfig(dies_x=args.dies, dies_y=args.dies,
                                       devices_per_die=args.devices, seed=5), tmp / "raw")
        df = stored_frame([tmp / "raw"], tmp)
        series = series_from_frame(df)
        n, t_naive = len(series), None
        if not args.no_naive:
            t, cpu = time.perf_counter(), time.process_time()
            naive(series)
            t_naive, cpu_naive = time.perf_counter() - t, time.process_time() - cpu
        del df, series
        report, _ = fit_in_child(tmp / "store", tmp / "registry", args.engine, args.workers)
        _, peak = fit_in_child(tmp / "store", tmp / "registry-memory", args.engine, args.workers,
                               memory=True)
    assert report["series"] == n, (report, n)
    t_full = report["seconds"]
    print(f"series: {n}")
    if t_naive:
        print(f"naive lmfit loop, soft bounds only:   {n / t_naive:8.1f} series/s  ({t_naive:.1f} s)")
    print(f"ferroflow fit, five families ({args.engine}): {n / t_full:8.1f} series/s  ({t_full:.1f} s)")
    if t_naive:
        print(f"ratio: {t_naive / t_full:.2f}  (target >= 1, stretch 3)")
        print(f"CPU per series: naive {1e3 * cpu_naive / n:.2f} ms, ferroflow "
              f"{1e3 * report['cpu'] / n:.2f} ms (process and workers)")
    print(f"peak memory of the fit (process and workers, a second run): {peak / 2**20:.0f} MiB")
    if args.agreement:
        agreement(args.workers)


if __name__ == "__main__":
    main()
