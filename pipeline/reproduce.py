"""Reproduce Garg et al. 2025 (arXiv 2509.18121) from the group's published device models.

``ferroflow reproduce garg2025`` imports the three beta-kernel models shipped in
``pipeline/published`` (20 ns, 200 ns, 20 us), trains the same network on the 5,000
MNIST digits with FP SGD, plain analog SGD and mixed-precision SGD, each analog one with
and without symmetry-point shifting, over several seeds, and checks the paper's three
claims (DOMAIN.md section 1) against the measurements, with no tuning: the training
settings are the simulator's defaults.

A difference counts when it exceeds twice its standard error over seeds
(``2 sqrt(sd_a^2 / n + sd_b^2 / n)``); a claim *holds* when every pulse width agrees
beyond that, *does not hold* when one contradicts it beyond that, and is *within noise*
otherwise. Epochs to target are read where the mean accuracy over seeds first reaches
the target; the per-seed epochs (a seed that never reaches it counts as one epoch past
the run) give the spread and the comparison.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .importer import import_model, published_file
from .registry import Registry
from .simulation import DEFAULT_VARIANTS, TrainConfig, simulate_refs
from .simulation.sweep import mean_curve_epochs
from .units import format_seconds

GARG2025 = ("garg2025_20ns", "garg2025_200ns", "garg2025_20us")
HOLDS, FAILS, NOISE = "holds", "does not hold", "within noise"


@dataclass
class Claim:
    text: str
    verdict: str
    evidence: list[str] = field(default_factory=list)


@dataclass
class Reproduction:
    table: pd.DataFrame          # per (pulse width, label): accuracy, epochs, pulses, SP effect
    claims: list[Claim]
    explanations: list[str]      # one sentence per model: why shifting helped or not
    wall_s: float
    settings: dict


def ensure_models(registry: Registry, stems=GARG2025) -> list[str]:
    """Import the shipped parameter files (a no-op for those already registered)."""
    return [str(import_model(registry, published_file(stem)).ref) for stem in stems]


def reproduce(registry: Registry, seeds: int = 5, epochs: int = 20, dataset: str = "mnist5k",
              progress=None) -> Reproduction:
    refs = ensure_models(registry)
    cfg = TrainConfig(epochs=epochs)
    t0 = time.monotonic()
    rows, _, _ = simulate_refs(registry, refs, DEFAULT_VARIANTS, tuple(range(seeds)), cfg, dataset,
                               progress)
    wall = time.monotonic() - t0
    table = run_table(rows)
    settings = {"refs": refs, "seeds": seeds, "epochs": epochs, "dataset": dataset,
                "hidden": list(cfg.hidden), "activation": cfg.activation, "lr": cfg.lr, "bl": cfg.bl,
                "target_accuracy": cfg.target_accuracy, "weight_range": cfg.weight_range}
    return Reproduction(table, claims(table), explanations(table), wall, settings)


# --- measurements ---------------------------------------------------------------------------
def per_seed_epochs(df: pd.DataFrame, target: float, last: int) -> np.ndarray:
    """Epoch at which each seed first reaches ``target`` (``last + 1`` when it never does)."""
    out = []
    for _, run in df.sort_values("epoch").groupby("seed"):
        hit = run.epoch[run.test_accuracy >= target]
        out.append(int(hit.iloc[0]) if len(hit) else last + 1)
    return np.array(out, float)


def run_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (pulse width, label), means and spreads over seeds."""
    out = []
    for (pw, label), df in rows.groupby(["pulse_width_s", "label"], dropna=False, sort=True):
        last = int(df.epoch.max())
        target = float(df.target_accuracy.iloc[0])
        final = df[df.epoch == last]
        seeds = per_seed_epochs(df, target, last)
        reached = seeds <= last
        hit_rows = [run[run.test_accuracy >= target].iloc[0] for _, run in df.groupby("seed")
                    if (run.test_accuracy >= target).any()]
        row = {"pulse_width_s": pw, "label": label, "seeds": int(final.seed.nunique()),
               "epochs": last, "target": target,
               "acc_mean": final.test_accuracy.mean(), "acc_sd": final.test_accuracy.std(ddof=1),
               "epochs_to_target": mean_curve_epochs(df).epochs_to_target.iloc[0],
               "seed_epochs_mean": seeds.mean(), "seed_epochs_sd": seeds.std(ddof=1) if len(seeds) > 1 else 0.0,
               "reached": int(reached.sum()),
               "pulses_to_target": float(np.mean([r.pulses_total for r in hit_rows])) if hit_rows else np.nan,
               "pulses_per_epoch": (final.pulses_total / last).mean(),
               "energy_per_pulse_j": final.energy_per_pulse_j.mean()}
        for col in [c for c in df.columns if c.startswith(("sp_offset_", "mean_w_", "sat_"))]:
            row[col] = final[col].mean()
        out.append(row)
    return pd.DataFrame(out)


