"""Prefect flows, embedded (temporary local server) and on a real local Dask cluster."""

import pandas as pd
import pytest

from pipeline.generator import GeneratorConfig, generate_wafer
from pipeline.registry import Registry
from pipeline.settings import get_settings

SMALL = GeneratorConfig(wafer="W07", seed=3, dies_x=2, dies_y=1, devices_per_die=2,
                        pulse_widths_s=(2e-8, 2e-6))


@pytest.fixture
def small_wafer(tmp_path):
    return generate_wafer(SMALL, tmp_path / "raw").files[0].parent


@pytest.mark.slow
def test_wafer_flow_embedded_registers_and_simulates_exactly_once(small_wafer):
    from flows.definitions import fit_flow, wafer_flow, with_runner

    out = with_runner(wafer_flow)(paths=[str(small_wafer)], epochs=1)
    assert sorted(r["ref"] for r in out) == ["hzo-W07-20ns@1", "hzo-W07-2us@1"]
    reg = Registry(get_settings().registry)
    runs = {ref: reg.runs(ref) for ref in ("hzo-W07-20ns", "hzo-W07-2us")}
    assert all(len(r) == 4 for r in runs.values())  # 2 analog algorithms x shift on/off
    html = (get_settings().reports / "W07" / "report.html").read_text()
    assert "hzo-W07-20ns@1" in html and "accuracy.png" in html
    assert "report.html" in _artifact("report-w07").data
    # unchanged input: ingest stores nothing, nothing is fitted or simulated again
    assert with_runner(wafer_flow)(paths=[str(small_wafer)], epochs=1) == []
    again = with_runner(fit_flow)(wafer="W07", epochs=1)  # cached on the partitions' content
    assert {r["ref"] for r in again} == {"hzo-W07-20ns@1", "hzo-W07-2us@1"}
    assert reg.history("hzo-W07-20ns").version.tolist() == [1]
    for ref, before in runs.items():
        pd.testing.assert_frame_equal(reg.runs(ref), before)


@pytest.mark.slow
def test_fit_on_a_local_dask_cluster_matches_threads(small_wafer, tmp_path, monkeypatch):
    from flows.definitions import fit_flow, ingest_flow, with_runner

    ingest_flow(paths=[str(small_wafer)])
    results = {}
    for kind in ("threads", "dask"):
        monkeypatch.setenv("FERRO_REGISTRY", str(tmp_path / f"models-{kind}"))
        monkeypatch.setenv("FERRO_TASK_RUNNER", kind)
        monkeypatch.setenv("FERRO_DASK_WORKERS", "2")
        refs = with_runner(fit_flow, kind)(wafer="W07", simulate=False)
        reg = Registry(tmp_path / f"models-{kind}")
        results[kind] = {r["ref"]: reg.load(r["ref"]).params().sort_index(axis=1) for r in refs}
    assert results["threads"].keys() == results["dask"].keys()
    for ref in results["threads"]:
        pd.testing.assert_frame_equal(results["threads"][ref], results["dask"][ref])


def _artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key!r}"
    return found[0]
