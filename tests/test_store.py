import json
import os
import shutil
import subprocess
import sys
import time

import duckdb
import polars
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from pipeline.errors import InputError
from pipeline.ingest import ingest, ready_files
from pipeline.readers import read_file
from pipeline.store import MeasurementStore, Pending
from pipeline.validation import validate
from tests.conftest import ROOT, SAMPLE
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
    # the same data through the readers the store promises, all reading the Delta log
    assert DeltaTable(str(store.root)).to_pyarrow_table().num_rows == len(expected)
    dataset = store.dataset()
    n = duckdb.sql("select count(*) from dataset where wafer='W01'").fetchall()[0][0]
    assert n == len(expected)
    lazy = polars.scan_delta(str(store.root)).filter(polars.col("wafer") == "W01")
    assert lazy.select(polars.len()).collect().item() == len(expected)
    assert (store.root / "_delta_log").is_dir()
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


def _parts_on_disk(store) -> set[str]:
    return {p.relative_to(store.root).as_posix() for p in store.root.rglob("*.parquet")}


def test_crash_before_commit_leaves_nothing_and_vacuum_clears_orphans(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    pending = _two_pending()
    with pytest.raises(RuntimeError):
        store.commit(pending, before_commit=_power_cut)
    assert store.rows() == 0 and len(store.read()) == 0 and store.known_files() == set()
    assert _parts_on_disk(store) == set()  # the failed batch deleted its part
    store.commit(pending)
    assert len(store.read()) == 1200 and store.known_files() == {"sha-0", "sha-1"}
    committed = set(store.data_files())
    assert len(committed) == 1 and _parts_on_disk(store) == committed
    orphan = store.root / "wafer=W01" / "pulse_width_s=2e-08" / "part-killed-1.parquet"
    orphan.write_bytes(b"what a writer killed before its commit leaves")
    assert len(store.read()) == 1200  # never read: the log does not reference it
    store.vacuum(retention_hours=0)
    assert _parts_on_disk(store) == committed


def test_concurrent_batches_store_each_file_once(tmp_path):
    """Two writers read the same version; the second commit conflicts, re-checks and
    commits only what the first did not store."""
    store = MeasurementStore(tmp_path / "store")
    a, b = _two_pending()
    with store.batch() as first, MeasurementStore(store.root).batch() as second:
        assert first.add(a) == "stored"
        assert second.add(a) == "stored" and second.add(b) == "stored"
        one = first.commit()
        two = second.commit()
    assert one.stored == ("sha-0",) and two.stored == ("sha-1",) and two.already == ("sha-0",)
    assert two.version == one.version + 1
    df = store.read()
    assert len(df) == 1200 and not df.duplicated(["die", "device", "cycle", "pulse"]).any()
    assert set(store.data_files()) == _parts_on_disk(store)  # the conflicting part was rewritten


def test_lineage_names_the_raw_files_of_each_partition(tmp_path):
    """``source_files`` (what a fit registers as lineage) reads names and hashes only: the
    same files as the ledger, per partition and per wafer, over several data files and
    whether or not the ledger was read first."""
    import hashlib

    files = SOME + sorted(SAMPLE.glob("W01_X0[01]Y0[01]_D1_2000ns.txt"))
    store = MeasurementStore(tmp_path / "store")
    for batch in (files[:3], files[3:]):  # two commits: two data files per partition
        ingest(batch, store, tmp_path / "q")
    want = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert len(store.data_files()) == 3 and len(files) == 12  # 20 ns in two data files
    for pw, names in ((2e-8, [f.name for f in SOME]), (2e-6, [f.name for f in files[len(SOME):]]),
                      (None, list(want))):
        fresh = MeasurementStore(tmp_path / "store").source_files("W01", pw)
        assert list(fresh["name"]) == sorted(names)
        assert list(fresh["sha256"]) == [want[n] for n in sorted(names)]
        led = MeasurementStore(tmp_path / "store")
        led.ledger()  # cached ledger rows serve instead of the files
        pd.testing.assert_frame_equal(led.source_files("W01", pw), fresh, check_dtype=False)
    assert store.source_files("W02").empty and MeasurementStore(tmp_path / "none").source_files("W01").empty


def test_a_fit_can_read_the_version_it_saw(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    assert store.version() is None
    a, b = _two_pending()
    first = store.commit([a]).version
    store.commit([b])
    assert store.version() == first + 1
    assert len(store.read(as_of=first)) == 600 and len(store.read()) == 1200
    with pytest.raises(InputError, match="no version 99"):
        store.read(as_of=99)


def test_schema_is_enforced(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    store.commit(_two_pending()[:1])
    with pytest.raises(DeltaError):
        write_deltalake(str(store.root), pa.table({"wafer": ["W01"], "oops": [1.0]}), mode="append")
    other = tmp_path / "other"
    write_deltalake(str(other), pa.table({"x": [1]}))
    with pytest.raises(InputError, match="another schema"):
        MeasurementStore(other).read()


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


def _legacy_store(root, files):
    """A store of the earlier layout: hive parts without partition columns + SQLite ledger."""
    import sqlite3

    import pyarrow.parquet as pq

    root.mkdir(parents=True)
    con = sqlite3.connect(root / "_ledger.sqlite")
    con.executescript("CREATE TABLE files (sha256 TEXT, name TEXT, rows INTEGER, commit_id TEXT, "
                      "ingested_at TEXT); CREATE TABLE parts (path TEXT, commit_id TEXT, wafer TEXT, "
                      "pulse_width_s REAL, rows INTEGER);")
    for i, f in enumerate(files):
        table = validate(read_file(f))
        rel = f"wafer=W01/pulse_width_s=2e-08/part-c{i}.parquet"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        final = root / rel
        # the last commit was cut before its rename: its part is still under the temp name
        target = final.with_name(f".{final.name}.tmp") if i == len(files) - 1 else final
        pq.write_table(table.drop_columns(["wafer", "pulse_width_s"]), target)
        sha = table["source_sha256"][0].as_py()
        con.execute("INSERT INTO files VALUES (?, ?, 600, ?, '')", (sha, f.name, f"c{i}"))
        con.execute("INSERT INTO parts VALUES (?, ?, 'W01', 2e-08, 600)", (rel, f"c{i}"))
    con.commit()
    con.close()


def test_legacy_store_converts_with_one_command(tmp_path):
    old = tmp_path / "old"
    _legacy_store(old, SOME[:3])
    new = tmp_path / "new"
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "store", "convert", str(old),
                          "--store", str(new), "--json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"files": 3, "rows": 1800, "version": 1}
    info = subprocess.run([sys.executable, "-m", "pipeline.cli", "store", "info", "--store", str(new),
                           "--json"], capture_output=True, text=True, cwd=ROOT)
    assert json.loads(info.stdout) == {"store": str(new), "version": 1, "rows": 1800,
                                       "partitions": [["W01", 2e-08]]}
    store = MeasurementStore(new)
    expected = pd.concat([validate(read_file(f)).to_pandas() for f in SOME[:3]])
    got = store.read()
    assert len(got) == 1800 and not got.duplicated(["die", "device", "cycle", "pulse"]).any()
    assert set(got.source_sha256) == set(expected.source_sha256) == store.known_files()
    assert ingest(SOME[:3], store, tmp_path / "q").count("duplicate") == 3


# --- re-exports: recognised by the cycles each series holds ------------------------------------
def _cycles(path, cycles, src=SOME[0], exported="2026-01-05T08:00:00+00:00"):
    """``src`` with only the data rows of ``cycles`` (the sample files hold cycles 1-3)."""
    lines = sample_lines(src.name)
    lines[7] = f"Timestamp:\t{exported}"  # another export of the same rows: other bytes
    keep = lines[:10] + [line for line in lines[10:] if line and int(line.split("\t")[1]) in cycles]
    return write(path, keep)


def _statuses(report):
    return [o.status for o in report.outcomes]


@pytest.mark.parametrize("big_file_bytes", [1 << 30, 0], ids=["whole", "streamed"])
def test_a_missing_cycle_delivered_later_is_stored(tmp_path, big_file_bytes):
    store = MeasurementStore(tmp_path / "store")
    kw = {"big_file_bytes": big_file_bytes}
    assert _statuses(ingest([_cycles(tmp_path / "a.txt", {1, 3})], store, tmp_path / "q", **kw)) \
        == ["stored"]
    late = ingest([_cycles(tmp_path / "late.txt", {2})], store, tmp_path / "q", **kw)
    assert _statuses(late) == ["stored"] and store.rows() == 600
    assert sorted(store.ledger().cycles) == ["1,3", "2"]
    again = ingest([_cycles(tmp_path / "again.txt", {2, 3})], store, tmp_path / "q", **kw)
    assert _statuses(again) == ["quarantined"] and store.rows() == 600
    reason = again.outcomes[0].reason
    assert "a re-export" in reason and "cycles 2-3 are already stored (from late.txt, a.txt)" in reason


def test_some_cycles_stored_and_some_new_is_refused_naming_both(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    ingest([_cycles(tmp_path / "a.txt", {1})], store, tmp_path / "q")
    mixed = ingest([_cycles(tmp_path / "b.txt", {1, 2})], store, tmp_path / "q")
    assert _statuses(mixed) == ["quarantined"] and store.rows() == 200
    reason = mixed.outcomes[0].reason
    assert "cycle 1 are already stored (from a.txt), while its cycle 2 is new" in reason
    assert "would duplicate rows" in reason


def test_two_files_of_one_batch_are_checked_against_each_other(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    files = [_cycles(tmp_path / n, c) for n, c in
             (("a.txt", {1}), ("b.txt", {2}), ("c.txt", {1}), ("d.txt", {2, 3}))]
    files[2] = _cycles(files[2], {1}, exported="2026-02-01T00:00:00+00:00")
    report = ingest(files, store, tmp_path / "q")
    assert _statuses(report) == ["stored", "stored", "quarantined", "quarantined"]
    assert "a re-export" in report.outcomes[2].reason and "(from a.txt)" in report.outcomes[2].reason
    assert "its cycle 3 is new" in report.outcomes[3].reason
    assert store.rows() == 400
    fresh = MeasurementStore(store.root).ledger()  # read back equals what the batch recorded
    cols = ["sha256", "die", "device", "rows", "cycle_min", "cycle_max", "cycles"]
    pd.testing.assert_frame_equal(fresh[cols].sort_values("cycles").reset_index(drop=True),
                                  store.ledger()[cols].sort_values("cycles").reset_index(drop=True),
                                  check_dtype=False)


def test_a_converted_store_knows_its_cycles(tmp_path):
    from pipeline.convert import convert_legacy

    old = tmp_path / "old"
    _legacy_store(old, [_cycles(tmp_path / "a.txt", {1, 3})])
    store = MeasurementStore(tmp_path / "new")
    convert_legacy(old, store)
    assert store.ledger().cycles.tolist() == ["1,3"]
    report = ingest([_cycles(tmp_path / "b.txt", {2}), _cycles(tmp_path / "c.txt", {3})], store,
                    tmp_path / "q")
    assert _statuses(report) == ["stored", "quarantined"] and store.rows() == 600
