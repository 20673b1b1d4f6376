"""Every command shown in README.md runs, as shown, in a scratch project.

The commands are read from README's ``bash`` blocks, in order. ``.venv/bin/ferroflow``
and ``.venv/bin/python`` become this interpreter; all data paths point into tmp_path.
A few commands run with smaller sizes (``SMALLER``: the same code paths, shorter), and
three are run by other tests (``ELSEWHERE``). A README command in neither list and not
run here fails the test, so the docs cannot drift from what works.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ELSEWHERE = {
    # the install step of the quick start is what .ci/run does before the tests
    "python3 -m venv .venv": ".ci/run",
    ".venv/bin/pip install 'torch==2.13.0' -e '.[dev]'": ".ci/run",
    ".venv/bin/python -m pytest": ".ci/run",
    # a real Prefect server and the served deployments, with a 5 s interval
    ".venv/bin/ferroflow serve --interval 60": "tests/test_served.py",
}
SMALLER = {  # README command -> extra arguments that shrink it (later ones win)
    "ferroflow simulate hzo-W01-20ns --algorithm analog-sgd": ["--epochs", "2"],
    "ferroflow simulate --wafer W01 --seeds 3": ["--epochs", "1"],
    "ferroflow run wafer": ["--epochs", "1"],
    "bench/ingest.py": ["--cycles", "2", "--repeat", "1"],
    "bench/big_ingest.py": ["--rows", "20000", "200000"],
    "bench/fit.py": ["--cycles", "1"],
    "bench/fit_wafer.py": ["--dies", "2", "--devices", "1"],
    "bench/fit_lengths.py": ["--dies", "2", "--long", "1", "--times", "3"],
    "bench/registry.py": ["--names", "5", "--versions", "4"],
    "bench/sim.py": ["--epochs", "1"],
    "ferroflow reproduce garg2025": ["--seeds", "1", "--epochs", "1", "--dataset", "digits"],
    "--dataset mnist5k": ["--epochs", "1"],
}


def readme_commands() -> list[str]:
    """Command lines of README's bash blocks; ``a && b`` gives two; comments dropped."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                out += [part.strip() for part in line.split("&&")]
    return out


def _argv(command: str, tmp_path) -> list[str]:
    argv = shlex.split(command)
    if argv[0] == ".venv/bin/ferroflow":
        argv = [sys.executable, "-m", "pipeline.cli", *argv[1:]]
    elif argv[0] == ".venv/bin/python":
        argv = [sys.executable, *argv[1:]]
    scratch = {"/tmp/W02", "/tmp/W01-report", "/tmp/FTJ", "/tmp/FTJ-report"}
    argv = [str(tmp_path / a.removeprefix("/tmp/")) if a in scratch else a for a in argv]
    for key, extra in SMALLER.items():
        if key in command:
            argv += extra
    return argv


def test_readme_commands_are_all_accounted_for():
    commands = readme_commands()
    assert ".venv/bin/ferroflow demo" in commands and ".venv/bin/python -m pytest" in commands
    ci = (ROOT / ".ci" / "run").read_text()
    for command, where in ELSEWHERE.items():
        assert command in commands, f"{command!r} is no longer in README: drop it here"
        if where == ".ci/run":
            assert command in ci, f".ci/run does not run {command!r}"


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    env = {**os.environ, "FERRO_ROOT": str(ROOT), "FERRO_STORE": str(tmp_path / "store"),
           "FERRO_INCOMING": str(tmp_path / "incoming"), "FERRO_QUARANTINE": str(tmp_path / "q"),
           "FERRO_REGISTRY": str(tmp_path / "models"), "FERRO_REPORTS": str(tmp_path / "reports"),
           "PREFECT_HOME": str(tmp_path / "prefect")}
    ran = []
    for command in readme_commands():
        if command in ELSEWHERE:
            continue
        r = subprocess.run(_argv(command, tmp_path), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, f"{command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, f"{command}\n{r.stderr[-3000:]}"
        ran.append(command)
    assert (tmp_path / "reports" / "W01" / "report.html").exists()  # the demo's report
    assert (tmp_path / "W01-report" / "report.html").exists()
    assert len(ran) + len(ELSEWHERE) == len(readme_commands())
