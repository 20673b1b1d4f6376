import numpy as np
import pandas as pd
import pytest

from pipeline.devices import FAMILIES, StepMap, family
from pipeline.fitrecords import (DeviceFit, FamilyFit, FitTarget, PopulationStat, SeriesInfo,
                                 columns)
from pipeline.fitting import FitConfig, fit_frame, fit_series, fit_traces
from pipeline.readers import TraceOptions, read_file
from pipeline.traces import Series, check_protocol, series_from_frame, step_map, traces
from pipeline.validation import validate
from pipeline.errors import InputError

KEY = ["wafer", "die", "device", "pulse_width_s"]


def test_symmetry_point_within_003_for_95_percent_of_devices(sample_fit, truth):
    d = sample_fit.devices.merge(truth, on=KEY, suffixes=("", "_true"))
    assert len(d) == 250
    err = (d.sp_norm - d.sp_norm_true).abs()
    assert (err < 0.03).mean() >= 0.95, err.describe()
    # the generator is soft bounds in truth: selection finds it (or its twin NeuroSim)
    assert d.family.isin(["softbounds", "neurosim"]).mean() >= 0.95


def test_step_sizes_within_10_percent_for_95_percent_of_devices(sample_fit, truth):
    p = sample_fit.params[sample_fit.params.family == "softbounds"]
    wide = p.pivot_table(index=KEY, columns="param", values="value").reset_index().merge(truth, on=KEY)
    for fitted, true in (("k_p", "p_up"), ("k_d", "p_down")):
        rel = (wide[fitted] / wide[true] - 1).abs()
        assert (rel < 0.10).mean() >= 0.95, (fitted, rel.describe())


def test_noise_estimates_recover_generator_values(sample_fit, truth):
    d = sample_fit.devices.merge(truth, on=KEY, suffixes=("", "_true"))
    by_pw = d.groupby("pulse_width_s").c2c_rel.median()
    assert by_pw.between(0.14, 0.26).all(), by_pw  # truth: 0.2 relative to the step
    read_rel = (d.read_noise_state / d.sp_state).median()
    assert 0.0015 < read_rel < 0.003  # truth: 0.2 % of G


def test_energy_is_measured_and_grows_with_width(sample_fit, truth):
    d = sample_fit.devices
    assert (d.energy_source == "measured").all()
    med = d.groupby("pulse_width_s").energy_per_pulse_j.median()
    assert 1e-12 < med.iloc[0] < 3e-12 and med.is_monotonic_increasing


def test_every_fit_reports_its_statistics(sample_fit):
    f = sample_fit.fits
    assert set(f.family) == set(FAMILIES)
    for col in ("chisqr", "redchi", "aic", "bic", "r2_steps", "r2_trace", "n_points", "success", "flag"):
        assert col in f
    ok = f[f.flag == ""]
    assert ok[["aic", "bic", "chisqr"]].notna().all().all()
    p = sample_fit.params
    assert p.stderr.notna().mean() > 0.9
    chosen = f[f.chosen]
    assert len(chosen) == 250 and (chosen["rank"] == 1).all()
    assert sample_fit.devices.runner_up.notna().mean() > 0.95


def test_population_summary_per_pulse_width(sample_fit):
    pop = sample_fit.population
    assert set(pop.pulse_width_s) == {2e-8, 2e-7, 2e-6, 2e-5, 2e-4}
    kp = pop[pop.param == "k_p"].set_index("pulse_width_s")
    assert (kp.n == 50).all() and (kp["spread"] > 0).all()
    assert kp["median"].is_monotonic_increasing  # longer pulses, bigger steps
    assert (pop.n_failed == 0).all()


def test_fits_are_reproducible_serial_and_parallel(sample_frame):
    part = sample_frame[sample_frame.die.isin(["X00Y00", "X01Y01"])]
    a = fit_frame(part, FitConfig(workers=1))
    b = fit_frame(part, FitConfig(workers=2))
    pd.testing.assert_frame_equal(a.params, b.params)
    pd.testing.assert_frame_equal(a.devices, b.devices)


LMFIT_UNUSED = """
import sys
from pipeline.fitting import FitConfig, fit_series_list
from pipeline.readers import read_file
from pipeline.traces import series_from_frame
import pipeline.app, pipeline.cli.commands, pipeline.publish
assert "lmfit" not in sys.modules, "imported at start"
series = series_from_frame(read_file(sys.argv[1]).to_pandas())
fit = fit_series_list(series, FitConfig(workers=1))
assert len(fit.devices) == 1 and fit.devices.family.notna().all()
assert "lmfit" not in sys.modules, "imported by a batch fit"
"""


