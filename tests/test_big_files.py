"""Big files take the block-by-block path (``readers.stream``); here it is forced on small
files with small blocks, so that blocks end inside series and at their edges."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from pipeline.ingest import ingest
from pipeline.readers import stream
from pipeline.store import MeasurementStore
from tests.conftest import SAMPLE
from tests.helpers import FIRST_DATA_LINE, edit_cell, sample_lines, write


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(stream, "BLOCK_BYTES", 2048)  # about 75 rows per block


def _streamed(paths, tmp_path, **kw):
    store = MeasurementStore(tmp_path / "streamed")
    return store, ingest(paths, store, tmp_path / "quarantine", big_file_bytes=0, **kw)


def test_streamed_ingest_equals_whole_file_ingest(tmp_path, small_blocks):
    files = sorted(SAMPLE.glob("W01_X0[01]Y0[01]_*"))
    whole = MeasurementStore(tmp_path / "whole")
    ingest(files, whole, tmp_path / "q1")
    store, report = _streamed(files, tmp_path)
    assert report.count("stored") == len(files) == 40
    pd.testing.assert_frame_equal(store.read(), whole.read())
    assert store.ingested_files()["rows"].sum() == whole.rows() == 24_000


def test_streamed_gzip_file_and_rerun_is_duplicate(tmp_path, small_blocks):
    src = SAMPLE / "W01_X00Y00_D1_20ns.txt"
    gz = tmp_path / "in" / "big.txt.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(src.read_bytes()))
    store, report = _streamed([gz], tmp_path)
    assert report.count("stored") == 1 and store.rows() == 600
    again = ingest([gz], store, tmp_path / "quarantine", big_file_bytes=0)
    assert again.count("duplicate") == 1 and store.rows() == 600


def _bad_cases():
    lines = sample_lines()
    last = FIRST_DATA_LINE + 599
    swapped = list(lines)  # cycle 2 pulses 1-2 moved to the end: series split in two runs
    moved = swapped[FIRST_DATA_LINE - 1 + 200:FIRST_DATA_LINE - 1 + 202]
    del swapped[FIRST_DATA_LINE - 1 + 200:FIRST_DATA_LINE - 1 + 202]
    swapped[last - 3:last - 3] = moved
    return {
        # a bad cell in the 4th block: the line is the file's own
        "non-numeric": (edit_cell(lines, 400, 3, "abc"), 400, "I_read_A"),
        "pulse not rising across a block edge": (edit_cell(lines, 290, 0, "1"), 290, "pulse"),
        "truncated last row": (lines[:last - 1] + ["600\t3"], last, None),
        "one-pulse cycle at the end": (
            lines[:last - 1] + ["1\t4\t-2.5\t5e-08\t600"], last, "cycle"),
        "series in two runs": (swapped, last - 2, "cycle"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_streamed_file_is_quarantined_and_store_unchanged(tmp_path, small_blocks, case):
    lines, row, column = _bad_cases()[case]
    store, first = _streamed([SAMPLE / "W01_X00Y01_D1_20ns.txt"], tmp_path)
    before = store.read()
    bad = write(tmp_path / "in" / "bad.txt", lines)
    good = SAMPLE / "W01_X00Y02_D1_20ns.txt"
    report = ingest([bad, good], store, tmp_path / "quarantine", big_file_bytes=0)
    outcome = {o.path: o for o in report.outcomes}
    assert outcome[str(good)].status == "stored"
    err = outcome[str(bad)].error
    assert outcome[str(bad)].status == "quarantined", case
    assert (err.file, err.row, err.column) == (str(bad), row, column), err.one_line()
    sidecar = json.loads((tmp_path / "quarantine" / "bad.txt.reason.json").read_text())
    assert sidecar["row"] == row
    after = store.read()
    assert len(after) == len(before) + 600
    assert not list(store.root.rglob("*.tmp"))
    pd.testing.assert_frame_equal(after[after["device"].eq("D1") & after["die"].eq("X00Y01")]
                                  .reset_index(drop=True), before)


def test_streamed_gzip_cut_short_is_quarantined(tmp_path, small_blocks):
    import os

    lines = sample_lines()[:-1]
    noise = [f"# {os.urandom(32).hex()}" for _ in range(20_000)]  # incompressible comments
    data = gzip.compress("\n".join(lines[:300] + noise + lines[300:]).encode())
    cut = write(tmp_path / "in" / "cut.txt.gz", data[: len(data) * 2 // 3])
    store, report = _streamed([cut], tmp_path)
    assert report.count("quarantined") == 1 and store.rows() == 0
    assert "corrupt gzip file" in report.outcomes[0].reason
