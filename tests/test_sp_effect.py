"""When symmetry-point shifting helps plain analog SGD (DOMAIN.md section 4).

The published 20 us beta-kernel model of Garg et al. 2025 has its SP above mid-range;
its mirror image (up and down kernels swapped around W = 1/2) has it below. With
non-negative pixels and sigmoid hidden units, an SP above mid-range drifts hidden units
into saturation and shifting restores accuracy; below mid-range shifting gains nothing;
shifting only the output layer changes nothing, since softmax ignores a common offset.
Five seeds each, on the digits; a gain counts when it exceeds the seed spread.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.importer import import_model, published_file, read_published
from pipeline.registry import Registry
from pipeline.reproduce import run_table
from pipeline.simulation import DeviceSpec, RunSpec, TrainConfig, load_dataset, train
from pipeline.simulation.sweep import _epoch_rows

SEEDS = range(5)
CFG = TrainConfig(epochs=3)


def mirrored_toml(tmp_path):
    """The 20 us model with W -> 1 - W: up'(W) = down(1 - W) and so on."""
    p = read_published(published_file("garg2025_20us")).params
    text = published_file("garg2025_20us").read_text()
    for name, value in {"A_p": p["A_d"], "alpha_p": p["beta_d"], "beta_p": p["alpha_d"],
                        "A_d": p["A_p"], "alpha_d": p["beta_p"], "beta_d": p["alpha_p"]}.items():
        text = text.replace(f"{name} = {p[name]}\n", f"{name} = {value!r}\n")
    text = text.replace('wafer = "garg2025"', 'wafer = "mirror"')
    path = tmp_path / "mirror.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("sp_effect")
    reg = Registry(root / "models")
    above = DeviceSpec.from_version(reg.load(import_model(reg, published_file("garg2025_20us")).ref))
    below = DeviceSpec.from_version(reg.load(import_model(reg, mirrored_toml(root)).ref))
    data = load_dataset()
    batches = [[RunSpec("analog-sgd", s, spec, shift, layers) for s in SEEDS]
               for spec, shift, layers in ((above, False, None), (above, True, None), (above, True, (1,)),
                                           (below, False, None), (below, True, None))]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        for runs in batches:
            result = train(runs, data, CFG)
            rows += [_epoch_rows(r, result, k, CFG, data.name) for k, r in enumerate(runs)]
    finally:
        torch.set_num_threads(before)
    import pandas as pd

    df = pd.concat(rows, ignore_index=True)
    df["pulse_width_s"] = np.where(df.model_name.str.contains("mirror"), -1.0, 1.0)  # above: 1, below: -1
    return run_table(df).set_index(["pulse_width_s", "label"])


def gain(table, side, label):
    plain, shifted = table.loc[(side, "analog-sgd")], table.loc[(side, label)]
    return shifted.acc_mean - plain.acc_mean, max(plain.acc_sd, shifted.acc_sd)


@pytest.mark.slow
def test_sp_above_mid_range_gains_from_shifting(table):
    plain = table.loc[(1.0, "analog-sgd")]
    assert plain.sp_offset_l0 > 0.2 and plain.sat_high_h0 > plain.sat_low_h0  # drifted high
    assert table.loc[(1.0, "analog-sgd+sp-shift")].sp_offset_l0 == pytest.approx(0, abs=1e-5)
    g, spread = gain(table, 1.0, "analog-sgd+sp-shift")
    assert g > spread, (g, spread)


@pytest.mark.slow
def test_mirrored_sp_below_mid_range_does_not_gain(table):
    plain = table.loc[(-1.0, "analog-sgd")]
    assert plain.sp_offset_l0 < -0.2 and plain.sat_low_h0 > plain.sat_high_h0  # drifted low
    g, spread = gain(table, -1.0, "analog-sgd+sp-shift")
    assert g <= spread, (g, spread)


@pytest.mark.slow
def test_shifting_only_the_output_layer_changes_nothing(table):
    out_only = table.loc[(1.0, "analog-sgd+sp-shift(l1)")]
    plain = table.loc[(1.0, "analog-sgd")]
    assert out_only.sp_offset_l0 == pytest.approx(plain.sp_offset_l0) and out_only.sp_offset_l1 == pytest.approx(0, abs=1e-5)
    g, spread = gain(table, 1.0, "analog-sgd+sp-shift(l1)")
    assert abs(g) <= spread, (g, spread)
