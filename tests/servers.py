"""Real servers for tests, started on 127.0.0.1 free ports: a throwaway PostgreSQL
cluster (initdb + pg_ctl) and moto's standalone S3 server (a separate process).

Import the fixtures in a test module: ``from tests.servers import postgres, pg_url, s3``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}")) or [shutil.which(tool)]
    if not found[-1]:
        pytest.fail(f"PostgreSQL server binary {tool!r} not found (install postgresql)")
    return found[-1]


def _as_unprivileged(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the 'postgres' user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres():
    """Admin URL of a fresh PostgreSQL cluster, stopped at the end of the session."""
    folder = Path(tempfile.mkdtemp(prefix="ferro-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    run = lambda cmd: subprocess.run(_as_unprivileged(cmd), check=True, capture_output=True,  # noqa: E731
                                     text=True, cwd=folder)
    run([_pg_bin("initdb"), "-D", str(data), "-U", "ferro", "--auth=trust", "-E", "UTF8",
         "--no-sync"])
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run([_pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(folder / "log"), "-w", "start"])
    try:
        yield f"postgresql://ferro@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_unprivileged([_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate",
                                         "stop"]), capture_output=True, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(postgres):
    """URL of a new empty database in the session's cluster."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return postgres.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of moto's standalone S3 server (its own process) on a loopback port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto S3 server did not start")
            time.sleep(0.2)
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A new bucket on the moto server; the AWS variables point every client at it.
    Returns the bucket's ``s3://`` URL."""
    import boto3

    env = {**S3_ENV, "AWS_ENDPOINT_URL": s3_server}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = f"ferro-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, **_boto_keys()).create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


def _boto_keys() -> dict:
    return {"aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_ENV["AWS_REGION"]}
