import json
import os
import shutil
import time

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pytest

from pipeline.ingest import ingest, ready_files
from pipeline.readers import read_file
from pipeline.store import MeasurementStore, Pending
from pipeline.validation import validate
from tests.conftest import SAMPLE
from tests.helpers import edit_cell, sample_lines, write

SOME = sorted(SAMPLE.glob("W01_X0[01]Y0[01]_*_20ns.txt"))  # 8 files, 2 devices x 4 dies


def _copy(files, folder):
    folder.mkdir(parents=True, exist_ok=True)
    return [shutil.copy(f, folder / f.name) for f in files]


def test_store_reads_back_exactly_what_was_ingested(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    report = ingest(SOME, store, tmp_path / "q")
    assert report.count("stored") == len(SOME) and report.rows == 600 * len(SOME)
    expected = pd.concat([validate(read_file(f)).to_pandas() for f in SOME])
    expected = expected.sort_values(["die", "device", "cycle", "pulse"]).reset_index(drop=True)
    got = store.read(wafer="W01", pulse_width_s=2e-8)
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
    # the same data through the three readers the store promises
    assert ds.dataset(store.root, format="parquet", partitioning="hive").count_rows() == len(expected)
    assert len(pd.read_parquet(store.root)) == len(expected)
    n = duckdb.sql(f"select count(*) from read_parquet('{store.root}/**/*.parquet', "
                   "hive_partitioning=true) where wafer='W01'").fetchall()[0][0]
    assert n == len(expected)
    assert (store.root / "wafer=W01" / "pulse_width_s=2e-08").is_dir()


def test_reingest_same_bytes_under_any_name_adds_nothing(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    ingest(SOME[:3], store, tmp_path / "q")
    before = store.read()
    renamed = write(tmp_path / "renamed.txt", SOME[0].read_bytes())
    report = ingest([*SOME[:3], renamed], store, tmp_path / "q")
    assert report.count("duplicate") == 4 and report.count("stored") == 0
    pd.testing.assert_frame_equal(store.read(), before)


def test_other_bytes_for_already_stored_series_are_quarantined(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    ingest(SOME[:1], store, tmp_path / "q")
    lines = sample_lines(SOME[0].name)
    lines[7] = "Timestamp:\t2026-02-01T00:00:00+00:00"  # re-export of the same series
    again = write(tmp_path / "again.txt", lines)
    report = ingest([again], store, tmp_path / "q")
    assert report.count("quarantined") == 1
    assert "already stored" in report.outcomes[0].reason
    assert store.rows() == 600


def test_bad_file_is_quarantined_and_batch_goes_on(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    ingest(SOME[:2], store, tmp_path / "q")
    before = store.read()
    bad = write(tmp_path / "in" / "bad.txt", edit_cell(sample_lines(), 20, 3, "oops"))
    good = _copy(SOME[2:4], tmp_path / "in")
    report = ingest([tmp_path / "in"], store, tmp_path / "q")
    assert report.count("stored") == 2 and report.count("quarantined") == 1
    assert bad.exists(), "files named explicitly are copied, not moved"
    sidecar = json.loads((tmp_path / "q" / "bad.txt.reason.json").read_text())
    assert sidecar["row"] == 20 and sidecar["column"] == "I_read_A"
    assert "not a number" in sidecar["reason"]
    after = store.read()
    assert len(after) == len(before) + 1200
    assert not after.source_file.eq("bad.txt").any()
    assert len(good) == 2


def test_landing_folder_files_are_moved(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    incoming = tmp_path / "incoming"
    _copy(SOME[:2], incoming)
    write(incoming / "bad.txt", "")
    report = ingest([incoming], store, tmp_path / "q", move_from=incoming,
                    processed_dir=tmp_path / "processed")
    assert report.count("stored") == 2 and report.count("quarantined") == 1
    assert not any(incoming.iterdir())
    assert (tmp_path / "q" / "bad.txt").exists()
    assert len(list((tmp_path / "processed").iterdir())) == 2


def _two_pending():
    return [Pending(f.name, f"sha-{i}", validate(read_file(f))) for i, f in enumerate(SOME[:2])]


def _power_cut():
    raise RuntimeError("power cut")


def test_crash_between_parts_and_ledger_leaves_no_duplicate(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    pending = _two_pending()
    with pytest.raises(RuntimeError):
        store.commit(pending, before_ledger=_power_cut)
    assert store.rows() == 0 and len(store.read()) == 0  # ledger says nothing was stored
    store.commit(pending)
    assert len(store.read()) == 1200
    parts = list(store.root.rglob("*.parquet"))
    assert len(parts) == 1 and not list(store.root.rglob("*.tmp"))


def test_crash_after_ledger_before_rename_rolls_forward(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    pending = _two_pending()
    with pytest.raises(RuntimeError):
        store.commit(pending, before_rename=_power_cut)
    # committed: raw readers see nothing yet (temp names are hidden), the store sees all
    assert not [p for p in store.root.rglob("*.parquet") if not p.name.startswith(".")]
    assert len(store.read()) == 1200
    assert len(pd.read_parquet(store.root)) == 1200  # read() renamed the part forward
    assert store.commit(pending).already == ("sha-0", "sha-1")
    assert len(store.read()) == 1200 and not list(store.root.rglob("*.tmp"))


def test_ready_files_waits_for_stable_or_marked_files(tmp_path):
    folder = tmp_path / "incoming"
    old = write(folder / "old.txt", "x")
    os.utime(old, (time.time() - 60, time.time() - 60))
    write(folder / "young.txt", "x")
    marked = write(folder / "marked.txt", "x")
    write(folder / "marked.txt.done", "")
    assert ready_files(folder, min_age_s=5) == sorted([old, marked])


def test_ingesting_nothing_is_a_clean_no_op(tmp_path):
    (tmp_path / "empty").mkdir()
    report = ingest([tmp_path / "empty"], MeasurementStore(tmp_path / "store"), tmp_path / "q")
    assert report.outcomes == [] and report.summary().startswith("0 file(s) stored")
