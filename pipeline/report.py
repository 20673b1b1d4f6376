"""The wafer report: the figures a device engineer looks at, as PNGs and one HTML page.

``write_report(store, registry, wafer, out)`` reads the stored measurements, the latest
registered model of each pulse width and the simulation runs linked to those models,
and writes into ``out``:

- ``fit_<width>.png``: conductance vs pulse number, measured points and the model's
  noise-free response per trace, for the device whose fit quality is the wafer median;
- ``steps_<width>.png``: the step map dG vs G, up and down, with the model's mean step
  and the symmetry point;
- ``wafer_<width>.png``: die-grid maps of symmetry point, dynamic range, asymmetry,
  c2c noise and fit quality (mean over the devices of a die);
- ``d2d.png``: distributions of every model parameter over devices, per pulse width;
- ``accuracy.png``, ``pulses.png``, ``energy.png``: test accuracy vs epoch, pulses per
  epoch and total training energy vs final accuracy (Pareto front marked), when the
  models have simulation runs;
- ``sp_effect.png``: per pulse width and analog algorithm, the share of hidden units
  saturated high and low at the end of training and the SP offset, with one sentence
  per model on why shifting helped or not (``simulation/diagnostics.py``);
- ``report.html``: everything above, images embedded, with tables of the key numbers,
  the model refs and their lineage, and the verdicts of any reproduction
  (``ferroflow reproduce``) run on these models, linked.

Figures use matplotlib's object API (``Figure``), so no display and no global state.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .devices import family as get_family
from .errors import InputError
from .registry import ModelVersion, Registry
from .reproduce import explanations, run_table
from .schema import StateScale
from .simulation.sweep import mean_curve_epochs, read_run, run_exists, runs_dir, summarize, sweep_table
from .store import MeasurementStore
from .traces import series_from_frame, step_map, traces
from .units import format_seconds

UP, DOWN, MODEL, SP = "#1f77b4", "#d62728", "black", "#2ca02c"


@dataclass
class Report:
    html: Path
    figures: dict[str, Path] = field(default_factory=dict)     # name -> PNG
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)   # figure name -> sentences
    reproductions: list[dict] = field(default_factory=list)    # claims.json docs, with "folder"


def write_report(store: MeasurementStore, registry: Registry, wafer: str, out: str | Path,
                 progress=None) -> Report:
    """Write the report of ``wafer`` into folder ``out`` (see the module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    versions = latest_versions(registry, wafer)
    say = progress or (lambda text: None)
    report = Report(html=out / "report.html")
    metrics = {v.ref: device_metrics(v) for v in versions}
    for v in versions:
        tag = _slug(v.pulse_width_s)
        say(f"report: figures for {v.ref}")
        frame = store.read(wafer=wafer, pulse_width_s=v.pulse_width_s)
        device = representative_device(v)
        series = [s for s in series_from_frame(frame) if (s.die, s.device) == device]
        if series:
            report.figures[f"fit_{tag}"] = _save(fit_figure(v, series[0]), out / f"fit_{tag}.png")
            report.figures[f"steps_{tag}"] = _save(step_figure(v, series[0]), out / f"steps_{tag}.png")
        report.figures[f"wafer_{tag}"] = _save(wafer_map_figure(v, metrics[v.ref]), out / f"wafer_{tag}.png")
    report.figures["d2d"] = _save(d2d_figure(versions), out / "d2d.png")
    report.tables["models"] = model_table(versions, metrics)
    report.tables["lineage"] = lineage_table(registry, versions)
    epochs = simulation_epochs(registry, versions)
    if not epochs.empty:
        say("report: simulation figures")
        summary = summarize(epochs)
        table = sweep_table(summary, epochs)
        report.tables["simulation"] = table
        report.figures["accuracy"] = _save(accuracy_figure(epochs), out / "accuracy.png")
        report.figures["pulses"] = _save(pulses_figure(table), out / "pulses.png")
        report.figures["energy"] = _save(energy_figure(table), out / "energy.png")
        effect = run_table(epochs)
        if "sp_offset_l0" in effect and effect.sp_offset_l0.notna().any():
            report.figures["sp_effect"] = _save(sp_effect_figure(effect), out / "sp_effect.png")
            report.notes["sp_effect"] = explanations(effect)
    report.reproductions = reproductions(registry, versions)
    report.html.write_text(render_html(wafer, versions, report, store, registry))
    return report


# --- what goes in ----------------------------------------------------------------------
def latest_versions(registry: Registry, wafer: str) -> list[ModelVersion]:
    found = registry.search(wafer=wafer)
    if found.empty:
        raise InputError(f"no registered models for wafer {wafer!r} in {registry.base} "
                         "(run ferroflow fit first)")
    return [registry.load(f"{r.name}@{r.version}") for r in found.itertuples()]


def representative_device(v: ModelVersion) -> tuple[str, str]:
    """(die, device) whose trajectory R^2 is the median of the version: a typical fit."""
    d = v.devices.dropna(subset=["r2_trace"])
    d = d if len(d) else v.devices
    i = (d["r2_trace"] - d["r2_trace"].median()).abs().idxmin() if d["r2_trace"].notna().any() else d.index[0]
    return str(d.at[i, "die"]), str(d.at[i, "device"])


def simulation_epochs(registry: Registry, versions: list[ModelVersion]) -> pd.DataFrame:
    """Epoch rows of the runs linked to ``versions``, plus the FP runs of the same
    training configuration; when several configurations exist, the one with most runs."""
    fs = registry.fs
    paths = [p for v in versions for p in registry.runs(v.ref)["path"]]
    frames = [read_run(p) for p in paths if run_exists(p)]
    if not frames:
        return pd.DataFrame()
    linked = pd.concat(frames, ignore_index=True)
    config = linked.groupby("config_hash").run_id.nunique().idxmax()
    linked = linked[linked.config_hash == config]
    fp = [df for df in (read_run(registry.location(p)) for p in sorted(fs.glob(f"{runs_dir(registry)}/*.parquet")))
          if (df.algorithm == "fp").all() and (df.config_hash == config).all()
          and set(df.seed) <= set(linked.seed)]
    return pd.concat([linked, *fp], ignore_index=True)


# --- device figures ------------------------------------------------------------------------
def _params(v: ModelVersion, die: str, device: str) -> tuple[dict, pd.Series]:
    i = v.devices.index[(v.devices.die == die) & (v.devices.device == device)][0]
    return v.params().loc[i].astype(float).to_dict(), v.devices.loc[i]


def fit_figure(v: ModelVersion, s) -> Figure:
    model = get_family(v.family)
    p, row = _params(v, s.die, s.device)
    norm = StateScale.of_row(row)
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(1, len(s.state) + 1)
    scale, unit = _display_scale(v.state_unit, s.state)
    up, down = s.up & s.pulsed, ~s.up & s.pulsed  # reads without a pulse are neither
    ax.plot(x[up], s.state[up] * scale, ".", ms=3, color=UP, label="measured, up pulse")
    ax.plot(x[down], s.state[down] * scale, ".", ms=3, color=DOWN, label="measured, down pulse")
    for k, tr in enumerate(traces(s)):
        n = len(tr.states)
        g0 = tr.state_before if np.isfinite(tr.state_before) else tr.states[0]
        first = 0 if np.isfinite(tr.state_before) else 1
        pred = model.run(p, np.array([norm.g(g0)]), np.array([tr.up]), n - first)[0]
        ax.plot(x[tr.rows[first:]], norm.state(pred) * scale, "-", color=MODEL, lw=1.2,
                label=f"{v.family} fit (per trace)" if k == 0 else None)
    if s.protocol == "staircase":  # the amplitude staircase beside G
        amp = ax.twinx()
        amp.step(x, s.amplitude, where="mid", color="grey", lw=0.6, alpha=0.6)
        amp.set_ylabel("write amplitude (V)", color="grey")
    ax.set_xlabel("pulse number")
    ax.set_ylabel(f"conductance ({unit})")
    ax.set_title(f"{v.ref}: {s.die}/{s.device}, {format_seconds(v.pulse_width_s)} pulses, "
                 f"trajectory R² = {row['r2_trace']:.3f}")
    ax.legend(loc="best", fontsize=8)
    return fig


def step_figure(v: ModelVersion, s) -> Figure:
    model = get_family(v.family)
    p, row = _params(v, s.die, s.device)
    norm = StateScale.of_row(row)
    sm = step_map(s)
    scale, unit = _display_scale(v.state_unit, s.state)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(sm.g[sm.up] * scale, sm.dg[sm.up] * scale, ".", ms=3, alpha=0.5, color=UP, label="up steps")
    ax.plot(sm.g[~sm.up] * scale, sm.dg[~sm.up] * scale, ".", ms=3, alpha=0.5, color=DOWN,
            label="down steps")
    g_lo, g_hi = norm.g(np.nanmin(sm.g)), norm.g(np.nanmax(sm.g))
    pad = 0.1 * (g_hi - g_lo)  # the measured range and a little more, not the model's bounds
    grid = np.linspace(max(g_lo - pad, float(row["range_lo_g"])),
                       min(g_hi + pad, float(row["range_hi_g"])), 200)
    for up, color in ((True, UP), (False, DOWN)):
        dg = model.step(grid, np.full(grid.shape, up), **p)
        ax.plot(norm.state(grid) * scale, norm.state_step(dg) * scale, "-", color=color, lw=2,
                label=f"model, {'up' if up else 'down'}")
    ax.axhline(0, color="grey", lw=0.5)
    sp = float(row["sp_state"]) * scale
    ax.axvline(sp, color=SP, ls="--", lw=1.5, label=f"symmetry point {sp:.3g} {unit}")
    ax.set_xlabel(f"conductance before the pulse ({unit})")
    ax.set_ylabel(f"step dG ({unit})")
    ax.set_title(f"{v.ref}: step map of {s.die}/{s.device} ({format_seconds(v.pulse_width_s)})")
    ax.legend(loc="best", fontsize=8)
    return fig


def device_metrics(v: ModelVersion) -> pd.DataFrame:
    """Per device: SP (normalised), dynamic range Gmax/Gmin, asymmetry, c2c, R^2.

    Asymmetry = (|dG+| - |dG-|) / (|dG+| + |dG-|) at mid-range: 0 for a symmetric device."""
    model = get_family(v.family)
    d = v.devices
    mid = ((d["range_lo_g"] + d["range_hi_g"]) / 2).to_numpy(float)
    asym = np.full(len(d), np.nan)
    for i, p in enumerate(v.params().astype(float).to_dict("records")):
        up = abs(float(model.step(np.array([mid[i]]), np.array([True]), **p)[0]))
        down = abs(float(model.step(np.array([mid[i]]), np.array([False]), **p)[0]))
        asym[i] = (up - down) / (up + down) if up + down > 0 else np.nan
    gmin, gmax = d["gmin_state"].to_numpy(float), d["gmax_state"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        dyn = np.where(gmin > 0, gmax / gmin, np.nan)
    return pd.DataFrame({"die_x": d["die_x"], "die_y": d["die_y"], "sp_norm": d["sp_norm"],
                         "dynamic_range": dyn, "asymmetry": asym, "c2c_rel": d["c2c_rel"],
                         "r2_trace": d["r2_trace"]})


MAPS = (("sp_norm", "symmetry point (normalised)", "viridis"),
        ("dynamic_range", "dynamic range Gmax/Gmin", "magma"),
        ("asymmetry", "asymmetry at mid-range", "coolwarm"),
        ("c2c_rel", "c2c noise (relative)", "plasma"),
        ("r2_trace", "fit quality R²", "cividis"))


def wafer_map_figure(v: ModelVersion, metrics: pd.DataFrame) -> Figure:
    m = metrics.dropna(subset=["die_x", "die_y"])
    fig = Figure(figsize=(3.3 * len(MAPS), 3.4), layout="constrained")
    fig.suptitle(f"{v.ref}: wafer maps, {format_seconds(v.pulse_width_s)} pulses "
                 "(mean of the devices of each die; blank: no fitted device)")
    if m.empty:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no die positions in the data", ha="center", va="center")
        return fig
    per_die = m.groupby(["die_y", "die_x"]).mean(numeric_only=True)
    xs = np.arange(int(m.die_x.min()), int(m.die_x.max()) + 1)
    ys = np.arange(int(m.die_y.min()), int(m.die_y.max()) + 1)
    for k, (col, title, cmap) in enumerate(MAPS, 1):
        grid = per_die[col].unstack("die_x").reindex(index=ys, columns=xs).to_numpy(float)
        ax = fig.add_subplot(1, len(MAPS), k)
        im = ax.imshow(grid, origin="lower", cmap=cmap,
                       extent=(xs[0] - 0.5, xs[-1] + 0.5, ys[0] - 0.5, ys[-1] + 0.5))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("die x")
        ax.set_ylabel("die y")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def d2d_figure(versions: list[ModelVersion]) -> Figure:
    """Histograms of each parameter over devices; pulse widths overlaid."""
    families = {v.family for v in versions}
    names = [n for f in sorted(families) for n in get_family(f).param_names]
    names = list(dict.fromkeys(names)) + ["sp_norm", "c2c_rel"]
    cols = 4
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.7 * rows), layout="constrained")
    fig.suptitle("device-to-device variation: distributions over devices, per pulse width")
    for k, name in enumerate(names, 1):
        ax = fig.add_subplot(rows, cols, k)
        for v in versions:
            col = name if name in v.devices else f"p_{name}"
            if col not in v.devices:
                continue
            values = v.devices[col].to_numpy(float)
            values = values[np.isfinite(values)]
            if len(values):
                ax.hist(values, bins=15, histtype="step", lw=1.5, label=format_seconds(v.pulse_width_s))
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("devices")
        if k == 1:
            ax.legend(fontsize=7)
    return fig


