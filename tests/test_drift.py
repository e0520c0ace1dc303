import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from regime_assets.core.drift import (PSI_EPSILON, DriftError, _psi_by_window, _window_ecdf_stats, domain_auc,
                                       domain_features, drift_report, excess, ks, psi, wasserstein, window_ids)
from regime_assets.core.monitoring import drift_windows, select_windows
from regime_assets.spec import CLASSES, REGIMES, DriftSpec, Spec

# the raw components; calibration and the domain classifier have their own tests below
DSPEC = DriftSpec(calibration="none", domain_classifier=False)
DSPEC_CAL = DriftSpec(domain_classifier=False)


def _w3(w):
    """The weights without the (disabled) domain component, renormalised."""
    t = w["feature"] + w["regime"] + w["prediction"]
    return {k: w[k] / t for k in ("feature", "regime", "prediction")}


def _frame(rng, n, shift=0.0, regimes=None, start=dt.date(2020, 1, 1)):
    regimes = regimes or ["normal"] * n
    return pl.DataFrame({
        "symbol": ["AAA"] * n,
        "date": pl.date_range(start, start + dt.timedelta(days=n - 1), eager=True),
        "f_stable": rng.normal(size=n),
        "f_shift": rng.normal(size=n) + shift,
        "regime": regimes,
    })


def test_psi_hand_computed():
    ref = np.arange(100, dtype=float)
    cur = np.zeros(50)  # everything in the first quartile bin
    r = np.array([0.25, 0.25, 0.25, 0.25])
    c = np.array([1.0, PSI_EPSILON, PSI_EPSILON, PSI_EPSILON])
    expected = float(np.sum((c - r) * np.log(c / r)))
    assert psi(ref, cur, bins=4) == pytest.approx(expected, rel=1e-12)


def test_psi_zero_on_same_sample_and_large_on_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    assert psi(x, x, 10) == 0.0
    assert psi(x, rng.normal(size=5000), 10) < DSPEC.psi_moderate
    assert psi(x, rng.normal(size=5000) + 1.0, 10) > DSPEC.psi_major


def test_psi_drops_nan_and_handles_empty():
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=1000), rng.normal(size=300) + 0.3
    with_nan = np.concatenate([cur, [np.nan, np.nan]])
    assert psi(ref, with_nan, 10) == pytest.approx(psi(ref, cur, 10))
    assert math.isnan(psi(ref, np.array([np.nan]), 10))
    assert math.isnan(psi(np.array([]), cur, 10))
    with pytest.raises(DriftError, match="bins"):
        psi(ref, cur, 1)


def test_psi_constant_reference_is_finite():
    ref = np.ones(100)
    assert psi(ref, np.ones(10), 10) == 0.0
    assert psi(ref, np.full(10, 2.0), 10) > DSPEC.psi_major


def test_ks_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=400), rng.normal(size=300) + 0.2
    assert ks(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic)
    assert ks(a, a) == 0.0
    assert math.isnan(ks(a, np.array([])))


def _psi_reference_impl(ref, cur, bins):
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=edges.size + 1) / ref.size
    c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=edges.size + 1) / cur.size
    r, c = np.maximum(r, PSI_EPSILON), np.maximum(c, PSI_EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's p-value on 1-row samples; the statistic is fine
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=120),
       st.lists(st.integers(-5, 5), min_size=1, max_size=120),
       st.integers(2, 10))
def test_psi_and_ks_match_plain_implementations_with_ties(ref, cur, bins):
    r, c = np.array(ref, dtype=float), np.array(cur, dtype=float)
    assert psi(r, c, bins) == pytest.approx(_psi_reference_impl(r, c, bins), rel=1e-9, abs=1e-12)
    assert ks(r, c) == pytest.approx(stats.ks_2samp(r, c, method="asymp").statistic, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200),
       st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200),
       st.integers(2, 12))
def test_psi_non_negative(ref, cur, bins):
    v = psi(np.array(ref), np.array(cur), bins)
    assert v >= -1e-12 and np.isfinite(v)


