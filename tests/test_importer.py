"""Registering device models from published parameters (pipeline/importer.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.importer import import_model, published_files, read_published
from pipeline.registry import Registry
from pipeline.simulation import DeviceSpec

GARG = {  # the table: (A, alpha, beta) up then down
    20e-9: (0.24897956, 1.86338502, 2.91746585, 0.10299356, 2.05557189, 1.77256752),
    200e-9: (0.36361457, 1.96391651, 3.09212352, 0.18900954, 2.40094446, 1.97854856),
    20e-6: (0.65606012, 1.90866458, 3.47689647, 0.36568703, 2.75019033, 2.2682048),
}

FAMILY_PARAMS = {
    "softbounds": "k_p = 0.02\nk_d = 0.03",
    "neurosim": "A_p = 40.0\nA_d = 25.0\nGmin = 0.0\nGmax = 1.0",
    "powstep": "a_p = 0.02\na_d = 0.03\ngamma_p = 1.2\ngamma_d = 0.9",
    "beta": "A_p = 0.05\nalpha_p = 1.2\nbeta_p = 2.0\nA_d = 0.04\nalpha_d = 2.0\nbeta_d = 1.3",
    "lookup": "\n".join([f"up_{i} = {0.03 * (1 - i / 8):.4f}" for i in range(8)]
                        + [f"down_{i} = {-0.03 * (i + 1) / 8:.4f}" for i in range(8)]),
}


@pytest.fixture
def one_thread():
    """Per-sample tensors are tiny: more threads only contend (run_sweep does the same)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toml(family="beta", params=FAMILY_PARAMS["beta"], bounds="dynamic_range = 2.65",
         energy="energy_per_pulse_j = 3e-12", extra="", variability="c2c_rel = 0.01"):
    return (f'citation = "Test et al. 2024"\nwafer = "pub"\nfamily = "{family}"\n'
            f"pulse_width_s = 1e-7\n{extra}\n[parameters]\n{params}\n[bounds]\n{bounds}\n"
            f"[energy]\n{energy}\n[variability]\n{variability}\n")