def test_a_batch_fit_does_not_import_lmfit(sample_file):
    """lmfit (with scipy.stats) took 0.3 s of every start of a fitting command; the batch
    engine fits an ordinary series without it, so it is imported on first use only."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    r = subprocess.run([sys.executable, "-c", LMFIT_UNUSED, str(sample_file)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_workers_are_at_most_one_per_core(sample_frame, monkeypatch):
    """--workers 200 on 2 cores forked 200 processes and cut the batches to 10 series:
    2,000 series took 12.9 s instead of 4.3 s."""
    import os

    from pipeline import fitting

    pools, real = [], fitting.process_pool
    monkeypatch.setattr(fitting, "process_pool", lambda n: pools.append(n) or real(n))
    part = sample_frame[sample_frame.die.isin(["X00Y00", "X01Y01"])]
    fit_frame(part, FitConfig(workers=64))
    cores = len(os.sched_getaffinity(0))
    assert pools == ([cores] if cores > 1 else [])


@pytest.mark.slow
def test_real_gong_trace_fits_with_every_family(gong_path):
    df = validate(read_file(gong_path, trace=TraceOptions("GONG", "R1", 1e-6))).to_pandas()
    result = fit_frame(df, FitConfig(workers=1))
    f = result.fits.set_index("family")
    assert (f.fit_target == FitTarget.TRAJECTORY.value).all()  # read noise swamps single steps here
    for name in FAMILIES:
        assert np.isfinite(f.at[name, "aic"]) and np.isfinite(f.at[name, "bic"]), name
        assert f.at[name, "r2_trace"] > 0.85, name
    dev = result.devices.iloc[0]
    assert dev.flag == "" and dev.family in FAMILIES
    assert dev.r2_trace > 0.9
    lo, hi = df.conductance_state.min(), df.conductance_state.max()
    assert lo < dev.sp_state < hi
    assert dev.sp_g_err > 0
    assert dev.mean_step_up > 0 > dev.mean_step_down


def _series(state, up, cycle=None, amp=None):
    n = len(state)
    return Series("W", "X00Y00", "D1", 1e-6, np.asarray(state, float), np.asarray(up, bool),
                  np.ones(n, int) if cycle is None else np.asarray(cycle),
                  np.where(up, 1.0, -1.0) if amp is None else np.asarray(amp, float), "S")


@pytest.mark.parametrize("case,state,up,reason", [
    ("too few", [1e-6, 1.1e-6, 1.2e-6, 1.1e-6], [1, 1, 0, 0], "too few pulses"),
    ("constant", [1e-6] * 40, [1] * 20 + [0] * 20, "constant state"),
    ("wrong sign", list(np.linspace(2e-6, 1e-6, 20)) + list(np.linspace(1e-6, 2e-6, 20)),
     [1] * 20 + [0] * 20, "wrong sign"),
])
def test_bad_traces_give_flagged_fits_not_crashes(case, state, up, reason):
    out = fit_series(_series(state, up))
    assert out.device.family is None
    assert reason in out.device.flag
    assert all(not f.success for f in out.fits)


def test_pure_noise_is_not_a_device_model():
    rng = np.random.default_rng(0)
    up = np.tile(np.r_[np.ones(50, bool), np.zeros(50, bool)], 3)
    out = fit_series(_series(1e-6 * (1 + 0.01 * rng.standard_normal(300)), up,
                             cycle=np.repeat([1, 2, 3], 100)))
    assert out.device.family is None or out.device.r2_trace < 0.5
    assert out.device.flag


def test_amplitude_staircase_is_one_trace_per_direction():
    amps = np.round(np.arange(0.05, 1.05, 0.05), 2)
    s = _series(np.linspace(1e-6, 2e-6, 20), [1] * 20, amp=amps)
    check_protocol(s)  # a staircase is fitted, not refused
    assert s.protocol == "staircase"
    assert [len(t.states) for t in traces(s)] == [20]  # each step one update
    grouped = step_map(s, by_amplitude=True)
    assert len(grouped) == 19  # one step per amplitude after the first read


def test_closed_form_response_matches_stepping():
    p = {"k_p": 0.03, "k_d": 0.05, "b_hi": 1.0, "b_lo": 0.0}
    sb = family("softbounds")
    stepped = [0.2]
    for _ in range(50):
        stepped.append(stepped[-1] + float(sb.step(np.array([stepped[-1]]), np.array([True]), **p)[0]))
    np.testing.assert_allclose(sb.response(p, 0.2, 50, True), stepped[1:], rtol=1e-12)
    run = sb.run(p, np.array([0.2]), np.array([True]), 50)[0]
    np.testing.assert_allclose(run, stepped[1:], rtol=1e-12)


def test_symmetry_points_closed_form_agree_with_root_finding():
    for name, p in (("softbounds", {"k_p": 0.02, "k_d": 0.05, "b_hi": 1.1, "b_lo": -0.1}),
                    ("neurosim", {"A_p": 40.0, "A_d": 15.0, "Gmin": 0.0, "Gmax": 1.0})):
        m = family(name)
        closed = m.symmetry_point(p)
        root = m.root_symmetry_point(p)
        assert closed == pytest.approx(root, abs=1e-9)
        assert m.step(np.array([closed]), np.array([True]), **p)[0] == pytest.approx(
            -m.step(np.array([closed]), np.array([False]), **p)[0], rel=1e-9)


def test_trace_fits_equal_lmfit_on_each_trace(sample_frame):
    s = series_from_frame(sample_frame[sample_frame.die == "X01Y02"])[0]
    fast = fit_traces([s])
    sb = family("softbounds")
    lo, span = s.state.min(), np.ptp(s.state)
    for row, t in zip(fast.itertuples(), traces(s)):
        states = t.states if np.isnan(t.state_before) else np.r_[t.state_before, t.states]
        g = (states - lo) / span
        m = sb.model()
        up = np.full(len(g) - 1, t.up)
        start = m.make_params(k_p=0.05, k_d=0.05, b_hi=0.5, b_lo=0.5)
        fixed = "k_d" if t.up else "k_p"
        start[fixed].vary = False
        start["b_lo" if t.up else "b_hi"].vary = False
        r = m.fit(np.diff(g), start, g=g[:-1], up=up)
        k = r.params["k_p" if t.up else "k_d"].value
        b = r.params["b_hi" if t.up else "b_lo"].value
        assert row.k == pytest.approx(k, rel=1e-5) and row.b == pytest.approx(b, rel=1e-5)
        assert row.k_err == pytest.approx(r.params["k_p" if t.up else "k_d"].stderr, rel=1e-3)


def test_guess_bounds_come_from_the_declared_parameters():
    rng = np.random.default_rng(0)
    g = rng.uniform(0, 1, 100)
    up = rng.uniform(size=100) < 0.5
    data = StepMap(g, np.where(up, 0.03 * (1 - g), -0.04 * g), up)
    for name, model in FAMILIES.items():
        params = model.guess(data)
        assert tuple(params) == model.param_names
        for spec in model.params:
            p = params[spec.name]
            assert p.vary == spec.fitted and spec.unit and spec.doc
            if spec.fitted:  # data-dependent bounds only narrow the declared ones
                assert spec.lo <= p.min < p.max <= spec.hi, (name, spec)


@pytest.mark.parametrize("kwargs,named", [
    ({"criterion": "rmse"}, "'rmse'"),
    ({"families": ("softbounds", "nosuch")}, "nosuch"),
    ({"families": ()}, "softbounds"),
    ({"r2_min": 1.5}, "1.5"),
    ({"r2_min": float("nan")}, "nan"),
    ({"workers": -1}, "-1"),
])
def test_fit_config_rejects_bad_values_in_one_line(kwargs, named):
    with pytest.raises(ValueError) as exc:
        FitConfig(**kwargs)
    msg = str(exc.value)
    assert named in msg and "\n" not in msg


def test_fit_config_error_lists_the_allowed_values():
    with pytest.raises(ValueError, match="bic, aic"):
        FitConfig(criterion="AIC")
    with pytest.raises(ValueError, match=", ".join(FAMILIES)):
        FitConfig(families=("soft",))


def test_tables_have_the_columns_of_their_records(sample_fit):
    assert list(sample_fit.fits.columns) == columns(SeriesInfo, FamilyFit)
    assert list(sample_fit.devices.columns) == columns(SeriesInfo, DeviceFit)
    assert list(sample_fit.population.columns) == columns(PopulationStat)
    assert set(sample_fit.devices.fit_target) <= {t.value for t in FitTarget}
    # the registry's and the summaries' column lists name real columns
    assert set(FamilyFit.REGISTRY_COLUMNS) <= set(columns(FamilyFit))
    assert set(DeviceFit.REGISTRY_COLUMNS) <= set(columns(SeriesInfo, DeviceFit))
    assert set(DeviceFit.POPULATION_METRICS) <= set(columns(DeviceFit))
    assert set(PopulationStat.SUMMARY_COLUMNS) <= set(columns(PopulationStat))
    assert set(PopulationStat.HEADLINE_PARAMS) <= set(sample_fit.population.param)


def test_fit_workers_are_forked_with_the_parents_objects_frozen():
    """A forked worker's garbage collections skip the objects it inherited, so they do not
    copy every page that holds one; the parent collects its objects again afterwards."""
    import gc
    import multiprocessing

    from pipeline.workers import parent_objects_frozen, process_pool

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("workers are not forked under this start method: nothing to freeze")
    assert gc.get_freeze_count() == 0
    with process_pool(2) as pool:
        with parent_objects_frozen():
            futures = [pool.submit(gc.get_freeze_count) for _ in range(4)]
        assert gc.get_freeze_count() == 0
        assert all(f.result() > 1000 for f in futures)
