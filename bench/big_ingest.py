"""Ingesting one very large raw file: peak memory and rows/s, 1 and 10 million rows.

Writes an instrument export of N rows (one device, 200-pulse cycles, realistic numbers),
then ingests it in a fresh child process and reads that child's peak RSS. Measured in
the same run:

- ``streamed``: the block-by-block path (which files over 64 MiB take; forced here);
- ``whole-file``: the same file forced through the in-memory path (1 M rows only: at
  10 M rows it needs several GiB), the baseline the streaming path replaces;
- ``pyarrow``: a plain ``pyarrow.csv.open_csv`` pass over the same file that only
  counts rows, the floor for rows/s.

    python bench/big_ingest.py [--rows 1000000 10000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEADER = ("Instrument:\tbench\nWafer:\tW99\nDie:\tX00Y00\nDevice:\tD1\nArea_um2:\t10\n"
          "Pulse duration_ns:\t100\nRead voltage_V:\t0.1\nTimestamp:\t2026-01-05T08:00:00+00:00\n"
          "\nPulse\tCycle\tV_write_V\tI_read_A\tE_pulse_pJ\n")
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
t0 = time.perf_counter()
if mode == "pyarrow":
    import pyarrow.csv as pacsv
    rows = 0
    reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(skip_rows=9, use_threads=False),
                            parse_options=pacsv.ParseOptions(delimiter="\t"))
    for batch in reader:
        rows += batch.num_rows
else:
    from pipeline.ingest import ingest
    from pipeline.store import MeasurementStore
    big = 0 if mode == "streamed" else 1 << 62  # streamed: force the block path
    report = ingest([path], MeasurementStore(out / "store"), out / "quarantine", big_file_bytes=big)
    assert report.count("stored") == 1, report.summary()
    rows = report.rows
seconds = time.perf_counter() - t0
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_mib}))
"""


def write_file(path: Path, rows: int, chunk: int = 1_000_000) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as fh:
        fh.write(HEADER)
        for start in range(0, rows, chunk):
            i = np.arange(start, min(start + chunk, rows))
            pulse, cycle = i % 200 + 1, i // 200 + 1
            amp = np.where(pulse <= 100, 2.5, -2.5)
            cur = 5e-9 * (1 + 0.5 * np.sin(pulse / 32.0)) * (1 + 0.01 * rng.standard_normal(i.size))
            energy = 1.8 + 0.05 * rng.standard_normal(i.size)
            block = np.column_stack([pulse, cycle, amp, cur, energy])
            np.savetxt(fh, block, fmt=["%d", "%d", "%.1f", "%.6g", "%.4g"], delimiter="\t")


def run_child(mode: str, path: Path, work: Path) -> dict:
    out = work / f"{mode}-{time.monotonic_ns()}"
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(out)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"{'rows':>11} {'file MiB':>9} {'mode':>10} {'peak RSS MiB':>13} {'rows/s':>11} {'s':>7}")
        results = {}
        for n in args.rows:
            path = work / f"big_{n}.txt"
            print(f"writing {n:,} rows ...", file=sys.stderr, flush=True)
            write_file(path, n)
            mib = path.stat().st_size / 2**20
            modes = ["pyarrow", "streamed"] + (["whole-file"] if n <= 2_000_000 else [])
            for mode in modes:
                r = run_child(mode, path, work)
                results[(n, mode)] = r
                print(f"{n:>11,} {mib:>9.0f} {mode:>10} {r['peak_mib']:>13.0f} "
                      f"{r['rows'] / r['seconds']:>11,.0f} {r['seconds']:>7.1f}", flush=True)
            path.unlink()
        ns = sorted(args.rows)
        if len(ns) > 1:
            lo, hi = results[(ns[0], "streamed")], results[(ns[-1], "streamed")]
            print(f"streamed: {ns[-1] / ns[0]:.0f}x the rows -> {hi['peak_mib'] / lo['peak_mib']:.2f}x "
                  f"the peak RSS")
        for n in ns:
            s, p = results[(n, "streamed")], results[(n, "pyarrow")]
            line = f"{n:,} rows: streamed rows/s / plain pyarrow rows/s = " \
                   f"{(s['rows'] / s['seconds']) / (p['rows'] / p['seconds']):.2f}"
            if (n, "whole-file") in results:
                w = results[(n, "whole-file")]
                line += f"; peak RSS streamed / whole-file = {s['peak_mib'] / w['peak_mib']:.2f}"
            print(line)


if __name__ == "__main__":
    main()
