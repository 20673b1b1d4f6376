"""Real instrument files (issue 14): mapping constants, derived loops, zero-amplitude reads,
field overrides, per-direction pulse numbering, digitised literature traces, the staircase
generator, and fits that never crash on flagged data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.errors import InputError, MappingError
from pipeline.generator import GeneratorConfig, generate_wafer, staircase_loop
from pipeline.readers import TraceOptions, read_file
from pipeline.readers.common import number_loops
from pipeline.readers.mapping import load_mapping, parse_mapping
from pipeline.validation import validate
from tests.helpers import write
from tests.test_cli import ferroflow

# The mapping of issue 14, verbatim: it must ingest a B2912B staircase export unchanged.
# It predates the unit rule: `conductance_s` is read as the legacy alias of conductance_state.
ISSUE_MAPPING = """\
[format]
delimiter = "\\t"
positive_amplitude = "down"
state_unit = "S"
zero_amplitude = "read"
[header]
wafer = { key = "Chip" }
die = { value = "X05Y29" }
device = { key = "Device" }
pulse_width_s = { key = "pulse_duration_s", unit = "s" }
[columns]
pulse = { column = "cycle" }
cycle = { derive = "loops" }
pulse_amplitude_v = { column = "V_write", unit = "V" }
conductance_s = { reciprocal = "R_pos_ohm", unit = "ohm" }
"""


def _staircase(tmp_path, **changes):
    cfg = GeneratorConfig.staircase(wafer="NASA-FTJ-04", dies_x=2, dies_y=1, **changes)
    return generate_wafer(cfg, tmp_path / "raw")


@pytest.fixture
def issue_mapping(tmp_path):
    return write(tmp_path / "b2912b.toml", ISSUE_MAPPING)


def test_generator_writes_the_b2912b_staircase_layout(tmp_path):
    wafer = _staircase(tmp_path)
    lines = wafer.files[0].read_text().split("\n")
    blank = lines.index("")
    header = dict(line.split(":\t", 1) for line in lines[:blank])
    assert {"Chip", "Device", "Area", "pulse_duration_s"} <= header.keys()
    assert "Die" not in header and float(header["pulse_duration_s"]) == 5e-4
    table = pd.read_csv(wafer.files[0], sep="\t", skiprows=blank + 1)
    assert list(table.columns) == ["cycle", "V_write", "R_neg_ohm", "R_pos_ohm", "I_neg_A", "I_pos_A"]
    # running pulse counter, 0 -> +1 V -> -0.05 ... -1.25 V in 50 mV steps, 10 loops
    assert (table["cycle"] == np.arange(1, len(table) + 1)).all()
    loop = staircase_loop(wafer.config)
    assert len(loop) == 46 and loop[0] == 0 and loop[20] == 1.0 and loop[-1] == -1.25
    np.testing.assert_allclose(table["V_write"], np.tile(loop, 10))
    g = 1 / table["R_pos_ohm"].to_numpy()
    step = np.diff(g)
    amp = table["V_write"].to_numpy()[1:]
    assert step[amp > 0].mean() < 0 < step[amp < 0].mean()  # positive pulses lower G
    truth = wafer.ground_truth
    assert len(truth) == 2 and (truth["protocol"] == "staircase").all()
    assert truth["sp_norm"].between(0.05, 0.95).all()
    assert (truth["p_down_max"] > truth["p_down_min"]).all()  # amplitude matters


def test_issue_mapping_ingests_the_staircase_export_unchanged(tmp_path, issue_mapping):
    wafer = _staircase(tmp_path)
    t = validate(read_file(wafer.files[0], mapping=load_mapping(issue_mapping))).to_pandas()
    assert len(t) == 460
    assert set(t["die"]) == {"X05Y29"} and (t["die_x"] == 5).all() and (t["die_y"] == 29).all()
    assert set(t["wafer"]) == {"NASA-FTJ-04"} and set(t["device"]) == {"00-00-D1"}
    assert (t["pulse_width_s"] == 5e-4).all()
    assert (t.groupby("cycle").size() == 46).all() and t["cycle"].max() == 10
    reads = t[t["direction"] == "read"]
    assert len(reads) == 10 and (reads["pulse_amplitude_v"] == 0).all()
    assert (reads["pulse"].to_numpy() == 1 + 46 * np.arange(10)).all()  # each loop starts with its read
    assert (t.loc[t["pulse_amplitude_v"] > 0, "direction"] == "down").all()
    raw = pd.read_csv(wafer.files[0], sep="\t", skiprows=13)
    np.testing.assert_allclose(t["conductance_state"], 1 / raw["R_pos_ohm"])
    assert (t["source_row"] == np.arange(15, 475)).all()


def test_shipped_b2912b_mapping_is_the_issue_mapping():
    import tomllib
    from dataclasses import replace

    from pipeline.readers.mapping import MAPPINGS_DIR

    shipped = load_mapping(MAPPINGS_DIR / "b2912b_staircase.toml")
    issue = parse_mapping(tomllib.loads(ISSUE_MAPPING), name=shipped.name)
    assert replace(shipped, source="") == replace(issue, source="")


def test_cli_ingest_with_set_overrides_a_header_field(tmp_path, issue_mapping):
    wafer = _staircase(tmp_path)
    r = ferroflow("ingest", wafer.files[0], "--mapping", issue_mapping, "--set", "die=(3, 4)",
                  "--set", "device=J7", "--json")
    assert r.returncode == 0, r.stderr
    from pipeline.store import MeasurementStore

    df = MeasurementStore(tmp_path / "store").read(wafer="NASA-FTJ-04")
    assert set(df["die"]) == {"X03Y04"} and set(df["device"]) == {"J7"}
    bad = ferroflow("ingest", wafer.files[1], "--mapping", issue_mapping, "--set", "die")
    assert bad.returncode == 2 and "--set takes FIELD=VALUE" in bad.stderr


def test_overrides_replace_a_missing_header_key_and_canonical_columns(tmp_path, sample_file):
    lines = [ln for ln in sample_file.read_text().split("\n") if not ln.startswith("Die:")]
    path = write(tmp_path / "nodie.txt", lines)
    with pytest.raises(InputError, match="header key 'Die'"):
        read_file(path)
    t = read_file(path, overrides={"die": "X02Y07", "pulse_width_s": "3e-8"})
    assert set(t.column("die").to_pylist()) == {"X02Y07"}
    assert set(t.column("pulse_width_s").to_pylist()) == {3e-8}
    tidy = tmp_path / "tidy.csv"
    generate_wafer(GeneratorConfig(dies_x=1, dies_y=1, devices_per_die=1, pulse_widths_s=(2e-8,),
                                   cycles=1), tmp_path / "t", fmt="tidy")
    tidy = next((tmp_path / "t").glob("*.csv"))
    t = read_file(tidy, overrides={"die": "(3, 5)"})
    assert set(t.column("die").to_pylist()) == {"X03Y05"} and set(t.column("die_x").to_pylist()) == {3}
    with pytest.raises(MappingError, match="'colour' is not a canonical column"):
        read_file(tidy, overrides={"colour": "red"})


def test_mapping_constants_derive_and_zero_amplitude_are_checked():
    m = parse_mapping({"header": {"pulse_width_s": {"value": 500, "unit": "us"}},
                       "columns": {"die": {"value": "X01Y01"}}})
    assert m.header[0].value == pytest.approx(5e-4) and m.columns[0].value == "X01Y01"
    with pytest.raises(MappingError, match="derive = 'pulses' is not known"):
        parse_mapping({"columns": {"cycle": {"derive": "pulses"}}})
    with pytest.raises(MappingError, match="pulse cannot be derived"):
        parse_mapping({"columns": {"pulse": {"derive": "loops"}}})
    with pytest.raises(MappingError, match="value 'fast' is not a number"):
        parse_mapping({"header": {"pulse_width_s": {"value": "fast"}}})
    with pytest.raises(MappingError, match="zero_amplitude must be one of"):
        parse_mapping({"format": {"zero_amplitude": "skip"}})


def test_loops_are_numbered_where_the_first_direction_returns():
    d = ["read", "down", "down", "up", "up", "read", "down", "up", "read"]
    assert number_loops(d, {}).tolist() == [1, 1, 1, 1, 1, 2, 2, 2, 2]
    # the same rows in two blocks: the count carries over
    state: dict = {}
    assert np.r_[number_loops(d[:4], state), number_loops(d[4:], state)].tolist() == \
        [1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert number_loops(["up", "down", "up", "up", "down"], {}).tolist() == [1, 1, 2, 2, 2]


def test_zero_amplitude_is_refused_unless_declared_a_read(tmp_path, issue_mapping):
    wafer = _staircase(tmp_path)
    refusing = ISSUE_MAPPING.replace('zero_amplitude = "read"\n', "")
    with pytest.raises(InputError, match="row 15, column 'direction': direction unknown"):
        validate(read_file(wafer.files[0], mapping=parse_mapping(
            __import__("tomllib").loads(refusing))))
    frame = pd.DataFrame({"wafer": "W", "die": "X00Y00", "device": "D1", "pulse_width_s": 1e-6,
                          "pulse_amplitude_v": [0.0, 1.0, 1.0, 0.3], "cycle": 1,
                          "pulse": [1, 2, 3, 4], "conductance_state": 1e-6,
                          "direction": ["read", "up", "up", "read"]})
    frame.to_csv(tmp_path / "reads.csv", index=False)
    with pytest.raises(InputError, match="row 5, column 'pulse_amplitude_v': a read without a pulse"):
        validate(read_file(tmp_path / "reads.csv"))


def _tidy(path, pulses, directions, cycles):
    n = len(pulses)
    pd.DataFrame({"wafer": "W", "die": "X00Y00", "device": "D1", "pulse_width_s": 1e-6,
                  "pulse_amplitude_v": [1.0 if d == "up" else -1.0 for d in directions],
                  "cycle": cycles, "pulse": pulses, "conductance_state": np.linspace(1e-6, 2e-6, n),
                  "direction": directions}).to_csv(path, index=False)
    return path


def test_pulses_numbered_per_direction_are_accepted(tmp_path):
    per_direction = [1, 2, 3, 1, 2, 1, 2, 3, 1, 2]
    dirs = ["up"] * 3 + ["down"] * 2 + ["up"] * 3 + ["down"] * 2
    t = validate(read_file(_tidy(tmp_path / "a.csv", per_direction, dirs, [1] * 5 + [2] * 5)))
    assert t.column("pulse").to_pylist() == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    zero_based = [0, 1, 2, 0, 1]
    t = validate(read_file(_tidy(tmp_path / "z.csv", zero_based, dirs[:5], [1] * 5)))
    assert t.column("pulse").to_pylist() == [0, 1, 2, 3, 4]
    # a fall-back within one direction is still an error
    with pytest.raises(InputError, match="row 5, column 'pulse': pulse index 1 does not increase"):
        validate(read_file(_tidy(tmp_path / "b.csv", [1, 2, 3, 1, 2], ["up"] * 5, [1] * 5)))


def _digitised(path, pulses, states, header="x,y"):
    return write(path, ([header] if header else []) + [f"{p},{s}" for p, s in zip(pulses, states)])


def test_digitised_traces_round_pulses_and_average_duplicates(tmp_path):
    up = _digitised(tmp_path / "up.csv", [0.96, 2.1, 1.9, 3.02, 4.4], [1.0e-6, 1.3e-6, 1.1e-6, 1.4e-6, 1.5e-6])
    opts = TraceOptions(wafer="PAPER", device="D1", pulse_width_s=1e-6, state_unit="S", direction="up")
    t = validate(read_file(up, trace=opts)).to_pandas()
    assert t["pulse"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(t["conductance_state"], [1.0e-6, 1.2e-6, 1.4e-6, 1.5e-6])
    assert t["source_row"].tolist() == [2, 3, 5, 6] and set(t["direction"]) == {"up"}
    bad = _digitised(tmp_path / "bad.csv", [1, 2, "x"], [1, 2, 3], header=None)
    with pytest.raises(InputError, match="bad.csv, row 3, column 'pulse': not a number"):
        read_file(bad, trace=opts)


def _soft_bounds_trace(g0: float, n: int, rate: float, up: bool) -> np.ndarray:
    g = [g0]
    for _ in range(n):
        g.append(g[-1] + (rate * (1 - g[-1]) if up else -rate * g[-1]))
    return np.array(g[1:])


def test_published_device_from_digitised_ltp_ltd_is_fitted(tmp_path):
    """LTP 40 points and LTD 25 points of a soft-bounds device (known symmetry point),
    digitised with +/-0.3 pulse jitter and 0.3 % conductance error."""
    from pipeline.fitting import FitConfig, fit_frame
    from pipeline.store import MeasurementStore

    rng = np.random.default_rng(1)
    k_p, k_d = 0.06, 0.12
    up = _soft_bounds_trace(0.02, 40, k_p, True)
    down = _soft_bounds_trace(up[-1], 25, k_d, False)
    files = []
    for name, g, header in (("up.csv", up, "x,y"), ("down.csv", down, None)):
        n = len(g)
        files.append(_digitised(tmp_path / name, np.arange(1, n + 1) + rng.uniform(-0.3, 0.3, n),
                                (1e-6 + 1e-6 * g) * (1 + 0.003 * rng.standard_normal(n)), header))
    r = ferroflow("ingest", "--ltp", files[0], "--ltd", files[1], "--wafer", "PAPER", "--device",
                  "D1", "--pulse-width", "1e-6", "--state-unit", "S", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stored"] == 2
    df = MeasurementStore(tmp_path / "store").read(wafer="PAPER")
    assert df.groupby(["cycle", "direction"]).size().to_dict() == {(1, "up"): 40, (2, "down"): 25}
    device = fit_frame(df, FitConfig(workers=1)).devices.iloc[0]
    sp_true = 1e-6 + 1e-6 * k_p / (k_p + k_d)
    assert device["family"] and abs(device["sp_state"] - sp_true) < 0.02e-6
    assert ferroflow("ingest", "--ltp", files[0]).returncode == 2  # no device named: usage error


def test_staircase_fit_records_protocol_and_amplitude_ranges(tmp_path, issue_mapping):
    from pipeline.fitting import FitConfig, fit_frame

    wafer = _staircase(tmp_path)
    m = load_mapping(issue_mapping)
    df = pa.concat_tables([validate(read_file(f, mapping=m)) for f in wafer.files]).to_pandas()
    devices = fit_frame(df, FitConfig(workers=1)).devices
    assert (devices["protocol"] == "staircase").all()
    assert (devices["amplitude_down_min_v"] == 0.05).all() and (devices["amplitude_down_max_v"] == 1.0).all()
    assert (devices["amplitude_up_min_v"] == -1.25).all() and (devices["amplitude_up_max_v"] == -0.05).all()
    assert (devices["n_pulses"] == 450).all()  # the 10 reads are not pulses


def test_staircase_model_version_records_protocol_and_amplitudes(tmp_path, issue_mapping):
    wafer = _staircase(tmp_path)
    assert ferroflow("ingest", *wafer.files, "--mapping", issue_mapping).returncode == 0
    r = ferroflow("fit", "--wafer", "NASA-FTJ-04", "--workers", "1", "--json")
    assert r.returncode == 0, r.stderr
    ref = json.loads(r.stdout)["registered"][0]["ref"]
    from pipeline.registry import Registry

    meta = Registry(tmp_path / "models").load(ref).meta
    assert meta["protocol"] == "staircase"
    assert meta["amplitude_up_v"] == [-1.25, -0.05] and meta["amplitude_down_v"] == [0.05, 1.0]
    sim = ferroflow("simulate", ref, "--algorithm", "analog-sgd", "--shift-symmetry-point", "off",
                    "--epochs", "1", "--hidden", "8")
    assert sim.returncode == 0, sim.stderr
    [note] = [line for line in sim.stderr.splitlines() if "staircase model" in line]
    assert note == (f"{ref}: staircase model: one step is one staircase update, pooled over write "
                    "amplitudes (up -1.25..-0.05 V, down 0.05..1 V); training assumes every pulse "
                    "steps like that pooled map, whatever its amplitude")


def test_fit_of_an_all_flagged_wafer_lists_flags_and_exits_1(tmp_path):
    wafer = _staircase(tmp_path)
    wrong = write(tmp_path / "wrong.toml", ISSUE_MAPPING.replace('"down"', '"up"'))
    assert ferroflow("ingest", wafer.files[0], "--mapping", wrong).returncode == 0
    r = ferroflow("fit", "--wafer", "NASA-FTJ-04", "--workers", "1")
    assert r.returncode == 1
    lines = r.stderr.strip().split("\n")
    assert lines[0].startswith("flagged: NASA-FTJ-04/X05Y29/00-00-D1 at 500 us: steps of the wrong sign")
    assert lines[-1] == ("ferroflow fit: error: nothing registered: all 1 device series of wafer "
                         "'NASA-FTJ-04' are flagged")
    assert "Traceback" not in r.stderr and "KeyError" not in r.stderr
    j = ferroflow("fit", "--wafer", "NASA-FTJ-04", "--workers", "1", "--json")
    assert j.returncode == 1 and json.loads(j.stdout)["flags"][0]["device"] == "00-00-D1"


def test_fit_with_some_flagged_devices_registers_the_others(tmp_path, issue_mapping):
    wafer = _staircase(tmp_path)
    wrong = write(tmp_path / "wrong.toml", ISSUE_MAPPING.replace('"down"', '"up"'))
    assert ferroflow("ingest", wafer.files[0], "--mapping", wrong).returncode == 0
    assert ferroflow("ingest", wafer.files[1], "--mapping", issue_mapping).returncode == 0
    r = ferroflow("fit", "--wafer", "NASA-FTJ-04", "--workers", "1", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 3, r.stderr
    assert [f["device"] for f in out["flags"]] == ["00-00-D1"]
    assert len(out["registered"]) == 1


def test_streamed_staircase_numbers_loops_across_blocks(tmp_path, issue_mapping):
    from pipeline.readers.stream import iter_blocks, sha256_of

    path = _staircase(tmp_path).files[0]
    m = load_mapping(issue_mapping)
    whole = read_file(path, mapping=m).to_pandas()
    blocks = list(iter_blocks(path, sha256_of(path), m, block_bytes=1500,
                              overrides={"device": "J1"}))
    assert len(blocks) > 5
    streamed = pa.concat_tables(blocks).to_pandas()
    assert set(streamed["device"]) == {"J1"}
    pulses = (streamed["direction"] != "read").to_numpy()
    assert (streamed["cycle"][pulses].to_numpy() == whole["cycle"][pulses].to_numpy()).all()
    # a read that ends a block joins the loop before it (no look-ahead when streaming)
    assert (streamed["cycle"] - whole["cycle"]).isin([0, -1]).all()


def test_staircase_truth_reduces_to_the_identical_pulse_symmetry_point():
    from pipeline.generator import staircase_truth

    # one read, 20 down pulses and 25 up pulses of constant strength: soft bounds
    up = np.r_[False, np.zeros(20, bool), np.ones(25, bool)]
    pulse = np.r_[False, np.ones(45, bool)]
    p = np.where(up, 0.05, 0.11) * pulse
    truth = staircase_truth(p, up, pulse)
    assert truth["sp_norm"] == pytest.approx(0.05 / (0.05 + 0.11), abs=2e-3)


def test_staircase_symmetry_point_is_recovered(tmp_path, issue_mapping):
    from pipeline.fitting import FitConfig, fit_frame

    wafer = generate_wafer(GeneratorConfig.staircase(wafer="FTJ", dies_x=3, dies_y=2), tmp_path / "raw")
    m = load_mapping(issue_mapping)
    df = pa.concat_tables([validate(read_file(f, mapping=m)) for f in wafer.files]).to_pandas()
    d = fit_frame(df, FitConfig(workers=1)).devices.merge(
        wafer.ground_truth[["device", "sp_siemens"]], on="device")
    fitted = d[d["family"].notna()]
    assert len(fitted) >= 4
    err = (fitted["sp_state"] - fitted["sp_siemens"]) / fitted["norm_span"]
    assert err.abs().max() < 0.08


def test_staircase_walkthrough_from_generate_to_report(tmp_path):
    """README "Real instrument files": generate, ingest with the shipped mapping, fit, report."""
    from pipeline.readers.mapping import MAPPINGS_DIR

    raw, report = tmp_path / "FTJ", tmp_path / "FTJ-report"
    steps = [("generate", "--protocol", "staircase", "--wafer", "NASA-FTJ-04", "--dies", "1", "--out", raw),
             ("ingest", raw, "--mapping", MAPPINGS_DIR / "b2912b_staircase.toml"),
             ("fit", "--wafer", "NASA-FTJ-04", "--workers", "1"),
             ("report", "--wafer", "NASA-FTJ-04", "--out", report)]
    for args in steps:
        r = ferroflow(*args)
        assert r.returncode == 0, f"{args}\n{r.stdout}\n{r.stderr}"
    assert "hzo-NASA-FTJ-04-500us@1" in r.stderr + ferroflow("models", "list").stdout
    assert (report / "report.html").exists() and (report / "fit_500us.png").exists()
