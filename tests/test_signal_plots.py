"""The backtest charts (rendering/signals.py): real PNGs on a synthetic backtest, the placeholder on no data."""

from __future__ import annotations

import polars as pl

from _predictions import synthetic_contract
from regime_assets.core.backtest import run_backtest
from regime_assets.rendering import plots
from regime_assets.rendering import signals as sp
from regime_assets.spec import BacktestSpec

PNG = b"\x89PNG\r\n\x1a\n"


def _result():
    pred, px, mk = synthetic_contract(n_symbols=10, n_days=520, ic=0.1, seed=2,
                                      models=("meta_learner", "lightgbm", "baseline_regime_prior"))
    return run_backtest(pred, px, mk, BacktestSpec(bootstrap_reps=50), 5)


def test_backtest_charts_draw_and_differ_from_the_placeholder():
    res = _result()
    cases = [
        (sp.cumulative_returns_plot(res.daily, "meta_learner", title="c"), "c"),
        (sp.rank_ic_by_year_plot(res.metrics, ["meta_learner", "baseline_regime_prior"], title="r"), "r"),
        (sp.regime_bars_plot(res.metrics, "sharpe", "long_short", ["meta_learner", "index"], title="b"), "b"),
    ]
    for png, title in cases:
        assert png.startswith(PNG) and len(png) < 150_000 and png != plots.no_data_png(title)
    # regimes are shaded: without the market regime column the picture changes
    assert sp.cumulative_returns_plot(res.daily.drop("market_regime"), "meta_learner", title="c") != cases[0][0]


def test_regime_runs_are_contiguous_spans():
    d = pl.date_range(pl.date(2020, 1, 1), pl.date(2020, 1, 6), eager=True)
    runs = sp._regime_runs(d, pl.Series(["a", "a", "b", "b", "a", "a"]))
    assert runs["regime"].to_list() == ["a", "b", "a"]
    assert runs["start"].to_list() == [d[0], d[2], d[4]] and runs["end"].to_list() == [d[2], d[4], d[5]]


def test_backtest_charts_on_no_data_give_the_placeholder():
    empty = pl.DataFrame()
    assert sp.cumulative_returns_plot(empty, "m", title="x") == plots.no_data_png("x")
    assert sp.rank_ic_by_year_plot(empty, ["m"], title="y") == plots.no_data_png("y")
    assert sp.regime_bars_plot(empty, "sharpe", "long_short", ["m"], title="z") == plots.no_data_png("z")
    res = _result()
    assert sp.cumulative_returns_plot(res.daily, "not_a_model", title="x") == plots.no_data_png("x")
