"""Integration: a real Prefect server on 127.0.0.1, the deployments served, a wafer
dropped into the landing folder; raw data, model versions and simulation results must
appear, each exactly once."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.generator import GeneratorConfig, generate_wafer
from pipeline.registry import Registry
from pipeline.store import MeasurementStore

WAFER = GeneratorConfig(wafer="W11", seed=9, dies_x=2, dies_y=1, devices_per_die=1,
                        pulse_widths_s=(2e-8, 2e-6))
NAMES = ("hzo-W11-20ns", "hzo-W11-2us")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.mark.slow
def test_served_deployments_process_a_dropped_wafer_exactly_once(tmp_path):
    from flows.server import start_local_server

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "FERRO_STORE": str(tmp_path / "store"), "FERRO_REGISTRY": str(tmp_path / "models"),
           "FERRO_INCOMING": str(tmp_path / "incoming"), "FERRO_QUARANTINE": str(tmp_path / "q")}
    os.environ.update({k: env[k] for k in ("PREFECT_HOME",)})
    port = _free_port()
    server, url = start_local_server("127.0.0.1", port)
    serving = None
    try:
        env["PREFECT_API_URL"] = url
        serving = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--interval", "5",
                                    "--epochs", "1"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        time.sleep(5)
        files = generate_wafer(WAFER, tmp_path / "drop").files
        incoming = tmp_path / "incoming"
        incoming.mkdir()
        dropped = time.monotonic()
        for f in files:
            shutil.copy(f, incoming / f.name)
            (incoming / (f.name + ".done")).write_text("")
        store = MeasurementStore(tmp_path / "store")
        reg = Registry(tmp_path / "models")
        _wait(lambda: store.rows() == 4 * 600, 120, "raw data in the store")

        def simulated():
            try:
                return all(len(reg.runs(n)) == 4 for n in NAMES)
            except KeyError:
                return False

        _wait(simulated, 300, "simulation results for every new version")
        elapsed = time.monotonic() - dropped
        print(f"file drop to simulation results: {elapsed:.1f}s")
        time.sleep(12)  # two more schedule ticks: nothing may run twice
        for n in NAMES:
            assert reg.history(n).version.tolist() == [1]
            assert len(reg.runs(n)) == 4
        assert store.rows() == 4 * 600
        assert not any(p.suffix == ".txt" for p in incoming.iterdir())
    finally:
        if serving is not None:
            serving.send_signal(signal.SIGINT)
            try:
                out, _ = serving.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                serving.kill()
                out, _ = serving.communicate()
            print(out[-3000:])
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
def test_deployments_on_a_process_pool_run_on_a_worker(tmp_path):
    """`ferroflow deploy` against a real server; a `prefect worker` (another process, as
    on another machine) picks up a run of one of the deployments."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.server import start_local_server
    from tests.conftest import ROOT, SAMPLE

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "FERRO_STORE": str(tmp_path / "store"), "FERRO_REGISTRY": str(tmp_path / "models"),
           "FERRO_INCOMING": str(tmp_path / "incoming"), "FERRO_QUARANTINE": str(tmp_path / "q"),
           "PREFECT_WORKER_QUERY_SECONDS": "2",
           # flow runs start in a temp folder: they import this checkout's pipeline
           "PYTHONPATH": str(ROOT)}
    os.environ["PREFECT_HOME"] = env["PREFECT_HOME"]
    server, url = start_local_server("127.0.0.1", _free_port())
    worker = None
    try:
        env["PREFECT_API_URL"] = url
        r = subprocess.run([sys.executable, "-m", "pipeline.cli", "deploy", "--pool", "lab",
                            "--cron", "0 0 1 1 *", "--json"], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert len(json.loads(r.stdout)["deployments"]) == 6
        # this process may have loaded Prefect's settings before (an earlier test): say
        # which server to talk to explicitly
        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            found = {d.name: d for d in client.read_deployments()}
            assert {d.work_pool_name for d in found.values()} == {"lab"}
            assert found["manual"].entrypoint.startswith("flows.definitions.")
            ingest = client.read_deployment_by_name("ingest/manual")
            files = [str(f) for f in sorted(SAMPLE.glob("W01_X00Y0[0-1]_D1_20ns.txt"))]
            run = client.create_flow_run_from_deployment(ingest.id, parameters={"paths": files})
        worker = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "worker", "start",
                                   "--pool", "lab", "--limit", "1"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        store = MeasurementStore(tmp_path / "store")
        _wait(lambda: store.rows() == 2 * 600, 300, "the worker's ingest run")
        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            _wait(lambda: client.read_flow_run(run.id).state.is_completed(), 60, "run completed")
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        server.terminate()
        server.wait(timeout=60)
