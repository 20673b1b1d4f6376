import gzip
import struct

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.devices import FAMILIES, family
from pipeline.publish import register_fit
from pipeline.registry import Registry
from pipeline.simulation import RunSpec, TrainConfig, plan, run_sweep, summarize, train
from pipeline.simulation.datasets import load_digits, load_mnist
from pipeline.simulation.devices import DeviceLayer, DeviceSpec

SB = {"k_p": 0.02, "k_d": 0.04, "b_hi": 1.2, "b_lo": -0.1}


def spec_for(name: str, median: dict, c2c: float = 0.0) -> DeviceSpec:
    return DeviceSpec(name, dict(median), {k: 0.0 for k in median},
                      {k: v > 0 for k, v in median.items()}, c2c, 2e-12, f"{name}@1", 2e-8)


def test_noise_free_pulses_follow_the_closed_form_response():
    layer = DeviceLayer([spec_for("softbounds", SB)], (1, 2), [0], False, torch.zeros(1, 1, 2), d2d=False)
    g0 = layer.g.clone()
    gen = torch.Generator().manual_seed(0)
    one_by_one = DeviceLayer([spec_for("softbounds", SB)], (1, 2), [0], False, torch.zeros(1, 1, 2), d2d=False)
    for _ in range(40):
        one_by_one.pulse(torch.tensor([[[1.0, -1.0]]]), gen)
    layer.pulse(torch.tensor([[[40.0, -40.0]]]), gen)  # forty pulses in one update
    sb = family("softbounds")
    expect_up = sb.response(SB, float(g0[0, 0, 0]), 40, True)[-1]
    expect_down = sb.response(SB, float(g0[0, 0, 1]), 40, False)[-1]
    for lay in (layer, one_by_one):
        assert float(lay.g[0, 0, 0]) == pytest.approx(expect_up, rel=1e-5)
        assert float(lay.g[0, 0, 1]) == pytest.approx(expect_down, rel=1e-5)
    assert layer.pulses_up.item() == 40 and layer.pulses_down.item() == 40


@pytest.mark.slow
@pytest.mark.parametrize("c2c", [0.0, 0.2])
def test_balanced_random_pulses_settle_at_the_symmetry_point(c2c):
    layer = DeviceLayer([spec_for("softbounds", SB, c2c)], (16, 16), [1], False,
                        torch.zeros(1, 16, 16), d2d=False)
    gen = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(2)
    for _ in range(3000):
        layer.pulse(torch.tensor(rng.choice([-1.0, 1.0], size=(1, 16, 16)), dtype=torch.float32), gen)
    sp = family("softbounds").symmetry_point(SB)
    assert float(layer.g.mean()) == pytest.approx(sp, abs=0.01)
    shifted = DeviceLayer([spec_for("softbounds", SB)], (2, 2), [1], True, torch.zeros(1, 2, 2), d2d=False)
    assert torch.allclose(shifted.g_ref, torch.full_like(shifted.g_ref, sp), atol=1e-5)


@pytest.mark.slow
def test_every_family_trains_in_the_simulator(sample_fit):
    data = load_digits()
    params = sample_fit.params
    for name in FAMILIES:
        med = params[params.family == name].groupby("param").value.median().to_dict()
        spec = spec_for(name, med, 0.1)
        # one epoch of one seed scatters widely (0.18-0.50 for powstep): three seeds, batched
        result = train([RunSpec("analog-sgd", seed, spec) for seed in range(3)], data,
                       TrainConfig(epochs=1, hidden=(16,)))
        rec = result.epochs[0]
        assert np.all(rec.pulses["l0_up"] > 0) and np.all(rec.pulses["l0_down"] > 0), name
        assert rec.test_accuracy.mean() > 0.2, (name, rec.test_accuracy)  # chance is 0.1
        mp = train([RunSpec("mixed-precision", 0, spec, shift=True)], data,
                   TrainConfig(epochs=1, hidden=(16,))).epochs[0]
        assert mp.test_accuracy[0] > 0.5, (name, mp.test_accuracy)


@pytest.fixture(scope="module")
def sample_registry(sample_fit, tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("reg") / "models")
    register_fit(reg, sample_fit)
    return reg


@pytest.mark.slow
def test_sweep_results_claims_and_lineage(sample_registry):
    reg = sample_registry
    refs = ["hzo-W01-20ns", "hzo-W01-200us"]
    sweep = plan(reg, refs, (("fp", False), ("analog-sgd", False), ("mixed-precision", False)),
                 seeds=(0, 1), cfg=TrainConfig(epochs=3))
    epochs = run_sweep(reg, sweep)
    assert len(epochs) == (2 + 2 * 2 * 2) * 3  # fp per seed; analog and mp per model and seed
    again = run_sweep(reg, sweep)  # done runs are read back, not rerun
    pd.testing.assert_frame_equal(epochs.sort_values(["run_id", "epoch"]).reset_index(drop=True),
                                  again.sort_values(["run_id", "epoch"]).reset_index(drop=True))
    s = summarize(epochs)
    by = s.groupby(["pulse_width_s", "algorithm"]).final_test_accuracy.mean()
    for pw in (2e-8, 2e-4):
        # the claim that holds on the sample wafer: mixed precision beats plain analog SGD
        assert by[(pw, "mixed-precision")] > by[(pw, "analog-sgd")] + 0.05
    mp = s[s.algorithm == "mixed-precision"].groupby("pulse_width_s")
    assert mp.energy_per_pulse_j.first()[2e-8] < mp.energy_per_pulse_j.first()[2e-4] / 100
    assert mp.pulses_per_epoch.mean()[2e-8] > mp.pulses_per_epoch.mean()[2e-4]
    runs = reg.runs("hzo-W01-20ns")
    assert len(runs) == 4 and set(runs.kind) == {"analog-sgd", "mixed-precision"}
    assert len(reg.lineage("hzo-W01-20ns")["runs"]) == 4
    assert (epochs.groupby("run_id").energy_j.apply(lambda e: e.is_monotonic_increasing)).all()


