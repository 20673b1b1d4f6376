from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERRO_SHARED", ROOT.parent / "shared"))
GONG = SHARED / "data" / "real" / "gong_et_al_reram.csv"
SAMPLE = ROOT / "raw_measurements" / "sample"

# Flow-run logs are not asserted on; not shipping them to the temporary API avoids
# "Error logging to API" once the session's server has stopped.
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
# Prefect gives its temporary server 20 s to start; on a loaded 2-core CI machine that
# has run out while several test processes start servers at once.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(autouse=True)
def _isolated_paths(tmp_path, monkeypatch):
    """No test writes into the checkout: every default path points into tmp_path."""
    monkeypatch.setenv("FERRO_ROOT", str(ROOT))
    monkeypatch.setenv("FERRO_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("FERRO_INCOMING", str(tmp_path / "incoming"))
    monkeypatch.setenv("FERRO_QUARANTINE", str(tmp_path / "quarantine"))
    monkeypatch.setenv("FERRO_REGISTRY", str(tmp_path / "models"))
    monkeypatch.setenv("FERRO_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("FERRO_REGISTRY_DB", raising=False)  # the registry index: its SQLite file


@pytest.fixture
def gong_path() -> Path:
    assert GONG.exists(), f"real data missing: {GONG} (shared/ must sit beside the checkout)"
    return GONG


@pytest.fixture
def sample_file() -> Path:
    return SAMPLE / "W01_X00Y00_D1_20ns.txt"


@pytest.fixture(scope="session")
def sample_frame(tmp_path_factory):
    """The shipped sample wafer, ingested into a fresh store and read back."""
    from pipeline.ingest import ingest
    from pipeline.store import MeasurementStore

    root = tmp_path_factory.mktemp("sample_store")
    store = MeasurementStore(root / "store")
    report = ingest([SAMPLE], store, root / "quarantine")
    assert report.count("stored") == 250
    return store.read(wafer="W01")


@pytest.fixture(scope="session")
def sample_fit(sample_frame):
    from pipeline.fitting import FitConfig, fit_frame

    return fit_frame(sample_frame, FitConfig(workers=2))


@pytest.fixture(scope="session")
def truth():
    import pandas as pd

    return pd.read_csv(SAMPLE / "_ground_truth.csv")


@pytest.fixture(scope="session", autouse=True)
def _stop_prefect_servers():
    """Stop Prefect's temporary servers while pytest's output streams are still open;
    left to Prefect's atexit hook, the 'Stopping temporary server' log line is written
    to a closed capture stream and prints a logging traceback."""
    yield
    import logging
    import sys

    if "prefect.server.api.server" in sys.modules:
        from prefect.server.api.server import SubprocessASGIServer
        # Prefect's console handler still points at the capture stream of the test that
        # first configured logging, closed by now: its 'Stopping temporary server' line
        # has nowhere to go.
        logging.raiseExceptions = False

        for server in list(SubprocessASGIServer._instances.values()):
            server.stop()
