import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError, MappingError
from pipeline.readers import TraceOptions, read_file
from pipeline.readers.mapping import load_mapping
from pipeline.validation import validate
from tests.helpers import GOOD, sample_lines, write


def test_instrument_export_to_canonical():
    t = validate(read_file(GOOD)).to_pandas()
    assert len(t) == 600
    assert (t.wafer == "W01").all() and (t.die == "X00Y00").all() and (t.device == "D1").all()
    assert (t.die_x == 0).all() and (t.die_y == 0).all()
    assert t.pulse_width_s.unique().tolist() == [2e-8]
    assert t.read_voltage_v.unique().tolist() == [0.1]
    assert t.device_area_m2.iloc[0] == pytest.approx(10e-12)
    # G = I_read / V_read; the first data line of the file is 11.
    first = sample_lines()[10].split("\t")
    assert t.conductance_state.iloc[0] == pytest.approx(float(first[3]) / 0.1)
    assert t.energy_j.iloc[0] == pytest.approx(float(first[4]) * 1e-12)
    assert t.source_row.iloc[0] == 11 and t.source_file.iloc[0] == GOOD.name
    assert set(t.direction) == {"up", "down"}
    assert (t[t.pulse_amplitude_v > 0].direction == "up").all()
    assert t.state_unit.unique().tolist() == ["S"]
    assert str(t.measured_at.iloc[0]).startswith("2026-01-05 08:00:00")


def test_canonical_csv_and_parquet_roundtrip(tmp_path):
    t = read_file(GOOD)
    df = t.to_pandas().drop(columns=["source_file", "source_sha256", "source_row"])
    df.to_csv(tmp_path / "tidy.csv", index=False)
    pq.write_table(t.drop_columns(["source_file", "source_sha256", "source_row"]), tmp_path / "tidy.parquet")
    a = validate(read_file(tmp_path / "tidy.csv")).to_pandas()
    b = validate(read_file(tmp_path / "tidy.parquet")).to_pandas()
    for other in (a, b):
        np.testing.assert_allclose(other.conductance_state, df.conductance_state)
        assert (other.cycle.to_numpy() == df.cycle.to_numpy()).all()
    assert a.source_row.iloc[0] == 2  # line 1 is the CSV header


def test_real_gong_trace_is_carried_as_normalized_state(gong_path):
    t = validate(read_file(gong_path, trace=TraceOptions("GONG", "R1", 1e-6))).to_pandas()
    assert len(t) == 2000
    assert t.state_unit.unique().tolist() == ["normalized"]
    assert (t.conductance_state < 0).any()  # real data: negative normalised states exist
    assert t.pulse_amplitude_v.isna().all()  # unknown, not invented
    assert (t.direction.iloc[:1000] == "up").all() and (t.direction.iloc[1000:] == "down").all()
    assert (t.cycle.iloc[:1000] == 1).all() and (t.cycle.iloc[1000:] == 2).all()
    assert t.conductance_state.iloc[0] == pytest.approx(-0.84444)
    assert t.conductance_state.iloc[1000] == pytest.approx(0.76667)


def test_two_column_trace_without_device_info_is_a_clear_error(gong_path):
    with pytest.raises(InputError, match="--wafer, --device and --pulse-width"):
        read_file(gong_path)


LAB_MAPPING = """
[format]
delimiter = ","
positive_amplitude = "down"

[header]
wafer = { key = "Lot" }
die = { key = "Die" }
device = { key = "Dev" }
pulse_width_s = { key = "Width", unit = "us" }

[columns]
pulse = { column = "n" }
cycle = { column = "cyc" }
pulse_amplitude_v = { column = "Vw", unit = "mV" }
conductance_state = { reciprocal = "R", unit = "kohm" }
"""


def test_own_lab_format_through_a_mapping(tmp_path):
    mapping = write(tmp_path / "lab.toml", LAB_MAPPING)
    raw = write(tmp_path / "lab.dat", "Lot:\tLOT7\nDie:\t(3, 5)\nDev:\tA\nWidth:\t2\n\n"
                "n,cyc,Vw,R,comment\n1,1,-2000,500,x\n2,1,-2000,400,y\n3,1,2000,450,z\n")
    t = validate(read_file(raw, mapping=load_mapping(mapping))).to_pandas()
    assert t.die.iloc[0] == "X03Y05" and t.die_x.iloc[0] == 3 and t.die_y.iloc[0] == 5
    assert t.pulse_width_s.iloc[0] == pytest.approx(2e-6)
    assert t.pulse_amplitude_v.tolist() == pytest.approx([-2.0, -2.0, 2.0])
    assert t.conductance_state.tolist() == pytest.approx([2e-6, 2.5e-6, 1 / 450e3])
    # this junction lowers G under positive pulses: the mapping flips the convention
    assert t.direction.tolist() == ["up", "up", "down"]


def test_mapping_with_unknown_unit_or_missing_column(tmp_path):
    bad_unit = write(tmp_path / "u.toml", LAB_MAPPING.replace('unit = "kohm"', 'unit = "furlong"'))
    with pytest.raises(MappingError, match="unknown unit 'furlong'"):
        load_mapping(bad_unit)
    missing = write(tmp_path / "m.toml", LAB_MAPPING.replace('reciprocal = "R"', 'reciprocal = "R_ohm"'))
    raw = write(tmp_path / "lab.dat", "Lot:\tL\nDie:\tX01Y01\nDev:\tA\nWidth:\t2\n\nn,cyc,Vw,R\n1,1,5,1\n2,1,5,1\n")
    with pytest.raises(MappingError, match="'R_ohm', which the file lacks") as err:
        read_file(raw, mapping=load_mapping(missing))
    assert err.value.file == str(raw) and err.value.row == 6