# --- simulation figures ------------------------------------------------------------------
def _series_label(pulse_width_s, label) -> str:
    return label if label == "fp" else f"{format_seconds(pulse_width_s)} {label}"


def accuracy_figure(epochs: pd.DataFrame) -> Figure:
    mean = epochs.groupby(["pulse_width_s", "label", "epoch"], dropna=False).test_accuracy.mean()
    widths = sorted(w for w in epochs.pulse_width_s.dropna().unique())
    fig = Figure(figsize=(3.6 * max(len(widths), 1), 3.6), layout="constrained")
    fig.suptitle("test accuracy vs epoch (mean over seeds; FP dashed as the reference; legend: "
                 "epoch at which the mean reaches the dotted target)")
    fp = epochs[epochs.algorithm == "fp"].groupby("epoch").test_accuracy.mean()
    target = float(epochs.target_accuracy.iloc[0])
    crossing = mean_curve_epochs(epochs).set_index(["pulse_width_s", "label"]).epochs_to_target
    for k, w in enumerate(widths, 1):
        ax = fig.add_subplot(1, len(widths), k)
        ax.axhline(target, color="grey", ls=":", lw=1)
        for label, df in mean.xs(w, level="pulse_width_s").groupby(level="label"):
            hit = crossing.get((w, label), np.nan)
            reach = f"epoch {hit:.0f}" if hit == hit else "never"
            ax.plot(df.index.get_level_values("epoch"), df.to_numpy(), "o-", ms=3,
                    label=f"{label} ({reach})")
        if len(fp):
            ax.plot(fp.index, fp.to_numpy(), "k--", lw=1, label="fp")
        ax.set_title(format_seconds(w))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="lower right")  # each width: its own epochs to target
    return fig


