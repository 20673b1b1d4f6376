"""The batched step-map solver against lmfit (the reference) on real sample series."""

import numpy as np
import pytest

from pipeline import batchfit
from pipeline.devices import StepMap, family
from pipeline.fitrecords import FitTarget
from pipeline.fitting import FitConfig, TraceSet, fit_family, noise_weights
from pipeline.schema import StateScale
from pipeline.traces import series_from_frame, step_map, traces

FAMILIES = ("softbounds", "neurosim", "powstep", "beta", "lookup")


@pytest.fixture(scope="module")
def problems(sample_frame):
    """Normalised step maps, weights and traces of the first 40 sample series."""
    out = []
    for s in series_from_frame(sample_frame)[:40]:
        scale = StateScale.of(s.state, s.state_unit)
        data = step_map(s).normalised(scale)
        weights, target = noise_weights(data)
        assert target is FitTarget.STEPS
        out.append((data, weights, TraceSet.build(traces(s), scale)))
    return out


def _both(name, problems):
    datas, weights, tsets = zip(*problems)
    batch = batchfit.fit_steps(name, list(datas), list(weights), list(tsets), FitConfig().r2_min)
    ref = [fit_family(name, d, ts, FitConfig(), w, FitTarget.STEPS) for d, w, ts in problems]
    return batch, ref


@pytest.mark.parametrize("name", FAMILIES)
def test_batch_matches_lmfit(problems, name):
    """Every family, the kinked ones (powstep, beta: clipped step maps, several minima)
    included: the batched lmdif takes lmfit's path and stops where it stops."""
    batch, ref = _both(name, problems)
    assert all(r is not None for r in batch)
    for b, r in zip(batch, ref):
        assert b.flag == r.flag
        for k, v in r.values.items():
            assert b.values[k] == pytest.approx(v, rel=1e-3, abs=1e-9), k
            if np.isfinite(r.stderr[k]) and r.stderr[k] > 0:
                assert b.stderr[k] == pytest.approx(r.stderr[k], rel=0.05), k
        for k in ("chisqr", "redchi", "aic", "bic", "sp_g"):
            assert getattr(b, k) == pytest.approx(getattr(r, k), rel=1e-6, abs=1e-9, nan_ok=True), k
        # lmfit stops where chi-square changes by less than 1.5e-8 of itself: on a flat
        # bottom the unweighted R^2 may move in its fifth digit
        for k in ("r2_steps", "r2_trace"):
            assert getattr(b, k) == pytest.approx(getattr(r, k), abs=1e-5, nan_ok=True), k
        assert b.sp_g_err == pytest.approx(r.sp_g_err, rel=0.05, nan_ok=True)
        assert len(b.resid) == r.n_points


