import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regime_assets.core.sampling import SamplingError, allocate, balanced_sample
from regime_assets.spec import REGIMES, BalanceSpec


def _train(counts: dict[str, int], n_validation: int = 0, seed: int = 0) -> pl.DataFrame:
    """A training_set-like frame with ``counts[regime]`` train rows and some validation rows."""
    rng = np.random.default_rng(seed)
    regimes = np.concatenate([np.repeat(r, n) for r, n in counts.items()] + [rng.choice(REGIMES, n_validation)])
    split = ["train"] * (len(regimes) - n_validation) + ["validation"] * n_validation
    n = len(regimes)
    order = rng.permutation(n)
    return pl.DataFrame({
        "symbol": [f"S{i % 50:02d}" for i in range(n)],
        "date": [dt.date(1990, 1, 1) + dt.timedelta(days=i // 50) for i in range(n)],
        "f_x": rng.normal(size=n),
        "regime": regimes[order],
        "label": rng.choice(["sell", "hold", "buy"], n),
        "source": "window",
        "split": np.array(split)[order],
        "event_id": pl.Series([None] * n, dtype=pl.Utf8),
        "event_weight": pl.Series([None] * n, dtype=pl.Float64),
        "uid": np.arange(n),
    })


BIG = {"low_vol": 60_000, "normal": 90_000, "high_vol": 30_000, "crash": 8_000, "recovery": 12_000}


def test_ratios_on_large_frame():
    train = _train(BIG, n_validation=5_000)
    spec = BalanceSpec()
    out, summ = balanced_sample(train, spec)
    assert out.height == spec.target_size
    assert set(out.get_column("split")) == {"train"}
    assert out.get_column("row_id").to_list() == list(range(out.height))
    shares = out.group_by("regime").len().with_columns(pl.col("len") / out.height)
    for r in REGIMES:
        share = shares.filter(pl.col("regime") == r).get_column("len")[0]
        assert abs(share - spec.ratios[r]) < 0.01
        row = summ.filter(pl.col("regime") == r).row(0, named=True)
        assert row["available"] == BIG[r]
        assert row["drawn_rows"] == row["target_rows"] and row["shortfall"] == 0
        assert not row["with_replacement"]
        assert abs(row["achieved_ratio"] - share) < 1e-12
    assert out.get_column("uid").is_duplicated().sum() == 0  # enough rows everywhere: no repeats


def test_seeded_and_independent_of_row_order():
    train = _train({"low_vol": 900, "normal": 2000, "high_vol": 500, "crash": 50, "recovery": 120})
    spec = BalanceSpec(target_size=2000, seed=5)
    a, _ = balanced_sample(train, spec)
    b, _ = balanced_sample(train.reverse(), spec)
    c, _ = balanced_sample(train, BalanceSpec(target_size=2000, seed=6))
    assert a.get_column("uid").to_list() == b.get_column("uid").to_list()
    assert sorted(a.get_column("uid").to_list()) != sorted(c.get_column("uid").to_list())


def test_shortfall_with_replacement_is_reported_and_not_borrowed():
    counts = {"low_vol": 5000, "normal": 8000, "high_vol": 3000, "crash": 100, "recovery": 700}
    train = _train(counts)
    spec = BalanceSpec(target_size=10_000, max_replacement_factor=3.0)
    out, summ = balanced_sample(train, spec)
    rows = {r["regime"]: r for r in summ.iter_rows(named=True)}
    crash, rec = rows["crash"], rows["recovery"]
    assert crash["target_rows"] == 1000 and crash["drawn_rows"] == 300 and crash["shortfall"] == 700
    assert crash["with_replacement"]
    # every crash row used exactly three times (even replacement)
    reps = out.filter(pl.col("regime") == "crash").group_by("uid").len().get_column("len")
    assert reps.len() == 100 and set(reps) == {3}
    assert rec["target_rows"] == 1000 and rec["drawn_rows"] == 1000 and rec["shortfall"] == 0
    assert rec["with_replacement"]
    rec_reps = out.filter(pl.col("regime") == "recovery").group_by("uid").len().get_column("len")
    assert rec_reps.len() == 700 and set(rec_reps) <= {1, 2}
    for r in ("low_vol", "normal", "high_vol"):
        assert rows[r]["drawn_rows"] == rows[r]["target_rows"]
    assert out.height == 10_000 - 700
    assert summ.get_column("achieved_ratio").sum() == pytest.approx(1.0)
    assert rows["crash"]["achieved_ratio"] == pytest.approx(300 / out.height)


def test_missing_regime_and_factor_one():
    counts = {"low_vol": 500, "normal": 800, "high_vol": 300, "crash": 0, "recovery": 50}
    train = _train(counts)
    out, summ = balanced_sample(train, BalanceSpec(target_size=1000, max_replacement_factor=1.0))
    rows = {r["regime"]: r for r in summ.iter_rows(named=True)}
    assert rows["crash"]["drawn_rows"] == 0 and rows["crash"]["shortfall"] == rows["crash"]["target_rows"] == 100
    assert rows["recovery"]["drawn_rows"] == 50 and not rows["recovery"]["with_replacement"]
    assert out.get_column("uid").is_duplicated().sum() == 0
    assert out.height == 1000 - 100 - 50


def test_small_training_split_is_not_inflated():
    counts = {"low_vol": 40, "normal": 100, "high_vol": 30, "crash": 10, "recovery": 20}
    train = _train(counts, n_validation=500)
    out, summ = balanced_sample(train, BalanceSpec(target_size=40_000))
    assert summ.get_column("target_rows").sum() == 200
    assert out.height == 200 - summ.get_column("shortfall").sum()
    assert out.height <= 200


def test_bad_inputs():
    train = _train({"low_vol": 10, "normal": 10, "high_vol": 10, "crash": 10, "recovery": 10})
    with pytest.raises(SamplingError, match="split"):
        balanced_sample(train.drop("split"), BalanceSpec())
    bad = train.with_columns(pl.when(pl.col("uid") == 3).then(pl.lit("panic")).otherwise(pl.col("regime"))
                             .alias("regime"))
    with pytest.raises(SamplingError, match="panic"):
        balanced_sample(bad, BalanceSpec())


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 100_000), st.lists(st.integers(0, 100), min_size=5, max_size=5).filter(lambda v: sum(v) > 0))
def test_allocate_sums_and_is_within_one(total, raw):
    ratios = {r: v / sum(raw) for r, v in zip(REGIMES, raw)}
    alloc = allocate(total, ratios)
    assert sum(alloc.values()) == total
    assert all(abs(alloc[r] - ratios[r] * total) < 1 + 1e-9 for r in REGIMES)
