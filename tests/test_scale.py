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
    [run_path] = registry.runs("hzo-W01-20ns@2")["path"]
    assert run_path.startswith(shared["FERRO_REGISTRY"] + "/runs/")  # on S3, beside the versions
    assert registry.fs.exists(run_path)
    ferroflow("report", "--wafer", "W01", env=shared, cwd=tmp_path)
    html = (tmp_path / "reports" / "W01" / "report.html").read_text()
    assert "hzo-W01-20ns" in html and shared["FERRO_STORE"] in html
    assert "analog-sgd+sp-shift" in html  # the run, read back from S3, is in the sweep table
    assert registry.check() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]  # nothing written locally


STATION = """
import shutil, subprocess, sys
from pathlib import Path
files, incoming = [Path(p) for p in {files!r}], Path({incoming!r})
for start in range(0, len(files), 5):  # files arrive in rounds; each round is one ingest run
    incoming.mkdir(parents=True, exist_ok=True)
    for f in files[start:start + 5]:
        shutil.copy(f, incoming / f.name)
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "ingest", "--incoming",
                        "--min-age", "0", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    print(r.stdout.replace("\\n", " "), flush=True)
"""


@pytest.mark.slow
def test_two_stations_share_one_store_and_one_index(shared, tmp_path):
    """Two stations, each with its own working folders, ingest overlapping files into the
    same S3 store at the same time, then both fit and register into the shared index."""
    subsets = {"a": FILES[:14], "b": FILES[6:][::-1]}  # 8 files reach both stations
    procs = {}
    for name, files in subsets.items():
        work = tmp_path / f"station-{name}"
        env = {**shared, "FERRO_INCOMING": str(work / "incoming"),
               "FERRO_QUARANTINE": str(work / "quarantine"), "PYTHONPATH": str(ROOT)}
        script = STATION.format(files=[str(f) for f in files], incoming=str(work / "incoming"))
        procs[name] = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=work.parent,
                                       stdout=subprocess.PIPE, text=True)
    outputs = {name: p.communicate(timeout=600)[0] for name, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), outputs
    reports = [json.loads(line) for out in outputs.values() for line in out.splitlines()]

    store = MeasurementStore(shared["FERRO_STORE"])
    df = store.read()
    assert len(df) == len(FILES) * 600  # no lost row
    assert not df.duplicated(["die", "device", "pulse_width_s", "cycle", "pulse"]).any()
    files = store.ingested_files()
    assert sorted(files.name) == sorted(f.name for f in FILES) and (files.rows == 600).all()
    assert sum(r["stored"] for r in reports) == len(FILES)  # each file stored by one station
    assert sum(r["duplicate"] for r in reports) == 8 and sum(r["quarantined"] for r in reports) == 0
    for name in subsets:  # every landing file moved on, none left behind or quarantined
        work = tmp_path / f"station-{name}"
        assert not list((work / "incoming").iterdir())
        assert len(list((work / "processed").iterdir())) == len(subsets[name])
    history = store.table().history()
    assert sorted(h["version"] for h in history) == list(range(store.version() + 1))

    fits = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "fit", "--wafer", "W01",
                              "--workers", "1", "--json"], env={**shared, "PYTHONPATH": str(ROOT)},
                             cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    refs = [json.loads(p.communicate(timeout=600)[0])["registered"][0] for p in fits]
    registry = Registry(shared["FERRO_REGISTRY"], index=shared["FERRO_REGISTRY_DB"])
    versions = registry.history("hzo-W01-20ns").version.tolist()
    assert versions == [1]  # the same data fitted twice: one version, no gap, no twin
    assert {r["ref"] for r in refs} == {"hzo-W01-20ns@1"}
    assert sorted(r["created"] for r in refs) == [False, True]
    assert registry.check() == []
