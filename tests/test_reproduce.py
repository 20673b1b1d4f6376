"""Verdicts of the Garg et al. 2025 reproduction from epoch rows (no training here: the
rows are written out so each verdict is known; tests/test_report_browser.py runs the
whole command on the digits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.reproduce import FAILS, HOLDS, NOISE, claims, compare, explanations, run_table

WIDTHS = (2e-8, 2e-7, 2e-5)


def rows(accuracy, epochs=4, seeds=5, target=0.9):
    """Epoch rows; ``accuracy(width, label, seed, epoch)`` gives the test accuracy."""
    out = []
    for w in WIDTHS:
        for label in ("analog-sgd", "analog-sgd+sp-shift", "mixed-precision"):
            for seed in range(seeds):
                for epoch in range(1, epochs + 1):
                    out.append({"pulse_width_s": w, "label": label, "seed": seed, "epoch": epoch,
                                "test_accuracy": accuracy(w, label, seed, epoch),
                                "target_accuracy": target, "pulses_total": 1000.0 * epoch / w ** 0.1,
                                "energy_per_pulse_j": 3e-12 if w == 2e-8 else np.nan,
                                "sp_offset_l0": 0.0 if "shift" in label else 0.47,
                                "sat_high_h0": 0.1 if "shift" in label else 0.4, "sat_low_h0": 0.05})
    return pd.DataFrame(out)


def noise(seed):
    return 0.01 * (seed - 2)  # spread 0.016 over five seeds


def test_compare_counts_a_difference_beyond_two_standard_errors():
    assert compare(0.9, 0.01, 0.8, 0.01, 5)[2] == 1
    assert compare(0.8, 0.01, 0.9, 0.01, 5)[2] == -1
    assert compare(0.805, 0.05, 0.8, 0.05, 5)[2] == 0


def test_the_paper_world_holds_everywhere():
    def acc(w, label, seed, epoch):  # short pulses learn slower; shifting and MP help
        base = {"analog-sgd": 0.7, "analog-sgd+sp-shift": 0.85, "mixed-precision": 0.95}[label]
        slow = {2e-8: 3, 2e-7: 2, 2e-5: 1}[w]
        return base + noise(seed) - (0.2 if epoch < slow else 0.0)

    table = run_table(rows(acc))
    mp20 = table[(table.label == "mixed-precision") & (table.pulse_width_s == 2e-8)].iloc[0]
    assert mp20.epochs_to_target == 3 and mp20.seed_epochs_mean == 3 and mp20.reached == 5
    verdicts = [c.verdict for c in claims(table)]
    assert verdicts == [HOLDS, HOLDS, HOLDS]
    assert all("helped" in e and "above mid-range" in e for e in explanations(table))


def test_contradictions_and_noise():
    def acc(w, label, seed, epoch):  # same speed everywhere; shifting hurts at one width
        base = {"analog-sgd": 0.8, "analog-sgd+sp-shift": 0.7 if w == 2e-5 else 0.8,
                "mixed-precision": 0.805}[label]
        return base + noise(seed) + 0.05 * (epoch > 1)

    verdicts = [c.verdict for c in claims(run_table(rows(acc)))]
    assert verdicts == [NOISE, NOISE, FAILS]


def test_a_target_never_reached_by_the_mean_is_never():
    table = run_table(rows(lambda w, label, seed, epoch: 0.85 + noise(seed) + 0.06 * (seed == 4)))
    assert table.epochs_to_target.isna().all() and (table.reached == 1).all()
    assert table.seed_epochs_mean.to_numpy() == pytest.approx(np.full(len(table), (1 + 4 * 5) / 5))


@pytest.mark.slow
def test_reproduce_command_imports_runs_and_saves(tmp_path):
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "reproduce", "garg2025", "--seeds", "1",
                          "--epochs", "1", "--dataset", "digits", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["settings"]["refs"] == ["hzo-garg2025-20ns@1", "hzo-garg2025-200ns@1", "hzo-garg2025-20us@1"]
    assert [c["verdict"] in (HOLDS, FAILS, NOISE) for c in doc["claims"]] == [True] * 3
    assert len(doc["table"]) == 13 and len(doc["explanations"]) == 3  # FP + 3 widths x 4 analog
    saved = json.loads((tmp_path / "models" / "reproductions" / "garg2025" / "claims.json").read_text())
    assert saved["claims"] == doc["claims"]
