import datetime as dt

import numpy as np
import polars as pl
import pytest

from regime_assets.core.gate import decide_promotion
from regime_assets.spec import CLASSES, REGIMES, GateSpec

GSPEC = GateSpec(min_regime_rows=200, regime_margin=0.02, min_samples=1000, bootstrap_reps=100)


def frames(acc_champion=0.55, acc_challenger=0.7, crash_challenger=None, n_dates=120, rows_per_date=20, seed=0):
    rng = np.random.default_rng(seed)
    n = n_dates * rows_per_date
    day = np.repeat(np.arange(n_dates), rows_per_date)
    regime = np.array(REGIMES)[rng.integers(0, len(REGIMES), n)]
    y = rng.integers(0, 3, n)
    base = pl.DataFrame({
        "date": pl.Series([dt.date(2021, 1, 1) + dt.timedelta(days=int(d)) for d in day]).cast(pl.Date),
        "symbol": [f"S{i % rows_per_date}" for i in range(n)],
        "regime": regime, "label": np.array(CLASSES)[y],
    })

    def with_probs(acc):
        correct = rng.uniform(size=n) < acc
        pred = np.where(correct, y, (y + rng.integers(1, 3, n)) % 3)
        p = np.full((n, 3), 0.2)
        p[np.arange(n), pred] = 0.6
        return base.with_columns(p_sell=p[:, 0], p_hold=p[:, 1], p_buy=p[:, 2])

    champion = with_probs(np.full(n, acc_champion))
    acc = np.full(n, acc_challenger)
    if crash_challenger is not None:
        acc[regime == "crash"] = crash_challenger
    return with_probs(acc), champion


def test_no_champion_promotes_first_model():
    challenger, _ = frames()
    d = decide_promotion(challenger, None, GSPEC, n_train=5000)
    assert d["promote"] and d["reasons"] == ["no champion"]
    d = decide_promotion(challenger, None, GSPEC, n_train=500)
    assert not d["promote"] and "min_samples 1000" in d["reasons"][0]


def test_better_challenger_is_promoted():
    challenger, champion = frames()
    d = decide_promotion(challenger, champion, GSPEC, n_train=5000)
    assert d["promote"], d["reasons"]
    assert d["overall_diff"] > 0.1 and d["ci_excludes_zero"] and d["ci"][0] > 0
    per = d["per_regime"]
    assert per.filter(pl.col("regime") != "overall")["checked"].all()
    assert per.filter(pl.col("checked"))["passed"].all()
    assert any("excludes 0" in r for r in d["reasons"])


def test_worse_challenger_and_too_few_rows_are_rejected():
    challenger, champion = frames(acc_champion=0.7, acc_challenger=0.55)
    d = decide_promotion(challenger, champion, GSPEC, n_train=5000)
    assert not d["promote"] and d["overall_diff"] < 0
    better, champion = frames()
    d = decide_promotion(better, champion, GSPEC, n_train=999)
    assert not d["promote"] and any("min_samples" in r for r in d["reasons"])


def test_regime_loss_blocks_promotion_only_when_regime_is_large_enough():
    challenger, champion = frames(acc_champion=0.6, acc_challenger=0.72, crash_challenger=0.35)
    d = decide_promotion(challenger, champion, GSPEC, n_train=5000)
    assert d["overall_diff"] > 0
    assert not d["promote"]
    assert any(r.startswith("regime crash:") for r in d["reasons"])
    crash = d["per_regime"].filter(pl.col("regime") == "crash").row(0, named=True)
    assert crash["checked"] and not crash["passed"] and crash["improvement"] < -GSPEC.regime_margin
    lenient = GSPEC.model_copy(update={"min_regime_rows": 10_000})
    d2 = decide_promotion(challenger, champion, lenient, n_train=5000)
    assert d2["promote"] and any("not checked" in r and "crash" in r for r in d2["reasons"])


def test_log_loss_lower_is_better():
    challenger, champion = frames()
    gspec = GSPEC.model_copy(update={"primary_metric": "log_loss"})
    d = decide_promotion(challenger, champion, gspec, n_train=5000)
    assert d["promote"]
    assert d["challenger_value"] < d["champion_value"]
    assert d["overall_diff"] == pytest.approx(d["champion_value"] - d["challenger_value"])
    assert d["ci"][0] > 0
    d_rev = decide_promotion(champion, challenger, gspec, n_train=5000)
    assert not d_rev["promote"] and d_rev["overall_diff"] < 0
