"""What `regime-assets materialize` prints: the promotion in plain words, the evaluation table (log-loss and IC
beside balanced accuracy, why a regime has no figures), the walk-forward verdict table and the input warnings."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from regime_assets.spec import REGIMES, Spec
from regime_assets.summary import (
    NO_ROWS,
    arm_verdict_table,
    evaluation_table,
    input_warnings,
    promotion_text,
)


def _ev() -> pl.DataFrame:
    rows = []
    for model, ba, ll in (("meta_learner", 0.41, 1.05), ("baseline_majority", 1 / 3, 22.7),
                          ("baseline_regime_prior", 1 / 3, 1.09)):
        for regime in ("overall", "low_vol", "normal"):  # no high_vol, crash, recovery rows
            n = 400 if regime == "overall" else 200
            rows += [{"model": model, "regime": regime, "n": n, "metric": "balanced_accuracy", "value": ba,
                      "ci_low": ba - 0.02, "ci_high": ba + 0.02},
                     {"model": model, "regime": regime, "n": n, "metric": "log_loss", "value": ll,
                      "ci_low": ll - 0.01, "ci_high": ll + 0.01},
                     {"model": model, "regime": regime, "n": n, "metric": "ic", "value": 0.05 if regime != "normal"
                      else None, "ci_low": 0.01, "ci_high": 0.09}]
    return pl.DataFrame(rows)


def test_promotion_reads_plainly():
    assert promotion_text(True, "no champion") == "promoted (first version: no champion to beat)"
    assert promotion_text(True, "no champion; regimes not checked (< 50 rows): crash") == \
        "promoted (first version: no champion to beat); regimes not checked (< 50 rows): crash"
    assert promotion_text(False, "balanced_accuracy does not improve overall") == \
        "not promoted: balanced_accuracy does not improve overall"


def test_evaluation_table_shows_log_loss_ic_and_why_a_regime_is_empty():
    t = evaluation_table(_ev(), "meta_learner")
    assert t["regime"].to_list() == ["overall", *REGIMES]
    assert t.columns == ["regime", "n", "balanced accuracy (meta_learner)", "log-loss", "IC",
                         "log-loss (regime prior)", "note"]
    low = t.row(t["regime"].to_list().index("low_vol"), named=True)
    assert low["balanced accuracy (meta_learner)"] == "0.410 [0.390, 0.430]"
    assert low["log-loss"] == "1.050 [1.040, 1.060]" and low["log-loss (regime prior)"] == "1.090 [1.080, 1.100]"
    assert low["IC"] == "0.050 [0.010, 0.090]" and low["note"] == ""
    for regime in ("high_vol", "crash", "recovery"):
        r = t.row(t["regime"].to_list().index(regime), named=True)
        assert r["n"] == 0 and r["note"] == NO_ROWS and r["log-loss"] is None


def test_arm_verdicts_are_one_table_with_both_levels():
    def m(model, regime, v, n=100):
        return {"table": "metrics", "model": model, "comparator": None, "regime": regime, "year": "all",
                "metric": "balanced_accuracy", "n": n, "value": v, "verdict": None}

    def d(model, comp, regime, v, verdict, n=100):
        return {"table": "arm_difference", "model": model, "comparator": comp, "regime": regime, "year": "all",
                "metric": "balanced_accuracy", "n": n, "value": v, "verdict": verdict}

    wf = pl.DataFrame([
        m("arm:balanced", "overall", 0.42), m("arm:unweighted", "overall", 0.40),
        m("arm:balanced", "crash", 0.30), m("arm:unweighted", "crash", 0.35),
        m("meta_learner", "overall", 0.41), m("arm:production_no_archive", "overall", 0.40),
        d("arm:balanced", "arm:unweighted", "overall", 0.02, "yes"),
        d("arm:balanced", "arm:unweighted", "crash", -0.05, "no"),
        d("meta_learner", "arm:production_no_archive", "overall", 0.01, "inconclusive"),
        d("meta_learner", "arm:production_no_archive", "crash", None, "inconclusive", n=0),
        {**d("arm:balanced", "arm:unweighted", "overall", 0.5, "yes"), "year": "2008"},  # per-year rows ignored
    ])
    t = arm_verdict_table(wf)
    assert t.columns == ["arms", "overall", "crash"]
    assert t.rows() == [("arm:balanced vs arm:unweighted", "helps 0.420 vs 0.400", "hurts 0.300 vs 0.350"),
                        ("meta_learner vs arm:production_no_archive", "inconclusive 0.410 vs 0.400", "no test rows")]


def test_input_warnings_name_symbol_and_date_of_a_jump():
    dates = [dt.date(2021, 1, 4) + dt.timedelta(days=i) for i in range(5)]
    prices = pl.DataFrame({"symbol": ["ZED"] * 5 + ["ACME"] * 5, "date": dates * 2,
                           "close": [10.0, 10.1, 10100.0, 10150.0, 10200.0, 5.0, 5.1, 5.2, 5.3, 5.4]})
    with duckdb.connect(":memory:") as conn:
        conn.register("p", prices.to_arrow())
        conn.execute("create table main.raw_prices as select * from p")
        jumps = input_warnings(conn, Spec())
    assert jumps.select("symbol", "date").rows() == [("ZED", dates[2])]
    assert "close jumps from 10.1" in jumps["problem"][0] and "data.max_abs_log_return 1.609" in jumps["problem"][0]
