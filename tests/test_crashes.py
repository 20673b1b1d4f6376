"""Real processes: concurrent ingesters and ingesters killed with SIGKILL mid-batch."""

import random
import signal
import subprocess
import sys
import time

import pytest

from pipeline.store import MeasurementStore
from tests.conftest import ROOT, SAMPLE

FILES = sorted(SAMPLE.glob("W01_X0[0-3]Y0[0-4]_D1_20ns.txt"))  # 20 files

INGEST = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from pipeline.ingest import ingest
from pipeline.store import MeasurementStore
files = [Path(p) for p in {files!r}]
ingest(files, MeasurementStore({store!r}), Path({q!r}), batch_rows={batch})
"""


def _script(files, store, q, batch=1200):
    return INGEST.format(root=str(ROOT), files=[str(f) for f in files], store=str(store), q=str(q),
                         batch=batch)


def _assert_exactly_once(store: MeasurementStore, n_files: int):
    df = store.read()
    assert len(df) == n_files * 600
    assert not df.duplicated(["die", "device", "pulse_width_s", "cycle", "pulse"]).any()
    assert len(store.ingested_files()) == n_files


def test_four_concurrent_ingesters_store_each_file_once(tmp_path):
    store = tmp_path / "store"
    procs = []
    for k in range(4):
        subset = FILES[k * 3:] + FILES[:k * 3]  # overlapping, in different orders
        procs.append(subprocess.Popen([sys.executable, "-c", _script(subset, store, tmp_path / "q")]))
    assert all(p.wait(timeout=300) == 0 for p in procs)
    _assert_exactly_once(MeasurementStore(store), len(FILES))


@pytest.mark.slow
def test_sigkill_during_ingestion_then_rerun_stores_each_file_once(tmp_path):
    store = tmp_path / "store"
    rng = random.Random(7)
    script = _script(FILES, store, tmp_path / "q", batch=1200)  # a commit every 2 files
    for _ in range(20):
        p = subprocess.Popen([sys.executable, "-c", script])
        time.sleep(rng.uniform(0.3, 2.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
        s = MeasurementStore(store)
        if s.table() is not None:
            assert _missing_parts(s) == set()  # every committed part is there
            df = s.read()  # committed data only: whole files, never twice
            assert len(df) % 600 == 0
            assert not df.duplicated(["die", "device", "pulse_width_s", "cycle", "pulse"]).any()
    assert subprocess.run([sys.executable, "-c", script]).returncode == 0
    s = MeasurementStore(store)
    _assert_exactly_once(s, len(FILES))
    s.vacuum(retention_hours=0)  # parts of killed writers, never committed
    assert _parts_on_disk(store) == set(s.data_files())  # no orphan part


def _parts_on_disk(store) -> set[str]:
    return {p.relative_to(store).as_posix() for p in store.rglob("*.parquet")}


def _missing_parts(s: MeasurementStore) -> set[str]:
    return set(s.data_files()) - _parts_on_disk(s.root)


def test_scan_never_picks_a_file_still_being_written(tmp_path):
    import threading

    from pipeline.ingest import ready_files

    folder = tmp_path / "incoming"
    folder.mkdir()
    target = folder / "slow.txt"
    lines = (SAMPLE / FILES[0].name).read_text().splitlines(keepends=True)
    done = threading.Event()

    def writer():
        with open(target, "w") as fh:
            for i in range(0, len(lines), 40):
                fh.writelines(lines[i:i + 40])
                fh.flush()
                time.sleep(0.15)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    while not done.is_set():
        assert target not in ready_files(folder, min_age_s=1.0), "picked while being written"
    t.join()
    time.sleep(1.1)
    assert ready_files(folder, min_age_s=1.0) == [target]
