"""The ``ferroflow`` command line.

Exit codes: 0 success; 1 error (one line on stderr; ``--debug`` for the traceback);
2 usage error; 3 finished, but some input was quarantined or some fits were flagged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import InputError
from .settings import Settings, get_settings
from .storage import is_url
from .units import format_seconds

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


class Progress:
    """A one-line progress bar on stderr for long work; silent when quiet or not a tty
    (then a summary line every 10 % is printed instead, so logs still show progress)."""

    def __init__(self, label: str, quiet: bool = False):
        self.label, self.quiet = label, quiet
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()
        self._last_decile = 0

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or total < 20:
            return
        frac = done / total
        if self.tty:
            bar = "#" * int(30 * frac)
            end = "\n" if done == total else ""
            print(f"\r{self.label} [{bar:<30}] {done}/{total} {time.monotonic() - self.start:5.1f}s",
                  end=end, file=sys.stderr, flush=True)
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            print(f"{self.label}: {done}/{total}", file=sys.stderr, flush=True)


def _settings(args) -> Settings:
    return get_settings().with_overrides(store=getattr(args, "store", None),
                                         registry=getattr(args, "registry", None))


def _out(args, human: str, machine: dict) -> None:
    if args.json:
        print(json.dumps(machine, indent=1, default=str))
    elif not args.quiet:
        print(human)


# --- generate -----------------------------------------------------------------
def cmd_generate(args) -> int:
    from .generator import GeneratorConfig, generate_wafer

    cfg = GeneratorConfig(wafer=args.wafer, seed=args.seed, dies_x=args.dies, dies_y=args.dies,
                          devices_per_die=args.devices, cycles=args.cycles)
    result = generate_wafer(cfg, Path(args.out), fmt=args.format,
                            progress=Progress("generate", args.quiet))
    _out(args, f"wrote {len(result.files)} files for wafer {args.wafer} to {args.out} "
               f"(ground truth: {Path(args.out) / '_ground_truth.csv'})",
         {"files": [str(f) for f in result.files], "wafer": args.wafer})
    return EXIT_OK


# --- ingest -------------------------------------------------------------------
def _trace_options(args):
    from .readers import TraceOptions

    if not (args.wafer or args.device or args.pulse_width):
        return None
    if not (args.wafer and args.device and args.pulse_width):
        raise InputError("two-column traces need all of --wafer, --device and --pulse-width")
    return TraceOptions(wafer=args.wafer, device=args.device, pulse_width_s=args.pulse_width,
                        die=args.die, amplitude_v=args.amplitude, state_unit=args.state_unit)


def run_ingest(settings: Settings, paths, *, incoming: bool, mapping=None, trace=None,
               quiet=False, min_age_s: float = 5.0):
    from .ingest import ingest, ready_files
    from .readers import load_mapping
    from .store import MeasurementStore

    if incoming:
        paths = ready_files(settings.incoming, min_age_s=min_age_s)
    return ingest(paths, MeasurementStore(settings.store), settings.quarantine,
                  mapping=load_mapping(mapping) if mapping else None, trace=trace,
                  move_from=settings.incoming, processed_dir=settings.processed,
                  progress=Progress("ingest", quiet))


def cmd_ingest(args) -> int:
    settings = _settings(args)
    if not args.paths and not args.incoming:
        raise InputError("give files or folders to ingest, or --incoming")
    report = run_ingest(settings, args.paths, incoming=args.incoming, mapping=args.mapping,
                        trace=_trace_options(args), quiet=args.quiet or args.json,
                        min_age_s=args.min_age)
    if not args.json and not args.quiet:
        for o in report.outcomes:
            if o.status == "quarantined":
                print(f"quarantined: {o.reason}", file=sys.stderr)
    _out(args, f"ingest: {report.summary()} -> {settings.store}", report.to_json())
    return EXIT_PARTIAL if report.count("quarantined") else EXIT_OK


# --- fit ----------------------------------------------------------------------
def fit_table(result) -> str:
    """One line per pulse width: what a device engineer scans first."""
    pop = result.population
    lines = [f"{'wafer':<8}{'pulse':>9}{'devices':>8}{'flagged':>8}  {'family':<11}"
             f"{'SP (norm)':>17}{'k_up':>16}{'k_down':>16}{'c2c':>7}{'E/pulse':>10}  energy"]
    for (wafer, pw), devs in result.devices.groupby(["wafer", "pulse_width_s"], sort=True):
        p = pop[(pop.wafer == wafer) & (pop.pulse_width_s == pw)].set_index("param")

        def stat(name, fmt):
            if name not in p.index:
                return "-"
            return f"{p.at[name, 'median']:{fmt}}±{p.at[name, 'spread']:{fmt}}"

        fam = devs["family"].mode()
        energy = devs["energy_per_pulse_j"].median()
        lines.append(
            f"{wafer:<8}{format_seconds(pw):>9}{len(devs):>8}{int(devs['family'].isna().sum()):>8}  "
            f"{(fam.iloc[0] if len(fam) else '-'):<11}{stat('sp_norm', '.3f'):>17}"
            f"{stat('k_p', '.4f'):>16}{stat('k_d', '.4f'):>16}"
            f"{devs['c2c_rel'].median():>7.2f}{energy * 1e12:>8.3g}pJ  "
            f"{devs['energy_source'].mode().iloc[0]}")
    return "\n".join(lines)


def run_fit(settings: Settings, wafer: str, pulse_width: float | None, workers: int = 0,
            quiet: bool = False, stack: str = "hzo", as_of: int | None = None):
    from .fitting import FitConfig
    from .publish import fit_and_register
    from .registry import Registry
    from .store import MeasurementStore

    return fit_and_register(Registry(settings.registry), MeasurementStore(settings.store), wafer,
                            pulse_width, stack=stack, config=FitConfig(workers=workers),
                            progress=Progress("fit", quiet), as_of=as_of)


def cmd_fit(args) -> int:
    settings = _settings(args)
    result, registered = run_fit(settings, args.wafer, args.pulse_width, args.workers,
                                 args.quiet or args.json, args.stack, args.as_of)
    if args.out:
        result.save(Path(args.out))
    flagged = int(result.devices["family"].isna().sum())
    refs = [f"{r.ref} ({'new' if r.created else 'unchanged'})" for r in registered]
    machine = {"wafer": args.wafer, "devices": len(result.devices), "flagged": flagged,
               "registered": [{"ref": str(r.ref), "created": r.created,
                               "pulse_width_s": r.pulse_width_s} for r in registered],
               "by_pulse_width": result.population.to_dict(orient="records")}
    _out(args, fit_table(result) + "\nregistered: " + ", ".join(refs), machine)
    return EXIT_PARTIAL if flagged else EXIT_OK


# --- models ---------------------------------------------------------------------
def _table(df) -> str:
    import pandas as pd

    if df.empty:
        return "(none)"
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.4g}".format):
        return df.to_string(index=False)


def cmd_models(args) -> int:
    from .registry import Ref, Registry

    reg = Registry(_settings(args).registry)
    action = args.action
    if action == "list":
        df = reg.list()
        _out(args, _table(df), df.to_dict(orient="records"))
    elif action == "show":
        info = reg.get(args.ref)
        version = reg.load(info["ref"])
        pop = version.population[["param", "median", "spread", "rel_spread", "n"]]
        human = "\n".join(f"{k}: {v}" for k, v in info.items()) + "\n\npopulation:\n" + _table(pop)
        _out(args, human, {**info, "population": pop.to_dict(orient="records")})
    elif action == "history":
        df = reg.history(Ref.parse(args.ref).name)
        _out(args, _table(df), df.to_dict(orient="records"))
    elif action == "search":
        df = reg.search(wafer=args.wafer, pulse_width_min=args.pulse_width_min,
                        pulse_width_max=args.pulse_width_max, tags=tuple(args.tag or ()),
                        family=args.family, min_r2=args.min_r2, max_failed=args.max_failed,
                        latest_only=not args.all_versions)
        _out(args, _table(df), df.to_dict(orient="records"))
    elif action == "alias":
        if args.remove:
            reg.remove_alias(Ref.parse(args.ref).name, args.name)
            _out(args, f"removed alias {Ref.parse(args.ref).name}@{args.name}", {"removed": args.name})
        else:
            target = reg.set_alias(args.ref, args.name)
            _out(args, f"{target.name}@{args.name} -> {target}", {"alias": args.name, "ref": str(target)})
    elif action == "tag":
        reg.add_tag(args.ref, args.name)
        _out(args, f"tagged {reg.resolve(args.ref)} with {args.name}", {"tag": args.name})
    elif action == "lineage":
        lin = reg.lineage(args.ref)
        human = (f"{lin['ref']}\n  fit config {lin['fit_config_hash']}, code {lin['code_version']}\n"
                 f"  raw files ({len(lin['raw_files'])}):\n"
                 + "\n".join(f"    {r['file_name']}  {r['sha256']}" for r in lin["raw_files"])
                 + f"\n  simulation runs ({len(lin['runs'])}):\n"
                 + "\n".join(f"    {r['run_id']}  {r['kind']}  {r['path']}" for r in lin["runs"]))
        _out(args, human, lin)
    return EXIT_OK


# --- simulate -------------------------------------------------------------------
def _variants(args):
    algos = args.algorithm or ["fp", "analog-sgd", "mixed-precision"]
    out = []
    for a in algos:
        if a == "fp":
            out.append(("fp", False))
            continue
        if args.shift_symmetry_point in ("off", "both"):
            out.append((a, False))
        if args.shift_symmetry_point in ("on", "both"):
            out.append((a, True))
    return tuple(dict.fromkeys(out))


def run_simulation(settings: Settings, refs: list[str], variants, seeds, cfg, data_path=None,
                   quiet=False):
    from .registry import Registry
    from .simulation import simulate_refs

    say = (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    return simulate_refs(Registry(settings.registry), refs, variants, seeds, cfg, data_path, say)


def sim_table(table) -> str:
    lines = [f"{'pulse':>9}  {'algorithm':<26}{'seeds':>5}{'test acc':>15}{'epochs->target':>15}"
             f"{'pulses/epoch':>14}{'E/pulse':>10}{'energy':>12}"]
    for r in table.itertuples():
        pw = format_seconds(r.pulse_width_s) if r.pulse_width_s == r.pulse_width_s else "-"
        ept = f"{r.epochs_to_target:.1f} ({r.reached}/{r.seeds})" if r.reached else f"never (0/{r.seeds})"
        lines.append(f"{pw:>9}  {r.label:<26}{r.seeds:>5}{r.acc_mean:>9.3f}±{(r.acc_sd if r.acc_sd == r.acc_sd else 0):.3f}"
                     f"{ept:>15}{r.pulses_per_epoch:>14.3g}{r.energy_per_pulse_j * 1e12:>8.3g}pJ"
                     f"{r.energy_j * 1e6:>10.3g}uJ")
    return "\n".join(lines)


def cmd_simulate(args) -> int:
    from .registry import Registry
    from .simulation import TrainConfig

    settings = _settings(args)
    if args.wafer:
        found = Registry(settings.registry).search(wafer=args.wafer)
        refs = [f"{r.name}@{r.version}" for r in found.itertuples()]
        if not refs:
            raise InputError(f"no registered models for wafer {args.wafer!r} (run ferroflow fit)")
    elif args.refs:
        refs = args.refs
    else:
        raise InputError("give model refs (NAME, NAME@3, NAME@alias) or --wafer for a sweep")
    cfg = TrainConfig(hidden=tuple(args.hidden), epochs=args.epochs, lr=args.lr,
                      target_accuracy=args.target, activation=args.activation)
    epochs, summary, table = run_simulation(settings, refs, _variants(args), tuple(range(args.seeds)),
                                            cfg, args.mnist, quiet=args.quiet or args.json)
    _out(args, sim_table(table), {"runs": summary.to_dict(orient="records"),
                                  "table": table.to_dict(orient="records")})
    return EXIT_OK


# --- report ------------------------------------------------------------------------
def run_report(settings: Settings, wafer: str, out: str | None = None, quiet: bool = False):
    from .registry import Registry
    from .report import write_report
    from .store import MeasurementStore

    say = (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    return write_report(MeasurementStore(settings.store), Registry(settings.registry), wafer,
                        Path(out) if out else settings.reports / wafer, progress=say)


def cmd_report(args) -> int:
    rep = run_report(_settings(args), args.wafer, args.out, args.quiet or args.json)
    _out(args, f"report: {rep.html} ({len(rep.figures)} figures, {len(rep.tables)} tables)",
         {"html": str(rep.html), "figures": {k: str(v) for k, v in rep.figures.items()},
          "tables": {k: v.to_dict(orient="records") for k, v in rep.tables.items()}})
    return EXIT_OK


# --- store --------------------------------------------------------------------------
def cmd_store(args) -> int:
    from .store import MeasurementStore

    settings = _settings(args)
    store = MeasurementStore(settings.store)
    if args.action == "convert":
        from .convert import convert_legacy

        if not args.old:
            raise InputError("ferroflow store convert needs the old store folder")
        c = convert_legacy(args.old, store)
        _out(args, f"converted {len(c.stored)} file(s), {c.rows} rows: {args.old} -> "
                   f"{settings.store} (version {c.version})",
             {"files": len(c.stored), "rows": c.rows, "version": c.version})
    elif args.action == "vacuum":
        removed = store.vacuum(args.retention_hours)
        _out(args, f"removed {len(removed)} unreferenced file(s)", {"removed": removed})
    else:
        info = {"store": str(settings.store), "version": store.version(), "rows": store.rows(),
                "partitions": [list(p) for p in store.partitions()]}
        _out(args, json.dumps(info, indent=1), info)
    return EXIT_OK


# --- run / serve (Prefect) ----------------------------------------------------------
def cmd_run(args) -> int:
    import os

    # flows (and Dask workers) read their paths and runner from the environment
    for var, path in (("FERRO_STORE", args.store), ("FERRO_REGISTRY", args.registry)):
        if path:
            os.environ[var] = path if is_url(path) else str(Path(path).resolve())
    for var, value in (("FERRO_TASK_RUNNER", args.task_runner), ("FERRO_DASK_ADDRESS", args.dask_address)):
        if value:
            os.environ[var] = value
    if args.flow == "fit" and args.wafer:
        from .store import MeasurementStore

        store = _settings(args).store
        if not any(w == args.wafer for w, _ in MeasurementStore(store).partitions()):
            raise InputError(f"no stored data for wafer {args.wafer!r} in {store} (ingest first)")
    from flows.definitions import FLOWS, with_runner

    f = with_runner(FLOWS[args.flow])
    if args.flow == "wafer":
        out = f(paths=args.path or None, epochs=args.epochs, seeds=args.seeds)
    elif args.flow == "ingest":
        out = f(paths=args.path or None, incoming=not args.path)
    elif args.flow == "fit":
        out = f(wafer=args.wafer, epochs=args.epochs, seeds=args.seeds)
    else:
        if not args.ref:
            raise InputError("ferroflow run simulate needs --ref NAME[@VERSION|@ALIAS]")
        out = f(ref=args.ref, epochs=args.epochs, seeds=args.seeds)
    _out(args, json.dumps(out, indent=1, default=str), {"result": out})
    return EXIT_OK


def cmd_deploy(args) -> int:
    import os

    if not os.environ.get("PREFECT_API_URL"):
        raise InputError("ferroflow deploy needs a Prefect server that workers reach: set "
                         "PREFECT_API_URL (e.g. http://prefect.lab:4200/api)")
    from flows.serve import deploy_all

    ids = deploy_all(args.pool, interval=None if args.cron else args.interval, cron=args.cron,
                     epochs=args.epochs)
    _out(args, f"{len(ids)} deployments on work pool {args.pool!r}; run them with "
               f"`prefect worker start --pool {args.pool}` on any machine with ferroflow",
         {"pool": args.pool, "deployments": [str(i) for i in ids]})
    return EXIT_OK


def start_local_server(host: str, port: int, timeout_s: float = 90.0):
    """``prefect server start`` on host:port; returns (process, api_url) once healthy."""
    import os
    import subprocess
    import urllib.request

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


def cmd_serve(args) -> int:
    import os

    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server, url = start_local_server(args.host, args.port)
        os.environ["PREFECT_API_URL"] = url
        print(f"prefect server: {url} (UI at http://{args.host}:{args.port})", flush=True)
    from flows.serve import serve_all

    print(f"serving: landing folder {get_settings().incoming} every "
          f"{args.cron or f'{args.interval:g}s'}; Ctrl-C stops", flush=True)
    try:
        serve_all(interval=None if args.cron else args.interval, cron=args.cron, epochs=args.epochs)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return EXIT_OK


# --- demo ---------------------------------------------------------------------
def cmd_demo(args) -> int:
    settings = _settings(args)
    t0 = time.monotonic()
    report = run_ingest(settings, [settings.sample], incoming=False, quiet=args.quiet)
    print(f"[demo] ingest: {report.summary()} ({time.monotonic() - t0:.1f}s)")
    t0 = time.monotonic()
    result, registered = run_fit(settings, "W01", None, quiet=args.quiet)
    print(fit_table(result))
    print(f"[demo] fit + register: {', '.join(str(r.ref) for r in registered)} "
          f"({time.monotonic() - t0:.1f}s)")
    from .simulation import DEFAULT_VARIANTS, TrainConfig

    t0 = time.monotonic()
    refs = [str(r.ref) for r in registered]
    _, _, table = run_simulation(settings, refs, DEFAULT_VARIANTS, (0,), TrainConfig(epochs=args.epochs),
                                 quiet=args.quiet)
    print(sim_table(table))
    print(f"[demo] simulate: {len(table)} configurations, {args.epochs} epochs "
          f"({time.monotonic() - t0:.1f}s)")
    t0 = time.monotonic()
    rep = run_report(settings, "W01", quiet=args.quiet)
    print(f"[demo] report: {rep.html} ({len(rep.figures)} figures, {time.monotonic() - t0:.1f}s)")
    return EXIT_PARTIAL if report.count("quarantined") else EXIT_OK


# --- parser -------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="measurement store root (default: $FERRO_STORE or "
                   "raw_measurements/store)")
    p.add_argument("--registry", help="model registry root (default: $FERRO_REGISTRY or models/)")
    p.add_argument("--json", action="store_true", help="print a machine-readable result")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def _schedule(p: argparse.ArgumentParser) -> None:
    """Options of the deployments (serve and deploy)."""
    p.add_argument("--interval", type=float, default=60.0, help="seconds between landing-folder scans")
    p.add_argument("--cron", help="cron schedule instead of an interval")
    p.add_argument("--epochs", type=int, default=5, help="training epochs of triggered simulations")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="ferroflow", formatter_class=fmt,
        description="Characterization pipeline for ferroelectric synaptic devices.",
        epilog="exit codes: 0 ok, 1 error, 2 usage error, 3 done but input quarantined "
               "or fits flagged")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the whole pipeline on the shipped sample wafer",
                       formatter_class=fmt, epilog="example:\n  ferroflow demo")
    _common(p)
    p.add_argument("--epochs", type=int, default=5, help="training epochs per run (default 5)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", help="write a synthetic wafer of raw files",
                       formatter_class=fmt,
                       epilog="example:\n  ferroflow generate --wafer W02 --out /tmp/W02 --seed 7")
    _common(p)
    p.add_argument("--wafer", default="W01")
    p.add_argument("--out", required=True, help="folder for the raw files")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dies", type=int, default=5, help="dies per side of the grid (default 5)")
    p.add_argument("--devices", type=int, default=2, help="devices per die (default 2)")
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--format", choices=["instrument", "tidy"], default="instrument")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("ingest", help="read, validate and store raw files",
                       formatter_class=fmt,
                       epilog="examples:\n  ferroflow ingest raw_measurements/sample\n"
                              "  ferroflow ingest --incoming\n"
                              "  ferroflow ingest trace.csv --wafer GONG --device R1 "
                              "--pulse-width 1e-6")
    _common(p)
    p.add_argument("paths", nargs="*", help="files or folders")
    p.add_argument("--incoming", action="store_true",
                   help="ingest the complete files of the landing folder")
    p.add_argument("--min-age", type=float, default=5.0,
                   help="seconds a landing file must stay unchanged (default 5)")
    p.add_argument("--mapping", help="mapping TOML for instrument exports "
                   "(default: the generator's format)")
    p.add_argument("--wafer", help="for two-column traces: wafer id")
    p.add_argument("--die", default="X00Y00", help="for two-column traces: die id")
    p.add_argument("--device", help="for two-column traces: device id")
    p.add_argument("--pulse-width", type=float, help="for two-column traces: seconds")
    p.add_argument("--amplitude", type=float, help="for two-column traces: write amplitude, V")
    p.add_argument("--state-unit", default="normalized", choices=["normalized", "S"],
                   help="for two-column traces: unit of the values")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("fit", help="fit device-update models to stored data",
                       formatter_class=fmt,
                       epilog="examples:\n  ferroflow fit --wafer W01\n"
                              "  ferroflow fit --wafer W01 --pulse-width 20e-9 --json\n"
                              "  ferroflow fit --wafer W01 --as-of 3")
    _common(p)
    p.add_argument("--wafer", required=True)
    p.add_argument("--pulse-width", type=float, help="only this pulse width (seconds)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument("--out", help="also save the full fit tables (parquet) to this folder")
    p.add_argument("--stack", default="hzo", help="material/stack part of model names (default hzo)")
    p.add_argument("--as-of", type=int, metavar="VERSION",
                   help="fit the store as it was at this table version (the one a model records)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("simulate", help="hardware-aware training on registered device models",
                       formatter_class=fmt,
                       epilog="examples:\n  ferroflow simulate hzo-W01-20ns --algorithm analog-sgd "
                              "--shift-symmetry-point on --epochs 10\n"
                              "  ferroflow simulate --wafer W01 --seeds 3   # sweep every pulse width")
    _common(p)
    p.add_argument("refs", nargs="*", help="model refs: NAME, NAME@3 or NAME@alias")
    p.add_argument("--wafer", help="sweep the latest models of every pulse width of this wafer")
    p.add_argument("--algorithm", action="append", choices=["fp", "analog-sgd", "mixed-precision"],
                   help="repeatable; default: all three")
    p.add_argument("--shift-symmetry-point", nargs="?", const="on", default="both",
                   choices=["on", "off", "both"],
                   help="analog runs with the reference at each device's symmetry point "
                        "(on), at mid-range (off), or both (default)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..K-1 (default 1)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--hidden", type=int, nargs="+", default=[32], help="hidden layer sizes")
    p.add_argument("--activation", default="sigmoid", choices=["sigmoid", "relu", "tanh"])
    p.add_argument("--target", type=float, default=0.9, help="test accuracy counted as converged")
    p.add_argument("--mnist", help="MNIST folder of IDX files or .npz (default: sklearn digits)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("report", help="figures and an HTML page for a wafer: fits, step maps, "
                       "wafer maps, d2d, training results", formatter_class=fmt,
                       epilog="examples:\n  ferroflow report --wafer W01\n"
                              "  ferroflow report --wafer W01 --out /tmp/W01-report")
    _common(p)
    p.add_argument("--wafer", required=True)
    p.add_argument("--out", help="folder for the PNGs and report.html "
                   "(default: $FERRO_REPORTS/WAFER, i.e. models/reports/WAFER)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("store", help="the measurement store (a Delta table): info, convert, vacuum",
                       formatter_class=fmt,
                       epilog="examples:\n  ferroflow store info\n"
                              "  ferroflow store convert old_store/ --store raw_measurements/store\n"
                              "  ferroflow store vacuum --retention-hours 168")
    _common(p)
    p.add_argument("action", choices=["info", "convert", "vacuum"])
    p.add_argument("old", nargs="?", help="convert: the store of the earlier layout (hive "
                   "folders + _ledger.sqlite); it is left unchanged")
    p.add_argument("--retention-hours", type=int, default=168,
                   help="vacuum: keep unreferenced files younger than this (default 168); "
                        "running writers' parts are unreferenced until they commit")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("run", help="run a Prefect flow here (embedded unless PREFECT_API_URL is set)",
                       formatter_class=fmt,
                       epilog="examples:\n  ferroflow run wafer --path raw_measurements/sample\n"
                              "  ferroflow run fit --wafer W01 --task-runner dask\n"
                              "  ferroflow run simulate --ref hzo-W01-20ns@latest")
    _common(p)
    p.add_argument("flow", choices=["wafer", "ingest", "fit", "simulate"])
    p.add_argument("--path", action="append", help="files or folders (default: the landing folder)")
    p.add_argument("--wafer", help="fit: only this wafer (default: every partition)")
    p.add_argument("--ref", help="simulate: model ref")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--task-runner", choices=["threads", "dask"],
                   help="default: $FERRO_TASK_RUNNER or threads")
    p.add_argument("--dask-address", help="scheduler address; default: a local cluster")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="serve the deployments: scheduled landing-folder ingestion, "
                       "triggered simulations", formatter_class=fmt,
                       epilog="examples:\n  ferroflow serve --interval 60\n"
                              "  PREFECT_API_URL=http://prefect.lab:4200/api ferroflow serve --cron '*/10 * * * *'")
    _common(p)
    _schedule(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address of the server started when PREFECT_API_URL is unset")
    p.add_argument("--port", type=int, default=4200)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("deploy", help="create the deployments on a process work pool, for "
                       "`prefect worker start --pool NAME` on any machine", formatter_class=fmt,
                       epilog="examples:\n  PREFECT_API_URL=http://prefect.lab:4200/api "
                              "ferroflow deploy --pool ferroflow\n"
                              "  ferroflow deploy --pool ferroflow --cron '*/10 * * * *'")
    _common(p)
    p.add_argument("--pool", default="ferroflow", help="process work pool (created if missing)")
    _schedule(p)
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("models", help="the device-model registry", formatter_class=fmt,
                       epilog="REF is NAME, NAME@3 or NAME@ALIAS. examples:\n"
                              "  ferroflow models list\n  ferroflow models show hzo-W01-20ns\n"
                              "  ferroflow models search --wafer W01 --pulse-width-max 1e-6\n"
                              "  ferroflow models alias hzo-W01-20ns@1 production\n"
                              "  ferroflow models lineage hzo-W01-20ns@production")
    models = p.add_subparsers(dest="action", required=True)
    for action, helptext, example in (
            ("list", "latest version of every model", "ferroflow models list --json"),
            ("show", "one version: index row and population", "ferroflow models show hzo-W01-20ns@2"),
            ("history", "every version of a name", "ferroflow models history hzo-W01-20ns"),
            ("search", "versions matching criteria",
             "ferroflow models search --wafer W01 --pulse-width-max 1e-6 --min-r2 0.95"),
            ("alias", "point an alias at a version (or --remove it)",
             "ferroflow models alias hzo-W01-20ns@1 production"),
            ("tag", "add a tag to a version", "ferroflow models tag hzo-W01-20ns@1 reviewed"),
            ("lineage", "raw files upstream, simulation runs downstream",
             "ferroflow models lineage hzo-W01-20ns@production")):
        q = models.add_parser(action, help=helptext, description=helptext, formatter_class=fmt,
                              epilog=f"example:\n  {example}")
        _common(q)
        q.set_defaults(func=cmd_models)
        if action in ("show", "history", "alias", "tag", "lineage"):
            q.add_argument("ref", help="NAME, NAME@VERSION or NAME@ALIAS")
        if action in ("alias", "tag"):
            q.add_argument("name", help="alias or tag")
        if action == "alias":
            q.add_argument("--remove", action="store_true")
        if action == "search":
            q.add_argument("--wafer")
            q.add_argument("--pulse-width-min", type=float)
            q.add_argument("--pulse-width-max", type=float)
            q.add_argument("--tag", action="append")
            q.add_argument("--family")
            q.add_argument("--min-r2", type=float)
            q.add_argument("--max-failed", type=int)
            q.add_argument("--all-versions", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyError as exc:
        if args.debug:
            raise
        print(f"ferroflow {args.command}: error: {exc.args[0]}", file=sys.stderr)
        return EXIT_ERROR
    except (InputError, FileNotFoundError, ValueError) as exc:
        if args.debug:
            raise
        print(f"ferroflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # unexpected: still one line, the traceback on request
        if args.debug:
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"ferroflow {args.command}: error: {type(exc).__name__}: {text} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
