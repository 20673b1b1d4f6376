import json
import os
import subprocess
import sys

import pytest

from pipeline.store import MeasurementStore
from tests.conftest import SAMPLE
from tests.helpers import edit_cell, sample_lines, write


def ferroflow(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, env=env)


def test_ingest_exit_codes_and_json(tmp_path):
    folder = tmp_path / "batch"
    for f in sorted(SAMPLE.glob("W01_X00Y00_*"))[:3]:
        write(folder / f.name, f.read_bytes())
    ok = ferroflow("ingest", folder, "--json")
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["stored"] == 3 and summary["rows"] == 1800
    assert "Traceback" not in ok.stderr

    write(folder / "zz_bad.txt", edit_cell(sample_lines(), 12, 1, "x"))
    partial = ferroflow("ingest", folder)
    assert partial.returncode == 3
    assert "zz_bad.txt, row 12, column 'Cycle': not a number" in partial.stderr
    assert "0 file(s) stored (0 rows), 3 already stored, 1 quarantined" in partial.stdout


def test_errors_are_one_line_without_traceback(tmp_path):
    r = ferroflow("ingest", tmp_path / "nope")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr
    assert ferroflow("ingest", "--bogus").returncode == 2


def test_gong_trace_via_cli(gong_path):
    r = ferroflow("ingest", gong_path, "--wafer", "GONG", "--device", "R1", "--pulse-width", "1e-6", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == 2000


def test_generate_then_ingest(tmp_path):
    r = ferroflow("generate", "--wafer", "W09", "--out", tmp_path / "w", "--dies", "2", "--devices", "1",
                  "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "w" / "_ground_truth.csv").exists()
    r = ferroflow("ingest", tmp_path / "w", "--json")
    assert json.loads(r.stdout)["stored"] == 4 * 5


def test_every_subcommand_has_help_with_an_example_and_the_common_options():
    from pipeline.cli import build_parser

    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    assert set(subs) == {"demo", "generate", "ingest", "fit", "simulate", "report", "run",
                         "serve", "models", "reproduce", "store", "deploy"}
    for name, sub in subs.items():
        nested = sub._subparsers._group_actions[0].choices if sub._subparsers else {name: sub}
        for action, p in nested.items():
            text = p.format_help()
            assert "example" in text and "ferroflow " in text.split("example", 1)[1], (name, action)
            for option in ("--store", "--registry", "--json", "--quiet", "--debug"):
                assert option in text, (name, action, option)
    r = ferroflow("report", "--help")
    assert r.returncode == 0 and "ferroflow report --wafer W01" in r.stdout


def test_unexpected_errors_are_one_line_unless_debug(tmp_path):
    bad = write(tmp_path / "registry-is-a-file", "x")
    r = ferroflow("models", "list", "--registry", bad)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.strip().endswith(
        f"registry {bad} is a file, not a folder (see --registry, FERRO_REGISTRY)")
    debug = ferroflow("models", "list", "--registry", bad, "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_run_fit_of_a_wafer_without_data_says_so(tmp_path):
    r = ferroflow("run", "fit", "--wafer", "W42", "--store", tmp_path / "empty")
    assert r.returncode == 1
    assert f"no stored data for wafer 'W42' in {tmp_path / 'empty'}" in r.stderr


def test_the_library_and_the_cli_import_neither_prefect_nor_flows():
    code = ("import pkgutil, sys, pipeline\n"
            "for m in pkgutil.walk_packages(pipeline.__path__, 'pipeline.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        __import__(m.name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.slow
def test_run_hands_its_store_to_the_flow(tmp_path):
    folder = tmp_path / "batch"
    for f in sorted(SAMPLE.glob("W01_X00Y00_*"))[:2]:
        write(folder / f.name, f.read_bytes())
    # a loaded machine can take longer than Prefect's 20 s to start the temporary server
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    r = ferroflow("run", "ingest", "--path", folder, "--store", tmp_path / "elsewhere", "--json",
                  env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["result"]["stored"] == 2
    assert MeasurementStore(tmp_path / "elsewhere").rows() == 1200
    assert not (tmp_path / "store").exists()  # FERRO_STORE, the default, stays untouched
