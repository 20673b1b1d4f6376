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
        return _local_dask_runner()(cluster_kwargs={"n_workers": n, "threads_per_worker": 1,
                                                    "processes": True, "dashboard_address": ":0"})
    raise ValueError(f"FERRO_TASK_RUNNER must be 'threads' or 'dask', not {kind!r}")


def uses_processes_inside() -> bool:
    """Whether a task of the flow run in progress may start its own process pool: on
    threads, yes; inside Dask workers, no."""
    return isinstance(_running().task_runner, ThreadPoolTaskRunner)


def current_runner():
    """A new task runner like the one of the flow run in progress, for its subflows."""
    return _running().task_runner.duplicate()


def _running():
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("no flow run in progress")
    return context


def _local_dask_runner():
    from prefect_dask import DaskTaskRunner

    class LocalDaskTaskRunner(DaskTaskRunner):
        """Workers of a local cluster report to the parent's Prefect API.

        Embedded, that API is the parent's temporary server; a worker process that does
        not know its address starts a temporary server of its own, on the same SQLite
        database, for every worker. The address goes to the workers through the
        environment they inherit (set once the parent's server runs, at flow start)."""

        def __enter__(self):
            from prefect.settings import PREFECT_API_URL

            if not PREFECT_API_URL.value():
                from prefect.server.api.server import SubprocessASGIServer

                running = [s for s in SubprocessASGIServer._instances.values() if s.running]
                if running:
                    os.environ["PREFECT_API_URL"] = running[0].api_url
            return super().__enter__()

    return LocalDaskTaskRunner