def test_drift_report_levels_and_order():
    rng = np.random.default_rng(3)
    ref, cur = _frame(rng, 3000), _frame(rng, 400, shift=1.5)
    table, summary = drift_report(ref, cur, ["f_stable", "f_shift"], DSPEC, None, None)
    assert table.columns == ["feature", "psi", "ks", "wasserstein", "level", "null_psi", "null_ks",
                             "null_wasserstein", "excess"]
    rows = {r["feature"]: r for r in table.iter_rows(named=True)}
    assert table.get_column("feature")[0] == "f_shift"
    assert rows["f_shift"]["level"] == "major" and rows["f_stable"]["level"] == "none"
    assert rows["f_shift"]["ks"] > rows["f_stable"]["ks"]
    assert summary["top_features"][0] == "f_shift"
    assert summary["n_major"] == 1 and summary["n_features"] == 2
    expected_feature = np.mean([min(rows[f]["psi"] / DSPEC.psi_major, 1.0) for f in rows])
    assert summary["feature_score"] == pytest.approx(expected_feature)
    assert summary["n_reference"] == 3000 and summary["n_current"] == 400


def test_regime_score_and_weight_redistribution():
    rng = np.random.default_rng(4)
    ref = _frame(rng, 1000)  # all normal
    cur = _frame(rng, 200, regimes=["crash"] * 100 + ["normal"] * 100)
    _, s = drift_report(ref, cur, ["f_stable"], DSPEC, None, None)
    assert s["regime_score"] == pytest.approx(0.5)
    assert s["prediction_available"] is False and s["prediction_score"] == 0.0
    w = _w3(DSPEC.score_weights)
    expected = (w["feature"] * s["feature_score"] + w["regime"] * 0.5) / (w["feature"] + w["regime"])
    assert s["score"] == pytest.approx(expected)
    assert sum(s["weights"].values()) == pytest.approx(1.0) and s["weights"]["prediction"] == 0.0
    assert s["regime_shares_current"]["crash"] == pytest.approx(0.5)
    assert set(s["regime_shares_reference"]) == set(REGIMES)


def test_prediction_drift_probabilities_and_classes_agree():
    rng = np.random.default_rng(5)
    ref, cur = _frame(rng, 300), _frame(rng, 100)
    ref_cls = np.array(["hold"] * 300)
    cur_cls = np.array(["sell"] * 25 + ["hold"] * 75)
    _, s1 = drift_report(ref, cur, ["f_stable"], DSPEC, ref_cls, cur_cls)
    _, s_len = drift_report(ref, cur, ["f_stable"], DSPEC, ref_cls[:40], cur_cls)  # lengths need not match
    assert s_len["prediction_score"] == pytest.approx(0.25)
    _, s_idx = drift_report(ref, cur, ["f_stable"], DSPEC, np.ones(300, dtype=int), np.array([0] * 25 + [1] * 75))
    assert s_idx["prediction_score"] == pytest.approx(0.25)
    _, s_one = drift_report(ref, cur, ["f_stable"], DSPEC, ref_cls, None)  # one side alone is ignored
    assert s_one["prediction_available"] is False
    eye = np.eye(len(CLASSES))
    ref_p = eye[[CLASSES.index(c) for c in ref_cls]] * 0.8 + 0.2 / 3
    cur_p = eye[[CLASSES.index(c) for c in cur_cls]] * 0.8 + 0.2 / 3
    _, s2 = drift_report(ref, cur, ["f_stable"], DSPEC, ref_p, cur_p)
    assert s1["prediction_score"] == pytest.approx(0.25) == s2["prediction_score"]
    w = _w3(DSPEC.score_weights)
    expected = w["feature"] * s1["feature_score"] + w["regime"] * s1["regime_score"] + w["prediction"] * 0.25
    assert s1["score"] == pytest.approx(expected)
    assert s1["above_threshold"] == (s1["score"] >= DSPEC.retrain_threshold)


