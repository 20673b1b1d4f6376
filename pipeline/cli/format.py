"""Terminal output of the ``ferroflow`` commands: results as text or JSON, tables,
progress on stderr."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum

from ..units import format_seconds


@dataclass(frozen=True)
class Output:
    """Where a command's result goes: JSON (``--json``), text, or nowhere (``--quiet``)."""
    json: bool = False
    quiet: bool = False

    @property
    def silent(self) -> bool:
        """No progress chatter: quiet, or stdout is kept for the JSON."""
        return self.quiet or self.json

    def result(self, human: str, machine) -> None:
        if self.json:
            print(strict_json(machine))
        elif not self.quiet:
            print(human)


def strict_json(value) -> str:
    """Strict JSON (RFC 8259): NaN and infinities become null, numpy scalars plain
    numbers; anything callable is a bug, not a value, and raises."""
    return json.dumps(_plain(value), indent=1, allow_nan=False)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool)):
        return value
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalar
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if _missing(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Enum):
        return _plain(value.value)
    if callable(value):
        raise TypeError(f"{value!r} is not a value: a field holds a method, not its result")
    return str(value)  # paths, refs: their text


def _missing(value) -> bool:
    """pandas' NA and NaT (and numpy's NaT) are missing values."""
    try:
        return bool(value != value) or type(value).__name__ in ("NAType", "NaTType")
    except (TypeError, ValueError):
        return type(value).__name__ in ("NAType", "NaTType")


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


def narrator(quiet: bool):
    """``say(line)`` for narrated work: each line to stderr, or nothing when quiet."""
    if quiet:
        return lambda line: None
    return lambda line: print(line, file=sys.stderr, flush=True)


def warn(line: str) -> None:
    print(line, file=sys.stderr)


def table(df) -> str:
    import pandas as pd

    if df.empty:
        return "(none)"
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.4g}".format):
        return df.to_string(index=False)


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


def sim_table(table) -> str:
    lines = [f"{'pulse':>9}  {'algorithm':<26}{'seeds':>5}{'test acc':>15}{'epochs->target':>18}"
             f"{'pulses/epoch':>14}{'E/pulse':>10}{'energy':>12}"]
    for r in table.itertuples():
        pw = format_seconds(r.pulse_width_s) if r.pulse_width_s == r.pulse_width_s else "-"
        # where the mean over seeds crosses the target; spread and count of the seeds that do
        sd = f"±{r.epochs_to_target_sd:.1f}, " if r.reached > 1 else ""
        ept = (f"{r.epochs_to_target:.0f}" if r.epochs_to_target == r.epochs_to_target else "never") \
            + f" ({sd}{r.reached}/{r.seeds})"
        lines.append(f"{pw:>9}  {r.label:<26}{r.seeds:>5}{r.acc_mean:>9.3f}±{(r.acc_sd if r.acc_sd == r.acc_sd else 0):.3f}"
                     f"{ept:>18}{r.pulses_per_epoch:>14.3g}{r.energy_per_pulse_j * 1e12:>8.3g}pJ"
                     f"{r.energy_j * 1e6:>10.3g}uJ")
    return "\n".join(lines)


def version_text(info: dict, population) -> str:
    """A registry index row, one ``key: value`` a line, then the population table."""
    return "\n".join(f"{k}: {v}" for k, v in info.items()) + "\n\npopulation:\n" + table(population)


def lineage_text(lin: dict) -> str:
    return (f"{lin['ref']}" + (f" ({lin['description']})" if lin.get("description") else "")
            + f"\n  fit config {lin['fit_config_hash']}, code {lin['code_version']}\n"
            f"  raw files ({len(lin['raw_files'])}):\n"
            + "\n".join(f"    {r['file_name']}  {r['sha256']}" for r in lin["raw_files"])
            + f"\n  simulation runs ({len(lin['runs'])}):\n"
            + "\n".join(f"    {r['run_id']}  {r['kind']}  {r['path']}" for r in lin["runs"]))
