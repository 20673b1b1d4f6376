"""Data written with the names from before the unit rule (``schema.LEGACY_COLUMNS``) stays
readable at every boundary where data enters: canonical files, mapping files, store parts,
registry versions and saved fit tables. Legacy names are spelled through the alias table."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.convert import convert_legacy
from pipeline.fitting import FitResult
from pipeline.ingest import ingest
from pipeline.readers import read_file
from pipeline.readers.mapping import load_mapping
from pipeline.registry import Registry
from pipeline.schema import LEGACY_COLUMNS, StateScale, upgrade_columns
from pipeline.store import MeasurementStore
from pipeline.validation import validate
from tests.helpers import write
from tests.test_readers import LAB_MAPPING
from tests.test_store import SOME, _legacy_store

OLD = {new: old for old, new in LEGACY_COLUMNS.items()}  # today's name -> legacy name


def test_every_legacy_name_has_a_distinct_new_name():
    assert len(set(LEGACY_COLUMNS.values())) == len(LEGACY_COLUMNS)
    assert not set(LEGACY_COLUMNS) & set(LEGACY_COLUMNS.values())


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_canonical_file_with_legacy_header(tmp_path, suffix):
    frame = pd.DataFrame({"wafer": "W9", "die": "X01Y02", "device": "D1", "pulse_width_s": 1e-6,
                          "pulse_amplitude_v": [2.0, 2.0, -2.0], "cycle": 1, "pulse": [1, 2, 3],
                          OLD["conductance_state"]: [1e-6, 1.1e-6, 1.05e-6]})
    path = tmp_path / f"old{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    t = validate(read_file(path)).to_pandas()
    assert t.conductance_state.tolist() == [1e-6, 1.1e-6, 1.05e-6]
    assert OLD["conductance_state"] not in t


def test_mapping_with_legacy_key(tmp_path):
    old_text = LAB_MAPPING.replace(
        'conductance_state = { reciprocal = "R", unit = "kohm" }',
        'conductance_s = { reciprocal = "R", unit = "kohm" }')
    assert OLD["conductance_state"] + " = " in old_text
    mapping = load_mapping(write(tmp_path / "old.toml", old_text))
    raw = write(tmp_path / "lab.dat", "Lot:\tLOT7\nDie:\t(3, 5)\nDev:\tA\nWidth:\t2\n\n"
                "n,cyc,Vw,R\n1,1,-2000,500\n2,1,-2000,400\n3,1,2000,450\n")
    t = validate(read_file(raw, mapping=mapping)).to_pandas()
    assert t.conductance_state.tolist() == pytest.approx([2e-6, 2.5e-6, 1 / 450e3])


def test_delta_table_with_legacy_columns_reads_and_grows_like_a_new_one(tmp_path):
    """A store created before the unit rule keeps its column names: read upgraded, and
    rows ingested later are written under the names the table has."""
    from deltalake import DeltaTable

    from pipeline.schema import PARTITION, SCHEMA

    fresh = MeasurementStore(tmp_path / "fresh")
    ingest(SOME[:2], fresh, tmp_path / "q1")
    legacy = pa.schema([f.with_name(OLD.get(f.name, f.name)) for f in SCHEMA])
    DeltaTable.create(str(tmp_path / "old"), legacy, partition_by=list(PARTITION), name="measurements")
    old = MeasurementStore(tmp_path / "old")
    ingest(SOME[:1], old, tmp_path / "q2")
    ingest(SOME[1:2], old, tmp_path / "q3")
    parts = list((tmp_path / "old").rglob("part-*.parquet"))
    assert len(parts) == 2 and all(OLD["conductance_state"] in pq.read_schema(p).names for p in parts)
    assert OLD["conductance_state"] in old.dataset().schema.names
    pd.testing.assert_frame_equal(old.read(), fresh.read())
    again = old.read(wafer="W01", pulse_width_s=2e-8, columns=["cycle", "pulse", "conductance_state"])
    np.testing.assert_array_equal(np.sort(again.conductance_state), np.sort(fresh.read().conductance_state))


def test_store_of_the_earlier_layout_with_legacy_columns_converts(tmp_path):
    old = tmp_path / "old"
    _legacy_store(old, SOME[:2])
    for part in old.rglob("*part-*.parquet"):
        table = pq.read_table(part, partitioning=None)
        pq.write_table(table.rename_columns([OLD.get(c, c) for c in table.column_names]), part)
    new = MeasurementStore(tmp_path / "new")
    assert convert_legacy(old, new).rows == 1200
    expected = pd.concat([validate(read_file(f)).to_pandas() for f in SOME[:2]])
    got = new.read()
    assert OLD["conductance_state"] not in got
    np.testing.assert_allclose(np.sort(got.conductance_state), np.sort(expected.conductance_state))


def test_registry_version_with_legacy_names(tmp_path):
    devices = pd.DataFrame({"die": ["X00Y00"], "device": ["D1"], "p_k_p": [0.01],
                            OLD["read_noise_state"]: [2e-9], OLD["c2c_abs_state"]: [1e-9]})
    population = pd.DataFrame({"param": ["k_p", OLD["gmin_state"]], "median": [0.01, 4e-7],
                               "spread": [0.0, 0.0], "rel_spread": [0.0, 0.0], "n": [1, 1]})
    meta = {"wafer": "W01", "pulse_width_s": 2e-8, "family": "softbounds", "state_unit": "S"}
    reg = Registry(tmp_path / "models")
    ref, _ = reg.register("hzo-W01-20ns", devices, population, meta)
    v = reg.load(ref)
    assert v.devices.read_noise_state.tolist() == [2e-9]
    assert v.devices.c2c_abs_state.tolist() == [1e-9]
    assert v.population_value("gmin_state") == pytest.approx(4e-7)
    assert not set(LEGACY_COLUMNS) & set(v.devices.columns)


def test_fit_tables_with_legacy_names(tmp_path):
    devices = pd.DataFrame({"wafer": ["W01"], OLD["sp_state"]: [5e-7], OLD["sp_state_err"]: [1e-9],
                            OLD["gmin_state"]: [4e-7], OLD["gmax_state"]: [1e-6]})
    population = pd.DataFrame({"param": [OLD["read_noise_state"], "k_p"], "median": [1e-9, 0.01]})
    empty = pd.DataFrame({"x": [1]})
    FitResult(empty, empty, devices, population, empty).save(tmp_path / "fit")
    r = FitResult.load(tmp_path / "fit")
    assert list(r.devices.columns) == ["wafer", "sp_state", "sp_state_err", "gmin_state", "gmax_state"]
    assert r.population.param.tolist() == ["read_noise_state", "k_p"]


def test_upgrade_keeps_the_new_name_when_both_are_present():
    df = pd.DataFrame({OLD["conductance_state"]: [1.0], "conductance_state": [2.0]})
    assert upgrade_columns(df).to_dict("list") == {"conductance_state": [2.0]}
    assert upgrade_columns({OLD["gmin_state"]: 1}) == {"gmin_state": 1}


def test_state_scale_round_trip():
    scale = StateScale.of(np.array([2e-7, 5e-7, 1e-6]), "S")
    assert (scale.lo, scale.span) == (2e-7, 1e-6 - 2e-7)
    g = scale.g(np.array([2e-7, 1e-6]))
    np.testing.assert_allclose(g, [0.0, 1.0])
    np.testing.assert_allclose(scale.state(g), [2e-7, 1e-6])
    assert scale.state_step(scale.g_step(3e-8)) == pytest.approx(3e-8)
    row = pd.Series({"norm_lo": 1.0, "norm_span": 2.0, "state_unit": "normalized"})
    assert StateScale.of_row(row) == StateScale(1.0, 2.0, "normalized")


def test_published_parameter_file_with_legacy_keys(tmp_path):
    from pipeline.importer import read_published
    from tests.test_importer import toml

    bounds = f"{OLD['gmin_state']} = 1e-6\n{OLD['gmax_state']} = 3e-6"
    old = read_published(write(tmp_path / "old.toml", toml(
        bounds=bounds, energy=f"amplitude_v = 3.0\n{OLD['conductance_state']} = 2e-6")))
    new = read_published(write(tmp_path / "new.toml", toml(
        bounds="gmin_state = 1e-6\ngmax_state = 3e-6", energy="amplitude_v = 3.0\nconductance_siemens = 2e-6")))
    assert (old.gmin, old.gmax, old.state_unit) == (1e-6, 3e-6, "S")
    assert old.energy_per_pulse_j == new.energy_per_pulse_j > 0
