import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from pipeline.errors import InputError
from pipeline.publish import register_fit
from pipeline.registry import Ref, Registry, model_name
from pipeline.registry_index import SqliteIndex
from tests.servers import pg_url, postgres  # noqa: F401  (fixtures)


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request, monkeypatch):
    """Each index engine in turn: the embedded SQLite file, then a PostgreSQL database
    (FERRO_REGISTRY_DB, so processes started by the test use it too)."""
    if request.param == "postgresql":
        monkeypatch.setenv("FERRO_REGISTRY_DB", request.getfixturevalue("pg_url"))
    return request.param


def _tiny(seed: float = 0.0):
    devices = pd.DataFrame({"die": ["X00Y00", "X01Y00"], "device": ["D1", "D1"],
                            "p_k_p": [0.01 + seed, 0.011], "p_k_d": [0.02, 0.021],
                            "sp_norm": [0.3, 0.31]})
    population = pd.DataFrame({"param": ["k_p"], "median": [0.0105], "spread": [0.0005],
                               "rel_spread": [0.05], "n": [2]})
    meta = {"wafer": "W01", "pulse_width_s": 2e-8, "family": "softbounds", "state_unit": "S",
            "n_devices": 2, "n_failed": 0, "sp_norm_median": 0.305, "r2_median": 0.99,
            "energy_per_pulse_j": 1.8e-12, "stack": "hzo"}
    return devices, population, meta


def test_versions_aliases_and_identical_content(tmp_path, index):
    reg = Registry(tmp_path / "models")
    ref1, created = reg.register("hzo-W01-20ns", *_tiny())
    assert (str(ref1), created) == ("hzo-W01-20ns@1", True)
    again, created = reg.register("hzo-W01-20ns", *_tiny())
    assert again.version == 1 and not created
    ref2, _ = reg.register("hzo-W01-20ns", *_tiny(0.001), tags=("paper",))
    assert ref2.version == 2
    assert reg.resolve("hzo-W01-20ns").version == 2  # latest
    reg.set_alias("hzo-W01-20ns@1", "production")
    assert reg.get("hzo-W01-20ns@production")["version"] == 1
    reg.set_alias("hzo-W01-20ns@2", "production")  # aliases move
    assert reg.get("hzo-W01-20ns@production")["version"] == 2
    reg.remove_alias("hzo-W01-20ns", "production")
    with pytest.raises(KeyError):
        reg.get("hzo-W01-20ns@production")
    with pytest.raises(InputError):
        reg.set_alias("hzo-W01-20ns@1", "latest")
    assert list(reg.history("hzo-W01-20ns").version) == [1, 2]
    assert list(reg.search(tags=("paper",)).version) == [2]
    loaded = reg.load("hzo-W01-20ns@1")
    assert loaded.family == "softbounds" and loaded.params().k_p.tolist() == [0.01, 0.011]
    assert loaded.population_value("k_p") == pytest.approx(0.0105)
    assert reg.check() == []


@pytest.mark.parametrize("bad", ["../x", "a/b", "/abs", "a\x00b", "x\ny", "..", ".hidden", ""])
def test_hostile_names_and_aliases_are_refused(tmp_path, bad):
    reg = Registry(tmp_path / "models")
    with pytest.raises(InputError):
        reg.register(bad, *_tiny())
    reg.register("ok", *_tiny())
    with pytest.raises(InputError):
        reg.set_alias("ok@1", bad)
    with pytest.raises(InputError):
        Ref.parse(bad + "@1")


def test_model_names():
    assert model_name("hzo", "W01", 2e-8) == "hzo-W01-20ns"
    assert model_name("hzo", "W01", 2e-4) == "hzo-W01-200us"
    assert model_name("hzo", "W01", 1.5e-6) == "hzo-W01-1p5us"


def test_remote_fsspec_root(tmp_path):
    reg = Registry("memory://ferroflow-test/models", index=tmp_path / "index.sqlite")
    ref, _ = reg.register("hzo-W01-20ns", *_tiny())
    assert reg.load(ref).devices.shape[0] == 2
    assert reg.check() == []
    with pytest.raises(ValueError, match="FERRO_REGISTRY_DB"):
        Registry("memory://ferroflow-test/models")


def test_postgres_index_is_shared_and_keeps_values_exact(tmp_path, pg_url):
    one = Registry(tmp_path / "a", index=pg_url)
    two = Registry(tmp_path / "a", index=pg_url)  # another client of the same index
    ref, _ = one.register("hzo-W01-20ns", *_tiny(), raw_files=pd.DataFrame(
        {"name": ["f.txt"], "sha256": ["ab" * 32]}))
    one.add_run(ref, "run-1", "sweep", "s3://bucket/runs/1")
    one.add_run(ref, "run-1", "sweep", "s3://bucket/runs/1b")  # a run id is recorded once
    assert two.get("hzo-W01-20ns@latest")["pulse_width_s"] == 2e-8  # double precision
    assert two.search(pulse_width_min=2e-8, pulse_width_max=2e-8).version.tolist() == [1]
    lineage = two.lineage("hzo-W01-20ns")
    assert lineage["raw_files"] == [{"file_name": "f.txt", "sha256": "ab" * 32}]
    assert [r["path"] for r in lineage["runs"]] == ["s3://bucket/runs/1b"]