def pulses_figure(table: pd.DataFrame) -> Figure:
    t = table[table.label != "fp"]
    labels = sorted(t.label.unique())
    widths = sorted(t.pulse_width_s.unique())
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    step = 0.8 / max(len(labels), 1)
    for j, label in enumerate(labels):
        rows = t[t.label == label].set_index("pulse_width_s").reindex(widths)
        ax.bar(np.arange(len(widths)) + j * step, rows.pulses_per_epoch, width=step, label=label)
    ax.set_xticks(np.arange(len(widths)) + 0.4 - step / 2, [format_seconds(w) for w in widths])
    ax.set_yscale("log")
    ax.set_xlabel("pulse width")
    ax.set_ylabel("device pulses per epoch")
    ax.set_title("programming pulses per training epoch")
    ax.legend(fontsize=8)
    return fig


def pareto_front(energy: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Mask of points no other point beats on both counts (less energy, more accuracy)."""
    keep = np.ones(len(energy), bool)
    for i in range(len(energy)):
        better = (energy <= energy[i]) & (accuracy >= accuracy[i]) & (
            (energy < energy[i]) | (accuracy > accuracy[i]))
        keep[i] = not better.any()
    return keep


def energy_figure(table: pd.DataFrame) -> Figure:
    t = table[(table.label != "fp") & (table.energy_j > 0)].reset_index(drop=True)
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    front = pareto_front(t.energy_j.to_numpy(float), t.acc_mean.to_numpy(float))
    for label, df in t.groupby("label"):
        ax.scatter(df.energy_j * 1e6, df.acc_mean, s=36, label=label)
        for r in df.itertuples():
            ax.annotate(format_seconds(r.pulse_width_s), (r.energy_j * 1e6, r.acc_mean),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    f = t[front].sort_values("energy_j")
    ax.plot(f.energy_j * 1e6, f.acc_mean, "k-", lw=1, alpha=0.6)
    ax.scatter(f.energy_j * 1e6, f.acc_mean, s=120, facecolors="none", edgecolors="k",
               label="Pareto front")
    fp = table[table.label == "fp"]
    if len(fp):
        ax.axhline(float(fp.acc_mean.iloc[0]), color="grey", ls="--", lw=1, label="FP accuracy")
    ax.set_xscale("log")
    ax.set_xlabel("total training energy (µJ, device pulses)")
    ax.set_ylabel("final test accuracy (mean over seeds)")
    ax.set_title("energy vs accuracy, one point per pulse width and algorithm")
    ax.legend(fontsize=7, loc="best")
    return fig


def sp_effect_figure(table: pd.DataFrame) -> Figure:
    """Hidden units saturated high / low at the end, per pulse width and analog algorithm."""
    t = table[table.label != "fp"]
    widths = sorted(t.pulse_width_s.dropna().unique())
    fig = Figure(figsize=(4.2 * max(len(widths), 1), 4.2), layout="constrained")
    fig.suptitle("symmetry-point effect: hidden units saturated at the end of training "
                 "(mean over seeds; final test accuracy above the bars)")
    for k, w in enumerate(widths, 1):
        rows = t[t.pulse_width_s == w].sort_values("label")
        ax = fig.add_subplot(1, len(widths), k)
        x = np.arange(len(rows))
        ax.bar(x - 0.2, rows.sat_high_h0, width=0.4, color=DOWN, label="saturated high (> 0.95)")
        ax.bar(x + 0.2, rows.sat_low_h0, width=0.4, color=UP, label="saturated low (< 0.05)")
        for xi, r in zip(x, rows.itertuples()):
            ax.annotate(f"{r.acc_mean:.3f}", (xi, max(r.sat_high_h0, r.sat_low_h0)), ha="center",
                        fontsize=7, xytext=(0, 3), textcoords="offset points")
        ax.set_xticks(x, [lab.replace("+", "\n+") for lab in rows.label], fontsize=7)
        offset = rows[~rows.label.str.contains("sp-shift")].sp_offset_l0.mean()
        ax.set_title(f"{format_seconds(w)}: SP offset {offset:+.2f} (hidden layer, unshifted)", fontsize=9)
        ax.set_ylabel("share of hidden activations")
        ax.set_ylim(0, 1)
        if k == 1:
            ax.legend(fontsize=7, loc="upper right")
    return fig


def reproductions(registry: Registry, versions: list[ModelVersion]) -> list[dict]:
    """Reproductions (``ferroflow reproduce``) that ran on any of these model versions."""
    names = {v.name for v in versions}
    out = []
    fs = registry.fs
    for path in sorted(fs.glob(registry.path("reproductions", "*", "claims.json"))):
        doc = json.loads(fs.cat_file(path))
        if names & {ref.partition("@")[0] for ref in doc["settings"]["refs"]}:
            out.append({**doc, "folder": registry.location(path.rsplit("/", 1)[0])})
    return out


# --- tables and the page ----------------------------------------------------------------------
def model_table(versions: list[ModelVersion], metrics: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for v in versions:
        m = metrics[v.ref]
        rows.append({"model": v.ref, "pulse width": format_seconds(v.pulse_width_s),
                     "family": v.family, "devices": v.meta.get("n_devices"),
                     "failed fits": v.meta.get("n_failed"),
                     "SP (norm), median": m.sp_norm.median(),
                     "Gmax/Gmin, median": m.dynamic_range.median(),
                     "asymmetry, median": m.asymmetry.median(),
                     "c2c, median": m.c2c_rel.median(), "R², median": m.r2_trace.median(),
                     "energy/pulse (pJ)": v.energy_per_pulse_j * 1e12})
    return pd.DataFrame(rows)


def lineage_table(registry: Registry, versions: list[ModelVersion]) -> pd.DataFrame:
    rows = []
    for v in versions:
        lin = registry.lineage(v.ref)
        shas = [r["sha256"][:12] for r in lin["raw_files"]]
        rows.append({"model": v.ref, "raw files": len(shas),
                     "first raw SHA-256": ", ".join(shas[:2]) + (" ..." if len(shas) > 2 else ""),
                     "fit config": lin["fit_config_hash"], "code": lin["code_version"],
                     "simulation runs": len(lin["runs"])})
    return pd.DataFrame(rows)


CAPTIONS = {
    "fit": "Conductance vs pulse number: measured reads and the model's noise-free response "
           "from each trace's starting state.",
    "steps": "Step map: each pulse's dG against the conductance before it; lines are the "
             "model's mean step, the dashed line its symmetry point.",
    "wafer": "Wafer maps over the die grid.",
    "d2d": "Device-to-device distributions of the fitted parameters.",
    "accuracy": "Test accuracy per epoch for every pulse width and algorithm.",
    "pulses": "Device programming pulses per epoch.",
    "energy": "Total training energy against final accuracy; circled points form the Pareto front.",
    "sp": "Where the symmetry point drives hidden units under each algorithm, with and without "
          "shifting.",
}


def render_html(wafer: str, versions, report: Report, store, registry) -> str:
    parts = [f"<h1>ferroflow report: wafer {html.escape(wafer)}</h1>",
             f"<p>Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}. Measurements: "
             f"<code>{html.escape(str(store.root))}</code>; models: "
             f"<code>{html.escape(str(registry.base))}</code>.</p>"]
    for name, title in (("models", "Device models"), ("lineage", "Lineage"),
                        ("simulation", "Training simulations (mean over seeds)")):
        if name in report.tables:
            parts.append(f"<h2 id='table-{name}'>{title}</h2>")
            parts.append(report.tables[name].to_html(index=False, float_format=lambda x: f"{x:.4g}",
                                                     na_rep="-", border=0, classes="t"))
    if "simulation" not in report.tables:
        parts.append("<p>No simulation runs are linked to these models yet "
                     "(<code>ferroflow simulate --wafer ...</code>).</p>")
    parts += _reproduction_html(report.reproductions)
    parts.append("<h2>Figures</h2>")
    for name, path in report.figures.items():
        data = base64.b64encode(path.read_bytes()).decode()
        caption = CAPTIONS.get(name.split("_")[0], "")
        parts.append(f"<figure id='fig-{name}'><img alt='{name}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(path.name)}: {html.escape(caption)}</figcaption></figure>")
        if name in report.notes:
            parts.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in report.notes[name]) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
             "img{max-width:100%}table.t{border-collapse:collapse;font-size:13px}"
             "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
             "figure{margin:1.5em 0}figcaption{color:#555;font-size:13px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>ferroflow report "
            f"{html.escape(wafer)}</title><style>{style}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def _reproduction_html(docs: list[dict]) -> list[str]:
    parts = []
    for doc in docs:
        folder = doc["folder"]  # a local path or an object-store URL
        name = folder.rstrip("/").rsplit("/", 1)[-1]
        verdicts = f"{folder}/verdicts.md"
        href = Path(verdicts).as_uri() if "://" not in folder else verdicts
        s = doc["settings"]
        parts.append(f"<h2 id='reproduction-{html.escape(name)}'>Reproduction: "
                     f"{html.escape(name)}</h2><p>{s['dataset']}, {s['seeds']} seeds, "
                     f"{s['epochs']} epochs, wall time {doc['wall_s']:.0f} s; full table and evidence: "
                     f"<a href='{html.escape(href)}'>verdicts.md</a>.</p><ol>")
        for c in doc["claims"]:
            parts.append(f"<li>{html.escape(c['text'])}: <b>{html.escape(c['verdict'])}</b></li>")
        parts.append("</ol>")
    return parts


def markdown_summary(wafer: str, report: Report) -> str:
    """The report's location and its model table in Markdown (for a Prefect artifact)."""
    t = report.tables["models"]
    cols = ["model", "pulse width", "family", "devices", "failed fits", "SP (norm), median",
            "R², median", "energy/pulse (pJ)"]
    lines = [f"# Wafer {wafer}", "", f"Report: `{report.html}` ({len(report.figures)} figures)", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in t[cols].itertuples(index=False):
        lines.append("| " + " | ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in r) + " |")
    return "\n".join(lines)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def _slug(pulse_width_s: float) -> str:
    return format_seconds(pulse_width_s).replace(" ", "")


def _display_scale(state_unit: str, state: np.ndarray) -> tuple[float, str]:
    """Siemens shown in the unit that reads best (uS, nS); other units as they are."""
    if state_unit != "S":
        return 1.0, state_unit
    top = float(np.nanmax(np.abs(state))) if len(state) else 1.0
    for unit, scale in (("mS", 1e3), ("µS", 1e6), ("nS", 1e9)):
        if top * scale >= 1:
            return scale, unit
    return 1e12, "pS"
