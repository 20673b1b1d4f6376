"""Every validation rule, each with a file that breaks it. Errors name file, row, column."""

import pytest

from pipeline.errors import InputError
from pipeline.readers import read_file
from pipeline.validation import validate
from tests.helpers import edit_cell, sample_lines, write

L = 15  # a data line of the sample file (cycle 1, pulse 5, an up pulse)


def _error(tmp_path, lines_or_text, name="bad.txt") -> InputError:
    path = write(tmp_path / name, lines_or_text)
    with pytest.raises(InputError) as err:
        validate(read_file(path), str(path))
    assert err.value.file and err.value.file.endswith(name)
    return err.value


CASES = {
    "non-numeric": (lambda l: edit_cell(l, L, 3, "abc"), L, "I_read_A", "not a number"),
    "nan": (lambda l: edit_cell(l, L, 3, "nan"), L, "conductance_s", "not a finite number"),
    "inf": (lambda l: edit_cell(l, L, 4, "inf"), L, "energy_j", "not a finite number"),
    "negative conductance": (lambda l: edit_cell(l, L, 3, "-4e-08"), L, "conductance_s", "must be > 0"),
    "zero conductance": (lambda l: edit_cell(l, L, 3, "0"), L, "conductance_s", "must be > 0"),
    "not monotone": (lambda l: edit_cell(l, L, 0, "2"), L, "pulse", "does not increase"),
    "fractional pulse": (lambda l: edit_cell(l, L, 0, "4.5"), L, "Pulse", "whole number"),
    "implausible amplitude": (lambda l: edit_cell(l, L, 2, "2500"), L, "pulse_amplitude_v", "plausible"),
    "zero amplitude": (lambda l: edit_cell(l, L, 2, "0"), L, "direction", "direction unknown"),
    "single-pulse cycle": (lambda l: l[:-1] + ["1\t4\t2.5\t4e-08\t1.8", ""], 611, "cycle", "single pulse"),
    "duplicated rows": (lambda l: l[:-1] + l[10:12] + [""], 611, "pulse", "duplicated row"),
    "truncated row": (lambda l: l[:-2] + [l[-2][:8]], 610, None, "truncated"),
    "negative pulse width": (lambda l: ["Pulse duration_ns:\t-20" if x.startswith("Pulse duration") else x
                                        for x in l], 11, "pulse_width_s", "must be > 0"),
    "hostile wafer id": (lambda l: ["Wafer:\t../../etc" if x.startswith("Wafer") else x for x in l],
                         11, "wafer", "path separator"),
    "control char in device": (lambda l: ["Device:\tD\x01" if x.startswith("Device") else x for x in l],
                               11, "device", "control characters"),
    "bad header number": (lambda l: ["Read voltage_V:\tzero" if x.startswith("Read") else x for x in l],
                          7, "Read voltage_V", "not a number"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_names_row_and_column(tmp_path, case):
    mutate, row, column, message = CASES[case]
    err = _error(tmp_path, mutate(sample_lines()))
    assert message in err.message
    assert err.row == row
    assert err.column == column


def test_whole_file_problems(tmp_path):
    lines = sample_lines()
    assert "empty" in _error(tmp_path, "", "e.txt").message
    assert "header only" in _error(tmp_path, "\n".join(lines[:9]) + "\n", "h.txt").message
    assert "wrong delimiter" in _error(tmp_path, [x.replace("\t", ",") if i >= 9 else x
                                                  for i, x in enumerate(lines)], "d.txt").message
    assert "binary" in _error(tmp_path, b"\x00\x01PK\x03" * 100, "b.csv").message
    bad = _error(tmp_path, "\n".join(lines).encode().replace(b"W01", b"W\xff1", 1), "u.txt")
    assert "not UTF-8" in bad.message and bad.row == 2
    huge = ["k%d:\tv" % i for i in range(5000)] + lines[8:]
    assert "header block" in _error(tmp_path, huge, "g.txt").message


def test_byte_order_mark_is_accepted(tmp_path):
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbf" + "\n".join(sample_lines()).encode())
    assert validate(read_file(path)).num_rows == 600


MIXED_MAPPING = """
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
conductance_s = { divide = ["I_read_A", "read_voltage_v"], units = ["A", "V"] }
"""


def test_mixed_pulse_widths_in_a_file_that_declares_one(tmp_path):
    from pipeline.readers.mapping import load_mapping

    mapping = load_mapping(write(tmp_path / "m.toml", MIXED_MAPPING))
    lines = sample_lines()[:40]
    lines[9] += "\tt_write_ns"
    for i in range(10, 40):
        lines[i] += "\t" + ("200" if i == 25 else "20")
    path = write(tmp_path / "mixed.txt", lines)
    with pytest.raises(InputError, match="contradicts the header") as err:
        read_file(path, mapping=mapping)
    assert err.value.row == 26 and err.value.column == "t_write_ns"
    lines[25] = lines[25].rsplit("\t", 1)[0] + "\t20"
    assert validate(read_file(write(tmp_path / "ok.txt", lines), mapping=mapping)).num_rows == 30


def test_file_that_changes_while_being_read(tmp_path):
    from pipeline.ingest import _check_unchanged
    from pipeline.readers import load

    path = write(tmp_path / "growing.txt", sample_lines())
    raw = load(path)
    with open(path, "a") as fh:
        fh.write("601\t3\t-2.5\t4e-08\t1.8\n")
    with pytest.raises(InputError, match="changed while being read"):
        _check_unchanged(path, raw)