@pytest.mark.parametrize("name", FAMILIES)
def test_series_of_different_lengths_match_lmfit(problems, name):
    """A batch pads its shorter series (weight 0 past their last step); each still gets
    lmfit's fit. Padding changes the rounding of sums over points, and on a flat valley
    lmdif's path ends elsewhere within it (a beta fit moved 1.4e-3 relative, 2e-4 of its
    standard error, chi-square equal to 1e-8): parameters are held to 1e-3 relative or a
    hundredth of their standard error."""
    short = []
    for i, (data, _, ts) in enumerate(problems):
        keep = np.arange(len(data.g)) < (len(data.g) * (30 + i) // 100 if i % 2 else len(data.g))
        data = data.select(keep)
        weights, target = noise_weights(data)
        assert target is FitTarget.STEPS
        short.append((data, weights, ts))
    assert len({len(d.g) for d, _, _ in short}) > 10
    batch, ref = _both(name, short)
    for b, r in zip(batch, ref):
        assert b is not None and b.flag == r.flag
        assert b.n_points == r.n_points == len(b.resid)
        assert b.chisqr == pytest.approx(r.chisqr, rel=1e-6)
        for k, v in r.values.items():
            err = r.stderr[k] if np.isfinite(r.stderr[k]) else 0.0
            assert abs(b.values[k] - v) <= max(1e-3 * abs(v), 1e-2 * err, 1e-9), k


@pytest.mark.parametrize("name", sorted(batchfit.GRADIENTS))
def test_analytic_gradients_match_differences(problems, name):
    model = family(name)
    datas, weights, _ = zip(*problems[:10])
    batch = batchfit.StepBatch.build(list(datas), list(weights))
    bounds, x = batchfit.Bounds.from_params([model.guess(d) for d in datas])
    x = np.clip(x * 1.03, bounds.lo, bounds.hi)  # off the starting values
    parts = batchfit.GRADIENTS[name](batch.g, batch.up, **bounds.values(x))
    for j, k in enumerate(bounds.names):
        h = 1e-7 * np.maximum(np.abs(x[:, j]), 1e-3)
        hi, lo = x.copy(), x.copy()
        hi[:, j] += h
        lo[:, j] -= h
        diff = (model.step(batch.g, batch.up, **bounds.values(hi))
                - model.step(batch.g, batch.up, **bounds.values(lo))) / (2 * h[:, None])
        assert np.abs(parts[k] - diff).max() <= 1e-4 * np.abs(diff).max(), k


def test_too_few_points_is_left_to_lmfit(problems):
    data, weights, ts = problems[0]
    short = StepMap(data.g[:5], data.dg[:5], data.up[:5])
    rows = batchfit.fit_steps("softbounds", [short, data], [weights[:5], weights], [ts, ts], 0.9)
    assert rows[0] is None and rows[1] is not None


def test_length_groups_bound_the_padding():
    groups = batchfit.length_groups([600, 6000, 600, 590, 900, 899], 1.5)
    assert groups == [[3, 0, 2], [5, 4], [1]]  # longest <= 1.5 x shortest; equal lengths keep order
    assert batchfit.length_groups([], 1.5) == []


def test_a_long_series_is_not_padded_with_the_short_ones(problems, monkeypatch):
    """A batch is padded to its longest series: one series ten times longer than the
    rest of its partition made the partition's fit six times slower. It is solved in a
    batch of its own length, and every series gets the fit it gets without the other."""
    data, weights, ts = problems[0]
    long = StepMap(np.tile(data.g, 10), np.tile(data.dg, 10), np.tile(data.up, 10))
    datas, ws, tss = zip(*problems[1:11])
    sizes, build = [], batchfit.StepBatch.build

    def spy(cls, d, w):
        sizes.append(sorted(len(x.g) for x in d))
        return build(d, w)
    monkeypatch.setattr(batchfit.StepBatch, "build", classmethod(spy))
    both = batchfit.fit_steps("softbounds", [*datas[:5], long, *datas[5:]],
                              [*ws[:5], np.tile(weights, 10), *ws[5:]], [*tss[:5], ts, *tss[5:]], 0.9)
    assert all(s[-1] <= batchfit.LENGTH_SPREAD * s[0] for s in sizes) and len(sizes) == 2
    alone = batchfit.fit_steps("softbounds", [long], [np.tile(weights, 10)], [ts], 0.9)
    short = batchfit.fit_steps("softbounds", list(datas), list(ws), list(tss), 0.9)
    assert both[5].values == alone[0].values and both[5].n_points == 10 * len(data.g)
    assert [f.values for f in both[:5] + both[6:]] == [f.values for f in short]


def test_symmetry_points_match_the_family(problems):
    model = family("beta")
    params = [model.guess(d).valuesdict() for d, _, _ in problems[:10]]
    p = {k: np.array([q[k] for q in params]) for k in params[0]}
    got = batchfit.symmetry_points(model, p)
    want = [model.symmetry_point(q) for q in params]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


# --- the batch engine inside fit_frame ------------------------------------------------------
@pytest.fixture(scope="module")
def both_engines(sample_frame):
    """The first 40 sample series fitted by fit_frame with each engine."""
    from pipeline.fitting import fit_frame

    keys = sample_frame[["die", "device", "pulse_width_s"]].drop_duplicates().head(40)
    df = sample_frame.merge(keys, on=["die", "device", "pulse_width_s"])
    calls = []
    batch = fit_frame(df, FitConfig(engine="batch", workers=1),
                      progress=lambda done, total: calls.append((done, total)))
    return fit_frame(df, FitConfig(engine="lmfit", workers=1)), batch, calls


def test_engines_choose_the_same_family_with_the_same_flags(both_engines):
    ref, new, _ = both_engines
    assert len(ref.devices) == len(new.devices) == 40
    assert list(ref.devices.family) == list(new.devices.family)
    assert list(ref.devices.flag) == list(new.devices.flag)
    assert list(ref.fits.flag) == list(new.fits.flag)
    assert list(ref.fits.chosen) == list(new.fits.chosen)


def test_engines_agree_on_the_chosen_models(both_engines):
    ref, new, _ = both_engines
    key = ["die", "device", "pulse_width_s", "family", "param"]
    chosen = ref.devices[["die", "device", "pulse_width_s", "family"]]
    p = ref.params.merge(chosen).merge(new.params, on=key, suffixes=("_ref", "_new"))
    assert len(p) > 0
    np.testing.assert_allclose(p.value_new, p.value_ref, rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(p.stderr_new, p.stderr_ref, rtol=0.05)
    np.testing.assert_allclose(new.devices.sp_norm, ref.devices.sp_norm, rtol=1e-3)
    np.testing.assert_allclose(new.devices.sp_norm_err, ref.devices.sp_norm_err, rtol=0.05)
    np.testing.assert_allclose(new.devices.c2c_rel, ref.devices.c2c_rel, rtol=1e-3)
    assert list(new.fits.columns) == list(ref.fits.columns)
    assert list(new.devices.columns) == list(ref.devices.columns)


def test_batch_engine_reports_progress_per_partition(both_engines):
    *_, calls = both_engines
    assert calls[-1] == (40, 40)
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:]))


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="engine"):
        FitConfig(engine="torch")


