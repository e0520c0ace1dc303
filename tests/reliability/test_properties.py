"""Properties of the core chain on generated small frames (hypothesis): prices -> market context -> regimes ->
features -> labels -> training set -> balanced sample -> weights. Every step either returns frames that keep its
contract or raises its documented validation error (a ValueError subclass naming the problem) — never anything
else."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from regime_assets.core.features import FeatureError, build_features, feature_columns
from regime_assets.core.labels import LabelError, build_labels
from regime_assets.core.market import build_market_context
from regime_assets.core.regimes import label_regimes
from regime_assets.core.sampling import SamplingError, balanced_sample
from regime_assets.core.sources import equal_weight_index
from regime_assets.core.splits import SplitError
from regime_assets.core.training_set import TrainingSetError, build_training_set
from regime_assets.core.weights import WeightError, sample_weights
from regime_assets.spec import (
    CLASSES,
    REGIMES,
    BalanceSpec,
    FeatureSpec,
    LabelSpec,
    RegimeSpec,
    TrainingSetSpec,
    VixProxySpec,
    WeightSpec,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.data_too_large])
START = dt.date(2020, 1, 6)
INJECT = ("nan", "zero", "negative", "inf", "duplicate", "null_date")


def _bdays(n: int) -> list[dt.date]:
    out, d = [], START
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


@st.composite
def markets(draw, inject: bool = False, max_days: int = 80):
    """(prices, market_context, sectors, injected?) for 1-3 symbols over 2..max_days business days."""
    n_sym = draw(st.integers(1, 3))
    n = draw(st.integers(2, max_days))
    dates = _bdays(n)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vol = draw(st.sampled_from([0.0, 0.002, 0.02, 0.08]))  # flat, calm, normal and wild markets
    frames = []
    for i in range(n_sym):
        start = draw(st.floats(0.5, 5000.0))
        r = np.clip(rng.standard_t(3, n) * vol, -0.5, 0.5)
        first = draw(st.integers(0, max(0, n // 3)))  # symbols may start later
        close = start * np.exp(np.cumsum(r))
        frames.append(pl.DataFrame({"symbol": f"S{i}", "date": dates[first:], "close": close[first:]}))
    prices = pl.concat(frames).with_columns(pl.col("date").cast(pl.Date))
    injected = False
    if inject and draw(st.booleans()):
        kind, pos = draw(st.sampled_from(INJECT)), draw(st.integers(0, 10_000))
        rows = prices.to_dicts()
        i = pos % len(rows)
        if kind == "duplicate":
            rows.insert(i, dict(rows[i]))
        elif kind == "null_date":
            rows[i]["date"] = None
        else:
            rows[i]["close"] = {"nan": float("nan"), "zero": 0.0, "negative": -1.0, "inf": float("inf")}[kind]
        prices = pl.DataFrame(rows, schema=prices.schema)
        injected = True
    clean = prices.filter(pl.col("close").is_finite() & (pl.col("close") > 0) & pl.col("date").is_not_null()) \
        .unique(["symbol", "date"], keep="first").sort("symbol", "date")
    index = equal_weight_index(clean) if clean.height else pl.DataFrame({"date": dates, "close": 100.0})
    vix_vals = np.where(rng.random(n) < draw(st.floats(0.0, 1.0)), np.nan, rng.uniform(8.0, 90.0, n))
    vix = pl.DataFrame({"date": dates, "vix": vix_vals}, schema={"date": pl.Date, "vix": pl.Float64}) \
        .filter(pl.col("vix").is_not_nan())
    ctx, _ = build_market_context(index.select("date", "close"), vix if vix.height else None, VixProxySpec())
    sectors = pl.DataFrame({"symbol": [f"S{i}" for i in range(n_sym)],
                            "sector": draw(st.lists(st.sampled_from(["Tech", "Energy", "unknown"]),
                                                    min_size=n_sym, max_size=n_sym))})
    return prices, ctx, sectors, injected


@SETTINGS
@given(markets(inject=True), st.integers(1, 10))
def test_regimes_features_labels_keep_their_contracts_or_raise_their_errors(case, horizon):
    prices, ctx, sectors, injected = case
    try:
        feats = build_features(prices, ctx, sectors, FeatureSpec())
    except FeatureError as err:
        assert injected, f"clean prices rejected: {err}"
        return
    assert not injected or prices.filter(pl.col("date").is_null()).height == 0
    assert feats.height == prices.height
    assert feats.select("symbol", "date").is_duplicated().sum() == 0
    fcols = feature_columns(feats)
    assert fcols and all(feats.schema[c] == pl.Float32 for c in fcols)  # the spec's default storage dtype
    odd = feats.select(pl.any_horizontal(pl.col(fcols).is_nan() | pl.col(fcols).is_infinite()).any()).item()
    assert not odd, "features hold NaN or inf (missing values must be null)"
    regimes = label_regimes(prices, ctx, RegimeSpec())
    assert set(regimes["regime"].unique().to_list()) <= set(REGIMES)
    assert regimes.height == prices.join(ctx.select("date"), on="date").height
    try:
        labeled = build_labels(feats, regimes, LabelSpec(horizon=horizon), prices)
    except LabelError as err:
        assert injected, f"clean frames rejected: {err}"
        return
    assert set(labeled["label"].drop_nulls().unique().to_list()) <= set(CLASSES)
    # rows on the last `horizon` price dates of their symbol have no label (the forward window runs past the data)
    tail = prices.sort("symbol", "date").group_by("symbol").tail(horizon).select("symbol", "date")
    late = labeled.join(tail, on=["symbol", "date"])
    assert late["label"].null_count() == late.height


@SETTINGS
@given(markets(max_days=500), st.integers(1, 5), st.floats(0.05, 2.0), st.integers(1, 4), st.integers(100, 3000),
       st.booleans())
def test_training_set_sampling_and_weights_keep_their_contracts_or_raise_their_errors(
        case, horizon, window_years, validation_months, target, archive_events):
    prices, ctx, sectors, _ = case
    feats = build_features(prices, ctx, sectors, FeatureSpec())
    regimes = label_regimes(prices, ctx, RegimeSpec())
    labeled = build_labels(feats, regimes, LabelSpec(horizon=horizon), prices)
    archive = None
    if archive_events:
        archive = labeled.filter(pl.col("label").is_not_null()).head(20).with_columns(
            pl.lit("e1").alias("event_id"), pl.lit("crash").alias("event_regime"), pl.lit(0.2).alias("event_weight"))
    tspec = TrainingSetSpec(window_years=window_years, validation_months=validation_months, embargo_days=2)
    try:
        ts, summary = build_training_set(labeled, archive, None, tspec, horizon)
    except (TrainingSetError, SplitError) as err:
        event(f"training set refused: {type(err).__name__}")
        return
    assert set(ts["split"].unique().to_list()) <= {"train", "validation"}
    assert ts["label"].null_count() == 0
    train = ts.filter(pl.col("split") == "train")
    if train.height and summary["validation_start"] is not None:
        # no training label window reaches into the validation block
        assert train["date"].max() < summary["validation_start"]
    try:
        balanced, bsum = balanced_sample(ts, BalanceSpec(target_size=target))
    except SamplingError:
        event("sampling refused")
        return
    assert balanced.height <= min(target, train.height) or train.height == 0
    assert (balanced["split"] == "train").all() and balanced["row_id"].is_unique().all()
    assert set(balanced["regime"].unique().to_list()) <= set(REGIMES)
    try:
        w = sample_weights(balanced, WeightSpec())
    except WeightError:
        event("weights refused")
        return
    event(f"weights computed ({'empty' if w.height == 0 else 'rows'})")
    assert w.height == balanced.height
    if w.height:
        assert (w["weight"] > 0).all() and w["weight"].is_finite().all()
        assert abs(float(w["weight"].mean()) - 1.0) < 1e-9