def test_drift_report_bad_inputs():
    rng = np.random.default_rng(6)
    ref, cur = _frame(rng, 100), _frame(rng, 50)
    with pytest.raises(DriftError, match="f_missing"):
        drift_report(ref, cur, ["f_missing"], DSPEC)
    with pytest.raises(DriftError, match="current window has no rows"):
        drift_report(ref, cur.head(0), ["f_stable"], DSPEC)
    with pytest.raises(DriftError, match="bogus"):
        drift_report(ref, cur.with_columns(pl.lit("bogus").alias("regime")), ["f_stable"], DSPEC)
    with pytest.raises(DriftError, match="ref_pred has no rows"):
        drift_report(ref, cur, ["f_stable"], DSPEC, np.zeros(0, dtype=int), np.zeros(50, dtype=int))
    with pytest.raises(DriftError, match="3 columns"):
        drift_report(ref, cur, ["f_stable"], DSPEC, np.ones((5, 2)), np.ones((5, 2)))
    with pytest.raises(DriftError, match="unknown classes"):
        drift_report(ref, cur, ["f_stable"], DSPEC, np.array(["up"] * 100), np.array(["hold"] * 50))


def test_all_null_feature_is_left_out_of_score():
    rng = np.random.default_rng(7)
    ref, cur = _frame(rng, 500), _frame(rng, 100, shift=2.0)
    cur_null = cur.with_columns(pl.lit(None, dtype=pl.Float64).alias("f_stable"))
    table, s = drift_report(ref, cur_null, ["f_stable", "f_shift"], DSPEC)
    row = table.filter(pl.col("feature") == "f_stable").row(0, named=True)
    assert row["psi"] is None and row["level"] == "none"
    assert s["feature_score"] == pytest.approx(1.0)  # only f_shift counts, and it is fully major


@settings(max_examples=25, deadline=None)
@given(st.floats(0, 5), st.integers(0, 100), st.integers(20, 200))
def test_score_in_unit_interval(shift, n_crash, n_cur):
    rng = np.random.default_rng(n_cur)
    ref = _frame(rng, 300)
    k = min(n_crash, n_cur)
    cur = _frame(rng, n_cur, shift=shift, regimes=["crash"] * k + ["normal"] * (n_cur - k))
    pred_ref = rng.integers(0, 3, size=300)
    pred_cur = np.full(n_cur, 2)
    _, s = drift_report(ref, cur, ["f_stable", "f_shift"], DSPEC, pred_ref, pred_cur)
    for key in ("feature_score", "regime_score", "prediction_score", "score"):
        assert 0.0 <= s[key] <= 1.0


def test_select_windows_boundaries_point_in_time():
    dates = pl.date_range(dt.date(2020, 1, 1), dt.date(2020, 12, 31), eager=True)
    df = pl.DataFrame({"date": dates, "x": np.arange(len(dates))})
    as_of = dt.date(2020, 6, 30)
    ref, cur = select_windows(df, as_of, dt.date(2020, 1, 1), dt.date(2020, 12, 31), 4)
    assert cur.get_column("date").min() == as_of - dt.timedelta(weeks=4) + dt.timedelta(days=1)
    assert cur.get_column("date").max() == as_of
    assert cur.height == 28
    assert ref.get_column("date").max() == as_of  # reference clipped at as_of
    ref2, _ = select_windows(df, as_of, dt.date(2020, 1, 1), dt.date(2020, 3, 31), 4)
    assert ref2.get_column("date").max() == dt.date(2020, 3, 31)
    assert ref2.get_column("date").min() == dt.date(2020, 1, 1)
    with pytest.raises(DriftError, match="after reference_end"):
        select_windows(df, as_of, dt.date(2020, 5, 1), dt.date(2020, 1, 1), 4)


# ----------------------------------------------------------------------------------------------- calibration


