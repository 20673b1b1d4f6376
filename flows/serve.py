"""Deployments: a schedule for the landing folder and a trigger for simulations, served
by this process (``ferroflow serve``) or created on a process work pool (``ferroflow
deploy``) for ``prefect worker start --pool NAME`` on any machine that has ferroflow
installed (workers load the flows by module path, so no code is shipped).

- ``wafer/incoming``: the wafer flow on the landing folder, every ``interval`` seconds
  (or on a cron schedule): new files are ingested, their partitions fitted and
  registered, and one ``ferroflow.model.registered`` event emitted per new version;
- ``simulate/on-registration``: triggered by that event, simulates the version named in
  the event (``ferroflow.ref``);
- ``wafer/manual``, ``fit/manual``, ``ingest/manual``, ``simulate/manual``: for
  ``prefect deployment run 'fit/manual' -p wafer=W01`` or ``ferroflow run``.

Needs a Prefect server: ``PREFECT_API_URL`` pointing at one (local or remote), or
``ferroflow serve`` starts ``prefect server start`` bound to 127.0.0.1 (``flows.server``).
A ``store`` or ``registry`` given here becomes a parameter of every deployment; without
them the flow runs take ``FERRO_STORE`` and ``FERRO_REGISTRY`` from the environment of the
process that runs them (a worker's: with ``FERRO_REGISTRY_DB``, ``FERRO_INCOMING``, the
AWS variables, ``FERRO_TASK_RUNNER``...).
"""

from __future__ import annotations

import contextlib
import io

from prefect import deploy, serve
from prefect.deployments.runner import EntrypointType
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

from .definitions import EVENT, fit_flow, ingest_flow, simulate_flow, wafer_flow


def deployments(interval: float | None = 60, cron: str | None = None, epochs: int = 5,
                store: str | None = None, registry: str | None = None, **common):
    """The deployments; ``common`` goes to every ``to_deployment`` call."""
    schedule = {"cron": cron} if cron else {"interval": interval}
    paths = {k: v for k, v in (("store", store), ("registry", registry)) if v}
    trigger = DeploymentEventTrigger(
        expect={EVENT}, match={"prefect.resource.id": "ferroflow.model.*"},
        parameters={"ref": "{{ event.resource.id }}", "epochs": epochs, **paths})
    return [
        # the task runner comes from FERRO_TASK_RUNNER in the process that runs the flow
        # one scan at a time: overlapping scans would race for the same files
        wafer_flow.to_deployment(name="incoming", parameters={"epochs": epochs, **paths},
                                 concurrency_limit=1, description="landing folder, on a schedule",
                                 **schedule, **common),
        wafer_flow.to_deployment(name="manual", parameters=paths, **common),
        fit_flow.to_deployment(name="manual", parameters=paths, **common),
        ingest_flow.to_deployment(name="manual", parameters=paths, **common),
        simulate_flow.to_deployment(name="on-registration", triggers=[trigger], **common,
                                    description="simulates each newly registered model version"),
        simulate_flow.to_deployment(name="manual", parameters=paths, **common),
    ]


def serve_all(interval: float | None = 60, cron: str | None = None, epochs: int = 5,
              store: str | None = None, registry: str | None = None) -> None:
    serve(*deployments(interval, cron, epochs, store, registry), limit=2)


def deploy_all(pool: str, interval: float | None = 60, cron: str | None = None, epochs: int = 5,
               store: str | None = None, registry: str | None = None) -> list:
    """Create (or update) the deployments on process work pool ``pool``, creating the
    pool when missing; returns the deployment ids."""
    ensure_process_pool(pool)
    found = deployments(interval, cron, epochs, store, registry,
                        entrypoint_type=EntrypointType.MODULE_PATH)
    with contextlib.redirect_stdout(io.StringIO()):  # Prefect prints a table; the CLI reports
        return deploy(*found, work_pool_name=pool, build=False, push=False,
                      print_next_steps_message=False, ignore_warnings=True)


def ensure_process_pool(pool: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(
                name=pool, type="process",
                base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            pass
