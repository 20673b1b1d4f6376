"""The catalogue of bad raw files (README, "Bad input").

Each kind goes through a real ``ingest`` batch beside a good file: the error is one line
naming the file, and the row and column where they apply; the bad file lands in
quarantine with a ``.reason.json``; the good file is stored; the store holds nothing
of the bad one. README's table lists every kind here (checked below).
"""

from __future__ import annotations

import gzip
import json
import re

import pytest

from pipeline.errors import MappingError
from pipeline.ingest import ingest
from pipeline.readers import load_mapping
from pipeline.store import MeasurementStore
from tests.conftest import ROOT, SAMPLE
from tests.helpers import edit_cell, sample_lines, write

L = 15  # a data line of the sample file (cycle 1, pulse 5, an up pulse)
LAST = 610  # its last data line


def _header(lines, key, value):
    return [f"{key}:\t{value}" if x.startswith(key + ":") else x for x in lines]


def _canonical(drop: str | None = None) -> str:
    cols = ["wafer", "die", "device", "pulse_width_s", "pulse_amplitude_v", "cycle", "pulse",
            "conductance_state"]
    rows = [["W01", "X00Y00", "Q1", "2e-08", "2.5", "1", str(p), f"{4e-7 + p * 1e-9:g}"]
            for p in range(1, 4)]
    keep = [i for i, c in enumerate(cols) if c != drop]
    return "\n".join(",".join(r[i] for i in keep) for r in [cols, *rows]) + "\n"


WIDTH_MAPPING = """
[format]
delimiter = "\\t"
[header]
wafer = { key = "Wafer" }
die = { key = "Die" }
device = { key = "Device" }
pulse_width_s = { key = "Pulse duration_ns", unit = "ns" }
read_voltage_v = { key = "Read voltage_V", unit = "V" }
[columns]
pulse = { column = "Pulse" }
cycle = { column = "Cycle" }
pulse_amplitude_v = { column = "V_write_V", unit = "V" }
pulse_width_s = { column = "t_write_ns", unit = "ns" }
conductance_state = { divide = ["I_read_A", "read_voltage_v"], units = ["A", "V"] }
"""


def _with_width_column(widths: dict[int, str], default: str = "20"):
    lines = sample_lines()
    lines[9] += "\tt_write_ns"
    for i in range(10, len(lines) - 1):
        lines[i] += "\t" + widths.get(i + 1, default)
    return lines


# kind: (file content from the sample file's lines, name, row, column, message part, mapping)
CATALOGUE = {
    "empty file": (lambda l: "", "bad.txt", None, None, "file is empty", None),
    "header only": (lambda l: "\n".join(l[:10]) + "\n", "bad.txt", 10, None, "no data rows", None),
    "truncated mid-row": (lambda l: l[:-2] + [l[-2][:8]], "bad.txt", LAST, None, "truncated", None),
    "wrong delimiter": (lambda l: l[:9] + [x.replace("\t", ",") for x in l[9:]], "bad.txt", 10,
                        None, "wrong delimiter", None),
    "non-UTF-8 bytes": (lambda l: "\n".join(l).encode().replace(b"W01", b"W\xff1", 1), "bad.txt",
                        2, None, "not UTF-8", None),
    "missing required column": (lambda l: _canonical(drop="device"), "bad.csv", None, "device",
                                "required column 'device' is missing", None),
    "non-numeric value": (lambda l: edit_cell(l, L, 3, "abc"), "bad.txt", L, "I_read_A",
                          "not a number", None),
    "NaN": (lambda l: edit_cell(l, L, 3, "nan"), "bad.txt", L, "conductance_state",
            "not a finite number", None),
    "inf": (lambda l: edit_cell(l, L, 4, "inf"), "bad.txt", L, "energy_j", "not a finite number", None),
    "zero conductance": (lambda l: edit_cell(l, L, 3, "0"), "bad.txt", L, "conductance_state",
                         "must be > 0", None),
    "negative conductance": (lambda l: edit_cell(l, L, 3, "-4e-08"), "bad.txt", L, "conductance_state",
                             "must be > 0", None),
    "zero pulse width": (lambda l: _header(l, "Pulse duration_ns", "0"), "bad.txt", 11,
                         "pulse_width_s", "must be > 0", None),
    "negative pulse width": (lambda l: _header(l, "Pulse duration_ns", "-20"), "bad.txt", 11,
                             "pulse_width_s", "must be > 0", None),
    "duplicated rows": (lambda l: l[:-1] + l[10:12] + [""], "bad.txt", LAST + 1, "pulse",
                        "duplicated row", None),
    "pulse index not monotone": (lambda l: edit_cell(l, L, 0, "2"), "bad.txt", L, "pulse",
                                 "does not increase", None),
    "fractional pulse index": (lambda l: edit_cell(l, L, 0, "4.5"), "bad.txt", L, "Pulse",
                               "whole number", None),
    "a cycle with one pulse": (lambda l: l[:-1] + ["1\t4\t2.5\t4e-08\t1.8", ""], "bad.txt", LAST + 1,
                               "cycle", "single pulse", None),
    "mixed pulse widths in a file that declares one": (
        lambda l: _with_width_column({26: "200"}), "bad.txt", 26, "t_write_ns",
        "contradicts the header", WIDTH_MAPPING),
    "header value the whole table contradicts": (
        lambda l: _with_width_column({}, default="200"), "bad.txt", 11, "t_write_ns",
        "contradicts the header", WIDTH_MAPPING),
    "mapping names a missing column": (
        lambda l: l, "bad.txt", 10, "t_write_ns", "which the file lacks", WIDTH_MAPPING),
    "bad number in the header": (lambda l: _header(l, "Read voltage_V", "zero"), "bad.txt", 7,
                                 "Read voltage_V", "not a number", None),
    "missing header key": (lambda l: [x for x in l if not x.startswith("Device:")], "bad.txt", None,
                           None, "header key 'Device'", None),
    "implausible value (unit slip)": (lambda l: edit_cell(l, L, 2, "2500"), "bad.txt", L,
                                      "pulse_amplitude_v", "plausible", None),
    "no direction (zero amplitude)": (lambda l: edit_cell(l, L, 2, "0"), "bad.txt", L, "direction",
                                      "direction unknown", None),
    "gigantic header": (lambda l: [f"k{i}:\tv" for i in range(5000)] + l[8:], "bad.txt", 200, None,
                        "header block", None),
    "binary file with a .csv name": (lambda l: b"\x00\x01PK\x03" * 100, "bad.csv", None, None,
                                     "binary file", None),
    "corrupt gzip": (lambda l: gzip.compress("\n".join(l).encode())[:200], "bad.txt.gz", None, None,
                     "corrupt gzip", None),
    "unknown format": (lambda l: "hello world\nthis is not a measurement\n", "bad.txt", 1, None,
                       "unknown file format", None),
    "hostile wafer identifier": (lambda l: _header(l, "Wafer", "../../etc"), "bad.txt", 11, "wafer",
                                 "path separator", None),
    "control character in an identifier": (lambda l: _header(l, "Device", "D\x01"), "bad.txt", 11,
                                           "device", "control characters", None),
}


