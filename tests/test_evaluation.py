import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

from regime_assets.core.evaluation import (
    BASELINE_MAJORITY,
    BASELINE_REGIME_PRIOR,
    LONG_SCHEMA,
    EvaluationError,
    metrics,
    metrics_wide,
    paired_difference,
    regime_metrics_with_ci,
    segment_metrics,
)
from regime_assets.spec import CLASSES, REGIMES, EvaluationSpec

ESPEC = EvaluationSpec()


def pred_frame(n_dates=120, rows_per_date=15, acc=0.6, date_sd=0.0, seed=0, model="m", regimes=REGIMES):
    """Rows whose argmax is correct with probability ``acc`` (+ a per-date shift) and a return signal."""
    rng = np.random.default_rng(seed)
    n = n_dates * rows_per_date
    day = np.repeat(np.arange(n_dates), rows_per_date)
    p_date = np.clip(acc + date_sd * rng.uniform(-1, 1, n_dates), 0, 1)[day]
    y = rng.integers(0, 3, n)
    correct = rng.uniform(size=n) < p_date
    pred = np.where(correct, y, (y + rng.integers(1, 3, n)) % 3)
    p = np.full((n, 3), 0.2)
    p[np.arange(n), pred] = 0.6
    ret = (y - 1) * 0.01 + 0.01 * rng.normal(size=n)
    start = dt.date(2020, 1, 1)
    return pl.DataFrame({
        "model": model,
        "date": pl.Series([start + dt.timedelta(days=int(d)) for d in day]).cast(pl.Date),
        "symbol": [f"S{i % rows_per_date}" for i in range(n)],
        "sector": [f"sec{i % 3}" for i in range(n)],
        "regime": np.array(regimes)[rng.integers(0, len(regimes), n)],
        "label": np.array(CLASSES)[y],
        "p_sell": p[:, 0], "p_hold": p[:, 1], "p_buy": p[:, 2],
        "fwd_return": ret,
    })


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=10_000))
def test_metrics_match_sklearn(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    p = rng.dirichlet(np.ones(3), size=n)
    m = metrics(np.array(CLASSES)[y], p)
    pred = p.argmax(1)
    assert m["n"] == n
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1, 2]))


def test_interval_coverage_in_simulation():
    """95% intervals over dates cover the true accuracy in most of 60 simulated validation sets."""
    true_acc = 0.6
    covered, widths = [], []
    for seed in range(60):
        f = pred_frame(acc=true_acc, date_sd=0.15, seed=seed, regimes=("normal",))
        t = regime_metrics_with_ci(f, ESPEC, baselines=False)
        row = t.filter((pl.col("regime") == "overall") & (pl.col("metric") == "accuracy")).row(0, named=True)
        covered.append(row["ci_low"] <= true_acc <= row["ci_high"])
        widths.append(row["ci_high"] - row["ci_low"])
    assert np.mean(covered) >= 0.85
    assert 0.02 < np.mean(widths) < 0.15


def test_long_table_shape_values_and_baselines():
    f = pred_frame(seed=3)
    train = pred_frame(seed=4, n_dates=60).with_columns(
        label=pl.when(pl.col("regime") == "crash").then(pl.lit("sell")).otherwise(pl.lit("buy")))
    t = regime_metrics_with_ci(f, ESPEC, train=train)
    assert t.schema == pl.Schema(LONG_SCHEMA)
    assert set(t["model"].unique()) == {"m", BASELINE_MAJORITY, BASELINE_REGIME_PRIOR}
    assert set(t["metric"].unique()) == {"accuracy", "balanced_accuracy", "macro_f1", "log_loss", "ic"}
    assert t.filter(pl.col("model") == "m")["regime"].unique().len() == len(REGIMES) + 1
    acc = t.filter((pl.col("model") == "m") & (pl.col("metric") == "accuracy"))
    assert (acc["ci_low"] <= acc["value"]).all() and (acc["value"] <= acc["ci_high"]).all()
    overall = acc.filter(pl.col("regime") == "overall").row(0, named=True)
    assert overall["n"] == f.height and overall["n_dates"] == 120
    assert overall["value"] == pytest.approx(metrics(f["label"], f.select("p_sell", "p_hold", "p_buy"))["accuracy"])
    # majority baseline: the training majority ('buy') as a one-hot prediction
    maj = t.filter((pl.col("model") == BASELINE_MAJORITY) & (pl.col("metric") == "accuracy")
                   & (pl.col("regime") == "overall"))["value"][0]
    assert maj == pytest.approx((f["label"] == "buy").mean())
    # regime prior: crash rows get P(sell) = 1, others P(buy) = 1 -> log loss only from wrong rows
    prior_acc = t.filter((pl.col("model") == BASELINE_REGIME_PRIOR) & (pl.col("metric") == "accuracy")
                         & (pl.col("regime") == "crash"))["value"][0]
    crash = f.filter(pl.col("regime") == "crash")
    assert prior_acc == pytest.approx((crash["label"] == "sell").mean())


