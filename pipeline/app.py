"""The application layer: what each ferroflow step does, given explicit settings.

The command line (``pipeline/cli/``) and the Prefect flows (``flows/``) both call these
functions; every path comes from the ``Settings`` passed in, never from the environment.
Callers choose how progress is shown: ``progress(done, total)`` for counted work,
``say(line)`` for narrated work; None shows nothing. Fitting, simulation and the report
are imported when first used (lmfit, torch, matplotlib), so light commands start fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import InputError
from .ingest import IngestReport, ingest, ingest_ltp_ltd, ready_files
from .readers import TraceOptions, load_mapping
from .registry import Registry
from .settings import Settings
from .store import MeasurementStore


def registry(settings: Settings) -> Registry:
    return Registry(settings.registry)


def store(settings: Settings) -> MeasurementStore:
    return MeasurementStore(settings.store)


def run_ingest(settings: Settings, paths: Sequence[str | Path] = (), *, incoming: bool = False,
               mapping: str | Path | None = None, trace: TraceOptions | None = None,
               min_age_s: float = 5.0, overrides: dict[str, str] | None = None,
               progress=None) -> IngestReport:
    """Ingest ``paths``, or with ``incoming`` the complete files of the landing folder
    (moved to ``processed/`` once stored). ``mapping`` is a mapping TOML file;
    ``overrides`` (field -> text) replace what every file says (``--set die=X05Y29``)."""
    mapping = load_mapping(mapping) if mapping else None  # a bad mapping: before any file
    if incoming:
        paths = ready_files(settings.incoming, min_age_s=min_age_s)
    return ingest(list(paths), store(settings), settings.quarantine,
                  mapping=mapping, trace=trace,
                  move_from=settings.incoming, processed_dir=settings.processed,
                  overrides=overrides, progress=progress)


def run_ingest_ltp_ltd(settings: Settings, ltp: str | Path | None, ltd: str | Path | None,
                       trace: TraceOptions, overrides: dict[str, str] | None = None) -> IngestReport:
    """A device's digitised LTP and LTD files (``readers.digitised``)."""
    return ingest_ltp_ltd(ltp, ltd, store(settings), settings.quarantine, trace,
                          overrides=overrides)


def require_stored(settings: Settings, wafer: str) -> None:
    """Refuse to go on for a wafer the store holds no data of."""
    if not any(w == wafer for w, _ in store(settings).partitions()):
        raise InputError(f"no stored data for wafer {wafer!r} in {settings.store} (ingest first)")


def run_fit(settings: Settings, wafer: str, pulse_width_s: float | None = None, *,
            workers: int = 0, stack: str | None = None, engine: str = "batch", progress=None,
            as_of: int | None = None):
    """Fit the stored data of a wafer (or one pulse width), as of store version ``as_of``
    (default: the current one), and register each pulse width's population under
    ``stack`` (default: publish.DEFAULT_STACK): (FitResult, [Registered])."""
    from .fitting import FitConfig
    from .publish import DEFAULT_STACK, fit_and_register

    models = registry(settings)
    models.check_writable()  # a read-only registry is refused before minutes of fitting
    return fit_and_register(models, store(settings), wafer, pulse_width_s,
                            stack=stack or DEFAULT_STACK, config=FitConfig(workers=workers, engine=engine),
                            progress=progress, as_of=as_of)


def wafer_refs(settings: Settings, wafer: str) -> list[str]:
    """``name@version`` of the latest registered model of each pulse width of a wafer."""
    found = registry(settings).search(wafer=wafer)
    refs = [f"{r.name}@{r.version}" for r in found.itertuples()]
    if not refs:
        raise InputError(f"no registered models for wafer {wafer!r} (run ferroflow fit)")
    return refs


def unsimulated(settings: Settings, refs: list[str]) -> list[str]:
    """The refs among ``refs`` that have no simulation runs yet."""
    reg = registry(settings)
    return [ref for ref in refs if reg.runs(ref).empty]


def wafers_of(settings: Settings, refs: list[str]) -> list[str]:
    """The wafers the model versions ``refs`` were fitted on, sorted."""
    reg = registry(settings)
    return sorted({reg.get(ref)["wafer"] for ref in refs})


def run_simulation(settings: Settings, refs: list[str], variants, seeds: tuple[int, ...], cfg,
                   data_path: str | None = None, say=None):
    """Train ``variants`` ((algorithm, shift) pairs) with ``cfg`` (a TrainConfig) on the
    registered versions ``refs``; runs done before are skipped: (epoch rows, run
    summary, table)."""
    from .simulation import simulate_refs

    return simulate_refs(registry(settings), refs, variants, seeds, cfg, data_path, say)


def run_report(settings: Settings, wafer: str, out: str | Path | None = None, say=None):
    """Write a wafer's report (figures + HTML) to ``out``, default ``<reports>/<wafer>``."""
    from .identifiers import check_identifier
    from .report import write_report

    check_identifier(wafer, "wafer")  # the default folder is named after it
    return write_report(store(settings), registry(settings), wafer,
                        Path(out) if out else settings.reports / wafer, progress=say)

