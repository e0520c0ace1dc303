"""Walk-forward backtest: leakage rules, paired arms, differences, weights and leave-one-crisis-out."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score

from regime_assets.core.archive import build_archive
from regime_assets.core.walk_forward import (
    ARMS,
    META_MODEL,
    SCOPES,
    WalkForwardError,
    helps_verdict,
    run_walk_forward,
    widen,
)
from regime_assets.spec import CLASSES, REGIMES, spec_from_dict

HORIZON = 5
EMBARGO = 5
# month -> regime: every calendar year has every regime; the signal flips sign in crash months
MONTH_REGIME = ["low_vol"] * 4 + ["normal"] * 3 + ["high_vol"] * 2 + ["crash", "recovery", "normal"]
EVENTS = [
    {"id": "e2001", "start": "2001-10-01", "end": "2001-10-31", "regime": "crash", "weight": 0.2},
    {"id": "e2004", "start": "2004-10-01", "end": "2004-10-31", "regime": "crash", "weight": 0.1},
    {"id": "e2006", "start": "2006-08-01", "end": "2006-09-30", "regime": "high_vol", "weight": 0.15},
    {"id": "e2030", "start": "2030-01-01", "end": "2030-02-01", "regime": "crash", "weight": 0.1},
]


def make_panel(n_sym: int = 6, seed: int = 0) -> pl.DataFrame:
    """Weekdays 2000-2007; label from f_sig (flipped in crash months) + noise; f_n1, f_n2 pure noise."""
    days = pl.date_range(dt.date(2000, 1, 3), dt.date(2007, 12, 31), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    nd = days.len()
    reg = np.array([MONTH_REGIME[m - 1] for m in days.dt.month().to_numpy()])
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_sym):
        sig, n1, n2 = rng.normal(size=nd), rng.normal(size=nd), rng.normal(size=nd)
        score = np.where(reg == "crash", -1.0, 1.0) * sig + 0.3 * rng.normal(size=nd)
        lab = np.where(score > 0.4, "buy", np.where(score < -0.4, "sell", "hold")).astype(object)
        lab[nd - HORIZON:] = None
        frames.append(pl.DataFrame({
            "symbol": f"S{i}", "date": days, "sector": "tech", "sector_code": 0, "f_sig": sig, "f_n1": n1,
            "f_n2": n2, "regime": reg, "fwd_return": score * 0.01, "label": pl.Series(lab, dtype=pl.Utf8)}))
    return pl.concat(frames)


def make_spec(**wf):
    w = {"start_year": 2003, "test_years": 2, "train_years": 3, "n_estimators": 10, "max_train_rows": 2000,
         "min_train_rows": 500, "model_params": {"lightgbm": {"num_leaves": 7, "min_child_samples": 20}},
         "meta_models": ["lightgbm", "logreg"], "n_jobs": 2}
    w.update(wf)
    return spec_from_dict({"events": EVENTS, "labels": {"horizon": HORIZON},
                           "training_set": {"embargo_days": EMBARGO}, "balance": {"target_size": 2000},
                           "evaluation": {"bootstrap_reps": 40, "min_rows": 20}, "walk_forward": w})


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return make_panel()


@pytest.fixture(scope="module")
def archive(panel) -> pl.DataFrame:
    return build_archive(panel, make_spec().events)[0]


@pytest.fixture(scope="module")
def result(panel, archive):
    return run_walk_forward(panel, archive, make_spec())


@pytest.fixture(scope="module")
def calendar(panel) -> dict[dt.date, int]:
    days = panel.get_column("date").unique().sort().to_list()
    return {d: i for i, d in enumerate(days)}


def _tpos(calendar, dates) -> np.ndarray:
    return np.array([calendar[d] for d in dates])


# ---------------------------------------------------------------------------------------------- leakage


def test_no_test_date_or_label_window_in_training(result, calendar):
    folds = result.folds.filter(pl.col("status") == "ok")
    assert folds.height == 3
    td = result.train_dates
    for fold, start, end in folds.select("fold", "test_start", "test_end").iter_rows():
        rows = td.filter(pl.col("fold") == fold)
        assert set(rows.get_column("arm").unique()) == set(ARMS)
        dates = rows.get_column("date").to_list()
        assert not any(start <= d <= end for d in dates)
        # every training label window [t, t + horizon] ends before the test block starts
        assert (_tpos(calendar, dates) + HORIZON < calendar[start]).all()
        test_dates = result.predictions.filter(pl.col("fold") == fold).get_column("date")
        assert test_dates.min() >= start and test_dates.max() <= end
        assert not set(test_dates.unique().to_list()) & set(dates)


def test_archive_rows_only_in_full_arm_and_before_the_purge(result, calendar):
    arch = result.train_dates.filter(pl.col("source") == "archive")
    assert arch.height > 0
    assert set(arch.get_column("arm").unique()) == {"full"}
    starts = dict(result.folds.select("fold", "test_start").iter_rows())
    for fold, d in arch.select("fold", "date").iter_rows():
        assert calendar[d] + HORIZON < calendar[starts[fold]]
    # the archive reaches back past the rolling window: fold 2 (2007) sees the 2001 event
    win_start = result.folds.filter(pl.col("fold") == 2).get_column("train_start")[0]
    old = arch.filter((pl.col("fold") == 2) & (pl.col("date") < win_start))
    assert old.height > 0 and old.get_column("date").max() <= dt.date(2001, 10, 31)


def test_every_arm_predicts_the_same_rows(result):
    p = result.predictions
    pairs = p.select("arm", "model").unique()
    assert pairs.height == len(ARMS) + 1
    assert (p.filter(pl.col("model") == META_MODEL).get_column("arm").unique().to_list() == ["full"])
    keys = None
    for arm, model in pairs.iter_rows():
        k = p.filter((pl.col("arm") == arm) & (pl.col("model") == model)).select("fold", "symbol", "date", "label")
        k = k.sort("fold", "symbol", "date")
        if keys is None:
            keys = k
        assert k.equals(keys)
    assert keys.height == result.folds.get_column("test_rows").sum()
    proba = p.select("p_sell", "p_hold", "p_buy").to_numpy()
    assert np.allclose(proba.sum(axis=1), 1.0) and (proba >= 0).all()
    assert p.get_column("label").is_in(list(CLASSES)).all()


# ---------------------------------------------------------------------------------------------- evaluation


def test_arm_metrics_match_sklearn(result):
    am = result.arm_metrics
    assert am.height == (len(ARMS) + 1) * len(SCOPES)
    for arm, model in (("unweighted", "lightgbm"), ("full", META_MODEL)):
        p = result.predictions.filter((pl.col("arm") == arm) & (pl.col("model") == model))
        for scope in ("overall", "crash"):
            q = p if scope == "overall" else p.filter(pl.col("regime") == scope)
            y = q.get_column("label").replace_strict(list(CLASSES), [0, 1, 2]).to_numpy()
            pred = q.select("p_sell", "p_hold", "p_buy").to_numpy().argmax(axis=1)
            row = am.filter((pl.col("arm") == arm) & (pl.col("model") == model) & (pl.col("regime") == scope))
            assert row.get_column("n")[0] == q.height
            assert row.get_column("balanced_accuracy")[0] == pytest.approx(balanced_accuracy_score(y, pred))


def test_arm_differences_one_row_per_arm_and_regime(result):
    ad = result.arm_differences
    expected = {(a, "lightgbm", r) for a in ARMS if a != "unweighted" for r in SCOPES}
    expected |= {("full", META_MODEL, r) for r in SCOPES}
    got = set(ad.select("arm", "model", "regime").iter_rows())
    assert got == expected and ad.height == len(expected)
    assert (ad.get_column("metric") == "balanced_accuracy").all()
    ok = ad.filter(pl.col("diff").is_not_null())
    assert ok.height == ad.height  # every regime has test rows in this panel
    assert (ok["ci_low"] <= ok["diff"]).all() and (ok["diff"] <= ok["ci_high"]).all()
    assert np.allclose(ok["diff"], ok["arm_value"] - ok["baseline_value"])
    for lo, hi, h in ok.select("ci_low", "ci_high", "helps").iter_rows():
        assert h == ("yes" if lo > 0 else "no" if hi < 0 else "inconclusive")
    # a regime feature makes the crash flip learnable: it must clearly help in crash
    crash = ad.filter((pl.col("arm") == "regime_feature") & (pl.col("regime") == "crash")).row(0, named=True)
    assert crash["helps"] == "yes" and crash["diff"] > 0.2
    assert len(result.answer) == ad.height + result.loco_differences.height
    for sent, (arm, model, regime, helps) in zip(result.answer, ad.select("arm", "model", "regime", "helps").iter_rows()):
        who = arm if model == "lightgbm" else f"{arm} ({model})"
        assert sent.startswith(f"{who} vs unweighted, {regime}: balanced accuracy ")
        assert sent.split(" \u2014 ")[1].startswith(helps + " (")


def test_meta_weights_sum_to_one_per_fold(result):
    mw = result.meta_weights
    assert set(mw.get_column("model").unique()) == {"lightgbm", "logreg"}
    sums = mw.group_by("fold").agg(pl.col("weight").sum())
    assert sums.height == 3 and np.allclose(sums.get_column("weight"), 1.0)


# ---------------------------------------------------------------------------------------------- arms


@pytest.fixture(scope="module")
def cheap_runs(panel):
    """Two arms, no meta, no LOCO, crash weighted 50x; start_year 2000 gives a fold without training rows."""
    spec = make_spec(start_year=2000, arms=["unweighted", "regime_weights"], meta_models=[],
                     leave_one_crisis_out=False)
    w = {"crash": 50.0, "recovery": 1.0, "high_vol": 1.0, "normal": 1.0, "low_vol": 1.0}
    spec = spec.model_copy(update={"weights": spec.weights.model_copy(update={"regime_weights": w})})
    one = run_walk_forward(panel, None, spec.model_copy(
        update={"walk_forward": spec.walk_forward.model_copy(update={"n_jobs": 1})}))
    two = run_walk_forward(panel, None, spec)
    return one, two


def test_weights_change_the_fit(cheap_runs):
    res = cheap_runs[1]
    p = res.predictions
    u = p.filter(pl.col("arm") == "unweighted").sort("date", "symbol").select("p_sell", "p_hold", "p_buy")
    w = p.filter(pl.col("arm") == "regime_weights").sort("date", "symbol").select("p_sell", "p_hold", "p_buy")
    assert not np.allclose(u.to_numpy(), w.to_numpy())
    am = res.arm_metrics.filter(pl.col("regime") == "crash")
    acc = dict(am.select("arm", "balanced_accuracy").iter_rows())
    # the crash rows (flipped signal) dominate the weighted fit, so it must beat the unweighted one on crash
    assert acc["regime_weights"] > acc["unweighted"] + 0.2
    assert res.meta_weights.height == 0 and res.loco.height == 0


def test_short_history_fold_is_skipped_and_results_do_not_depend_on_n_jobs(cheap_runs):
    one, two = cheap_runs
    first = two.folds.row(0, named=True)
    assert first["train_rows"] == 0 and first["status"].startswith("skipped")
    assert 0 not in two.predictions.get_column("fold").unique().to_list()
    assert one.predictions.equals(two.predictions)
    assert one.arm_differences.equals(two.arm_differences)


# ---------------------------------------------------------------------------------------------- LOCO


def test_leave_one_crisis_out_excludes_the_event(result, calendar):
    lf = result.loco_folds
    assert set(lf.get_column("event_id")) == {"e2001", "e2004", "e2006", "e2030"}
    assert lf.filter(pl.col("event_id") == "e2030").get_column("status")[0].startswith("skipped")
    ran = lf.filter(pl.col("status") == "ok")
    assert ran.height == 3
    ltd = result.loco_train_dates
    for eid, s, e, after in ran.select("event_id", "test_start", "test_end", "train_rows_after").iter_rows():
        rows = ltd.filter(pl.col("event_id") == eid)
        assert set(rows.get_column("arm").unique()) == {"unweighted", "full"}
        pos = _tpos(calendar, rows.get_column("date").to_list())
        lo, hi = calendar[s], calendar[e]
        # before the event: the label window ends before it; after: past the embargo
        assert ((pos + HORIZON < lo) | (pos > hi + max(EMBARGO, HORIZON))).all()
        assert after > 0 and (pos > hi).any()
        n = result.loco.filter(pl.col("event_id") == eid).get_column("n")
        assert n.len() == 2 and (n == result.loco_folds.filter(pl.col("event_id") == eid)["test_rows"][0]).all()
    # the archive of the other events trains the full arm, never the held-out event's rows
    arch = ltd.filter(pl.col("source") == "archive")
    assert set(arch.get_column("arm").unique()) == {"full"}
    e01 = arch.filter(pl.col("event_id") == "e2001").get_column("date")
    assert e01.len() > 0 and not ((e01 >= dt.date(2001, 10, 1)) & (e01 <= dt.date(2001, 10, 31))).any()
    ld = result.loco_differences
    assert ld.height == 3
    assert ((ld["ci_low"] <= ld["diff"]) & (ld["diff"] <= ld["ci_high"])).all()


# ---------------------------------------------------------------------------------------------- inputs and rules


def test_bad_settings_and_inputs_raise(panel):
    with pytest.raises(WalkForwardError, match="bogus"):
        run_walk_forward(panel, None, make_spec(arms=["unweighted", "bogus"]))
    with pytest.raises(WalkForwardError, match="unweighted"):
        run_walk_forward(panel, None, make_spec(arms=["balanced"]))
    with pytest.raises(WalkForwardError, match="fwd_return"):
        run_walk_forward(panel.drop("fwd_return"), None, make_spec())
    with pytest.raises(WalkForwardError, match="S0"):
        run_walk_forward(pl.concat([panel, panel.head(1)]), None, make_spec())
    bad = panel.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("storm")).otherwise("regime")
                             .alias("regime"))
    with pytest.raises(WalkForwardError, match="storm"):
        run_walk_forward(bad, None, make_spec())
    with pytest.raises(WalkForwardError, match="no fold"):
        run_walk_forward(panel, None, make_spec(min_train_rows=10**7, arms=["unweighted"], meta_models=[]))


def test_helps_verdict_direction():
    assert helps_verdict("balanced_accuracy", 0.01, 0.03, 500, 50, 20) == "yes"
    assert helps_verdict("balanced_accuracy", -0.03, -0.01, 500, 50, 20) == "no"
    assert helps_verdict("balanced_accuracy", -0.01, 0.03, 500, 50, 20) == "inconclusive"
    assert helps_verdict("log_loss", -0.03, -0.01, 500, 50, 20) == "yes"
    assert helps_verdict("log_loss", 0.01, 0.03, 500, 50, 20) == "no"
    assert helps_verdict("balanced_accuracy", 0.01, 0.03, 10, 50, 20) == "inconclusive"
    assert helps_verdict("balanced_accuracy", 0.01, 0.03, 500, 1, 20) == "inconclusive"
    assert helps_verdict("balanced_accuracy", None, None, 500, 50, 20) == "inconclusive"


@settings(max_examples=50, deadline=None)
@given(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1))
def test_widened_interval_contains_estimate_and_original(d, a, b):
    lo, hi = min(a, b), max(a, b)
    wl, wh = widen(d, lo, hi)
    assert wl <= d <= wh and wl <= lo and wh >= hi
    assert (wl, wh) == (lo, hi) or not (lo <= d <= hi)


def test_regimes_constant_matches_scopes():
    assert SCOPES[1:] == REGIMES
