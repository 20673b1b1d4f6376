"""One function per ``ferroflow`` command: parsed arguments in, an exit code out.

Each turns its arguments into settings and plain values, calls the application layer
(``pipeline.app``) and prints through ``format``. Only ``run`` and ``serve`` hand over to
the Prefect flows, imported inside them: the library itself never imports ``flows``.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import InputError
from ..identifiers import check_identifier
from ..settings import Settings, get_settings
from ..simulation.catalog import algorithm_info, algorithm_names
from ..storage import is_url
from ..units import format_seconds
from .format import (Output, Progress, fit_table, lineage_text, narrator, sim_table,
                     strict_json, table, version_text, warn)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


class UsageError(InputError):
    """Arguments that cannot work together or cannot fit: exit 2 before work starts."""


def _settings(args) -> Settings:
    return get_settings().with_overrides(store=args.store, registry=args.registry)


def _output(args) -> Output:
    return Output(json=args.json, quiet=args.quiet)


# --- generate -----------------------------------------------------------------
def generate(args) -> int:
    from ..generator import GeneratorConfig, generate_wafer

    given = {k: v for k, v in (("devices_per_die", args.devices), ("cycles", args.cycles)) if v}
    make = GeneratorConfig.staircase if args.protocol == "staircase" else GeneratorConfig
    cfg = make(wafer=args.wafer, seed=args.seed, dies_x=args.dies, dies_y=args.dies, **given)
    if not args.out.strip():  # '' would be the current folder
        raise UsageError("--out is empty: give the folder for the raw files")
    try:
        cfg.check_size()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = generate_wafer(cfg, Path(args.out), fmt=args.format,
                            progress=Progress("generate", args.quiet))
    _output(args).result(f"wrote {len(result.files)} files for wafer {args.wafer} to {args.out} "
                         f"(ground truth: {Path(args.out) / '_ground_truth.csv'})",
                         {"files": [str(f) for f in result.files], "wafer": args.wafer})
    return EXIT_OK


# --- ingest -------------------------------------------------------------------
def _trace_options(args):
    from ..readers import TraceOptions

    if not (args.wafer or args.device or args.pulse_width):
        return None
    if not (args.wafer and args.device and args.pulse_width):
        raise UsageError("two-column traces need all of --wafer, --device and --pulse-width")
    return TraceOptions(wafer=args.wafer, device=args.device, pulse_width_s=args.pulse_width,
                        die=args.die, amplitude_v=args.amplitude, state_unit=args.state_unit)


def _overrides(pairs) -> dict[str, str]:
    """``--set FIELD=VALUE`` pairs, each checked (a known field, a number where one is
    meant) before any file is read."""
    from ..readers.common import die_position
    from ..readers.mapping import parse_override

    out = {}
    for pair in pairs or ():
        field, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not field:
            raise UsageError(f"--set takes FIELD=VALUE (e.g. die=X05Y29), got {pair!r}")
        if out.get(field, value) != value:
            raise UsageError(f"--set {field} given twice: {out[field]!r} and {value!r}")
        out[field] = value
        try:
            parse_override(field, value)
            if field in IDENTIFIER_FIELDS:  # they become store partitions and model names
                named = die_position(value)[0] if field == "die" else value  # "(3, 4)" is X03Y04
                check_identifier(named, f"--set {field}")
        except InputError as exc:
            raise UsageError(exc.message) from None
    return out


IDENTIFIER_FIELDS = ("wafer", "die", "device")


def ingest(args) -> int:
    from .. import app
    from ..ingest import Outcome

    settings, out = _settings(args), _output(args)
    if args.ltp or args.ltd:
        trace = _trace_options(args)
        if trace is None:
            raise UsageError("--ltp/--ltd traces need --wafer, --device and --pulse-width")
        report = app.run_ingest_ltp_ltd(settings, args.ltp, args.ltd, trace, _overrides(args.set))
    elif not args.paths and not args.incoming:
        raise UsageError("give files or folders to ingest, or --incoming")
    elif args.paths and args.incoming:  # --incoming would drop the paths unread
        raise UsageError("give files or folders, or --incoming, not both")
    else:
        report = app.run_ingest(settings, args.paths, incoming=args.incoming, mapping=args.mapping,
                                trace=_trace_options(args), min_age_s=args.min_age,
                                overrides=_overrides(args.set),
                                progress=Progress("ingest", out.silent))
    if not out.silent:
        for o in report.outcomes:
            if o.status in (Outcome.QUARANTINED, Outcome.SKIPPED):
                warn(f"{o.status}: {o.reason}")
            elif o.reason:  # stored, but something after it failed (archiving)
                warn(f"warning: {o.reason}")
    out.result(f"ingest: {report.summary()} -> {settings.store}", report.to_json())
    return EXIT_PARTIAL if report.refused else EXIT_OK


# --- fit ----------------------------------------------------------------------
def fit(args) -> int:
    from .. import app

    out = _output(args)
    try:  # it names every model registered, after the whole fit
        check_identifier(args.stack, "--stack")
    except InputError as exc:
        raise UsageError(exc.message) from None
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file: give a folder for the fit tables")
    result, registered = app.run_fit(_settings(args), args.wafer, args.pulse_width,
                                     workers=args.workers, stack=args.stack, engine=args.engine,
                                     progress=Progress("fit", out.silent), as_of=args.as_of)
    if args.out:
        result.save(Path(args.out))
    bad = result.devices[result.devices["family"].isna()]
    flags = [{"wafer": r.wafer, "die": r.die, "device": r.device, "pulse_width_s": r.pulse_width_s,
              "flag": r.flag} for r in bad.itertuples()]
    refs = [f"{r.ref} ({'new' if r.created else 'unchanged'})" for r in registered]
    machine = {"wafer": args.wafer, "devices": len(result.devices), "flagged": len(flags),
               "flags": flags, "registered": [{"ref": str(r.ref), "created": r.created,
                                               "pulse_width_s": r.pulse_width_s} for r in registered],
               "by_pulse_width": result.population.to_dict(orient="records")}
    if not out.silent:
        for f in flags:  # one line per flagged series, before the table
            warn(f"flagged: {f['wafer']}/{f['die']}/{f['device']} at "
                 f"{format_seconds(f['pulse_width_s'])}: {f['flag']}")
    if len(flags) == len(result.devices):
        if args.json:
            out.result("", machine)
        raise InputError(f"nothing registered: all {len(flags)} device series of wafer "
                         f"{args.wafer!r} are flagged")
    out.result(fit_table(result) + "\nregistered: " + ", ".join(refs), machine)
    return EXIT_PARTIAL if flags else EXIT_OK


# --- models: one function per action ---------------------------------------------
def _registry(args):
    from .. import app

    return app.registry(_settings(args))


def _show_frame(args, df) -> int:
    _output(args).result(table(df), df.to_dict(orient="records"))
    return EXIT_OK


def models_list(args) -> int:
    return _show_frame(args, _registry(args).list())


def models_show(args) -> int:
    reg = _registry(args)
    info = reg.get(args.ref)
    pop = reg.load(info["ref"]).population[["param", "median", "spread", "rel_spread", "n"]]
    _output(args).result(version_text(info, pop),
                         {**info, "population": pop.to_dict(orient="records")})
    return EXIT_OK


def models_history(args) -> int:
    from ..registry import Ref

    return _show_frame(args, _registry(args).history(Ref.parse(args.ref).name))


def models_search(args) -> int:
    low, high = args.pulse_width_min, args.pulse_width_max
    if low is not None and high is not None and low > high:
        raise UsageError(f"--pulse-width-min {low:g} is above --pulse-width-max {high:g}: "
                         "nothing could match")
    found = _registry(args).search(
        wafer=args.wafer, pulse_width_min=args.pulse_width_min,
        pulse_width_max=args.pulse_width_max, tags=tuple(args.tag or ()), family=args.family,
        min_r2=args.min_r2, max_failed=args.max_failed, latest_only=not args.all_versions)
    return _show_frame(args, found)


def models_alias(args) -> int:
    from ..registry import Ref

    reg, out = _registry(args), _output(args)
    if args.remove:
        name = Ref.parse(args.ref).name
        reg.remove_alias(name, args.name)
        out.result(f"removed alias {name}@{args.name}", {"removed": args.name})
    else:
        target = reg.set_alias(args.ref, args.name)
        out.result(f"{target.name}@{args.name} -> {target}",
                   {"alias": args.name, "ref": str(target)})
    return EXIT_OK


def models_tag(args) -> int:
    reg = _registry(args)
    reg.add_tag(args.ref, args.name)
    _output(args).result(f"tagged {reg.resolve(args.ref)} with {args.name}", {"tag": args.name})
    return EXIT_OK


def models_lineage(args) -> int:
    lin = _registry(args).lineage(args.ref)
    _output(args).result(lineage_text(lin), lin)
    return EXIT_OK


def models_import(args) -> int:
    from ..importer import import_model

    reg = _registry(args)
    done = [import_model(reg, path) for path in args.files]
    human = "\n".join(f"{d.ref} ({'new' if d.created else 'unchanged'}): {d.model.family}, "
                      f"{format_seconds(d.model.pulse_width_s)}, imported from {d.model.citation}"
                      for d in done)
    _output(args).result(human, [{"ref": str(d.ref), "created": d.created, "file": str(d.model.path),
                                  "citation": d.model.citation} for d in done])
    return EXIT_OK


MODELS = {"list": models_list, "show": models_show, "history": models_history,
          "search": models_search, "alias": models_alias, "tag": models_tag,
          "lineage": models_lineage, "import": models_import}


# --- simulate -------------------------------------------------------------------
def _variants(args):
    algos = args.algorithm or algorithm_names()
    out = []
    for a in algos:
        if not algorithm_info(a).analog:  # nothing to shift
            out.append((a, False))
            continue
        if args.shift_symmetry_point in ("off", "both"):
            out.append((a, False))
        if args.shift_symmetry_point in ("on", "both"):
            out.append((a, True))
    return tuple(dict.fromkeys(out))


def _check_size(args, n_refs: int, variants) -> None:
    """Refuse a sweep that cannot fit in memory, with the estimate, before any work."""
    from ..simulation.budget import check_sweep

    per_seed = sum(n_refs if algorithm_info(a).analog else 1 for a, _ in variants)
    try:
        check_sweep(args.seeds * per_seed, tuple(args.hidden), "mnist" if args.mnist else args.dataset)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def simulate(args) -> int:
    from .. import app
    from ..simulation import TrainConfig

    settings, out = _settings(args), _output(args)
    if args.wafer:
        refs = app.wafer_refs(settings, args.wafer)
    elif args.refs:
        refs = args.refs
    else:
        raise UsageError("give model refs (NAME, NAME@3, NAME@alias) or --wafer for a sweep")
    variants = _variants(args)
    _check_size(args, len(refs), variants)
    cfg = TrainConfig(hidden=tuple(args.hidden), epochs=args.epochs, lr=args.lr,
                      target_accuracy=args.target, activation=args.activation)
    _, summary, runs = app.run_simulation(settings, refs, variants, tuple(range(args.seeds)),
                                          cfg, args.mnist or args.dataset, say=narrator(out.silent))
    out.result(sim_table(runs), {"runs": summary.to_dict(orient="records"),
                                 "table": runs.to_dict(orient="records")})
    return EXIT_OK


# --- reproduce ---------------------------------------------------------------------
def reproduce(args) -> int:
    from ..reproduce import markdown, reproduce as run_reproduction, save

    out = _output(args)
    registry = _registry(args)
    rep = run_reproduction(registry, seeds=args.seeds, epochs=args.epochs, dataset=args.dataset,
                           progress=narrator(out.silent))
    folder = save(rep, registry)
    out.result(markdown(rep) + f"\nsaved: {folder}",
               {"folder": str(folder), "wall_s": rep.wall_s, "settings": rep.settings,
                "claims": [{"text": c.text, "verdict": c.verdict, "evidence": c.evidence}
                           for c in rep.claims],
                "explanations": rep.explanations, "table": rep.table.to_dict(orient="records")})
    return EXIT_OK


# --- report ------------------------------------------------------------------------
def report(args) -> int:
    from .. import app

    out = _output(args)
    rep = app.run_report(_settings(args), args.wafer, args.out, say=narrator(out.silent))
    out.result(f"report: {rep.html} ({len(rep.figures)} figures, {len(rep.tables)} tables)",
               {"html": str(rep.html), "figures": {k: str(v) for k, v in rep.figures.items()},
                "tables": {k: v.to_dict(orient="records") for k, v in rep.tables.items()}})
    return EXIT_OK


# --- run / serve (Prefect) ----------------------------------------------------------
def _flow_paths(args) -> dict:
    """The store and registry given on the command line, absolute, for the flows'
    parameters (None: the flows take the FERRO_* defaults)."""
    return {name: (value if is_url(value) else str(Path(value).resolve())) if value else None
            for name, value in (("store", args.store), ("registry", args.registry))}


def run(args) -> int:
    from .. import app

    if args.flow == "fit" and args.wafer:
        app.require_stored(_settings(args), args.wafer)
    if args.flow == "simulate" and not args.ref:
        raise UsageError("ferroflow run simulate needs --ref NAME[@VERSION|@ALIAS]")
    from flows.definitions import FLOWS, with_runner

    f = with_runner(FLOWS[args.flow], args.task_runner, args.dask_address)
    paths = _flow_paths(args)
    if args.flow == "wafer":
        result = f(paths=args.path or None, epochs=args.epochs, seeds=args.seeds, **paths)
    elif args.flow == "ingest":
        result = f(paths=args.path or None, incoming=not args.path, **paths)
    elif args.flow == "fit":
        result = f(wafer=args.wafer, epochs=args.epochs, seeds=args.seeds, **paths)
    else:
        result = f(ref=args.ref, epochs=args.epochs, seeds=args.seeds, **paths)
    _output(args).result(strict_json(result), {"result": result})
    return EXIT_OK


def serve(args) -> int:
    # flows.server imports no Prefect: Prefect reads PREFECT_API_URL when first imported,
    # so the server's address is set before flows.serve brings Prefect in
    from flows.server import prefect_api

    settings = _settings(args)
    with prefect_api(args.host, args.port) as started:
        if started:
            print(f"prefect server: {started} (UI at http://{args.host}:{args.port})", flush=True)
        from flows.serve import serve_all

        print(f"serving: landing folder {settings.incoming} every "
              f"{args.cron or f'{args.interval:g}s'}; Ctrl-C stops", flush=True)
        serve_all(interval=None if args.cron else args.interval, cron=args.cron, epochs=args.epochs,
                  **_flow_paths(args))
    return EXIT_OK


def deploy(args) -> int:
    import os

    if not os.environ.get("PREFECT_API_URL"):
        raise InputError("ferroflow deploy needs a Prefect server that workers reach: set "
                         "PREFECT_API_URL (e.g. http://prefect.lab:4200/api)")
    from flows.serve import deploy_all

    ids = deploy_all(args.pool, interval=None if args.cron else args.interval, cron=args.cron,
                     epochs=args.epochs, **_flow_paths(args))
    _output(args).result(f"{len(ids)} deployments on work pool {args.pool!r}; run them with "
                         f"`prefect worker start --pool {args.pool}` on any machine with ferroflow",
                         {"pool": args.pool, "deployments": [str(i) for i in ids]})
    return EXIT_OK


# --- store --------------------------------------------------------------------------
def store(args) -> int:
    from .. import app

    settings, out = _settings(args), _output(args)
    if args.action == "convert" and not args.old:
        raise UsageError("ferroflow store convert needs the old store folder")
    if args.action != "convert" and args.old:
        raise UsageError(f"ferroflow store {args.action} takes no folder (got {args.old!r}); "
                         "the store is --store or $FERRO_STORE")
    measurements = app.store(settings)
    if args.action == "convert":
        from ..convert import convert_legacy

        c = convert_legacy(args.old, measurements)
        out.result(f"converted {len(c.stored)} file(s), {c.rows} rows: {args.old} -> "
                   f"{settings.store} (version {c.version})",
                   {"files": len(c.stored), "rows": c.rows, "version": c.version})
    elif args.action == "vacuum":
        removed = measurements.vacuum(args.retention_hours)
        out.result(f"removed {len(removed)} unreferenced file(s)", {"removed": removed})
    else:
        info = {"store": str(settings.store), "version": measurements.version(),
                "rows": measurements.rows(), "partitions": [list(p) for p in measurements.partitions()]}
        out.result(strict_json(info), info)
    return EXIT_OK


# --- demo ---------------------------------------------------------------------
def demo(args) -> int:
    from .. import app
    from ..simulation import DEFAULT_VARIANTS, TrainConfig

    settings = _settings(args)
    t0 = time.monotonic()
    ingested = app.run_ingest(settings, [settings.sample], progress=Progress("ingest", args.quiet))
    print(f"[demo] ingest: {ingested.summary()} ({time.monotonic() - t0:.1f}s)")
    t0 = time.monotonic()
    result, registered = app.run_fit(settings, "W01", progress=Progress("fit", args.quiet))
    print(fit_table(result))
    print(f"[demo] fit + register: {', '.join(str(r.ref) for r in registered)} "
          f"({time.monotonic() - t0:.1f}s)")
    t0 = time.monotonic()
    refs = [str(r.ref) for r in registered]
    _, _, runs = app.run_simulation(settings, refs, DEFAULT_VARIANTS, (0,),
                                    TrainConfig(epochs=args.epochs), say=narrator(args.quiet))
    print(sim_table(runs))
    print(f"[demo] simulate: {len(runs)} configurations, {args.epochs} epochs "
          f"({time.monotonic() - t0:.1f}s)")
    t0 = time.monotonic()
    rep = app.run_report(settings, "W01", say=narrator(args.quiet))
    print(f"[demo] report: {rep.html} ({len(rep.figures)} figures, {time.monotonic() - t0:.1f}s)")
    return EXIT_PARTIAL if ingested.refused else EXIT_OK
