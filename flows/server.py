"""The Prefect API that ``ferroflow serve`` serves against: the server
``PREFECT_API_URL`` names, else a local ``prefect server start`` run for the session.

Imports no Prefect: Prefect reads ``PREFECT_API_URL`` when it is first imported, so a
started server's address has to be in the environment before that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def start_local_server(host: str, port: int, timeout_s: float = 90.0):
    """``prefect server start`` on host:port; returns (process, api_url) once healthy."""
    url = f"http://{host}:{port}/api"
    # the prefect CLI of this interpreter, whether or not its bin folder is on PATH
    prefect = str(Path(sys.executable).with_name("prefect"))
    proc = subprocess.Popen([prefect, "server", "start", "--host", host, "--port", str(port)],
                            env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"prefect server did not become healthy on {url} within {timeout_s:.0f}s")


@contextmanager
def prefect_api(host: str, port: int):
    """Yield None when ``PREFECT_API_URL`` is set; else start a local server on
    host:port, yield its API URL, and stop it on exit."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    server, url = start_local_server(host, port)
    # Prefect's own setting, read by Prefect here and by the flow runs it starts
    os.environ["PREFECT_API_URL"] = url
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