def test_ic_is_mean_daily_spearman():
    f = pred_frame(seed=5, n_dates=30, regimes=("normal",))
    t = regime_metrics_with_ci(f, ESPEC, baselines=False)
    ic = t.filter((pl.col("metric") == "ic") & (pl.col("regime") == "overall")).row(0, named=True)
    expected = np.mean([spearmanr((g["p_buy"] - g["p_sell"]).to_numpy(), g["fwd_return"].to_numpy())[0]
                        for _, g in f.group_by("date")])
    assert ic["value"] == pytest.approx(expected)
    assert ic["n_dates"] == 30 and ic["ci_low"] < ic["value"] < ic["ci_high"]


def test_small_groups_have_no_interval_and_wide_helper():
    f = pred_frame(seed=6, n_dates=20, rows_per_date=2)
    t = regime_metrics_with_ci(f, ESPEC.model_copy(update={"min_rows": 30}), baselines=False)
    small = t.filter((pl.col("regime") != "overall") & (pl.col("metric") == "accuracy"))
    assert (small["n"] < 30).all() and small["ci_low"].is_null().all()
    overall = t.filter(pl.col("regime") == "overall")
    assert overall.filter(pl.col("metric") != "ic")["ci_low"].is_not_null().all()
    # two rows per date are too few for a daily rank correlation
    assert overall.filter(pl.col("metric") == "ic").select(pl.col("value").is_null() & (pl.col("n_dates") == 0)).item()
    w = metrics_wide(t)
    assert w.height == len(REGIMES) + 1
    assert {"accuracy", "accuracy_ci_low", "log_loss_ci_high", "ic"} <= set(w.columns)


def test_segment_metrics_match_subsets():
    f = pl.concat([pred_frame(seed=7, model="a"), pred_frame(seed=8, model="b", acc=0.8)])
    seg = segment_metrics(f, "sector")
    assert seg.height == 6 and seg.columns[:3] == ["model", "sector", "n"]
    row = seg.filter((pl.col("model") == "b") & (pl.col("sector") == "sec1")).row(0, named=True)
    sub = f.filter((pl.col("model") == "b") & (pl.col("sector") == "sec1"))
    m = metrics(sub["label"], sub.select("p_sell", "p_hold", "p_buy").to_numpy())
    assert row["n"] == sub.height
    for k in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert row[k] == pytest.approx(m[k])
    with pytest.raises(EvaluationError, match="by must be"):
        segment_metrics(f, "regime")


def test_paired_difference():
    a = pred_frame(seed=9, acc=0.5)
    same = paired_difference(a, a.sample(fraction=1.0, shuffle=True, seed=1), "accuracy", ESPEC)
    assert same["diff"].abs().max() == 0 and same["ci_low"].abs().max() == 0
    # b: a better model on the same rows
    better = pred_frame(seed=9, acc=0.7).select("symbol", "date", "p_sell", "p_hold", "p_buy")
    b = a.drop("p_sell", "p_hold", "p_buy").join(better, on=["symbol", "date"])
    d = paired_difference(a, b, "balanced_accuracy", ESPEC)
    overall = d.filter(pl.col("regime") == "overall").row(0, named=True)
    assert overall["diff"] > 0.1 and overall["ci_low"] > 0 and overall["share_positive"] == 1.0
    assert overall["diff"] == pytest.approx(overall["value_b"] - overall["value_a"])
    assert d["regime"].to_list() == [*REGIMES, "overall"]
    ll = paired_difference(a, b, "log_loss", ESPEC).filter(pl.col("regime") == "overall")
    assert ll["diff"][0] < 0 and ll["ci_high"][0] < 0
    with pytest.raises(EvaluationError, match="labels differ"):
        paired_difference(a, b.with_columns(label=pl.lit("sell")), "accuracy", ESPEC)
    with pytest.raises(EvaluationError, match="unknown metric"):
        paired_difference(a, b, "auc", ESPEC)


def test_input_errors_name_columns():
    f = pred_frame(seed=10, n_dates=5)
    with pytest.raises(EvaluationError, match=r"missing columns \['p_hold'\]"):
        regime_metrics_with_ci(f.drop("p_hold"), ESPEC)
    with pytest.raises(EvaluationError, match="non-finite probability in row 0"):
        metrics(["buy"], [[np.nan, 0.5, 0.5]])