def _get(table, pw, label):
    rows = table[(table.label == label) & ((table.pulse_width_s == pw) | (pd.isna(pw) & table.pulse_width_s.isna()))]
    return rows.iloc[0] if len(rows) else None


def compare(a_mean, a_sd, b_mean, b_sd, n) -> tuple[float, float, int]:
    """(a - b, its standard error, sign: +1 / -1 beyond two standard errors, else 0)."""
    diff = float(a_mean - b_mean)
    se = float(np.sqrt((np.nan_to_num(a_sd) ** 2 + np.nan_to_num(b_sd) ** 2) / max(n, 1)))
    return diff, se, int(np.sign(diff)) if abs(diff) > 2 * se else 0


def _verdict(signs: list[int]) -> str:
    if signs and all(s > 0 for s in signs):
        return HOLDS
    if any(s < 0 for s in signs):
        return FAILS
    return NOISE


def _widths(table) -> list[float]:
    return sorted(table.pulse_width_s.dropna().unique())


# --- the three claims -------------------------------------------------------------------------
def claims(table: pd.DataFrame) -> list[Claim]:
    return [claim_pulse_width(table), claim_sgd_vs_mp(table), claim_shifting(table)]


def claim_pulse_width(table: pd.DataFrame, label: str = "mixed-precision") -> Claim:
    """Shorter pulses need more epochs, yet cost less energy and lose no accuracy."""
    widths = _widths(table)
    short, long_ = _get(table, widths[0], label), _get(table, widths[-1], label)
    c = Claim("Shorter pulses need more epochs to reach the target, yet total training energy "
              "drops without losing accuracy", NOISE)
    if short is None or long_ is None:
        c.evidence.append(f"no {label} runs at both ends of the pulse-width range")
        return c
    for lab in sorted(table.label.unique()):
        if lab == "fp":
            continue
        parts = []
        for w in widths:
            r = _get(table, w, lab)
            ept = f"{r.epochs_to_target:.0f}" if np.isfinite(r.epochs_to_target) else "never"
            parts.append(f"{format_seconds(w)} {ept} (seeds {r.seed_epochs_mean:.1f}±{r.seed_epochs_sd:.1f}, "
                         f"{r.reached}/{r.seeds})")
        c.evidence.append(f"{lab}: epochs to {short.target:.2f} (mean curve; per-seed mean±sd, "
                          f"reached): " + ", ".join(parts))
    n = int(short.seeds)
    diff, se, sign = compare(short.seed_epochs_mean, short.seed_epochs_sd, long_.seed_epochs_mean,
                             long_.seed_epochs_sd, n)
    acc_diff, acc_se, acc_sign = compare(short.acc_mean, short.acc_sd, long_.acc_mean, long_.acc_sd, n)
    c.evidence.append(f"{label}, {format_seconds(widths[0])} vs {format_seconds(widths[-1])}: "
                      f"{diff:+.1f}±{se:.1f} epochs to target, final accuracy {acc_diff:+.3f}±{acc_se:.3f}")
    ratio = short.pulses_to_target / long_.pulses_to_target
    if np.isfinite(ratio):
        known = f"{short.energy_per_pulse_j * 1e12:.3g} pJ at {format_seconds(widths[0])}" \
            if np.isfinite(short.energy_per_pulse_j) else "not published"
        c.evidence.append(
            f"{label}: pulses to target {short.pulses_to_target:.3g} at {format_seconds(widths[0])} vs "
            f"{long_.pulses_to_target:.3g} at {format_seconds(widths[-1])} (ratio {ratio:.2f}); energy per "
            f"pulse {known}, not published at {format_seconds(widths[-1])}: total energy drops at the "
            f"shorter pulse when a {format_seconds(widths[-1])} pulse costs more than {ratio:.2f}x as much")
    c.verdict = _verdict([sign]) if acc_sign >= 0 else FAILS
    return c


def accuracy_gains(table: pd.DataFrame, better: str, worse: str):
    """Per pulse width holding both labels: (width, row better, row worse, difference of
    final accuracy, its standard error, its sign beyond noise)."""
    for w in _widths(table):
        a, b = _get(table, w, better), _get(table, w, worse)
        if a is not None and b is not None:
            yield (w, a, b, *compare(a.acc_mean, a.acc_sd, b.acc_mean, b.acc_sd, int(a.seeds)))


def claim_sgd_vs_mp(table: pd.DataFrame) -> Claim:
    c = Claim("Plain analog SGD reaches lower accuracy than mixed-precision SGD", NOISE)
    signs = []
    for w, mp, sgd, diff, se, sign in accuracy_gains(table, "mixed-precision", "analog-sgd"):
        signs.append(sign)
        c.evidence.append(f"{format_seconds(w)}: mixed precision {mp.acc_mean:.3f}±{mp.acc_sd:.3f}, "
                          f"analog SGD {sgd.acc_mean:.3f}±{sgd.acc_sd:.3f} (difference {diff:+.3f}±{se:.3f})")
    c.verdict = _verdict(signs)
    return c


