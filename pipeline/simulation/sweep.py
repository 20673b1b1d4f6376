"""Sweeps: many runs (pulse widths x algorithms x seeds), batched, stored, linked.

Results live under ``<registry>/runs/``: one parquet file per run with a row per epoch
(``<run_id>.parquet``). Each run is recorded in the registry's lineage of its model
version (version -> runs). A run whose file already exists is not run again (its id
hashes the model version, algorithm, shift, seed, training configuration and data set).

Lineage and disk agree: a run is linked in the registry *before* its file is renamed
into place, so a failed link leaves no final file (the run is redone next time), and a
done run found unlinked (older versions, a crash between the two) is linked at start.

A read-only registry (a read-only mount, no write permission) is simulated from all the
same: runs already saved are read back, new runs are trained and returned but not saved,
and ``progress`` is told once where they could not be saved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd

from ..errors import ReadOnlyError
from ..registry import Registry
from .catalog import algorithm_info
from .datasets import Dataset, load_dataset
from .devices import DeviceSpec
from .training import RunSpec, TrainConfig, train

DEFAULT_VARIANTS = (("fp", False), ("analog-sgd", False), ("analog-sgd", True),
                    ("mixed-precision", False), ("mixed-precision", True))


@dataclass(frozen=True)
class SweepPlan:
    runs: tuple[RunSpec, ...]
    cfg: TrainConfig
    dataset: str
    notes: tuple[str, ...] = ()  # one line per model whose steps assume something (staircases)

    def batches(self) -> list[list[RunSpec]]:
        """Runs that can share tensors: same algorithm, shift and model family."""
        groups: dict[tuple, list[RunSpec]] = {}
        for r in self.runs:
            key = (r.algorithm, r.shift, r.shift_layers, r.device.family if r.device else None)
            groups.setdefault(key, []).append(r)
        return list(groups.values())


def plan(registry: Registry, refs: list[str], variants=DEFAULT_VARIANTS, seeds=(0,),
         cfg: TrainConfig = TrainConfig(), dataset: str = "digits") -> SweepPlan:
    versions = [registry.load(ref) for ref in refs]
    specs = [DeviceSpec.from_version(v) for v in versions]
    notes = tuple(n for n in (protocol_note(v.ref, v.meta) for v in versions) if n)
    runs = []
    for seed in seeds:
        for algorithm, shift in variants:
            if not algorithm_info(algorithm).analog:
                runs.append(RunSpec(algorithm, seed))  # device independent: once per seed
            else:
                runs += [RunSpec(algorithm, seed, spec, shift) for spec in specs]
    return SweepPlan(tuple(runs), cfg, dataset, notes)


def protocol_note(ref: str, meta: dict) -> str | None:
    """What a model's steps assume, when it was measured as an amplitude staircase."""
    if meta.get("protocol") != "staircase":
        return None
    amps = ", ".join(f"{d} {a[0]:g}..{a[1]:g} V" for d in ("up", "down")
                     if (a := meta.get(f"amplitude_{d}_v")))
    return (f"{ref}: staircase model: one step is one staircase update, pooled over write "
            f"amplitudes ({amps}); training assumes every pulse steps like that pooled map, "
            "whatever its amplitude")


def runs_dir(registry: Registry) -> str:
    """Where run files live: ``runs/`` beside the registry's versions, in its filesystem
    (a local folder or object storage), so every machine sharing the registry sees them."""
    return registry.path("runs")


def read_run(location: str) -> pd.DataFrame:
    """A run file by the location lineage records (a local path or a URL)."""
    fs, path = fsspec.core.url_to_fs(location)
    with fs.open(path, "rb") as fh:
        return pd.read_parquet(fh)


def run_exists(location: str) -> bool:
    fs, path = fsspec.core.url_to_fs(location)
    return fs.exists(path)