def test_partition_tables_equal_one_table_of_all_rows(sample_frame, monkeypatch):
    """Workers build their partitions' tables; concatenated they are the tables built
    from every series' records at once (values and column types)."""
    import pandas as pd

    from pipeline import fitting
    from pipeline.fitrecords import DeviceFit, FamilyFit, SeriesInfo, records_frame

    series = series_from_frame(sample_frame)[:30]
    cfg = FitConfig(workers=1)
    whole = fitting._fit_partition(series, cfg, [traces(s) for s in series])
    monkeypatch.setattr(fitting, "PARTITION", 7)
    got = fitting.fit_series_list(series, cfg)
    pd.testing.assert_frame_equal(got.fits, records_frame(
        [(r.info, f) for r in whole for f in r.fits], (SeriesInfo, FamilyFit)))
    pd.testing.assert_frame_equal(got.devices, records_frame(
        [(r.info, r.device) for r in whole], (SeriesInfo, DeviceFit)))
    pd.testing.assert_frame_equal(got.params, fitting.params_frame(whole))


def test_no_series_gives_empty_tables_with_their_columns():
    from pipeline.fitting import fit_series_list

    out = fit_series_list([], FitConfig(workers=1))
    assert len(out.fits) == len(out.devices) == len(out.params) == 0
    assert "family" in out.fits.columns and "param" in out.params.columns


@pytest.mark.parametrize("name", ("softbounds", "neurosim", "powstep", "beta", "lookup"))
def test_remembered_starting_values_equal_the_family_guess(problems, name):
    """Light guesses are remembered per data object and equal lmfit's Parameters."""
    model = family(name)
    data = problems[0][0]
    first, again = batchfit.starting_values(model, data), batchfit.starting_values(model, data)
    assert first is again
    other = StepMap(data.g.copy(), data.dg.copy(), data.up.copy())  # equal, not the same object
    assert batchfit.starting_values(model, other) is not first
    for k, p in model.guess(data).items():
        assert (first[k].value, first[k].min, first[k].max, first[k].vary) == (p.value, p.min, p.max, p.vary)


@pytest.mark.parametrize("name", sorted(batchfit.SPLIT))
def test_split_differences_equal_one_parameter_at_a_time(problems, name):
    """Moving an up and a down parameter in one evaluation, and the rest together, changes
    no number of lmdif's Jacobian (what keeps the batched fit on lmfit's path); a wrong
    SPLIT entry (a parameter entering both directions) fails here."""
    model = family(name)
    datas, weights, _ = zip(*problems[:10])
    batch = batchfit.StepBatch.build(list(datas), list(weights))
    bounds, x = batchfit.Bounds.from_params([model.guess(d) for d in datas])
    prob = batchfit.Problem(model, batch, bounds, x)
    assert prob.split, "no pair of this family is split"
    u = bounds.internal(np.clip(x * 1.03, bounds.lo, bounds.hi))
    rows = np.arange(len(u))
    f = prob.residual(bounds.external(u))
    together = prob.jacobian(u, f, rows)
    prob.split = []
    for j in range(u.shape[1]):
        prob.rest = [j]
        assert np.array_equal(together[:, j], prob.jacobian(u, f, rows)[:, j], equal_nan=True), j
