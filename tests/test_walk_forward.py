"""Walk-forward: leakage rules, the production recipe per fold, baselines, arms, the fold memo and the report."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, log_loss

from _wf_panels import EMBARGO, EVENTS, HORIZON, make_panel, make_spec
from regime_assets.core import models as model_core
from regime_assets.core.archive import build_archive
from regime_assets.core.walk_forward import (
    BASELINES,
    META_MODEL,
    PREDICTION_SCHEMA,
    FoldStore,
    WalkForwardError,
    candidate_names,
    run_walk_forward,
)
from regime_assets.core.walk_forward import report
from regime_assets.spec import CLASSES, REGIMES, EvaluationSpec, spec_from_dict

MODELS = ("lightgbm", "logreg", "rf")


def small_spec(models=MODELS, **wf):
    spec = make_spec(**{"loco_production": True, **wf})
    d = spec.resolved()
    d["models"] = [m for m in d["models"] if m["name"] in models]
    for m in d["models"]:
        if "n_jobs" in m["params"]:
            m["params"]["n_jobs"] = 1
    return spec_from_dict(d)


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return make_panel()


@pytest.fixture(scope="module")
def archive(panel) -> pl.DataFrame:
    return build_archive(panel, make_spec().events)[0]


@pytest.fixture(scope="module")
def result(panel, archive):
    return run_walk_forward(panel, archive, small_spec())


@pytest.fixture(scope="module")
def calendar(panel) -> dict[dt.date, int]:
    days = panel.get_column("date").unique().sort().to_list()
    return {d: i for i, d in enumerate(days)}


def _tpos(calendar, dates) -> np.ndarray:
    return np.array([calendar[d] for d in dates])


# ---------------------------------------------------------------------------------------------- leakage


def test_no_test_date_or_label_window_in_training(result, calendar):
    folds = result.folds.filter(pl.col("event_id").is_null() & (pl.col("status") == "ok"))
    assert folds.height == 3
    td = result.train_dates
    for fold, start, end in folds.select("fold", "test_start", "test_end").iter_rows():
        rows = td.filter(pl.col("fold") == fold)
        assert {"production", "unweighted", "full", "arm:production_no_archive"} <= set(rows["arm"].unique())
        dates = rows.get_column("date").to_list()
        assert not any(start <= d <= end for d in dates)
        # every training label window [t, t + horizon] ends before the test block starts
        assert (_tpos(calendar, dates) + HORIZON < calendar[start]).all()
        test_dates = result.predictions.filter(pl.col("fold") == fold).get_column("date")
        assert test_dates.min() >= start and test_dates.max() <= end


def test_archive_and_replay_enter_only_where_the_recipe_says(result, calendar):
    td = result.train_dates.filter(pl.col("fold") >= 0)
    arch = td.filter(pl.col("source") == "archive")
    assert arch.height > 0
    assert set(arch["arm"].unique()) == {"full", "production"}
    starts = dict(result.folds.select("fold", "test_start").iter_rows())
    for fold, d in arch.select("fold", "date").iter_rows():
        assert calendar[d] + HORIZON < calendar[starts[fold]]
    # the archive reaches back past the rolling window: fold 2 (2007) sees the 2001 event
    win_start = result.folds.filter(pl.col("fold") == 2)["train_start"][0]
    old = arch.filter((pl.col("fold") == 2) & (pl.col("date") < win_start))
    assert old.height > 0 and old["date"].max() <= dt.date(2001, 10, 31)
    # the replay buffer: the previous fold's worst out-of-sample rows, in the production recipe only
    replay = td.filter(pl.col("source") == "replay")
    assert set(replay["arm"].unique()) <= {"production", "arm:production_no_archive"}
    assert replay.filter(pl.col("fold") == 0).height == 0 and replay.filter(pl.col("fold") == 2).height > 0
    f1 = result.folds.filter(pl.col("fold") == 1).row(0, named=True)
    prev = result.folds.filter(pl.col("fold") == 0).row(0, named=True)
    assert f1["replay_rows"] > 0
    r1 = replay.filter(pl.col("fold") == 1)["date"]
    assert r1.min() >= prev["test_start"] and r1.max() <= f1["train_end"]


def test_every_model_predicts_the_same_rows_with_the_contract_columns(result):
    p = result.predictions
    assert dict(p.schema) == PREDICTION_SCHEMA
    models = set(p["model"].unique())
    assert set(candidate_names(small_spec())) | set(BASELINES) <= models
    assert {"arm:unweighted", "arm:full", "arm:no_archive", "arm:production_no_archive"} <= models
    keys = None
    for m in sorted(models):
        k = p.filter(pl.col("model") == m).select("fold", "symbol", "date", "label").sort("fold", "symbol", "date")
        keys = k if keys is None else keys
        assert k.equals(keys), m
    assert keys.height == result.folds.filter(pl.col("event_id").is_null())["test_rows"].sum()
    proba = p.select("p_sell", "p_hold", "p_buy").to_numpy()
    assert np.allclose(proba.sum(axis=1), 1.0) and (proba >= 0).all()
    assert p.group_by("model").agg(pl.col("recipe_hash").n_unique())["recipe_hash"].max() == 1
    assert p["recipe_hash"].null_count() == 0


def test_baselines_predict_the_training_class_frequencies(panel, result):
    f = result.folds.filter(pl.col("fold") == 1).row(0, named=True)
    train = panel.filter(pl.col("label").is_not_null() & (pl.col("date") >= f["train_start"])
                         & (pl.col("date") <= f["train_end"]))
    freq = train["label"].value_counts(normalize=True)
    expect = np.array([freq.filter(pl.col("label") == c)["proportion"][0] for c in CLASSES])
    p = result.predictions.filter((pl.col("fold") == 1) & (pl.col("model") == "baseline_prior"))
    assert np.allclose(p.select("p_sell", "p_hold", "p_buy").to_numpy(), expect[None, :])
    crash = train.filter(pl.col("regime") == "crash")["label"].value_counts(normalize=True)
    want = np.array([(crash.filter(pl.col("label") == c)["proportion"].to_list() or [0.0])[0] for c in CLASSES])
    q = result.predictions.filter((pl.col("fold") == 1) & (pl.col("model") == "baseline_regime_prior")
                                  & (pl.col("regime") == "crash"))
    assert np.allclose(q.select("p_sell", "p_hold", "p_buy").to_numpy(), want[None, :])
    # a baseline's log-loss is finite: it gives every class its training frequency, never 0 to a seen class
    y = q["label"].replace_strict(list(CLASSES), [0, 1, 2]).to_numpy()
    assert np.isfinite(log_loss(y, q.select("p_sell", "p_hold", "p_buy").to_numpy(), labels=[0, 1, 2]))


# ---------------------------------------------------------------------------------------------- memo


def test_a_second_run_fits_nothing_and_a_changed_row_refits_only_its_folds(panel, archive, tmp_path, monkeypatch):
    spec = small_spec(models=("lightgbm", "logreg"), arms=["unweighted", "full"], production_arms=[])
    calls: list[str] = []
    real = model_core.fit_model

    def counting(mspec, *a, **kw):
        calls.append(mspec.name)
        return real(mspec, *a, **kw)

    monkeypatch.setattr(model_core, "fit_model", counting)
    store = FoldStore(tmp_path / "folds")
    first = run_walk_forward(panel, archive, spec, store=store)
    n_first = len(calls)
    assert n_first > 0 and first.fits > 0
    calls.clear()
    second = run_walk_forward(panel, archive, spec, store=FoldStore(tmp_path / "folds"))
    assert calls == [] and second.fits == 0
    assert second.predictions.sort("model", "fold", "symbol", "date").equals(
        first.predictions.sort("model", "fold", "symbol", "date"))
    # one label changes late in 2007: only the last walk-forward fold and the event whose after-window holds it
    day = dt.date(2007, 12, 3)
    changed = panel.with_columns(pl.when((pl.col("symbol") == "S1") & (pl.col("date") == day))
                                 .then(pl.lit("sell")).otherwise(pl.col("label")).alias("label"))
    assert changed["label"].ne_missing(panel["label"]).sum() == 1
    third = run_walk_forward(changed, archive, spec, store=FoldStore(tmp_path / "folds"))
    refit = set(third.fit_log.filter(~pl.col("cached"))["fold_key"].unique())
    touched = {r["fold_key"] for r in third.folds.iter_rows(named=True)
               if (r["test_start"] <= day <= r["test_end"])
               or (r["train_start"] is not None and r["train_start"] <= day <= r["train_end"])
               or (r["after_start"] is not None and r["after_start"] <= day <= r["after_end"])}
    assert refit == touched and "wf:2" in refit and "wf:0" not in refit and "wf:1" not in refit
    assert len(calls) < n_first


def test_changed_recipe_refits_only_that_candidate(panel, tmp_path):
    spec = small_spec(models=("lightgbm", "logreg"), arms=[], production_arms=[], leave_one_crisis_out=False)
    run_walk_forward(panel, None, spec, store=FoldStore(tmp_path))
    d = spec.resolved()
    d["models"] = [m if m["name"] != "logreg" else {**m, "params": {**m["params"], "C": 0.5}} for m in d["models"]]
    again = run_walk_forward(panel, None, spec_from_dict(d), store=FoldStore(tmp_path))
    log = again.fit_log.filter(~pl.col("cached"))
    # the first fold has no replay buffer: only the changed model and the meta-learner that reads it refit
    assert set(log.filter(pl.col("fold_key") == "wf:0")["model"]) == {"logreg", META_MODEL}
    # later folds: the changed model and the meta-learner refit in each; the others only where the replay
    # buffer (the previous fold's worst meta-learner rows) changed with it
    for key in ("wf:1", "wf:2"):
        assert {"logreg", META_MODEL} <= set(log.filter(pl.col("fold_key") == key)["model"])
    # without the replay buffer every fold refits only the changed model and the meta-learner
    d["training_set"]["use_replay"] = False
    run_walk_forward(panel, None, spec_from_dict(d), store=FoldStore(tmp_path))
    d["models"] = [m if m["name"] != "logreg" else {**m, "params": {**m["params"], "C": 0.25}} for m in d["models"]]
    third = run_walk_forward(panel, None, spec_from_dict(d), store=FoldStore(tmp_path))
    assert set(third.fit_log.filter(~pl.col("cached"))["model"]) == {"logreg", META_MODEL}


# ---------------------------------------------------------------------------------------------- report


def test_metrics_match_sklearn_and_empty_groups_are_rows(result):
    espec = EvaluationSpec(bootstrap_reps=40, min_rows=20)
    p = result.predictions.filter(pl.col("model") == META_MODEL)
    # drop every low_vol row: the regime must still be reported, with n = 0
    q = p.filter(pl.col("regime") != "low_vol")
    rows = report.as_table(report.candidate_metrics(META_MODEL, q, espec, [2003, 2004, 2005, 2006, 2007, 2008]))
    assert set(rows["regime"].unique()) == {"overall", *REGIMES}
    low = rows.filter(pl.col("regime") == "low_vol")
    assert (low["n"] == 0).all() and (low["reason"] == "no rows").all() and low["value"].null_count() == low.height
    y2008 = rows.filter(pl.col("year") == "2008")
    assert y2008.height > 0 and (y2008["n"] == 0).all()
    y = q["label"].replace_strict(list(CLASSES), [0, 1, 2]).to_numpy()
    pr = q.select("p_sell", "p_hold", "p_buy").to_numpy()
    got = {r["metric"]: r for r in rows.filter((pl.col("regime") == "overall") & (pl.col("year") == "all"))
           .iter_rows(named=True)}
    assert got["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(y, pr.argmax(1)))
    assert got["log_loss"]["value"] == pytest.approx(log_loss(y, pr, labels=[0, 1, 2]), rel=1e-6)
    brier = np.mean([brier_score_loss(y == k, pr[:, k]) for k in range(3)]) * 3
    assert got["brier"]["value"] == pytest.approx(brier, rel=1e-6)
    conf, hit = pr.max(1), (pr.argmax(1) == y)
    b = np.minimum((conf * 10).astype(int), 9)
    ece = sum(abs(hit[b == i].sum() - conf[b == i].sum()) for i in range(10)) / y.size
    assert got["ece"]["value"] == pytest.approx(ece, rel=1e-6)
    for m in ("balanced_accuracy", "log_loss", "rank_ic", "ic_ir"):
        r = got[m]
        assert r["ci_low"] is not None and r["ci_low"] <= r["value"] <= r["ci_high"], m
    assert set(rows["metric"].unique()) == set(report.WF_METRICS)


def test_holm_and_arm_verdicts(result):
    assert report.holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None], nan_ok=True)
    espec = EvaluationSpec(bootstrap_reps=100, min_rows=20)
    preds = result.predictions
    pairs = report.arm_pairs(["unweighted", "full", "regime_feature", "no_archive", "balanced"],
                             ["no_archive"], ["lightgbm"], lambda a, m: f"arm:{a}", lambda p: f"arm:production_{p}",
                             META_MODEL)
    assert ("arm:full", "arm:no_archive") in pairs and (META_MODEL, "arm:production_no_archive") in pairs
    pairs = [x for x in pairs if set(x) <= set(preds["model"].unique())]
    rows = report.paired_rows(pairs, lambda m: preds.filter(pl.col("model") == m), "balanced_accuracy", espec)
    t = report.as_table(rows)
    ps = t.filter(pl.col("p_value").is_not_null())
    assert (ps["p_adjusted"] >= ps["p_value"] - 1e-12).all()
    assert (t["verdict"].is_in(["yes", "no", "inconclusive"])).all()
    # a regime feature makes the crash flip learnable: it must clearly help in crash, after Holm
    crash = t.filter((pl.col("model") == "arm:regime_feature") & (pl.col("regime") == "crash")).row(0, named=True)
    assert crash["verdict"] == "yes" and crash["value"] > 0.2 and "Holm-adjusted" in crash["sentence"]


def test_leave_one_crisis_out_excludes_the_event(result, calendar):
    lf = result.folds.filter(pl.col("event_id").is_not_null())
    assert set(lf["event_id"]) == {e["id"] for e in EVENTS}
    assert lf.filter(pl.col("event_id") == "e2030")["status"][0].startswith("skipped")
    ran = lf.filter(pl.col("status") == "ok")
    assert ran.height == 3
    ltd = result.train_dates.filter(pl.col("fold") < 0)
    for fold, s, e in ran.select("fold", "test_start", "test_end").iter_rows():
        pos = _tpos(calendar, ltd.filter(pl.col("fold") == fold)["date"].to_list())
        lo, hi = calendar[s], calendar[e]
        assert ((pos + HORIZON < lo) | (pos > hi + max(EMBARGO, HORIZON))).all()
        assert (pos > hi).any()
    lp = result.loco_predictions
    assert {META_MODEL, "arm:full", "arm:unweighted", *BASELINES} <= set(lp["model"].unique())
    rows = report.as_table(report.loco_rows(lp, EvaluationSpec(bootstrap_reps=40, min_rows=20),
                                            ("balanced_accuracy", "log_loss")))
    assert set(rows["event_id"].unique()) == {"e2001", "e2004", "e2006"}
    assert rows.filter(pl.col("model") == META_MODEL).height == 6


# ---------------------------------------------------------------------------------------------- inputs


def test_bad_settings_and_inputs_raise(panel):
    with pytest.raises(WalkForwardError, match="bogus"):
        run_walk_forward(panel, None, small_spec(arms=["unweighted", "bogus"]))
    with pytest.raises(WalkForwardError, match="unweighted"):
        run_walk_forward(panel, None, small_spec(arms=["balanced"]))
    with pytest.raises(WalkForwardError, match="fwd_return"):
        run_walk_forward(panel.drop("fwd_return"), None, small_spec())
    with pytest.raises(WalkForwardError, match="S0"):
        run_walk_forward(pl.concat([panel, panel.head(1)]), None, small_spec())
    bad = panel.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("storm")).otherwise("regime")
                             .alias("regime"))
    with pytest.raises(WalkForwardError, match="storm"):
        run_walk_forward(bad, None, small_spec())
    with pytest.raises(WalkForwardError, match="no fold"):
        run_walk_forward(panel, None, small_spec(min_train_rows=10**7, arms=[]))


def test_scopes_are_overall_and_the_regimes():
    assert report.SCOPES[1:] == REGIMES


def test_test_symbol_cap_keeps_the_same_symbols_in_every_fold():
    import datetime as dt

    from regime_assets.core.walk_forward.fit import test_symbol_subset

    days = [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(10)]
    syms = [f"S{i:02d}" for i in range(40)]
    a = pl.DataFrame({"symbol": [s for s in syms for _ in days], "date": days * len(syms)})
    b = a.filter(pl.col("symbol") != "S03")  # a later block where one symbol no longer trades
    ka = set(test_symbol_subset(a, 12, 7)["symbol"].unique())
    kb = set(test_symbol_subset(b, 12, 7)["symbol"].unique())
    assert len(ka) == 12 and len(kb) == 12
    assert len(ka & kb) >= 11  # the same symbols wherever they trade
    assert test_symbol_subset(a, 12, 7).height == 12 * len(days)  # whole symbols, every date
    assert test_symbol_subset(a, None, 7).height == a.height and test_symbol_subset(a, 100, 7).height == a.height
    assert set(test_symbol_subset(a, 12, 8)["symbol"].unique()) != ka  # the seed picks them
