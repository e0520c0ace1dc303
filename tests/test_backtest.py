"""The signal backtest (core/backtest.py): planted and random signals, exact costs, overlapping books against a
loop oracle, ties, no look-ahead, metrics against empyrical, bad input."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from _predictions import business_days, synthetic_contract
from regime_assets.core import backtest as bt
from regime_assets.spec import BacktestSpec

FAST = BacktestSpec(bootstrap_reps=200)


def _metric(m: pl.DataFrame, model: str, strategy: str, metric: str, group: str = "overall") -> dict:
    r = m.filter((pl.col("model") == model) & (pl.col("strategy") == strategy) & (pl.col("group") == group)
                 & (pl.col("metric") == metric))
    assert r.height == 1, (model, strategy, metric, group, r)
    return r.row(0, named=True)


def test_planted_signal_gives_positive_ir_and_the_planted_ic():
    pred, px, mk = synthetic_contract(n_symbols=40, n_days=600, ic=0.10, seed=1)
    res = bt.run_backtest(pred, px, mk, FAST, horizon=5)
    ir = _metric(res.metrics, "meta_learner", "long_short", "information_ratio")
    assert ir["value"] > 0 and ir["ci_low"] > 0, ir
    lo_ir = _metric(res.metrics, "meta_learner", "long_only", "information_ratio")
    assert lo_ir["value"] > 0 and lo_ir["ci_low"] > 0, lo_ir
    ic = _metric(res.metrics, "meta_learner", "signal", "ic")
    assert abs(ic["value"] - 0.10) < 0.02 and ic["ci_low"] < 0.10 < ic["ci_high"], ic
    # Spearman of a bivariate normal with correlation rho: (6 / pi) asin(rho / 2)
    ric = _metric(res.metrics, "meta_learner", "signal", "rank_ic")
    assert abs(ric["value"] - 6 / np.pi * np.arcsin(0.05)) < 0.02, ric
    assert _metric(res.metrics, "meta_learner", "signal", "icir")["value"] > 0.3
    # every interval holds its point estimate, every group has both books
    m = res.metrics.filter(pl.col("ci_low").is_not_null() & pl.col("value").is_not_null())
    assert (m["ci_low"] <= m["value"] + 1e-12).all() and (m["ci_high"] >= m["value"] - 1e-12).all()
    groups = set(res.metrics.filter(pl.col("model") == "meta_learner")["group"].to_list())
    assert {"overall", "low_vol", "crash", "2015", "2016", "2017"} <= groups


def test_random_signal_ir_interval_covers_zero_for_most_seeds():
    """Without costs (after costs a random signal loses its turnover x cost, which the next test pins down)."""
    free = BacktestSpec(bootstrap_reps=200, open_cost_bps=0, close_cost_bps=0)
    covered = {"long_short": 0, "long_only": 0, "ic": 0}
    for seed in range(20):
        pred, px, mk = synthetic_contract(n_symbols=20, n_days=300, ic=0.0, seed=100 + seed)
        m = bt.metrics_table(bt.daily_portfolio(pred, px, free, 5, mk),
                             bt.market_regimes(bt.prepare_predictions(pred), mk, free), free)
        for strategy in ("long_short", "long_only"):
            ir = _metric(m, "meta_learner", strategy, "information_ratio")
            covered[strategy] += ir["ci_low"] < 0 < ir["ci_high"]
        ic = _metric(m, "meta_learner", "signal", "ic")
        covered["ic"] += ic["ci_low"] < 0 < ic["ci_high"]
    # nominal 95 %: at least 16 of 20 (a 95 % interval misses 5 or more of 20 with probability < 2 %)
    assert min(covered.values()) >= 16, covered


def test_costs_lower_the_net_return_by_exactly_turnover_times_cost():
    pred, px, mk = synthetic_contract(n_symbols=15, n_days=120, ic=0.05, seed=3)
    free = bt.daily_portfolio(pred, px, BacktestSpec(open_cost_bps=0, close_cost_bps=0), 5, mk)
    even = bt.daily_portfolio(pred, px, BacktestSpec(open_cost_bps=10, close_cost_bps=10), 5, mk)
    qlib = bt.daily_portfolio(pred, px, BacktestSpec(), 5, mk)
    for pre in ("ls", "lo"):
        d0 = free.filter(pl.col("model") == "meta_learner")
        d1 = even.filter(pl.col("model") == "meta_learner")
        d2 = qlib.filter(pl.col("model") == "meta_learner")
        np.testing.assert_array_equal(d0[f"{pre}_net"].to_numpy(), d0[f"{pre}_gross"].to_numpy())
        np.testing.assert_array_equal(d0[f"{pre}_gross"].to_numpy(), d1[f"{pre}_gross"].to_numpy())
        to = d1[f"{pre}_turnover"].to_numpy()
        assert to.sum() > 1  # it trades
        np.testing.assert_allclose(d1[f"{pre}_gross"].to_numpy() - d1[f"{pre}_net"].to_numpy(), to * 10e-4,
                                   rtol=0, atol=1e-15)
        opened, closed = d2[f"{pre}_opened"].to_numpy(), d2[f"{pre}_closed"].to_numpy()
        np.testing.assert_allclose(opened + closed, d2[f"{pre}_turnover"].to_numpy(), atol=1e-15)
        np.testing.assert_allclose(d2[f"{pre}_gross"].to_numpy() - d2[f"{pre}_net"].to_numpy(),
                                   opened * 5e-4 + closed * 15e-4, rtol=0, atol=1e-15)
    m = bt.metrics_table(even, bt.market_regimes(bt.prepare_predictions(pred), mk, FAST), FAST)
    drag = _metric(m, "meta_learner", "long_short", "cost_drag")["value"]
    turnover = _metric(m, "meta_learner", "long_short", "turnover")["value"]
    assert drag == pytest.approx(252 * turnover * 10e-4, rel=1e-12)


def _tiny(scores: list[list[float]], closes: list[list[float]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    syms = ["A", "B", "C", "D"][: len(scores[0])]
    days = business_days(dt.date(2020, 1, 6), len(closes))
    pred = pl.DataFrame([{"model": "m", "fold": 1, "symbol": s, "date": days[t], "regime": "normal",
                          "fwd_return": None, "p_sell": 0.3 - sc[i] / 10, "p_hold": 0.4, "p_buy": 0.3 + sc[i] / 10}
                         for t, sc in enumerate(scores) for i, s in enumerate(syms)],
                        schema_overrides={"fwd_return": pl.Float64})
    px = pl.DataFrame([{"symbol": s, "date": days[t], "close": c[i]} for t, c in enumerate(closes)
                       for i, s in enumerate(syms)])
    return pred, px


def test_hand_computed_books_trades_and_returns():
    # h = 1, k = 1: long the best, short the worst; the ranking flips on the third day
    pred, px = _tiny([[3, 2, 1, 0], [3, 2, 1, 0], [0, 1, 2, 3]],
                     [[100, 100, 100, 100], [110, 100, 100, 90], [121, 100, 100, 99], [121, 100, 100, 99]])
    d = bt.daily_portfolio(pred, px, BacktestSpec(top_k=1, holding_days=1, open_cost_bps=5, close_cost_bps=15),
                           5).filter(pl.col("model") == "m").sort("date")
    assert d["ls_turnover"].to_list() == [2.0, 0.0, 4.0]
    assert d["ls_opened"].to_list() == [2.0, 0.0, 2.0] and d["ls_closed"].to_list() == [0.0, 0.0, 2.0]
    np.testing.assert_allclose(d["ls_gross"].to_numpy(), [0.10 - (-0.10), 0.10 - 0.10, 0.0])
    np.testing.assert_allclose(d["ls_net"].to_numpy(), [0.2 - 2 * 5e-4, 0.0, 0.0 - 2 * 5e-4 - 2 * 15e-4])
    np.testing.assert_allclose(d["lo_gross"].to_numpy(), [0.10, 0.10, 0.0])
    np.testing.assert_allclose(d["ew"].to_numpy(), [0.0, (0.1 + 0.1) / 4, 0.0], atol=1e-15)
    # h = 2: two half books; day 2 holds half of day 1's book and half of day 2's (the flip)
    d2 = bt.daily_portfolio(pred, px, BacktestSpec(top_k=1, holding_days=2, open_cost_bps=0, close_cost_bps=0),
                            5).filter(pl.col("model") == "m").sort("date")
    assert d2["ls_turnover"].to_list() == [1.0, 1.0, 2.0]
    np.testing.assert_allclose(d2["ls_gross"].to_numpy(), [0.1, 0.0, 0.0])


def _oracle(pred: pl.DataFrame, px: pl.DataFrame, k: int, h: int, o: float, c: float) -> pl.DataFrame:
    """Loop-by-loop reference for one model: the books, positions, trades and returns of the module docstring."""
    p = pred.with_columns((pl.col("p_buy") - pl.col("p_sell")).alias("score"))
    dates = sorted(set(p["date"].to_list()))
    syms = sorted(set(px["symbol"].to_list()))
    close = {(r["symbol"], r["date"]): r["close"] for r in px.iter_rows(named=True)}
    nxt = {}
    for s in syms:
        ds = sorted(d for (sy, d) in close if sy == s)
        for a, b in zip(ds, ds[1:]):
            nxt[(s, a)] = close[(s, b)] / close[(s, a)] - 1
    books = []
    for d in dates:
        day = sorted(((r["score"], r["symbol"]) for r in p.filter(pl.col("date") == d).iter_rows(named=True)),
                     reverse=True)
        n = len(day)
        kls, klo = min(k, n // 2), min(k, n)
        ls = {s: 0.0 for s in syms}
        lo = {s: 0.0 for s in syms}
        for i, (_, s) in enumerate(day):
            if i < kls:
                ls[s] += 1 / kls
            if i >= n - kls:
                ls[s] -= 1 / kls
            if i < klo:
                lo[s] += 1 / klo
        books.append((ls, lo))
    rows, prev = [], [{s: 0.0 for s in syms}, {s: 0.0 for s in syms}]
    for t, d in enumerate(dates):
        row = {"date": d}
        for j, pre in enumerate(("ls", "lo")):
            H = {s: sum(books[t - i][j][s] for i in range(h) if t - i >= 0) / h for s in syms}
            row[f"{pre}_gross"] = sum(H[s] * nxt.get((s, d), 0.0) for s in syms)
            opened = closed = 0.0
            for s in syms:
                a, b = prev[j][s], H[s]
                if a * b >= 0:
                    opened += max(abs(b) - abs(a), 0)
                    closed += max(abs(a) - abs(b), 0)
                else:
                    opened += abs(b)
                    closed += abs(a)
            row[f"{pre}_turnover"] = opened + closed
            row[f"{pre}_net"] = row[f"{pre}_gross"] - o * opened - c * closed
            prev[j] = H
        rows.append(row)
    return pl.DataFrame(rows)


def test_vectorised_books_match_a_loop_oracle_with_missing_rows():
    pred, px, mk = synthetic_contract(n_symbols=9, n_days=40, ic=0.2, seed=5)
    rng = np.random.default_rng(0)
    pred = pred.filter(pl.Series(rng.random(pred.height) > 0.15))  # symbols missing on some dates
    px = px.filter(pl.Series(rng.random(px.height) > 0.05))        # and some prices missing
    spec = BacktestSpec(top_k=3, holding_days=3, open_cost_bps=5, close_cost_bps=15)
    got = bt.daily_portfolio(pred, px, spec, 5, mk).filter(pl.col("model") == "meta_learner").sort("date")
    want = _oracle(pred, px, 3, 3, 5e-4, 15e-4).sort("date")
    assert got["date"].to_list() == want["date"].to_list()
    for col in ("ls_gross", "ls_net", "ls_turnover", "lo_gross", "lo_net", "lo_turnover"):
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), atol=1e-12, err_msg=col)


def test_ties_share_the_weight_at_the_cut_and_order_does_not_matter():
    pred = pl.DataFrame({"model": "m", "date": dt.date(2020, 1, 2), "symbol": list("ABCDEF"),
                         "score": [0.5, 0.2, 0.2, 0.2, 0.0, 0.0]})
    w = bt.target_weights(pred, 2).sort("symbol")
    # top 2: A, then B/C/D share the second slot; bottom 2: E, F
    np.testing.assert_allclose(w["w_lo"].to_numpy(), [0.5, 1 / 6, 1 / 6, 1 / 6, 0, 0])
    np.testing.assert_allclose(w["w_ls"].to_numpy(), [0.5, 1 / 6, 1 / 6, 1 / 6, -0.5, -0.5])
    shuffled = bt.target_weights(pred.sample(fraction=1.0, shuffle=True, seed=3), 2).sort("symbol")
    assert shuffled["w_ls"].to_list() == w["w_ls"].to_list()
    flat = bt.target_weights(pred.with_columns(pl.lit(0.1).alias("score")), 2)
    assert (flat["w_ls"].abs() < 1e-15).all() and flat["w_lo"].sum() == pytest.approx(1.0)
    # a score that ties every symbol has no IC (not the ~1e-17 a constant column's rounding gives)
    rows = pred.with_columns(pl.lit(0.1 + 0.2).alias("score"), pl.Series("fwd_return", [0.01, -0.02, 0.03, 0.0,
                                                                                         0.02, -0.01]))
    ic = bt._daily_ic(pl.concat([rows, rows.with_columns(pl.lit("n").alias("model"),
                                                         pl.Series("score", [3.0, 2, 1, 0, 1, 2]))]))
    got = dict(ic.select("model", "rank_ic").iter_rows())
    assert got["m"] is None and got["n"] is not None
    assert ic.filter(pl.col("model") == "m")["ic"][0] is None


def test_a_date_uses_no_prediction_or_price_after_it():
    pred, px, mk = synthetic_contract(n_symbols=12, n_days=80, ic=0.1, seed=8)
    days = sorted(set(pred["date"].to_list()))
    t = days[40]
    base = bt.daily_portfolio(pred, px, BacktestSpec(), 5, mk)
    rng = np.random.default_rng(1)
    pred2 = pred.with_columns(pl.when(pl.col("date") > t).then(pl.Series(rng.random(pred.height)))
                              .otherwise(pl.col("p_buy")).alias("p_buy"))
    pred2 = pred2.with_columns((1 - pl.col("p_buy") - pl.col("p_hold")).alias("p_sell"))
    px2 = px.with_columns(pl.when(pl.col("date") > days[41]).then(pl.col("close") * (1 + pl.Series(
        rng.normal(0, 0.1, px.height)))).otherwise(pl.col("close")).alias("close"))
    pert = bt.daily_portfolio(pred2, px2, BacktestSpec(), 5, mk)
    cols = ["ls_gross", "ls_net", "ls_turnover", "lo_net", "ew"]
    a = base.filter((pl.col("model") == "meta_learner") & (pl.col("date") <= t)).select("date", *cols)
    b = pert.filter((pl.col("model") == "meta_learner") & (pl.col("date") <= t)).select("date", *cols)
    assert a.equals(b)
    later = pert.filter((pl.col("model") == "meta_learner") & (pl.col("date") > days[42]))
    assert not later["ls_gross"].equals(base.filter((pl.col("model") == "meta_learner")
                                                    & (pl.col("date") > days[42]))["ls_gross"])


def test_metrics_agree_with_empyrical():
    empyrical = pytest.importorskip("empyrical")
    rng = np.random.default_rng(4)
    r = rng.normal(0.0005, 0.012, 750)
    b = 0.6 * r + rng.normal(0.0002, 0.008, 750)
    got = bt.return_metrics(r, r - b, r, np.zeros(750), 252)
    assert got["annual_return"] == pytest.approx(empyrical.annual_return(r), rel=1e-10)
    assert got["annual_volatility"] == pytest.approx(empyrical.annual_volatility(r), rel=1e-10)
    assert got["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-10)
    assert got["max_drawdown"] == pytest.approx(empyrical.max_drawdown(r), rel=1e-10)
    assert got["information_ratio"] == pytest.approx(empyrical.excess_sharpe(r, b) * np.sqrt(252), rel=1e-10)
    # the bootstrap path form: the same numbers row by row
    two = np.vstack([r, r[::-1]])
    assert bt.max_drawdown(two)[1] == pytest.approx(empyrical.max_drawdown(r[::-1]), rel=1e-10)


def test_market_regime_of_a_date_is_the_most_common_ties_to_the_more_severe():
    d1, d2 = dt.date(2020, 1, 2), dt.date(2020, 1, 3)
    pred = pl.DataFrame({"symbol": ["A", "B", "C", "A", "B"], "date": [d1, d1, d1, d2, d2],
                         "regime": ["normal", "normal", "crash", "normal", "recovery"]})
    got = bt.market_regimes(pred, None, BacktestSpec()).sort("date")
    assert got["market_regime"].to_list() == ["normal", "recovery"]
    mk = pl.DataFrame({"date": [d1, d2], "vix": [12.0, 40.0]})
    got = bt.market_regimes(pred, mk, BacktestSpec(market_regime="vix_band")).sort("date")
    assert got["market_regime"].to_list() == ["low_vol", "crash"]


def test_benchmarks_and_baselines_sit_in_the_same_table():
    pred, px, mk = synthetic_contract(n_symbols=10, n_days=120, seed=2,
                                      models=("meta_learner", "lightgbm", "baseline_regime_prior", "arm:full"))
    res = bt.run_backtest(pred, px, mk, FAST, horizon=5)
    kinds = dict(res.metrics.select("model", "kind").unique().iter_rows())
    assert kinds == {"meta_learner": "candidate", "lightgbm": "model", "baseline_regime_prior": "baseline",
                     "arm:full": "arm", "equal_weight": "benchmark", "index": "benchmark"}
    idx = res.daily.filter((pl.col("model") == "index") & pl.col("valid")).sort("date")
    closes = mk.sort("date")["index_close"].to_numpy()
    np.testing.assert_allclose(idx["bench"].to_numpy(), closes[1:idx.height + 1] / closes[:idx.height] - 1)
    # the equal-weight universe is the reference of the active returns: it has no IR or hit rate of its own
    for metric in ("information_ratio", "hit_rate", "turnover"):
        assert _metric(res.metrics, "equal_weight", "buy_and_hold", metric)["value"] is None
    assert _metric(res.metrics, "index", "buy_and_hold", "information_ratio")["value"] is not None
    head = bt.headline(res.metrics)
    assert head["model"].to_list()[0] == "meta_learner" and "rank_ic" in head.columns
    assert res.metrics["model"].to_list()[0] == "meta_learner"


def test_latest_fold_wins_for_a_doubly_predicted_row():
    pred, _, _ = synthetic_contract(n_symbols=4, n_days=10, seed=0)
    again = pred.with_columns((pl.col("fold") + 1).alias("fold"), pl.lit(0.9).alias("p_buy"),
                              pl.lit(0.05).alias("p_sell"), pl.lit(0.05).alias("p_hold"))
    got = bt.prepare_predictions(pl.concat([again, pred]))
    assert got.height == pred.height and (got["p_buy"] == 0.9).all()


def test_bad_input_names_the_symbol_date_and_column():
    pred, px, mk = synthetic_contract(n_symbols=4, n_days=30, seed=0)
    bad = px.with_columns(pl.when((pl.col("symbol") == "S002") & (pl.col("date") == px["date"][7]))
                          .then(-1.0).otherwise(pl.col("close")).alias("close"))
    with pytest.raises(bt.BacktestError, match=r"symbol S002 on .*-1\.0"):
        bt.run_backtest(pred, bad, mk, FAST, 5)
    with pytest.raises(bt.BacktestError, match="missing columns.*p_buy"):
        bt.run_backtest(pred.drop("p_buy"), px, mk, FAST, 5)
    with pytest.raises(bt.BacktestError, match="no rows"):
        bt.run_backtest(pred.head(0), px, mk, FAST, 5)
    nan = pred.with_columns(pl.when(pl.col("symbol") == "S001").then(float("nan")).otherwise(pl.col("p_buy"))
                            .alias("p_buy"))
    with pytest.raises(bt.BacktestError, match="symbol S001"):
        bt.run_backtest(nan, px, mk, FAST, 5)


def test_model_by_model_backtest_equals_the_whole_call():
    pred, px, mk = synthetic_contract(n_symbols=12, n_days=150, ic=0.05, seed=4,
                                      models=("meta_learner", "lightgbm", "baseline_regime_prior", "arm:full"))
    # one model misses some symbol-days (the universe is the union) and one row is predicted by two folds
    pred = pred.filter(~((pl.col("model") == "lightgbm") & (pl.col("symbol") == "S000")))
    again = pred.filter(pl.col("model") == "arm:full").head(3).with_columns(
        (pl.col("fold") + 1).alias("fold"), pl.lit(0.9).alias("p_buy"), pl.lit(0.05).alias("p_sell"),
        pl.lit(0.05).alias("p_hold"))
    pred = pl.concat([pred, again])
    whole = bt.run_backtest(pred, px, mk, FAST, horizon=5)
    models = sorted(pred["model"].unique().to_list())
    universe = pred.group_by("symbol", "date").agg(pl.col("regime").first())
    loaded = []

    def load(m):
        loaded.append(m)
        return pred.filter(pl.col("model") == m)

    part = bt.run_backtest_by_model(models, load, universe, px, mk, FAST, 5)
    assert loaded == models
    from polars.testing import assert_frame_equal

    assert_frame_equal(part.metrics, whole.metrics)
    assert_frame_equal(part.daily, whole.daily)
    with pytest.raises(bt.BacktestError, match="no rows"):
        bt.run_backtest_by_model([], load, universe.head(0), px, mk, FAST, 5)
