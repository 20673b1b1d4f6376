"""Served deployments: a schedule for the landing folder and a trigger for simulations.

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
them the flow runs take ``FERRO_STORE`` and ``FERRO_REGISTRY``.
"""

from __future__ import annotations

from prefect import serve
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

from .definitions import EVENT, fit_flow, ingest_flow, simulate_flow, wafer_flow


def deployments(interval: float | None = 60, cron: str | None = None, epochs: int = 5,
                store: str | None = None, registry: str | None = None):
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
                                 **schedule),
        wafer_flow.to_deployment(name="manual", parameters=paths),
        fit_flow.to_deployment(name="manual", parameters=paths),
        ingest_flow.to_deployment(name="manual", parameters=paths),
        simulate_flow.to_deployment(name="on-registration", triggers=[trigger],
                                    description="simulates each newly registered model version"),
        simulate_flow.to_deployment(name="manual", parameters=paths),
    ]


def serve_all(interval: float | None = 60, cron: str | None = None, epochs: int = 5,
              store: str | None = None, registry: str | None = None) -> None:
    serve(*deployments(interval, cron, epochs, store, registry), limit=2)
