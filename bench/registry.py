"""Registry lookups against reading a version's parquet file, in the same run.

Fills a registry with 10,000 versions (100 names x 100 versions, small device tables,
aliases on every tenth version), then prints the median time of

- a get by alias (index only; target: well under 10 ms),
- a search (wafer + pulse-width range + family + fit quality),
- a load of one version (reads its parquet file): the baseline.

    python bench/registry.py [--names 100] [--versions 100]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.registry import Registry


def _median_ms(fn, repeat: int = 200) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def fill(reg: Registry, names: int, versions: int) -> None:
    rng = np.random.default_rng(0)
    widths = [2e-8, 2e-7, 2e-6, 2e-5, 2e-4]
    pop = pd.DataFrame({"param": ["k_p", "k_d"], "median": [0.01, 0.02], "spread": [0.001, 0.002],
                        "rel_spread": [0.1, 0.1], "n": [50, 50]})
    t = time.perf_counter()
    for i in range(names):
        wafer, pw = f"W{i // 5:02d}", widths[i % 5]
        for v in range(versions):
            devices = pd.DataFrame({"die": [f"X{d:02d}Y00" for d in range(50)],
                                    "p_k_p": rng.normal(0.01, 0.001, 50),
                                    "p_k_d": rng.normal(0.02, 0.002, 50)})
            meta = {"wafer": wafer, "pulse_width_s": pw, "family": "softbounds", "state_unit": "S",
                    "n_devices": 50, "n_failed": int(rng.integers(0, 3)),
                    "r2_median": float(rng.uniform(0.8, 1.0)), "sp_norm_median": 0.3}
            ref, _ = reg.register(f"hzo-{wafer}-{i}", devices, pop, meta)
            if v % 10 == 0:
                reg.set_alias(ref, f"tag{v}")
        if (i + 1) % 10 == 0:
            print(f"  filled {(i + 1) * versions} versions ({time.perf_counter() - t:.0f}s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--names", type=int, default=100)
    ap.add_argument("--versions", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp) / "models")
        fill(reg, args.names, args.versions)
        n = args.names * args.versions
        i = args.names // 2
        probe = f"hzo-W{i // 5:02d}-{i}@tag{(args.versions // 2) // 10 * 10}"
        get = _median_ms(lambda: reg.get(probe))
        search = _median_ms(lambda: reg.search(wafer=f"W{i // 5:02d}", pulse_width_min=1e-7,
                                               pulse_width_max=1e-5, family="softbounds",
                                               min_r2=0.9), repeat=50)
        load = _median_ms(lambda: reg.load(probe), repeat=50)
        print(f"versions in registry: {n:,}")
        print(f"get by alias:   {get:8.3f} ms (median)  target: well under 10 ms")
        print(f"search:         {search:8.3f} ms (median)")
        print(f"load (parquet): {load:8.3f} ms (median)  baseline")
        print(f"ratio get/load: {get / load:.3f}   search/load: {search / load:.3f}")


if __name__ == "__main__":
    main()
