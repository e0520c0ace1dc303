"""Today's signals (core/signals.py, the `signals` asset, the CLI) and the `signal_backtest` asset body."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import hypothesis  # noqa: F401  (loaded at collection: its pytest plugin otherwise imports it after the last test,
#                   where CPython 3.11.7's ast.parse failed with "AST constructor recursion depth mismatch")
import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, Definitions, Failure, asset, build_asset_context

from _predictions import synthetic_contract
from regime_assets.assets import signals as signal_assets
from regime_assets.assets.evaluation import REGISTRY_SCHEMA
from regime_assets.core.features import build_features
from regime_assets.core.labels import build_labels
from regime_assets.core.market import build_market_context
from regime_assets.core.models import fit_model
from regime_assets.core.regimes import label_regimes
from regime_assets.core.signals import SIGNAL_SCHEMA, actions, build_signals, signal_dates, signal_rows, top_bottom
from regime_assets.core.synthetic import generate_synthetic
from regime_assets.resources.settings import RegimeSettings
from regime_assets.resources.warehouse import DEFAULT_SCHEMA, warehouse_path, write_table
from regime_assets.spec import FeatureSpec, LabelSpec, ModelSpec, RegimeSpec, SignalSpec, VixProxySpec

LOGREG = ModelSpec(name="logreg", estimator="sklearn.linear_model.LogisticRegression",
                   params={"C": 0.1, "max_iter": 300}, scale=True, shap="linear")


def _pipeline(prices: pl.DataFrame, index: pl.DataFrame, vix: pl.DataFrame | None, sectors: pl.DataFrame):
    ctx, _ = build_market_context(index, vix, VixProxySpec())
    feats = build_features(prices, ctx, sectors, FeatureSpec())
    regimes = label_regimes(prices, ctx, RegimeSpec())
    return feats, regimes, ctx


@pytest.fixture(scope="module")
def market():
    src = generate_synthetic(6, 2.0, seed=3)
    feats, regimes, ctx = _pipeline(src.prices, src.index, src.vix, src.sectors)
    labelled = build_labels(feats, regimes, LabelSpec(), src.prices).filter(pl.col("label").is_not_null())
    model = fit_model(LOGREG, labelled, None)
    return src, feats, regimes, ctx, model


def _signals_for(model, feats, regimes, ctx, dates, sspec=SignalSpec()):
    rows = signal_rows(feats, dates)
    return build_signals(rows, model.predict_proba(rows), regimes, ctx, sspec, "logreg", "v1", "hash")


def test_signal_at_t_uses_nothing_after_t(market):
    src, feats, regimes, ctx, model = market
    days = sorted(set(src.prices["date"].to_list()))
    t = days[-60]
    before = _signals_for(model, feats, regimes, ctx, [t])
    rng = np.random.default_rng(0)
    later = pl.col("date") > t

    def shake(df: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
        noise = pl.Series(rng.lognormal(0, 0.2, df.height))
        return df.with_columns([pl.when(later).then(pl.col(c) * noise).otherwise(pl.col(c)).alias(c) for c in cols])

    px = shake(src.prices, [c for c in ("close", "open", "high", "low", "volume") if c in src.prices.columns])
    px = px.with_columns(pl.max_horizontal("high", "close", "open").alias("high"),
                         pl.min_horizontal("low", "close", "open").alias("low")) if "high" in px.columns else px
    feats2, regimes2, ctx2 = _pipeline(px, shake(src.index, ["close"]),
                                       None if src.vix is None else shake(src.vix, ["vix"]), src.sectors)
    after = _signals_for(model, feats2, regimes2, ctx2, [t])
    assert before.height == 6 and after.equals(before)
    # the perturbation is real: the signals of a later date change
    u = days[-10]
    assert not _signals_for(model, feats2, regimes2, ctx2, [u]).equals(_signals_for(model, feats, regimes, ctx, [u]))


def test_signal_table_has_ranks_actions_regime_and_versions(market):
    _, feats, regimes, ctx, model = market
    dates = signal_dates(feats, 3)
    assert len(dates) == 3 and dates[-1] == feats["date"].max()
    sig = _signals_for(model, feats, regimes, ctx, dates)
    assert sig.schema == pl.Schema(SIGNAL_SCHEMA)
    assert sig.height == 3 * 6 and sig["as_of"].unique().to_list() == [dates[-1]]
    np.testing.assert_allclose(sig["score"].to_numpy(), (sig["p_buy"] - sig["p_sell"]).to_numpy())
    np.testing.assert_allclose((sig["p_sell"] + sig["p_hold"] + sig["p_buy"]).to_numpy(), 1.0, atol=1e-9)
    for (_,), day in sig.group_by("date"):
        best = day.sort("score", descending=True)
        assert best["rank"][0] == 1 and best["rank"].is_sorted()
    assert sig["regime"].null_count() == 0 and sig["vix_source"].null_count() == 0
    assert set(sig["model_version"].to_list()) == {"v1"} and set(sig["spec_hash"].to_list()) == {"hash"}
    top, bottom = top_bottom(sig, 2)
    assert top["score"].min() >= bottom["score"].max() and (top["date"] == dates[-1]).all()


def test_actions_argmax_and_thresholds():
    p = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3], [0.4, 0.2, 0.4]])
    score = p[:, 2] - p[:, 0]
    assert list(actions(p, score, SignalSpec())) == ["sell", "buy", "hold", "sell"]  # ties to the lower class
    th = SignalSpec(action="threshold", buy_threshold=0.25, sell_threshold=0.2)
    assert list(actions(p, score, th)) == ["sell", "buy", "hold", "hold"]


def test_ties_share_a_rank():
    rows = pl.DataFrame({"symbol": ["A", "B", "C"], "date": [dt.date(2020, 1, 2)] * 3})
    p = np.array([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5], [0.5, 0.3, 0.2]])
    reg = rows.with_columns(pl.lit("normal").alias("regime"))
    ctx = pl.DataFrame({"date": [dt.date(2020, 1, 2)], "vix_source": ["real"]})
    sig = build_signals(rows, p, reg, ctx, SignalSpec(), "m", "v", "h").sort("symbol")
    assert sig["rank"].to_list() == [1, 1, 3] and sig["n_symbols"].to_list() == [3, 3, 3]


# ------------------------------------------------------------------------------------------- the assets


def _settings(home, tiny_spec_path) -> RegimeSettings:
    return RegimeSettings(spec_path=tiny_spec_path, home=str(home))


def test_signals_asset_fails_clearly_without_a_promoted_model(home, tiny_spec_path, market):
    _, feats, regimes, ctx, _ = market
    settings = _settings(home, tmp_spec_with(tiny_spec_path, home, {"signals": {"without_model": "fail"}}))
    with pytest.raises(Failure) as err:
        list(signal_assets.signals(build_asset_context(), settings=settings, regime_labels=regimes,
                                   market_context=ctx))
    assert err.value.description == "no promoted model: no signals"
    # a registry with only a rejected version is no better
    with settings.connect() as conn:
        write_table(conn, DEFAULT_SCHEMA, "model_versions", _registry_row("logreg", "v0", promoted=False))
    with pytest.raises(Failure, match="no promoted model: no signals"):
        list(signal_assets.signals(build_asset_context(), settings=settings, regime_labels=regimes,
                                   market_context=ctx))
    # the skip option: no output at all (no empty table), the reason in the log
    skip = tmp_spec_with(tiny_spec_path, home, {"signals": {"without_model": "skip"}})
    out = list(signal_assets.signals(build_asset_context(), settings=RegimeSettings(spec_path=skip, home=str(home)),
                                     regime_labels=regimes, market_context=ctx))
    assert out == []


def tmp_spec_with(base: str, folder, extra: dict) -> str:
    import yaml

    data = yaml.safe_load(open(base))
    data.update(extra)
    p = folder / "spec_extra.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def _registry_row(name: str, version: str, promoted: bool = True) -> pl.DataFrame:
    now = dt.datetime.now(dt.UTC)
    row = {k: None for k in REGISTRY_SCHEMA}
    row.update({"model_name": name, "version": version, "created_at": now, "spec_hash": "x", "promoted": promoted,
                "reason": "test", "features": "[]", "metrics": "{}"})
    return pl.DataFrame([row], schema=REGISTRY_SCHEMA)


def test_signals_asset_scores_the_last_dates_with_the_production_model(home, tiny_spec_path, market):
    _, feats, regimes, ctx, model = market
    settings = _settings(home, tiny_spec_path)
    version = settings.model_store.save("logreg", model, {"test": True})
    with settings.connect() as conn:
        write_table(conn, DEFAULT_SCHEMA, "model_versions", _registry_row("logreg", version))
        write_table(conn, DEFAULT_SCHEMA, "features", feats)  # read from the warehouse: only the last dates
    (out,) = list(signal_assets.signals(build_asset_context(), settings=settings,
                                        regime_labels=regimes, market_context=ctx))
    sig = out.value
    n = settings.spec.signals.n_dates
    assert sig["date"].n_unique() == n and sig.height == n * 6
    assert sig["as_of"].max() == feats["date"].max() and set(sig["model_version"].to_list()) == {version}
    assert set(sig["spec_hash"].to_list()) == {settings.spec.spec_hash}
    want = model.predict_proba(signal_rows(feats, signal_dates(feats, n)))
    np.testing.assert_allclose(np.sort(sig["p_buy"].to_numpy()), np.sort(want[:, 2]))
    assert "top" in out.metadata and "bottom" in out.metadata


def test_signal_backtest_asset_body_on_a_synthetic_contract(home, tiny_spec_path):
    pred, px, mk = synthetic_contract(n_symbols=12, n_days=260, ic=0.1, seed=4,
                                      models=("meta_learner", "lightgbm", "baseline_prior", "baseline_regime_prior",
                                              "arm:unweighted"))
    settings = _settings(home, tiny_spec_path)
    with settings.connect() as conn:  # read from the warehouse one model at a time
        write_table(conn, DEFAULT_SCHEMA, "walk_forward_predictions", pred)
    out = signal_assets.signal_backtest(build_asset_context(), settings=settings, raw_prices=px, market_context=mk)
    m = out.value
    assert set(m["model"].to_list()) == {"meta_learner", "lightgbm", "baseline_prior", "baseline_regime_prior",
                                         "arm:unweighted", "equal_weight", "index"}
    assert set(m["strategy"].to_list()) == {"long_short", "long_only", "signal", "buy_and_hold"}
    assert set(m["group_type"].to_list()) == {"overall", "regime", "year"}
    for key in ("cumulative_plot", "rank_ic_by_year_plot", "sharpe_by_regime_plot", "headline_long_short"):
        assert key in out.metadata
    assert "data:image/png;base64," in out.metadata["cumulative_plot"].value
    assert out.metadata["candidate"].value == "meta_learner"
    with settings.connect() as conn:
        write_table(conn, DEFAULT_SCHEMA, "walk_forward_predictions", pred.drop("fwd_return"))
    with pytest.raises(Failure, match="bad input: walk_forward_predictions: missing columns"):
        signal_assets.signal_backtest(build_asset_context(), settings=settings, raw_prices=px, market_context=mk)


def test_signal_backtest_joins_the_graph_only_with_its_upstream(home, tiny_spec_path):
    assert signal_assets.signals_assets([]) == [signal_assets.signals]

    @asset(name="walk_forward_predictions")
    def fake_predictions() -> None:
        return None

    @asset(name="raw_prices")
    def fake_prices() -> None:
        return None

    @asset(name="market_context")
    def fake_context() -> None:
        return None

    got = signal_assets.signals_assets([fake_predictions])
    assert got == [signal_assets.signals, signal_assets.signal_backtest]
    defs = Definitions(assets=[fake_predictions, fake_prices, fake_context, signal_assets.signal_backtest],
                       resources={"settings": _settings(home, tiny_spec_path)})
    graph = defs.resolve_asset_graph()
    parents = graph.get(AssetKey("signal_backtest")).parent_keys
    assert parents == {AssetKey("walk_forward_predictions"), AssetKey("raw_prices"), AssetKey("market_context")}


# ------------------------------------------------------------------------------------------- CLI + summary


def _stored_signals(home, market) -> pl.DataFrame:
    _, feats, regimes, ctx, model = market
    sig = _signals_for(model, feats, regimes, ctx, signal_dates(feats, 2))
    with duckdb.connect(str(warehouse_path(home))) as conn:
        write_table(conn, DEFAULT_SCHEMA, "signals", sig)
        write_table(conn, DEFAULT_SCHEMA, "production_model", _registry_row("logreg", "v1"))
    return sig


def test_cli_prints_signals_from_the_warehouse(home, market, capsys):
    from regime_assets.cli import main

    assert main(["signals", "--home", str(home)]) == 2
    assert "no warehouse" in capsys.readouterr().err
    sig = _stored_signals(home, market)
    last = sig["date"].max()
    assert main(["signals", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert f"signals for {last}" in out and all(s in out for s in sig["symbol"].unique().to_list())
    assert main(["signals", "--home", str(home), "--format", "json", "--top", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    day = sig.filter(pl.col("date") == last).sort("score", descending=True)
    assert [r["symbol"] for r in rows] == [*day["symbol"].head(2), *day["symbol"].tail(2)]
    first = sig["date"].min()
    assert main(["signals", "--home", str(home), "--format", "csv", "--date", str(first)]) == 0
    csv = pl.read_csv(capsys.readouterr().out.encode(), try_parse_dates=True)
    assert csv.height == 6 and (csv["date"] == first).all()
    assert main(["signals", "--home", str(home), "--date", "1999-01-01"]) == 2
    assert "no signals for that date" in capsys.readouterr().err


def test_summary_prints_top_and_bottom_or_why_not(home, market, capsys):
    from regime_assets.spec import Spec
    from regime_assets.summary import print_backtest, print_signals

    spec = Spec()
    with duckdb.connect(str(warehouse_path(home))) as conn:
        write_table(conn, DEFAULT_SCHEMA, "production_model", _registry_row("logreg", "v1").head(0))
        print_signals(conn, spec)
    assert "no promoted model: no signals" in capsys.readouterr().out
    none_row = _registry_row("none", None, promoted=False)  # what a graph without a promotion may store
    with duckdb.connect(str(warehouse_path(home))) as conn:
        write_table(conn, DEFAULT_SCHEMA, "production_model", none_row)
        print_signals(conn, spec)
    assert "no promoted model: no signals" in capsys.readouterr().out
    sig = _stored_signals(home, market)
    pred, px, mk = synthetic_contract(n_symbols=8, n_days=120, seed=1, models=("meta_learner", "lightgbm"))
    from regime_assets.core.backtest import run_backtest

    metrics = run_backtest(pred, px, mk, spec.backtest, 5).metrics
    with duckdb.connect(str(warehouse_path(home))) as conn:
        write_table(conn, DEFAULT_SCHEMA, "signal_backtest", metrics)
        print_signals(conn, spec)
        print_backtest(conn, spec)
    out = capsys.readouterr().out
    best = sig.filter(pl.col("date") == sig["date"].max()).sort("score", descending=True)["symbol"][0]
    assert f"signals for {sig['date'].max()}" in out and "top 5" in out and "bottom 5" in out and best in out
    assert "backtest of the out-of-sample predictions after costs" in out and "meta_learner" in out
    assert "information_ratio" in out and "rank_ic" in out


def test_signal_backtest_materializes_through_the_warehouse_with_an_upstream(home, tiny_spec_path):
    """Wired as it will be once walk_forward_predictions exists: stored by the warehouse IO manager, read back."""
    from dagster import materialize

    from regime_assets.resources.warehouse import WarehouseIOManager

    pred, px, mk = synthetic_contract(n_symbols=8, n_days=200, ic=0.1, seed=6,
                                      models=("meta_learner", "baseline_regime_prior"))

    @asset(name="walk_forward_predictions")
    def wf() -> pl.DataFrame:
        return pred

    @asset(name="raw_prices")
    def prices() -> pl.DataFrame:
        return px

    @asset(name="market_context")
    def context() -> pl.DataFrame:
        return mk

    assets = [wf, prices, context]
    res = materialize([*assets, *signal_assets.signals_assets(assets)[1:]],
                      resources={"settings": _settings(home, tiny_spec_path),
                                 "io_manager": WarehouseIOManager(database=str(warehouse_path(home)))})
    assert res.success
    with duckdb.connect(str(warehouse_path(home)), read_only=True) as conn:
        stored = pl.DataFrame(conn.sql("select * from signal_backtest").to_arrow_table())
    assert stored.height > 0 and {"meta_learner", "baseline_regime_prior", "index"} <= set(stored["model"])


def test_without_a_model_a_run_fails_or_skips_as_the_spec_says(home, tiny_spec_path, market):
    """Through Dagster: 'fail' fails the step with the one-line reason; 'skip' lets the run succeed with no
    signals table (never an empty one)."""
    from dagster import materialize

    from regime_assets.resources.warehouse import WarehouseIOManager

    _, feats, regimes, ctx, _ = market

    @asset(name="features")
    def f() -> pl.DataFrame:
        return feats

    @asset(name="regime_labels")
    def r() -> pl.DataFrame:
        return regimes

    @asset(name="market_context")
    def m() -> pl.DataFrame:
        return ctx

    @asset(name="production_model")
    def p() -> pl.DataFrame:
        return _registry_row("none", None, promoted=False)

    io = WarehouseIOManager(database=str(warehouse_path(home)))
    strict = tmp_spec_with(tiny_spec_path, home, {"signals": {"without_model": "fail"}})
    failed = materialize([f, r, m, p, signal_assets.signals], raise_on_error=False,
                         resources={"settings": _settings(home, strict), "io_manager": io})
    assert not failed.success
    (step,) = [e for e in failed.all_events if e.is_step_failure]
    assert step.step_key == "signals" and "no promoted model: no signals" in str(step.event_specific_data.error)
    skip = tmp_spec_with(tiny_spec_path, home, {"signals": {"without_model": "skip"}})
    ok = materialize([f, r, m, p, signal_assets.signals],
                     resources={"settings": RegimeSettings(spec_path=skip, home=str(home)), "io_manager": io})
    assert ok.success
    assert "signals" not in {e.asset_key.to_user_string() for e in ok.get_asset_materialization_events()}
    with duckdb.connect(str(warehouse_path(home)), read_only=True) as conn:
        tables = {t for (t,) in conn.execute("select table_name from information_schema.tables").fetchall()}
    assert "signals" not in tables and "features" in tables