@pytest.mark.slow
def test_same_seed_same_results(sample_registry):
    data = load_digits()
    spec = DeviceSpec.from_version(sample_registry.load("hzo-W01-2us"))
    cfg = TrainConfig(epochs=1, hidden=(8,))
    a = train([RunSpec("mixed-precision", 3, spec, True)], data, cfg).epochs[0]
    b = train([RunSpec("mixed-precision", 3, spec, True)], data, cfg).epochs[0]
    assert a.test_accuracy.tolist() == b.test_accuracy.tolist()
    assert a.pulses == b.pulses


def test_mnist_from_local_files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 20, dtype=np.uint8)
    np.savez(tmp_path / "m.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    d = load_mnist(tmp_path / "m.npz")
    assert d.x_train.shape == (20, 784) and d.x_train.max() <= 1.0

    def idx(path, arr):
        header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
        path.write_bytes(gzip.compress(header + arr.tobytes()))

    folder = tmp_path / "idx"
    folder.mkdir()
    idx(folder / "train-images-idx3-ubyte.gz", x)
    idx(folder / "train-labels-idx1-ubyte.gz", y)
    idx(folder / "t10k-images-idx3-ubyte.gz", x[:5])
    idx(folder / "t10k-labels-idx1-ubyte.gz", y[:5])
    d2 = load_mnist(folder)
    np.testing.assert_array_equal(d.x_train, d2.x_train)
    assert d2.n_classes <= 10


@pytest.mark.slow
def test_pulse_trains_give_the_sgd_update_in_expectation():
    """E[signed count] = -lr x_i delta_j / dw_min for every device of every layer."""
    from types import SimpleNamespace

    from pipeline.simulation.algorithms import PulseTrains

    layers = [SimpleNamespace(g=torch.zeros(1, 5, 8), dw_min=torch.tensor([0.02])),
              SimpleNamespace(g=torch.zeros(1, 3, 5), dw_min=torch.tensor([0.05]))]
    trains = PulseTrains(layers, lr=0.1, bl=31)
    torch.manual_seed(0)
    xs = [torch.rand(1, 8) * 0.5, torch.rand(1, 5)]
    deltas = [torch.randn(1, 5) * 0.05, torch.randn(1, 3) * 0.1]
    gen = torch.Generator().manual_seed(3)
    total = [torch.zeros(1, 5, 8), torch.zeros(1, 3, 5)]
    n = 5000
    for _ in range(n):
        out = [torch.zeros_like(t) for t in total]
        trains.counts(xs, deltas, gen, out)
        for t, o in zip(total, out):
            t += o
    for t, x, d, layer in zip(total, xs, deltas, layers):
        expected = -0.1 * d[0][:, None] * x[0][None, :] / layer.dw_min
        assert torch.allclose(t[0] / n, expected, atol=0.015), (t[0] / n - expected).abs().max()


def test_train_runs_on_one_thread_and_restores_the_callers_setting():
    seen = []
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train([RunSpec("fp", 0)], load_digits(), TrainConfig(epochs=1, hidden=(8,)),
              progress=lambda *_: seen.append(torch.get_num_threads()))
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_algorithms_come_from_one_registry():
    from pipeline.cli.parser import build_parser
    from pipeline.simulation import ALGORITHMS
    from pipeline.simulation.algorithms import ALGORITHMS as STRATEGIES, Algorithm
    from pipeline.simulation.catalog import CATALOG, algorithm_names

    assert ALGORITHMS == algorithm_names() == tuple(STRATEGIES) == ("fp", "analog-sgd", "mixed-precision")
    assert all(issubclass(s, Algorithm) and s.__name__ == CATALOG[n].impl for n, s in STRATEGIES.items())
    assert [n for n, info in CATALOG.items() if not info.analog] == ["fp"]
    simulate = build_parser()._subparsers._group_actions[0].choices["simulate"]
    [option] = [a for a in simulate._actions if "--algorithm" in a.option_strings]
    assert tuple(option.choices) == algorithm_names()  # the CLI offers what the catalog lists
    with pytest.raises(ValueError, match="unknown algorithm 'sgd'; use one of"):
        RunSpec("sgd", 0)
    with pytest.raises(ValueError, match="needs a device model"):
        RunSpec("analog-sgd", 0)
