"""The ferroflow flows: ingest, fit, simulate, and wafer (end to end).

Tasks are coarse: one per ingest batch, one per (wafer, pulse width) partition, one per
simulated model version. The fit task is cached on the partition's content key (the
SHA-256 of the raw files stored in it), so a rerun on unchanged data does no work; its
result is a small JSON list of model refs (no pickled objects).

Automatic simulation of newly registered versions, exactly once:

- embedded (no deployment: a plain ``ferroflow run fit``): the fit flow runs
  ``simulate`` as a subflow for each new version;
- served (the fit flow runs from a deployment): it emits one
  ``ferroflow.model.registered`` event per new version, resource id
  ``ferroflow.model.<name>@<version>``, and the ``simulate`` deployment's trigger starts
  a run; no subflow is started, so both paths never apply at once;
- either way ``simulate`` skips a version whose runs already exist (run ids hash the
  version and the training configuration).

Paths: every flow takes ``store`` and ``registry`` (default: ``FERRO_STORE`` and
``FERRO_REGISTRY``, like every other setting) and hands its tasks and subflows the
settings built from them; each step is a call of ``pipeline.app``.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS
from prefect.events import emit_event
from prefect.runtime import deployment

from pipeline import app
from pipeline.fitrecords import PopulationStat
from pipeline.report import markdown_summary
from pipeline.settings import Settings, get_settings
from pipeline.simulation import DEFAULT_VARIANTS, TrainConfig

from flows.runners import current_runner, task_runner, uses_processes_inside

EVENT = "ferroflow.model.registered"
RESOURCE_PREFIX = "ferroflow.model."


def _settings(store: str | None, registry: str | None) -> Settings:
    return get_settings().with_overrides(store=store, registry=registry)


def _artifact_key(*parts) -> str:
    text = "-".join(str(p) for p in parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:100]


@task(retries=2, retry_delay_seconds=2)
def ingest_task(paths: list[str] | None, incoming: bool, min_age_s: float,
                settings: Settings) -> dict:
    report = app.run_ingest(settings, paths or [], incoming=incoming, min_age_s=min_age_s)
    get_run_logger().info("ingest: %s", report.summary())
    return report.to_json()


@task(retries=2, retry_delay_seconds=2, cache_policy=INPUTS - "settings", persist_result=True,
      result_serializer="json")
def fit_partition_task(wafer: str, pulse_width_s: float, content_key: str, registry_root: str,
                       workers: int, settings: Settings) -> list[dict]:
    """Fit and register one partition. The cache key holds the partition's content key
    and the registry it registers into (``registry_root``, that of ``settings``), so
    unchanged data is never refitted and a cached answer never names versions of another
    registry; the other paths do not change the answer."""
    result, registered = app.run_fit(settings, wafer, pulse_width_s, workers=workers)
    rows = result.population[result.population.param.isin(PopulationStat.HEADLINE_PARAMS)]
    create_table_artifact(
        key=_artifact_key("fit", wafer, f"{pulse_width_s:g}"),
        table=[{k: (None if v != v else v) for k, v in r.items()}  # NaN -> null
               for r in rows[list(PopulationStat.SUMMARY_COLUMNS)].to_dict("records")],
        description=f"Fit of wafer {wafer} at {pulse_width_s:g} s: population medians and d2d spreads")
    return [{"ref": str(r.ref), "created": r.created} for r in registered]


@task(retries=1)
def simulate_task(refs: list[str], epochs: int, seeds: int, settings: Settings) -> list[dict]:
    """One batched sweep over all ``refs`` (runs of one algorithm share tensors)."""
    _, _, table = app.run_simulation(settings, refs, DEFAULT_VARIANTS, tuple(range(seeds)),
                                     TrainConfig(epochs=epochs))
    records = [{k: (None if v != v else v) for k, v in r.items()} for r in table.to_dict("records")]
    create_table_artifact(key=_artifact_key("sim", *refs), table=records,
                          description=f"Training sweep on {', '.join(refs)}: accuracy, epochs to "
                                      "target, energy")
    return records


@task(retries=1)
def report_task(wafer: str, settings: Settings) -> str:
    """Write the wafer's report (figures + HTML) and attach its summary as an artifact."""
    report = app.run_report(settings, wafer)
    create_markdown_artifact(key=_artifact_key("report", wafer), markdown=markdown_summary(wafer, report),
                             description=f"Report of wafer {wafer}: {report.html}")
    return str(report.html)


