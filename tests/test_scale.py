"""Beyond one machine, against real servers started on 127.0.0.1 (tests/servers.py): the
measurement store and the registry files on S3 (moto's standalone server), the registry
index in PostgreSQL (a throwaway cluster), two ingesting stations sharing them."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.registry import Registry
from pipeline.store import MeasurementStore
from tests.conftest import ROOT, SAMPLE
from tests.servers import pg_url, postgres, s3, s3_server  # noqa: F401  (fixtures)

FILES = sorted(SAMPLE.glob("W01_X0[0-3]Y0[0-4]_D1_20ns.txt"))  # 20 files, one pulse width


def ferroflow(*args, env, cwd):
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True,
                       text=True, env={**env, "PYTHONPATH": str(ROOT)}, cwd=cwd)
    assert r.returncode in (0, 3), f"ferroflow {' '.join(map(str, args))}: {r.stderr}"
    return r


@pytest.fixture
def shared(s3, pg_url, tmp_path):
    """Environment of a station: store and registry on S3, registry index in PostgreSQL."""
    return {**os.environ, "FERRO_STORE": f"{s3}/store", "FERRO_REGISTRY": f"{s3}/models",
            "FERRO_REGISTRY_DB": pg_url, "FERRO_REPORTS": str(tmp_path / "reports")}


@pytest.mark.slow
def test_ingest_fit_simulate_report_on_s3_and_postgres(shared, tmp_path):
    first = ferroflow("ingest", *FILES[:4], "--json", env=shared, cwd=tmp_path)
    assert json.loads(first.stdout)["stored"] == 4
    fit = json.loads(ferroflow("fit", "--wafer", "W01", "--json", env=shared, cwd=tmp_path).stdout)
    ref = fit["registered"][0]["ref"]
    assert ref == "hzo-W01-20ns@1"
    store = MeasurementStore(shared["FERRO_STORE"])
    seen = store.version()
    registry = Registry(shared["FERRO_REGISTRY"], index=shared["FERRO_REGISTRY_DB"])
    assert registry.lineage(ref)["store_version"] == seen
    assert len(registry.lineage(ref)["raw_files"]) == 4

    ferroflow("ingest", *FILES[4:8], env=shared, cwd=tmp_path)
    assert store.version() == seen + 1 and store.rows() == 8 * 600
    again = json.loads(ferroflow("fit", "--wafer", "W01", "--as-of", seen, "--json",
                                 env=shared, cwd=tmp_path).stdout)
    assert again["registered"][0] == {**fit["registered"][0], "created": False}  # same data, same model
    newer = json.loads(ferroflow("fit", "--wafer", "W01", "--json", env=shared, cwd=tmp_path).stdout)
    assert newer["registered"][0]["ref"] == "hzo-W01-20ns@2"

    ferroflow("simulate", "hzo-W01-20ns", "--algorithm", "analog-sgd", "--shift-symmetry-point",
              "on", "--epochs", "1", env=shared, cwd=tmp_path)
    assert len(registry.runs("hzo-W01-20ns@2")) == 1
    ferroflow("report", "--wafer", "W01", env=shared, cwd=tmp_path)
    html = (tmp_path / "reports" / "W01" / "report.html").read_text()
    assert "hzo-W01-20ns" in html and shared["FERRO_STORE"] in html
    assert registry.check() == []
    assert not (tmp_path / "store").exists()  # nothing fell back to a local default