@pytest.mark.parametrize("kind", list(CATALOGUE))
def test_bad_file_is_named_quarantined_and_the_batch_goes_on(tmp_path, kind):
    build, name, row, column, message, mapping_text = CATALOGUE[kind]
    mapping = load_mapping(write(tmp_path / "m.toml", mapping_text)) if mapping_text else None
    store = MeasurementStore(tmp_path / "store")
    first = SAMPLE / "W01_X00Y01_D1_20ns.txt"
    good_lines = _with_width_column({}) if mapping_text else sample_lines("W01_X00Y02_D1_20ns.txt")
    good = write(tmp_path / "in" / "good.txt", good_lines)
    if not mapping_text:
        ingest([first], store, tmp_path / "quarantine")
    before = store.rows()
    bad = write(tmp_path / "in" / name, build(sample_lines()))

    report = ingest([bad, good], store, tmp_path / "quarantine", mapping=mapping)

    outcome = {o.path: o for o in report.outcomes}
    assert outcome[str(good)].status == "stored", outcome[str(good)].reason
    bad_outcome = outcome[str(bad)]
    assert bad_outcome.status == "quarantined"
    err = bad_outcome.error
    assert "\n" not in bad_outcome.reason and bad_outcome.reason.startswith(str(bad))
    assert message in err.message
    assert (err.row, err.column) == (row, column), err.one_line()
    sidecar = json.loads((tmp_path / "quarantine" / f"{name}.reason.json").read_text())
    assert (sidecar["row"], sidecar["column"]) == (row, column)
    assert store.rows() == before + 600
    assert not store.read().source_file.eq(name).any()


def test_accepted_oddities(tmp_path):
    """Not errors, documented: a byte-order mark, unknown extra columns (ignored)."""
    lines = sample_lines()
    bom = write(tmp_path / "in" / "bom.txt", b"\xef\xbb\xbf" + "\n".join(lines).encode())
    extra = [x + ("\toperator" if i == 9 else "\tjane" if 9 < i < len(lines) - 1 else "")
             for i, x in enumerate(sample_lines("W01_X00Y02_D1_20ns.txt"))]
    extra = write(tmp_path / "in" / "extra.txt", extra)
    store = MeasurementStore(tmp_path / "store")
    report = ingest([bom, extra], store, tmp_path / "quarantine")
    assert report.count("stored") == 2 and store.rows() == 1200
    assert "operator" not in store.read().columns


def test_unknown_unit_in_mapping_is_refused_when_loaded(tmp_path):
    path = write(tmp_path / "m.toml", WIDTH_MAPPING.replace('unit = "ns" }\nread', 'unit = "ps2" }\nread'))
    with pytest.raises(MappingError, match="unknown unit 'ps2'") as err:
        load_mapping(path)
    assert str(path) in str(err.value)


def test_readme_lists_every_kind():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Bad input catalogue", 1)[1].split("\n#", 1)[0]
    listed = {m.strip() for m in re.findall(r"^\| ([^|]+?) \|", section, re.M)} - {"Kind", "---"}
    others = {"unknown unit in the mapping", "file that changes while being read",
              "byte-order mark", "extra unknown columns", "file that is still being written",
              "rows already stored from another file"}
    assert listed == set(CATALOGUE) | others