def write(tmp_path, text, name="model.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_files_hold_the_published_parameters_and_sps_above_mid_range():
    files = published_files()
    assert [p.name for p in files] == ["garg2025_200ns.toml", "garg2025_20ns.toml", "garg2025_20us.toml"]
    for path in files:
        m = read_published(path)
        a_p, al_p, be_p, a_d, al_d, be_d = GARG[m.pulse_width_s]
        assert m.params == {"A_p": a_p, "alpha_p": al_p, "beta_p": be_p, "A_d": a_d, "alpha_d": al_d,
                            "beta_d": be_d, "g_min": 0.0, "g_max": 1.0}
        assert "arXiv 2509.18121" in m.citation and m.family == "beta"
        from pipeline.importer import version_tables

        devices, _, meta = version_tables(m)
        assert 0.55 < devices.sp_norm.iloc[0] < 0.59  # the issue: "about 0.56-0.58"
        assert meta["state_unit"] == "Gmin" and devices.gmax_state.iloc[0] == pytest.approx(2.65)


def test_imported_version_reads_like_a_fitted_one(tmp_path):
    reg = Registry(tmp_path / "models")
    done = [import_model(reg, p) for p in published_files()]
    assert all(d.created for d in done)
    again = import_model(reg, published_files()[1])
    assert not again.created and str(again.ref) == "hzo-garg2025-20ns@1"
    found = reg.search(wafer="garg2025", family="beta", pulse_width_max=1e-6)
    assert list(found.name) == ["hzo-garg2025-20ns", "hzo-garg2025-200ns"]
    v = reg.load("hzo-garg2025-20ns")
    spec = DeviceSpec.from_version(v)
    assert spec.median["A_p"] == pytest.approx(0.24897956) and spec.spread["A_p"] == 0
    assert spec.energy_per_pulse_j == pytest.approx(3e-12)
    assert np.isnan(DeviceSpec.from_version(reg.load("hzo-garg2025-200ns")).energy_per_pulse_j)
    lineage = reg.lineage("hzo-garg2025-20ns")
    assert lineage["description"].startswith("imported from Garg et al. 2025")
    assert lineage["raw_files"][0]["sha256"] == done[1].model.sha256
    assert "imported" in reg.get("hzo-garg2025-20ns")["tags"]


@pytest.mark.parametrize("family", sorted(FAMILY_PARAMS))
def test_every_family_imports_and_simulates(tmp_path, family, one_thread):
    from pipeline.simulation import RunSpec, TrainConfig, load_dataset, train

    bounds = "gmin_state = 1e-6\ngmax_state = 3e-6"
    energy = "amplitude_v = 3.0\narea_m2 = 1e-10"
    variability = "c2c_rel = 0.02\n[variability.d2d]\n" + FAMILY_PARAMS[family].split("\n")[0].split(" =")[0] + " = 0.1"
    path = write(tmp_path, toml(family, FAMILY_PARAMS[family], bounds, energy, variability=variability))
    reg = Registry(tmp_path / "models")
    done = import_model(reg, path)
    v = reg.load(done.ref)
    assert v.state_unit == "S" and v.family == family
    from pipeline.energy import pulse_energy

    assert v.energy_per_pulse_j == pytest.approx(float(pulse_energy(3.0, 2e-6, 1e-7, 0.0, 1e-10)))
    assert v.meta["energy_source"] == "formula"
    spec = DeviceSpec.from_version(v)
    first = FAMILY_PARAMS[family].split(" =")[0]
    assert spec.spread[first] == pytest.approx(0.1 * abs(spec.median[first]))
    data = load_dataset()
    result = train([RunSpec("analog-sgd", 0, spec)], data, TrainConfig(epochs=1, hidden=(8,)))
    assert np.isfinite(result.epochs[0].test_accuracy).all()


@pytest.mark.parametrize("text, key, words", [
    (toml(params=FAMILY_PARAMS["beta"].replace("A_p = 0.05", "A_p = nan")), "parameters.A_p", "finite"),
    (toml(params=FAMILY_PARAMS["beta"].replace("alpha_p = 1.2", "alpha_p = 12.0")), "parameters.alpha_p",
     "outside the beta family's bounds"),
    (toml(params="A_p = 0.05\nalpha_p = 2.0\nbeta_p = 1.3\nA_d = 0.04\nalpha_d = 2.0\nbeta_d = 1.3"),
     "parameters", "no symmetry point"),  # same shape both ways: up always larger
    (toml(params=FAMILY_PARAMS["beta"].replace("A_d = 0.04", "A_d = -0.04")), "parameters",
     "down steps not negative"),
    (toml(params=FAMILY_PARAMS["beta"].replace("\nbeta_d = 1.3", "")), "parameters.beta_d", "missing"),
    (toml(params=FAMILY_PARAMS["beta"] + "\nk_p = 1"), "parameters.k_p", "unknown key"),
    (toml(family="spline"), "family", "unknown model family"),
    (toml(bounds="dynamic_range = 0.5"), "bounds.dynamic_range", "must exceed 1"),
    (toml(bounds="gmin_state = 2e-6\ngmax_state = 1e-6"), "bounds.gmax_state", "must exceed"),
    (toml(energy="amplitude_v = 3.0"), "energy.conductance_siemens", "missing"),
    (toml(energy='energy_per_pulse_j = "3 pJ"'), "energy.energy_per_pulse_j", "must be a number"),
    (toml(variability="c2c_rel = -0.1"), "variability.c2c_rel", ">= 0"),
    (toml(extra='wafer2 = "x"'), "wafer2", "unknown key"),
    (toml().replace('wafer = "pub"', 'wafer = "../up"'), "wafer", "path separator"),
    (toml().replace('citation = "Test et al. 2024"\n', ""), "citation", "missing"),
])
def test_bad_files_give_one_line_naming_file_and_key(tmp_path, text, key, words):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        read_published(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and f"key {key!r}" in msg and words in msg, msg


def test_cli_import_search_and_error(tmp_path):
    cli = [sys.executable, "-m", "pipeline.cli", "models"]
    files = [str(p) for p in published_files()]
    out = subprocess.run([*cli, "import", *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "hzo-garg2025-20ns@1 (new): beta, 20 ns, imported from Garg et al. 2025" in out.stdout
    out = subprocess.run([*cli, "search", "--wafer", "garg2025"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.count("hzo-garg2025-") == 3
    bad = write(tmp_path, toml(params="A_p = 1"))
    out = subprocess.run([*cli, "import", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert f"{bad}: key 'parameters.alpha_p': missing" in out.stderr


def test_report_of_imported_models(tmp_path):
    from pipeline.report import write_report
    from pipeline.store import MeasurementStore

    reg = Registry(tmp_path / "models")
    for p in published_files():
        import_model(reg, p)
    rep = write_report(MeasurementStore(tmp_path / "store"), reg, "garg2025", tmp_path / "rep")
    table = rep.tables["models"]
    assert list(table["Gmax/Gmin, median"]) == pytest.approx([2.65] * 3)
    assert "imported from Garg" in rep.tables["lineage"].to_string() or len(rep.tables["lineage"]) == 3