def _ar_panel(rng, n_days, start=dt.date(2015, 1, 1), phi=0.995, symbols=5, level=0.0, regimes=None):
    """A slow AR(1) common factor (like VIX) plus symbol noise: any few weeks sit in one corner of it."""
    x = np.zeros(n_days)
    for i in range(1, n_days):
        x[i] = phi * x[i - 1] + rng.normal(scale=0.1)
    dates = pl.date_range(start, start + dt.timedelta(days=n_days - 1), eager=True)
    frames = []
    for s in range(symbols):
        frames.append(pl.DataFrame({
            "symbol": f"S{s}", "date": dates, "f_slow": x + level + rng.normal(scale=0.05, size=n_days),
            "f_noise": rng.normal(size=n_days),
            "regime": regimes if regimes is not None else ["normal"] * n_days}))
    return pl.concat(frames)


def test_window_psi_matches_scalar_psi():
    rng = np.random.default_rng(11)
    ref = _ar_panel(rng, 400)
    ids = window_ids(ref["date"], 4)
    vals = ref["f_slow"].to_numpy()
    by_window = _psi_by_window(vals, ids, 10, PSI_EPSILON)
    for w in range(0, ids.max() + 1, 3):
        if (ids == w).any():
            assert by_window[w] == pytest.approx(psi(vals, vals[ids == w], 10), rel=1e-9, abs=1e-12)


def test_excess_boundaries():
    assert excess(0.2, 0.2, 0.1) == 0.0
    assert excess(0.3, 0.2, 0.1) == pytest.approx(0.5)
    assert excess(0.4, 0.2, 0.1) == 1.0 and excess(5.0, 0.2, 0.1) == 1.0
    assert excess(0.15, 0.01, 0.1) == pytest.approx(0.5)  # the floor stops a quiet null from inflating it
    assert excess(0.15, float("nan"), 0.1) == pytest.approx(0.5)


def test_calibration_ignores_ordinary_windows_and_flags_new_ones():
    rng = np.random.default_rng(12)
    panel = _ar_panel(rng, 3 * 365 + 28)
    ref = panel.filter(pl.col("date") < dt.date(2018, 1, 1))
    cur = panel.filter(pl.col("date") >= dt.date(2018, 1, 1))  # the next four weeks of the same process
    _, raw = drift_report(ref, cur, ["f_slow", "f_noise"], DSPEC)
    table, cal = drift_report(ref, cur, ["f_slow", "f_noise"], DSPEC_CAL)
    assert raw["raw"]["feature"] == pytest.approx(raw["feature_score"])
    assert cal["raw"]["feature"] == pytest.approx(raw["feature_score"])
    assert cal["calibration"] == "reference_windows" and cal["null_windows"] >= 30
    assert raw["feature_score"] > 0.4 and cal["feature_score"] < 0.2
    # a level the reference never reached: far outside its own windows' PSI
    shifted = cur.with_columns(pl.col("f_slow") + 20.0)
    table2, cal2 = drift_report(ref, shifted, ["f_slow", "f_noise"], DSPEC_CAL)
    rows = {r["feature"]: r for r in table2.iter_rows(named=True)}
    assert rows["f_slow"]["excess"] == 1.0 and rows["f_noise"]["excess"] < 0.5
    assert cal2["top_features"][0] == "f_slow"
    assert cal2["feature_score"] >= 0.5 > cal["feature_score"]


