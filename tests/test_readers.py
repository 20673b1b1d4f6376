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