def claim_shifting(table: pd.DataFrame) -> Claim:
    c = Claim("Symmetry-point shifting restores the accuracy of plain analog SGD", NOISE)
    signs = []
    for w, shifted, plain, diff, se, sign in accuracy_gains(table, "analog-sgd+sp-shift", "analog-sgd"):
        signs.append(sign)
        mp = _get(table, w, "mixed-precision")
        gap = f", gap to mixed precision {mp.acc_mean - shifted.acc_mean:+.3f}" if mp is not None else ""
        c.evidence.append(f"{format_seconds(w)}: analog SGD {plain.acc_mean:.3f}±{plain.acc_sd:.3f} -> "
                          f"{shifted.acc_mean:.3f}±{shifted.acc_sd:.3f} with shifting "
                          f"({diff:+.3f}±{se:.3f}{gap})")
    c.verdict = _verdict(signs)
    return c


def explanations(table: pd.DataFrame) -> list[str]:
    """Per pulse width: why shifting helped plain SGD or not (diagnostics.py)."""
    if "sp_offset_l0" not in table:
        return []
    out = []
    for w, shifted, plain, diff, se, sign in accuracy_gains(table, "analog-sgd+sp-shift", "analog-sgd"):
        off = plain.sp_offset_l0
        side = "above" if off > 0 else "below"
        pushed = "toward 1 (saturated high)" if off > 0 else "toward 0 (saturated low)"
        effect = {1: "helped", -1: "hurt", 0: "changed nothing beyond noise"}[sign]
        out.append(
            f"{format_seconds(w)}: the SP lies {side} mid-range (hidden-layer offset {off:+.2f} weight "
            f"units); with non-negative pixels plain SGD drifts hidden units {pushed}: "
            f"{plain.sat_high_h0:.0%} high / {plain.sat_low_h0:.0%} low at the end, against "
            f"{shifted.sat_high_h0:.0%} / {shifted.sat_low_h0:.0%} with shifting, which {effect} "
            f"({diff:+.3f}±{se:.3f} accuracy).")
    return out


# --- output -----------------------------------------------------------------------------------
def markdown(rep: Reproduction) -> str:
    s = rep.settings
    lines = [f"Garg et al. 2025 from the published device models: {s['dataset']}, "
             f"{s['seeds']} seeds, {s['epochs']} epochs, MLP {s['hidden']} {s['activation']}, lr {s['lr']}, "
             f"BL {s['bl']}, target {s['target_accuracy']:.2f}; wall time {rep.wall_s:.0f} s.", "",
             "| pulse | algorithm | test accuracy | epochs to target (mean curve; per-seed mean±sd, reached) "
             "| pulses/epoch | SP offset, hidden layer | hidden units saturated high / low |",
             "|---|---|---|---|---|---|---|"]
    for r in rep.table.itertuples():
        pw = format_seconds(r.pulse_width_s) if r.pulse_width_s == r.pulse_width_s else "-"
        ept = f"{r.epochs_to_target:.0f}" if r.epochs_to_target == r.epochs_to_target else "never"
        off = f"{r.sp_offset_l0:+.3f}" if r.sp_offset_l0 == r.sp_offset_l0 else "-"
        lines.append(f"| {pw} | {r.label} | {r.acc_mean:.3f}±{r.acc_sd:.3f} | {ept} "
                     f"({r.seed_epochs_mean:.1f}±{r.seed_epochs_sd:.1f}, {r.reached}/{r.seeds}) | "
                     f"{r.pulses_per_epoch:.3g} | {off} | {r.sat_high_h0:.0%} / {r.sat_low_h0:.0%} |")
    lines.append("")
    for i, c in enumerate(rep.claims, 1):
        lines.append(f"{i}. **{c.text}: {c.verdict}.**")
        lines += [f"   - {e}" for e in c.evidence]
    lines += ["", "Why shifting helped or not:", ""] + [f"- {e}" for e in rep.explanations]
    return "\n".join(lines) + "\n"


def save(rep: Reproduction, registry: Registry, name: str = "garg2025") -> str:
    """``<registry>/reproductions/<name>/`` (in the registry's filesystem): verdicts.md,
    table.csv, claims.json. Returns the folder's location."""
    fs, folder = registry.fs, registry.path("reproductions", name)
    fs.makedirs(folder, exist_ok=True)
    doc = {"settings": rep.settings, "wall_s": rep.wall_s, "explanations": rep.explanations,
           "claims": [{"text": c.text, "verdict": c.verdict, "evidence": c.evidence} for c in rep.claims]}
    for file, text in (("verdicts.md", markdown(rep)), ("table.csv", rep.table.to_csv(index=False)),
                       ("claims.json", json.dumps(doc, indent=1))):
        fs.pipe_file(f"{folder}/{file}", text.encode())
    return registry.location(folder)


__all__ = ["reproduce", "ensure_models", "run_table", "claims", "explanations", "markdown", "save",
           "Reproduction", "Claim", "compare", "GARG2025"]