def run_sweep(registry: Registry, sweep: SweepPlan, data: Dataset | None = None,
              progress=None, skip_done: bool = True, threads: int = 1) -> pd.DataFrame:
    """Train every run of the plan (batched), save and link results; return epoch rows.

    ``progress(text)`` receives one line per epoch of each batch.
    """
    data = data or load_dataset(None if sweep.dataset == "digits" else sweep.dataset)
    fs, out_dir = registry.fs, runs_dir(registry)
    save = _can_save(registry, out_dir, progress)
    frames = []
    todo = []
    linked = _Linked(registry)
    for r in sweep.runs:
        run_id = r.run_id(sweep.cfg, data.name)
        path = f"{out_dir}/{run_id}.parquet"
        if skip_done and fs.exists(path):
            frames.append(read_run(registry.location(path)))
            if save:
                linked.ensure(r, run_id, registry.location(path))
        else:
            todo.append(r)
    batches = SweepPlan(tuple(todo), sweep.cfg, sweep.dataset).batches()
    for i, batch in enumerate(batches, 1):
        label = f"batch {i}/{len(batches)} {batch[0].label}"
        if batch[0].device:
            label += f" ({batch[0].device.family})"
        label += f", {len(batch)} runs"

        def report(epoch, total, rec, label=label):
            if progress:
                progress(f"{label}: epoch {epoch}/{total} test accuracy "
                         f"{np.mean(rec.test_accuracy):.3f} (mean), {rec.wall_s:.1f}s")

        result = train(batch, data, sweep.cfg, report, threads)
        for k, run in enumerate(batch):
            df = _epoch_rows(run, result, k, sweep.cfg, data.name)
            frames.append(df)
            if not save:
                continue
            name = f"{df.run_id.iloc[0]}.parquet"
            path, tmp = f"{out_dir}/{name}", f"{out_dir}/.tmp-{os.getpid()}-{name}"
            try:
                with fs.open(tmp, "wb") as fh:
                    df.to_parquet(fh, index=False)
                linked.ensure(run, df.run_id.iloc[0], registry.location(path))  # before it is final
                fs.mv(tmp, path)  # a rename on a local disk
            finally:
                if fs.exists(tmp):
                    fs.rm(tmp)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _can_save(registry: Registry, out_dir: str, progress) -> bool:
    """Whether new runs can be saved; a read-only registry is said once, not fatal."""
    try:
        registry.check_writable()
        registry.fs.makedirs(out_dir, exist_ok=True)
    except ReadOnlyError as exc:
        if progress:
            progress(f"new runs not saved: {exc.message}")
        return False
    return True


class _Linked:
    """The run ids each model version has in the registry, read once per version."""

    def __init__(self, registry: Registry):
        self.registry, self.ids = registry, {}

    def ensure(self, run: RunSpec, run_id: str, path: str) -> None:
        if run.device is None:
            return
        ref = run.device.ref
        if ref not in self.ids:
            self.ids[ref] = set(self.registry.runs(ref).run_id)
        if run_id not in self.ids[ref]:
            self.registry.add_run(ref, run_id, run.label, str(path))
            self.ids[ref].add(run_id)


def _epoch_rows(run: RunSpec, result, k: int, cfg: TrainConfig, dataset: str) -> pd.DataFrame:
    rows = []
    ref = run.device.ref if run.device else None
    name, _, version = (ref or "").partition("@")
    for rec in result.epochs:
        pulses = {f"pulses_{key}": float(v[k]) for key, v in rec.pulses.items()}
        rows.append({
            "run_id": run.run_id(cfg, dataset), "model_ref": ref, "model_name": name or None,
            "model_version": int(version) if version else None,
            "pulse_width_s": run.device.pulse_width_s if run.device else None, "family": run.device.family if run.device else None,
            "algorithm": run.algorithm, "shift": run.shift, "label": run.label,
            "config_hash": cfg.hash(), "seed": run.seed, "dataset": dataset, "epoch": rec.epoch,
            "train_accuracy": float(rec.train_accuracy[k]), "test_accuracy": float(rec.test_accuracy[k]),
            "loss": float(rec.loss[k]), **pulses,
            "pulses_total": float(sum(pulses.values())), "energy_j": float(rec.energy_j[k]),
            "energy_per_pulse_j": run.device.energy_per_pulse_j if run.device else 0.0,
            "wall_s": rec.wall_s / len(result.runs), "batch_runs": len(result.runs),
            "target_accuracy": cfg.target_accuracy,
            **{key: float(v[k]) for key, v in rec.diagnostics.items()},
        })
    return pd.DataFrame(rows)


