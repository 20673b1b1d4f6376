"""Ingestion throughput against plain pyarrow, measured in the same run.

Generates a wafer batch of at least 2 million rows (instrument exports), then

- baseline: for each file, ``pyarrow.csv.read_csv`` of the table and
  ``pyarrow.parquet.write_table`` of it (no validation, no lineage, no ledger);
- ferroflow: ``pipeline.ingest.ingest`` into a fresh store (parse, map units, validate,
  hash, partition, atomic commit, ledger).

Prints rows/s of both and the ratio (target: ferroflow >= 0.5 of plain pyarrow).

    python bench/ingest.py [--cycles 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.generator import GeneratorConfig, generate_wafer
from pipeline.ingest import ingest
from pipeline.store import MeasurementStore


def plain_pyarrow(files: list[Path], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for i, f in enumerate(files):
        table = pacsv.read_csv(f, read_options=pacsv.ReadOptions(skip_rows=9),
                               parse_options=pacsv.ParseOptions(delimiter="\t"))
        pq.write_table(table, out / f"{i}.parquet", compression="zstd")
        rows += table.num_rows
    return rows


def ferroflow(files: list[Path], root: Path) -> int:
    report = ingest(files, MeasurementStore(root / "store"), root / "quarantine")
    assert report.count("quarantined") == 0, report.summary()
    return report.rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=40, help="cycles per file (40 -> 2M rows)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        wafer = generate_wafer(GeneratorConfig(cycles=args.cycles, seed=11), tmp / "raw")
        files = wafer.files
        print(f"generated {len(files)} files in {time.perf_counter() - t:.1f}s")
        base, ours = [], []
        for r in range(args.repeat):  # interleaved, so both see the same machine load
            t = time.perf_counter()
            n_base = plain_pyarrow(files, tmp / f"plain{r}")
            base.append(n_base / (time.perf_counter() - t))
            t = time.perf_counter()
            n_ours = ferroflow(files, tmp / f"ff{r}")
            ours.append(n_ours / (time.perf_counter() - t))
            assert n_base == n_ours
        b, o = statistics.median(base), statistics.median(ours)
        print(f"rows per run: {n_ours:,}")
        print(f"plain pyarrow csv->parquet: {b:,.0f} rows/s (median of {args.repeat})")
        print(f"ferroflow ingest:           {o:,.0f} rows/s (median of {args.repeat})")
        print(f"ratio ferroflow / pyarrow:  {o / b:.2f}  (target >= 0.5)")


if __name__ == "__main__":
    main()
