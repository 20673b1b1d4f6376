"""The wafer report from the shipped sample data: every figure renders and is not blank,
the HTML page embeds each figure and table, and the command line writes it."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from matplotlib.image import imread

from pipeline.ingest import ingest
from pipeline.publish import fit_and_register
from pipeline.registry import Registry
from pipeline.report import pareto_front, write_report
from pipeline.simulation import TrainConfig, simulate_refs
from pipeline.store import MeasurementStore
from tests.conftest import SAMPLE
from tests.test_cli import ferroflow

WIDTHS = ("20ns", "200000ns")  # two pulse widths keep the test short


@pytest.fixture(scope="module")
def wafer(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    store, registry = MeasurementStore(root / "store"), Registry(root / "models")
    files = [f for w in WIDTHS for f in sorted(SAMPLE.glob(f"W01_*_{w}.txt"))]
    assert ingest(files, store, root / "q").count("stored") == 100
    _, registered = fit_and_register(registry, store, "W01")
    refs = [str(r.ref) for r in registered]
    simulate_refs(registry, refs, (("fp", False), ("analog-sgd", False), ("mixed-precision", True)),
                  seeds=(0,), cfg=TrainConfig(epochs=2))
    return root, store, registry


@pytest.fixture(scope="module")
def report(wafer):
    root, store, registry = wafer
    return write_report(store, registry, "W01", root / "out")


def test_every_figure_renders_and_is_not_blank(report):
    expected = {f"{kind}_{w}" for kind in ("fit", "steps", "wafer") for w in ("20ns", "200us")}
    expected |= {"d2d", "accuracy", "pulses", "energy", "sp_effect"}
    assert set(report.figures) == expected
    for name, path in report.figures.items():
        pixels = imread(path)[..., :3]
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300, name
        assert pixels.std() > 0.05, f"{name} is one flat colour"
        # Empty axes with titles and ticks are only black, grey and white (0 % coloured
        # pixels); every figure here draws its data in colour (0.1 % to 40 % of pixels).
        coloured = (pixels.reshape(-1, 3).std(axis=1) > 0.05).mean()
        assert coloured > 0.0003, f"{name}: no data drawn ({coloured:.4%} coloured pixels)"


def test_html_embeds_each_figure_and_table(report):
    html = report.html.read_text()
    for name, path in report.figures.items():
        m = re.search(rf"<figure id='fig-{name}'><img alt='{name}' src='data:image/png;base64,([^']+)'",
                      html)
        assert m, name
        assert base64.b64decode(m.group(1)) == path.read_bytes()
    for table in ("models", "lineage", "simulation"):
        assert f"id='table-{table}'" in html
    assert "hzo-W01-20ns@1" in html and "hzo-W01-200us@1" in html
    assert "mixed-precision+sp-shift" in html
    assert "src='http" not in html and "<script" not in html  # self-contained, no scripts


def test_tables_hold_the_key_numbers(report, wafer):
    _, _, registry = wafer
    models = report.tables["models"].set_index("model")
    v = registry.load("hzo-W01-20ns")
    assert models.at["hzo-W01-20ns@1", "devices"] == v.meta["n_devices"] == 50
    assert models.at["hzo-W01-20ns@1", "SP (norm), median"] == pytest.approx(v.devices.sp_norm.median())
    lineage = report.tables["lineage"].set_index("model")
    assert lineage.at["hzo-W01-20ns@1", "raw files"] == 50
    assert lineage.at["hzo-W01-20ns@1", "simulation runs"] == 2
    sim = report.tables["simulation"]
    assert set(sim.label) == {"fp", "analog-sgd", "mixed-precision+sp-shift"}


def test_pareto_front():
    energy = np.array([1.0, 2.0, 3.0, 0.5, 2.5])
    accuracy = np.array([0.9, 0.95, 0.94, 0.7, 0.95])
    assert pareto_front(energy, accuracy).tolist() == [True, True, False, True, False]


@pytest.mark.slow
def test_report_command(wafer, tmp_path):
    import os

    root, store, registry = wafer
    env = {**os.environ, "FERRO_STORE": str(store.root), "FERRO_REGISTRY": str(registry.base)}
    r = ferroflow("report", "--wafer", "W01", "--out", tmp_path / "rep", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rep" / "report.html").exists() and r.stdout == "" and r.stderr == ""
    missing = ferroflow("report", "--wafer", "W99", "--out", tmp_path / "x", env=env)
    assert missing.returncode == 1 and "no registered models for wafer 'W99'" in missing.stderr
    assert missing.stderr.count("\n") == 1


@pytest.mark.slow
def test_report_without_simulations_says_so(wafer, tmp_path):
    root, store, _ = wafer
    registry = Registry(tmp_path / "models")
    fit_and_register(registry, store, "W01", 2e-8)
    rep = write_report(store, registry, "W01", tmp_path / "out")
    assert "simulation" not in rep.tables and "accuracy" not in rep.figures
    assert "No simulation runs are linked" in rep.html.read_text()
    assert imread(io.BytesIO(rep.figures["d2d"].read_bytes())).std() > 0.05