def test_registered_sample_wafer(sample_fit, tmp_path):
    reg = Registry(tmp_path / "models")
    out = register_fit(reg, sample_fit)
    assert [str(r.ref) for r in out] == [f"hzo-W01-{w}@1" for w in ("20ns", "200ns", "2us", "20us", "200us")]
    assert all(r.created for r in out)
    assert not any(r.created for r in register_fit(reg, sample_fit))  # same content, same versions
    v = reg.load("hzo-W01-20ns")
    assert len(v.devices) == 50 and v.family == "softbounds"
    assert {"k_p", "k_d", "b_hi", "b_lo"} <= set(v.params().columns)
    assert 1e-12 < v.energy_per_pulse_j < 3e-12
    assert set(v.population.param) >= {"k_p", "sp_norm", "c2c_rel"}
    found = reg.search(wafer="W01", pulse_width_min=1e-7, pulse_width_max=1e-5, family="softbounds",
                       min_r2=0.9)
    assert list(found.name) == ["hzo-W01-200ns", "hzo-W01-2us"]


def _register_many(root, tag, n, queue):
    reg = Registry(root)
    refs = []
    for i in range(n):
        ref, _ = reg.register("hzo-W01-20ns", *_tiny(i * 1e-4 + (0.5 if tag == "b" else 0)))
        reg.set_alias(ref, f"alias-{tag}-{i}")
        refs.append(ref.version)
    queue.put(refs)


def test_opening_a_new_index_waits_for_another_writer(tmp_path):
    """Stations opening a new index together: while another connection holds a write lock
    on the still rollback-journal database, SQLite answers the switch to WAL at once with
    'database is locked', with no busy wait (a clean-clone CI run failed so, in
    test_two_processes_register_at_once). The index must wait for the lock instead."""
    path = tmp_path / "index.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, other.execute, ["COMMIT"])
    release.start()
    t0 = time.monotonic()
    con = SqliteIndex(path)._con(write=True)
    release.join()
    assert time.monotonic() - t0 >= 0.25  # it waited for the lock, then opened
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


@pytest.mark.slow
def test_two_processes_register_at_once(tmp_path, index):
    root = tmp_path / "models"
    Registry(root).list()  # a read creates nothing: both processes open a new index
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_register_many, args=(root, tag, 15, q)) for tag in "ab"]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    versions = sorted(got[0] + got[1])
    assert versions == list(range(1, 31))  # distinct versions, none lost
    reg = Registry(root)
    aliases = reg._query("SELECT alias FROM aliases WHERE alias != 'latest'")
    assert len(aliases) == 30  # no alias update lost
    assert reg.check() == []


KILLER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.test_registry import _tiny
from pipeline.registry import Registry
reg = Registry({models!r})
print("ready", flush=True)
i = 0
while True:
    i += 1
    reg.register("hzo-W01-20ns", *_tiny(i * 1e-5))
"""


@pytest.mark.slow
def test_kill_during_registration_leaves_index_and_files_consistent(tmp_path, index):
    from tests.conftest import ROOT

    models = tmp_path / "models"
    script = KILLER.format(root=str(ROOT), models=str(models))
    import random

    rng = random.Random(3)
    for trial in range(20):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"  # imports done: now it registers
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reg = Registry(models)
        assert reg.check() == []  # every index row has its file, every alias its version
        try:
            versions = reg.history("hzo-W01-20ns").version.tolist()
        except KeyError:  # killed before the first registration: no such model yet
            versions = []
        assert versions == list(range(1, len(versions) + 1))
        if versions:
            assert reg.get("hzo-W01-20ns@latest")["version"] == versions[-1]
        reg.close()
    # versions accumulate over the trials: some registration must have completed, or the
    # kills all landed before the first one and nothing above was checked
    assert versions, "no registration completed in 20 trials"
    names = os.listdir(models / "hzo-W01-20ns")
    visible = [n for n in names if not n.startswith(".")]
    assert visible and all(n.endswith(".parquet") for n in visible)


@pytest.mark.slow
def test_models_cli(sample_fit, tmp_path, monkeypatch):
    reg = Registry(tmp_path / "models")
    register_fit(reg, sample_fit)
    env = {**os.environ, "FERRO_REGISTRY": str(tmp_path / "models")}

    def cli(*a):
        return subprocess.run([sys.executable, "-m", "pipeline.cli", "models", *a],
                              capture_output=True, text=True, env=env)

    assert "hzo-W01-20ns" in cli("list").stdout
    r = cli("alias", "hzo-W01-2us@1", "paper-fig3")
    assert r.returncode == 0 and "hzo-W01-2us@paper-fig3 -> hzo-W01-2us@1" in r.stdout
    shown = json.loads(cli("show", "hzo-W01-2us@paper-fig3", "--json").stdout)
    assert shown["version"] == 1 and "paper-fig3" in shown["aliases"]
    lineage = json.loads(cli("lineage", "hzo-W01-2us", "--json").stdout)
    assert lineage["ref"] == "hzo-W01-2us@1"
    found = json.loads(cli("search", "--pulse-width-max", "1e-7", "--json").stdout)
    assert [f["name"] for f in found] == ["hzo-W01-20ns"]
    missing = cli("show", "hzo-W01-2us@9")
    assert missing.returncode == 1 and "no model version hzo-W01-2us@9" in missing.stderr


def test_version_tables_pivot_each_family_once_with_the_same_rows(sample_fit):
    """register_fit keeps one cache of per-family pivots across pulse widths; the tables
    equal those built without it."""
    from pipeline.publish import version_tables

    cache = {}
    for (wafer, pw), _ in sample_fit.devices.groupby(["wafer", "pulse_width_s"], sort=True):
        plain, cached = version_tables(sample_fit, wafer, pw), version_tables(sample_fit, wafer, pw, cache)
        assert (plain is None) == (cached is None)
        if plain is not None:
            pd.testing.assert_frame_equal(plain[0], cached[0])
            pd.testing.assert_frame_equal(plain[1], cached[1])
            assert plain[2] == cached[2]
    assert set(cache) <= set(sample_fit.devices.family.dropna())