def summarize(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: accuracy, epochs to target (absolute and 95 % of FP's best),
    pulses and energy."""
    if epochs.empty:
        return pd.DataFrame()
    fp_best = epochs[epochs.algorithm == "fp"].groupby("seed").test_accuracy.max()
    rows = []
    for run_id, df in epochs.sort_values("epoch").groupby("run_id", sort=False):
        first = df.iloc[0]
        target = first.target_accuracy
        hit = df[df.test_accuracy >= target]
        fp = fp_best.get(first.seed, np.nan)
        hit_fp = df[df.test_accuracy >= 0.95 * fp] if np.isfinite(fp) else df.iloc[0:0]
        last = df.iloc[-1]
        epochs_to = int(hit.epoch.iloc[0]) if len(hit) else np.nan
        rows.append({
            "run_id": run_id, "model_ref": first.model_ref, "pulse_width_s": first.pulse_width_s,
            "algorithm": first.algorithm, "shift": bool(first["shift"]), "label": first.label,
            "seed": first.seed, "epochs": int(last.epoch),
            "final_test_accuracy": last.test_accuracy, "best_test_accuracy": df.test_accuracy.max(),
            "epochs_to_target": epochs_to,
            "epochs_to_95pct_fp": int(hit_fp.epoch.iloc[0]) if len(hit_fp) else np.nan,
            "pulses_total": last.pulses_total, "pulses_per_epoch": last.pulses_total / last.epoch,
            "energy_j": last.energy_j, "energy_per_pulse_j": first.energy_per_pulse_j,
            "energy_to_target_j": float(hit.energy_j.iloc[0]) if len(hit) else np.nan,
        })
    return pd.DataFrame(rows)


def mean_curve_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per (pulse width, label): the first epoch at which the test accuracy *averaged over
    seeds* reaches the target (NaN when it never does). A mean of per-seed epochs would
    drop the seeds that never get there and so flatter slow configurations."""
    rows = []
    for (pw, label), df in epochs.groupby(["pulse_width_s", "label"], dropna=False):
        curve = df.groupby("epoch").test_accuracy.mean()
        crossed = curve.index[curve >= df.target_accuracy.iloc[0]]
        rows.append({"pulse_width_s": pw, "label": label,
                     "epochs_to_target": float(crossed[0]) if len(crossed) else np.nan})
    return pd.DataFrame(rows)


def sweep_table(summary: pd.DataFrame, epochs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (pulse width, algorithm). With the
    epoch rows, ``epochs_to_target`` is where the mean over seeds crosses the target
    (``mean_curve_epochs``); ``epochs_to_target_sd`` is the spread of the seeds that
    reach it, ``reached`` their number."""
    if summary.empty:
        return summary
    g = summary.groupby(["pulse_width_s", "label"], dropna=False)
    table = g.agg(seeds=("seed", "nunique"),
                  acc_mean=("final_test_accuracy", "mean"), acc_sd=("final_test_accuracy", "std"),
                  epochs_to_target=("epochs_to_target", "mean"),
                  epochs_to_target_sd=("epochs_to_target", "std"),
                  reached=("epochs_to_target", lambda s: int(s.notna().sum())),
                  pulses_per_epoch=("pulses_per_epoch", "mean"),
                  energy_per_pulse_j=("energy_per_pulse_j", "mean"),
                  energy_j=("energy_j", "mean"), energy_to_target_j=("energy_to_target_j", "mean"))
    table = table.reset_index()
    if epochs is not None:
        mean_curve = mean_curve_epochs(epochs).set_index(["pulse_width_s", "label"]).epochs_to_target
        table["epochs_to_target"] = [mean_curve.get((pw, lab), np.nan)
                                     for pw, lab in zip(table.pulse_width_s, table.label)]
    return table


def simulate_refs(registry: Registry, refs: list[str], variants=DEFAULT_VARIANTS, seeds=(0,),
                  cfg: TrainConfig = TrainConfig(), data_path: str | None = None, progress=None):
    """Plan, run (skipping done runs), and summarise: (epoch rows, run summary, table)."""
    sweep = plan(registry, refs, variants, seeds, cfg, dataset=str(data_path) if data_path else "digits")
    for note in sweep.notes if progress else ():
        progress(note)
    epochs = run_sweep(registry, sweep, progress=progress)
    summary = summarize(epochs)
    return epochs, summary, sweep_table(summary, epochs)
