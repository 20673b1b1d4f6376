"""Task-runner selection from settings.

``FERRO_TASK_RUNNER=threads`` (default) or ``dask``; with dask, ``FERRO_DASK_ADDRESS``
names a running scheduler (``tcp://host:8786``), otherwise a local cluster with
``FERRO_DASK_WORKERS`` workers (default 2) is started for the flow run.
"""

from __future__ import annotations

import os

from prefect.task_runners import ThreadPoolTaskRunner


def task_runner(kind: str | None = None, address: str | None = None, workers: int | None = None):
    kind = kind or os.environ.get("FERRO_TASK_RUNNER", "threads")
    if kind == "threads":
        # Fitting and simulation already use every core inside a task (process pool,
        # batched tensors): one task at a time avoids oversubscribing the machine.
        return ThreadPoolTaskRunner(max_workers=1)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        address = address or os.environ.get("FERRO_DASK_ADDRESS")
        if address:
            return DaskTaskRunner(address=address)
        n = workers or int(os.environ.get("FERRO_DASK_WORKERS", "2"))
        return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    raise ValueError(f"FERRO_TASK_RUNNER must be 'threads' or 'dask', not {kind!r}")


def uses_processes_inside(kind: str | None = None) -> bool:
    """Whether a task may start its own process pool (not inside Dask workers)."""
    return (kind or os.environ.get("FERRO_TASK_RUNNER", "threads")) == "threads"