def test_gzip_file_reads_like_plain(tmp_path):
    import gzip

    gz = write(tmp_path / "a.txt.gz", gzip.compress(GOOD.read_bytes()))
    a, b = read_file(GOOD).to_pandas(), read_file(gz).to_pandas()
    assert (a.conductance_state == b.conductance_state).all()


# --- source_row is the physical file line ------------------------------------------------
_EOL = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}


def _messy(lines: list[str], eol: str, first_data: int) -> bytes:
    """``lines`` with blank and comment lines among the data rows (from line
    ``first_data`` on) and the given line ending (``mixed``: LF, CRLF and CR in turn)."""
    out = []
    for no, line in enumerate(lines, 1):
        out.append(line)
        if no >= first_data and no % 37 == 0:
            out.append("")
        if no >= first_data and no % 53 == 0:
            out += ["# probe re-landed", ""]
    ends = ["\n", "\r\n", "\r"] if eol == "mixed" else [_EOL[eol]]
    return "".join(line + ends[i % len(ends)] for i, line in enumerate(out)).encode()


def _physical(path) -> list[str]:
    import gzip
    import re

    data = path.read_bytes()
    data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return re.split(r"\r\n|\r|\n", data.decode())


def _streamed(path):
    import pyarrow as pa

    from pipeline.readers.stream import iter_blocks

    return pa.concat_tables(list(iter_blocks(path, "sha", block_bytes=1024))).to_pandas()


def _check_instrument_rows(t, path):
    lines = _physical(path)
    assert len(t) == 600
    for row, pulse, cycle in zip(t.source_row, t.pulse, t.cycle):
        cells = lines[row - 1].split("\t")
        assert (int(cells[0]), int(cells[1])) == (pulse, cycle), row


@pytest.mark.parametrize("eol", ["lf", "crlf", "cr", "mixed"])
@pytest.mark.parametrize("how", ["whole", "gzip", "streamed", "streamed-gzip"])
def test_instrument_source_row_is_the_physical_line(tmp_path, eol, how):
    import gzip

    data = _messy(sample_lines()[:-1], eol, 11)
    path = write(tmp_path / "messy.txt", gzip.compress(data) if "gzip" in how else data)
    t = _streamed(path) if how.startswith("streamed") else validate(read_file(path)).to_pandas()
    _check_instrument_rows(t, path)


@pytest.mark.parametrize("eol", ["crlf", "cr", "mixed"])
@pytest.mark.parametrize("streamed", [False, True])
def test_canonical_csv_source_row_is_the_physical_line(tmp_path, eol, streamed):
    df = read_file(GOOD).to_pandas().drop(columns=["source_file", "source_sha256", "source_row"])
    lines = df.to_csv(index=False).splitlines()
    path = write(tmp_path / "tidy.csv", _messy(lines, eol, 2))
    t = _streamed(path) if streamed else validate(read_file(path)).to_pandas()
    physical = _physical(path)
    header = physical[0].split(",")
    assert len(t) == 600
    for row, pulse, cycle in zip(t.source_row, t.pulse, t.cycle):
        cells = dict(zip(header, physical[row - 1].split(",")))
        assert (int(cells["pulse"]), int(cells["cycle"])) == (pulse, cycle), row


@pytest.mark.parametrize("eol", ["crlf", "cr", "mixed"])
def test_trace_source_rows_are_physical_lines(tmp_path, eol):
    pairs = [f"{0.1 * i:.3f},{-0.1 * i:.3f}" for i in range(1, 120)]
    updown = write(tmp_path / "trace.csv", _messy(pairs, eol, 1))
    t = validate(read_file(updown, trace=TraceOptions("W", "D", 1e-6))).to_pandas()
    physical = _physical(updown)
    for row, direction, state in zip(t.source_row, t.direction, t.conductance_state):
        up, down = map(float, physical[row - 1].split(","))
        assert (up if direction == "up" else down) == pytest.approx(state), row
    points = ["x,y"] + [f"{i + 0.02},{1e-6 * i}" for i in range(1, 120)]
    digitised = write(tmp_path / "ltp.csv", _messy(points, eol, 2))
    opts = TraceOptions("W", "D", 1e-6, state_unit="S", direction="up")
    t = validate(read_file(digitised, trace=opts)).to_pandas()
    physical = _physical(digitised)
    assert len(t) == 119
    for row, pulse in zip(t.source_row, t.pulse):
        assert round(float(physical[row - 1].split(",")[0])) == pulse, row


@pytest.mark.parametrize("eol", ["crlf", "cr"])
@pytest.mark.parametrize("streamed", [False, True])
def test_error_after_blank_and_comment_lines_names_the_physical_line(tmp_path, eol, streamed):
    from pipeline.ingest import ingest
    from pipeline.store import MeasurementStore

    lines = sample_lines()[:-1]
    cells = lines[299].split("\t")
    cells[3] = "abc"
    lines[299] = "\t".join(cells)
    path = write(tmp_path / "bad.txt", _messy(lines, eol, 11))
    report = ingest([path], MeasurementStore(tmp_path / "store"), tmp_path / "q",
                    big_file_bytes=0 if streamed else 1 << 30)
    err = report.outcomes[0].error
    assert err.column == "I_read_A" and err.row > 300, err.one_line()
    assert _physical(path)[err.row - 1].split("\t")[3] == "abc"
