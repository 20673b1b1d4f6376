"""Ingestion throughput against plain pyarrow, measured in the same run.

Generates a wafer batch of at least 2 million rows (instrument exports), then

- baseline: for each file, ``pyarrow.csv.read_csv`` of the table and
  ``pyarrow.parquet.write_table`` of it (no validation, no lineage, no ledger);
- ferroflow: ``pipeline.ingest.ingest`` into a fresh store (parse, map units, validate,
  hash, partition, one Delta commit per batch, exactly-once check).

Prints rows/s of both and the ratio (target: ferroflow >= 0.5 of plain pyarrow).
``--to s3://bucket/prefix`` writes both sides there instead of a local temp folder
(with the AWS variables of ``pipeline.storage``).

    python bench/ingest.py [--cycles 40] [--repeat 3] [--to s3://bucket/bench]
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
from pipeline.storage import arrow_fs
from pipeline.store import MeasurementStore


def plain_pyarrow(files: list[Path], out: str) -> int:
    fs, base = arrow_fs(out)
    fs.create_dir(base, recursive=True)
    rows = 0
    for i, f in enumerate(files):
        table = pacsv.read_csv(f, read_options=pacsv.ReadOptions(skip_rows=9),
                               parse_options=pacsv.ParseOptions(delimiter="\t"))
        pq.write_table(table, f"{base}/{i}.parquet", compression="zstd", filesystem=fs)
        rows += table.num_rows
    return rows


def ferroflow(files: list[Path], store: str, quarantine: Path) -> int:
    report = ingest(files, MeasurementStore(store), quarantine)
    assert report.count("quarantined") == 0, report.summary()
    return report.rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=40, help="cycles per file (40 -> 2M rows)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--to", help="where both sides write (default: a local temp folder)")
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
            n_base = plain_pyarrow(files, f"{args.to or tmp}/plain{r}")
            base.append(n_base / (time.perf_counter() - t))
            t = time.perf_counter()
            n_ours = ferroflow(files, f"{args.to or tmp}/ff{r}/store", tmp / f"quarantine{r}")
            ours.append(n_ours / (time.perf_counter() - t))
            assert n_base == n_ours
        b, o = statistics.median(base), statistics.median(ours)
        print(f"rows per run: {n_ours:,}")
        print(f"plain pyarrow csv->parquet: {b:,.0f} rows/s (median of {args.repeat})")
        print(f"ferroflow ingest:           {o:,.0f} rows/s (median of {args.repeat})")
        print(f"ratio ferroflow / pyarrow:  {o / b:.2f}  (target >= 0.5)")


if __name__ == "__main__":
    main()