@flow(name="ingest")
def ingest_flow(paths: list[str] | None = None, incoming: bool = True, min_age_s: float = 5.0,
                store: str | None = None, registry: str | None = None) -> dict:
    """Ingest given paths, or the complete files of the landing folder."""
    return ingest_task(paths, incoming and not paths, min_age_s, _settings(store, registry))


@flow(name="simulate")
def simulate_flow(ref: str | list[str], epochs: int = 5, seeds: int = 1, store: str | None = None,
                  registry: str | None = None) -> list[dict]:
    """Train every algorithm on registered versions, as one batched sweep (runs already
    done are skipped). A ref may be an event resource id, ``ferroflow.model.<name>@<v>``."""
    settings = _settings(store, registry)
    refs = [r.removeprefix(RESOURCE_PREFIX) for r in ([ref] if isinstance(ref, str) else ref)]
    records = simulate_task(refs, epochs, seeds, settings)
    if deployment.get_id() is not None:  # triggered: the wafer flow's report predates these runs
        for wafer in app.wafers_of(settings, refs):
            report_task(wafer, settings)
    return records


@flow(name="fit", task_runner=task_runner())
def fit_flow(partitions: list[list] | None = None, wafer: str | None = None, simulate: bool = True,
             epochs: int = 5, seeds: int = 1, served: bool | None = None, store: str | None = None,
             registry: str | None = None) -> list[dict]:
    """Fit and register the given (wafer, pulse width) partitions (default: all of
    ``wafer``, or every partition in the store); then simulate new versions: by events
    when ``served`` (default: when this run comes from a deployment), else as subflows."""
    settings = _settings(store, registry)
    measurements = app.store(settings)
    if partitions is None:
        partitions = [[w, pw] for w, pw in measurements.partitions() if wafer is None or w == wafer]
    workers = 0 if uses_processes_inside() else 1
    futures = [fit_partition_task.submit(w, float(pw), measurements.partition_key(w, pw),
                                         str(settings.registry), workers, settings)
               for w, pw in partitions]
    registered, failed = [], []
    for (w, pw), fut in zip(partitions, futures):
        try:
            registered += fut.result()
        except Exception as exc:  # one partition failing does not fail the others
            failed.append(f"{w}@{pw:g}: {exc}")
            get_run_logger().error("fit of %s at %g s failed: %s", w, pw, exc)
    # A cached fit replays its old answer, so "created" alone is not enough: simulate
    # exactly the versions that have no simulation runs yet.
    new = app.unsimulated(settings, [r["ref"] for r in registered])
    if served is None:
        served = deployment.get_id() is not None
    if simulate and new:
        if served:  # the simulate deployment's trigger takes it
            for ref in new:
                emit_event(event=EVENT, resource={"prefect.resource.id": f"{RESOURCE_PREFIX}{ref}",
                                                  "ferroflow.ref": ref})
        else:  # embedded: one subflow, one batched sweep over the new versions
            simulate_flow(new, epochs, seeds, store, registry)
    if failed:
        raise RuntimeError(f"{len(failed)} partition(s) failed: " + "; ".join(failed))
    return registered


@flow(name="wafer", task_runner=task_runner())
def wafer_flow(paths: list[str] | None = None, epochs: int = 5, seeds: int = 1,
               store: str | None = None, registry: str | None = None) -> list[dict]:
    """End to end: ingest (paths, or the landing folder), fit the partitions that
    received data, register, simulate, write each touched wafer's report. The fit
    subflow runs on the same kind of task runner as this flow."""
    served = deployment.get_id() is not None
    report = ingest_flow(paths, incoming=not paths, store=store, registry=registry)
    touched = report["partitions"]
    if not touched:
        get_run_logger().info("no new data: nothing to fit")
        return []
    fit = fit_flow.with_options(task_runner=current_runner())
    registered = fit(touched, simulate=True, epochs=epochs, seeds=seeds, served=served, store=store,
                     registry=registry)
    settings = _settings(store, registry)
    for wafer in sorted({w for w, _ in touched}):
        report_task(wafer, settings)
    return registered


def with_runner(f, kind: str | None = None, address: str | None = None):
    """The flow with the task runner chosen by settings (threads or Dask)."""
    return f.with_options(task_runner=task_runner(kind, address))


FLOWS = {"ingest": ingest_flow, "fit": fit_flow, "simulate": simulate_flow, "wafer": wafer_flow}