def test_regime_calibration_on_regime_blocks():
    rng = np.random.default_rng(13)
    n = 3 * 365
    blocks = [("low_vol" if (i // 60) % 2 == 0 else "normal") for i in range(n)]
    ref = _ar_panel(rng, n, regimes=blocks)
    cur_normal = _ar_panel(rng, 28, start=dt.date(2018, 1, 1), regimes=["normal"] * 28)
    cur_crash = _ar_panel(rng, 28, start=dt.date(2018, 1, 1), regimes=["crash"] * 28)
    _, s_n = drift_report(ref, cur_normal, ["f_noise"], DSPEC_CAL)
    _, s_c = drift_report(ref, cur_crash, ["f_noise"], DSPEC_CAL)
    assert s_n["raw"]["regime"] == pytest.approx(0.5, abs=0.05) and s_n["regime_score"] == 0.0
    assert s_c["raw"]["regime"] == pytest.approx(1.0) and s_c["regime_score"] > 0.0
    assert s_c["score"] > s_n["score"]


def test_prediction_calibration_uses_validation_windows():
    rng = np.random.default_rng(14)
    ref, cur = _ar_panel(rng, 365), _ar_panel(rng, 28, start=dt.date(2016, 1, 1))
    dates = pl.date_range(dt.date(2015, 7, 1), dt.date(2015, 12, 31), eager=True)
    # validation predictions: weeks of mostly 'hold', some weeks mostly 'buy'
    ref_cls = np.array(["buy" if (i // 28) % 2 else "hold" for i in range(dates.len())])
    cur_cls = np.array(["buy"] * 28)
    _, raw = drift_report(ref, cur, ["f_noise"], DSPEC_CAL, ref_cls, cur_cls)
    _, cal = drift_report(ref, cur, ["f_noise"], DSPEC_CAL, ref_cls, cur_cls, dates)
    assert raw["null_quantiles"]["prediction"] is None and raw["prediction_score"] == raw["raw"]["prediction"]
    assert cal["null_quantiles"]["prediction"] is not None
    assert cal["prediction_score"] < raw["prediction_score"]
    assert cal["raw"]["prediction"] == pytest.approx(raw["raw"]["prediction"])


def test_short_reference_falls_back_to_raw_components():
    rng = np.random.default_rng(15)
    ref, cur = _frame(rng, 60), _frame(rng, 28, shift=1.0, start=dt.date(2021, 1, 1))
    _, cal = drift_report(ref, cur, ["f_stable", "f_shift"], DSPEC_CAL)
    _, raw = drift_report(ref, cur, ["f_stable", "f_shift"], DSPEC)
    assert cal["null_windows"] < DSPEC_CAL.min_null_windows
    assert cal["feature_score"] == pytest.approx(raw["feature_score"])
    assert cal["regime_score"] == pytest.approx(raw["regime_score"])


# ------------------------------------------------------------------------------ KS / Wasserstein, domain, windows


def test_wasserstein_matches_scipy_normed_by_reference_sd():
    rng = np.random.default_rng(20)
    a, b = rng.normal(size=500), rng.normal(size=200) * 2 + 1.0
    assert wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(b, a) / np.std(a))
    assert wasserstein(a, a) == 0.0 and math.isnan(wasserstein(a, np.array([])))


def test_window_ks_and_wasserstein_match_scalar_versions():
    rng = np.random.default_rng(21)
    ref = _ar_panel(rng, 300)
    ids = window_ids(ref["date"], 4)
    vals = np.round(ref["f_slow"].to_numpy(), 2)  # ties
    ks_w, w1_w = _window_ecdf_stats(vals, ids)
    for w in range(0, ids.max() + 1, 2):
        if (ids == w).any():
            assert ks_w[w] == pytest.approx(stats.ks_2samp(vals, vals[ids == w]).statistic, abs=1e-12)
            assert w1_w[w] == pytest.approx(wasserstein(vals, vals[ids == w]), rel=1e-9, abs=1e-12)


def test_domain_features_leave_out_slow_and_calendar_features():
    feats = ["f_ret_1", "f_ret_252", "f_vol_ratio_5_10", "f_vol_ratio_21_63", "f_vix", "f_month", "f_dow"]
    assert domain_features(feats, 10) == ["f_ret_1", "f_vol_ratio_5_10"]


def _fast_panel(rng, n_days, start=dt.date(2015, 1, 1), symbols=8, shift=0.0):
    dates = pl.date_range(start, start + dt.timedelta(days=n_days - 1), eager=True)
    common = rng.normal(size=n_days) * 0.3
    return pl.concat([pl.DataFrame({
        "symbol": f"S{s}", "date": dates, "f_ret_1": common + rng.normal(size=n_days),
        "f_ret_5": rng.normal(size=n_days) + shift, "f_vol_5": np.abs(rng.normal(size=n_days)),
        "regime": ["normal"] * n_days}) for s in range(symbols)])


def test_domain_classifier_separates_a_shift_and_not_the_same_process():
    rng = np.random.default_rng(22)
    ref = _fast_panel(rng, 400)
    calm = _fast_panel(rng, 28, start=dt.date(2016, 2, 5))
    moved = _fast_panel(rng, 28, start=dt.date(2016, 2, 5), shift=3.0)  # one feature: AUROC ~ Phi(3/sqrt 2) = 0.98
    dspec = DriftSpec()
    feats = ["f_ret_1", "f_ret_5", "f_vol_5"]
    assert domain_auc(ref, calm, feats, dspec) < 0.7
    assert domain_auc(ref, moved, feats, dspec) > 0.9


def _history(rng, start, years, symbols=6):
    n = int(years * 365)
    dates = pl.date_range(start, start + dt.timedelta(days=n - 1), eager=True)
    x = np.zeros(n)
    for i in range(1, n):
        x[i] = 0.995 * x[i - 1] + rng.normal(scale=0.1)
    return pl.concat([pl.DataFrame({
        "symbol": f"S{s}", "date": dates, "f_slow": x + rng.normal(scale=0.05, size=n),
        "f_ret_1": rng.normal(size=n), "f_ret_5": rng.normal(size=n), "regime": ["normal"] * n})
        for s in range(symbols)])


def test_an_archive_row_far_in_the_past_does_not_move_the_reference():
    rng = np.random.default_rng(23)
    spec = Spec()
    panel = _history(rng, dt.date(2012, 1, 1), 8).with_columns(pl.lit("window").alias("source"))
    as_of = panel["date"].max()
    archive_row = panel.head(1).with_columns(pl.lit(dt.date(2008, 10, 10)).alias("date"),
                                             pl.lit("archive").alias("source"), pl.lit(99.0).alias("f_slow"))
    base = drift_windows(panel, spec, as_of)
    with_archive = drift_windows(pl.concat([archive_row, panel]), spec, as_of)
    # a production model trained on archive rows back to 2008 does not widen the reference either
    old_record = {"model_name": "m", "version": "v", "train_start": dt.date(2008, 10, 10),
                  "train_end": dt.date(2019, 6, 30)}
    with_record = drift_windows(pl.concat([archive_row, panel]), spec, as_of, record=old_record)
    for w in (with_archive, with_record):
        assert (w.reference_start, w.reference_end) == (base.reference_start, base.reference_end)
        assert w.reference.equals(base.reference) and w.current.equals(base.current)
    assert base.reference["date"].min() >= as_of - dt.timedelta(days=int(3 * 365.25) + 28)
    assert base.reference["date"].max() < base.current["date"].min()
    assert base.current["date"].min() > as_of - dt.timedelta(weeks=4)


class _ConstModel:
    def predict_proba(self, df):
        return np.tile([0.2, 0.5, 0.3], (df.height, 1))


def test_prediction_reference_is_out_of_sample_where_it_can_be():
    rng = np.random.default_rng(24)
    spec = Spec()
    panel = _history(rng, dt.date(2016, 1, 1), 4)
    as_of = panel["date"].max()
    rec = {"model_name": "m", "version": "v", "train_end": as_of - dt.timedelta(days=200)}
    w = drift_windows(panel, spec, as_of, record=rec, model=_ConstModel())
    assert w.ref_pred_dates.min() > rec["train_end"] and "out of sample" in w.prediction_reference
    rec_late = {**rec, "train_end": as_of - dt.timedelta(days=40)}
    w2 = drift_windows(panel, spec, as_of, record=rec_late, model=_ConstModel())
    assert "in-sample" in w2.prediction_reference and w2.ref_pred_dates.len() == w2.reference.height


def test_a_planted_shift_in_one_feature_lifts_the_score_and_a_calm_window_does_not():
    rng = np.random.default_rng(25)
    spec = Spec()
    panel = _history(rng, dt.date(2016, 1, 1), 4)
    as_of = panel["date"].max()
    feats = ["f_slow", "f_ret_1", "f_ret_5"]
    calm = drift_windows(panel, spec, as_of)
    _, s_calm = drift_report(calm.reference, calm.current, feats, spec.drift)
    shifted = panel.with_columns(pl.when(pl.col("date") >= calm.current_start).then(pl.col("f_ret_5") + 4.0)
                                 .otherwise(pl.col("f_ret_5")).alias("f_ret_5"))
    moved = drift_windows(shifted, spec, as_of)
    table, s_moved = drift_report(moved.reference, moved.current, feats, spec.drift)
    assert s_calm["score"] < spec.drift.retrain_threshold
    assert s_moved["score"] >= spec.drift.retrain_threshold
    assert table["feature"][0] == "f_ret_5" and s_moved["top_features"] == ["f_ret_5"]
    assert s_moved["domain_available"] and s_moved["domain_score"] > s_calm["domain_score"]


# ------------------------------------------------------------------------ the comparison rule (Evidently default)


def test_default_rule_columns_and_dataset_share():
    from regime_assets.core.drift_rules import default_rule

    rng = np.random.default_rng(30)
    n_ref, n_cur = 3000, 400
    ref = pl.DataFrame({f"f_{i}": rng.normal(size=n_ref) for i in range(4)} | {"f_cat": rng.integers(0, 3, n_ref)})
    cur = pl.DataFrame({f"f_{i}": rng.normal(size=n_cur) + (1.0 if i < 2 else 0.0) for i in range(4)}
                       | {"f_cat": rng.integers(0, 3, n_cur)})
    cols = [*ref.columns]
    table, s = default_rule(ref, cur, cols)
    rows = {r["column"]: r for r in table.iter_rows(named=True)}
    assert rows["f_0"]["test"] == "wasserstein" and rows["f_cat"]["test"] == "jensenshannon"
    assert rows["f_0"]["statistic"] == pytest.approx(
        stats.wasserstein_distance(ref["f_0"].to_numpy(), cur["f_0"].to_numpy()) / np.std(ref["f_0"].to_numpy()))
    assert rows["f_0"]["drifted"] and rows["f_1"]["drifted"] and not rows["f_2"]["drifted"]
    assert not rows["f_cat"]["drifted"]
    assert s["n_drifted"] == 2 and s["n_columns"] == 5 and s["share"] == pytest.approx(0.4)
    assert not s["dataset_drift"]
    cur3 = cur.with_columns(pl.col("f_2") + 1.0)
    assert default_rule(ref, cur3, cols)[1]["dataset_drift"]  # 3 of 5 >= 50 %


def test_default_rule_small_reference_uses_tests():
    from regime_assets.core.drift_rules import default_rule

    rng = np.random.default_rng(31)
    ref = pl.DataFrame({"f_x": rng.normal(size=500), "f_c": rng.integers(0, 3, 500)})
    cur = pl.DataFrame({"f_x": rng.normal(size=200) + 0.5, "f_c": rng.integers(0, 3, 200)})
    table, s = default_rule(ref, cur, ["f_x", "f_c"])
    rows = {r["column"]: r for r in table.iter_rows(named=True)}
    assert rows["f_x"]["test"] == "ks" and rows["f_x"]["drifted"]
    assert rows["f_x"]["statistic"] == pytest.approx(stats.ks_2samp(ref["f_x"].to_numpy(), cur["f_x"].to_numpy()).pvalue)
    assert rows["f_c"]["test"] == "chisquare" and not rows["f_c"]["drifted"]
    assert s["share"] == pytest.approx(0.5) and s["dataset_drift"]
