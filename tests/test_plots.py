import base64
import datetime as dt
import io
import re

import numpy as np
import polars as pl
import pytest
from matplotlib import image as mpimg

from regime_assets.rendering import plots
from regime_assets.spec import CLASSES, DEFAULT_EVENTS, REGIMES, DriftSpec

PNG_MAGIC = b"\x89PNG"
MAX_BYTES = 150_000


def _check_png(png: bytes, not_title: str | None = None):
    assert isinstance(png, bytes) and png.startswith(PNG_MAGIC)
    assert len(png) < MAX_BYTES
    img = mpimg.imread(io.BytesIO(png), format="png")
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 100
    if not_title is not None:
        assert png != plots.no_data_png(not_title)
    return img


@pytest.fixture(scope="module")
def regime_labels():
    rng = np.random.default_rng(0)
    dates = pl.date_range(dt.date(2019, 1, 1), dt.date(2021, 12, 31), "1d", eager=True)
    n = len(dates)
    frames = []
    for s in ("AAA", "BBB", "CCC"):
        frames.append(pl.DataFrame({"symbol": [s] * n, "date": dates,
                                    "regime": rng.choice(list(REGIMES), size=n).tolist()}))
    return pl.concat(frames)


def test_png_markdown_roundtrip():
    png = plots.no_data_png("x")
    md = plots.png_markdown(png, "Regime [shares]\nby month")
    m = re.fullmatch(r"!\[([^\]\n]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert m is not None
    assert m.group(1) == "Regime (shares) by month"
    assert base64.b64decode(m.group(2)) == png


def test_placeholder_is_png_and_deterministic():
    a = plots.no_data_png("t")
    _check_png(a)
    assert a == plots.no_data_png("t") and a != plots.no_data_png("other")


def test_regime_shares_plot(regime_labels):
    png = plots.regime_shares_plot(regime_labels, DEFAULT_EVENTS, title="shares")
    _check_png(png, not_title="shares")
    assert png != plots.regime_shares_plot(regime_labels, None, title="shares")  # events are drawn
    captured = pl.DataFrame({"event_id": ["captured_x"], "start": [dt.date(2020, 3, 1)], "end": [dt.date(2020, 3, 20)]})
    _check_png(plots.regime_shares_plot(regime_labels, captured, title="shares"), not_title="shares")
    one_month = regime_labels.filter(pl.col("date") < dt.date(2019, 1, 20))
    _check_png(plots.regime_shares_plot(one_month, [], title="shares"), not_title="shares")


def test_class_balance_plot():
    rng = np.random.default_rng(1)
    df = pl.DataFrame({"regime": rng.choice(list(REGIMES), 500).tolist(),
                       "label": rng.choice(list(CLASSES), 500).tolist()})
    _check_png(plots.class_balance_plot(df, title="cb"), not_title="cb")


def test_regime_metric_bars():
    rows = []
    for m in ("rf", "lightgbm", "meta_learner", "baseline_majority", "baseline_persistence"):
        for r in (*REGIMES, "all"):
            v = float(np.random.default_rng(len(m) + len(r)).uniform(0.3, 0.6))
            rows.append({"model": m, "regime": r, "metric": "balanced_accuracy", "value": v,
                         "ci_low": v - 0.03, "ci_high": v + 0.03})
            rows.append({"model": m, "regime": r, "metric": "accuracy", "value": v, "ci_low": None, "ci_high": None})
    df = pl.DataFrame(rows)
    _check_png(plots.regime_metric_bars(df, "balanced_accuracy", title="bars"), not_title="bars")
    _check_png(plots.regime_metric_bars(df.drop("ci_low", "ci_high"), "accuracy", title="bars"), not_title="bars")
    assert plots.regime_metric_bars(df, "log_loss", title="bars") == plots.no_data_png("bars")


def test_walk_forward_arms_plot():
    rows = []
    for a in ("regime_weights", "balanced", "full"):
        for r in REGIMES:
            rows.append({"arm": a, "regime": r, "metric": "balanced_accuracy", "diff": 0.01,
                         "ci_low": -0.02, "ci_high": 0.04})
    df = pl.DataFrame(rows)
    _check_png(plots.walk_forward_arms_plot(df, title="arms"), not_title="arms")
    _check_png(plots.walk_forward_arms_plot(df.rename({"diff": "delta"}).drop("metric"), title="arms"),
               not_title="arms")


def test_drift_plot():
    feats = [f"f_feature_{i}" for i in range(30)]
    psi = np.linspace(0.0, 0.6, 30)
    table = pl.DataFrame({"feature": feats, "psi": psi, "ks": psi / 2,
                          "level": ["major" if p >= 0.25 else "moderate" if p >= 0.1 else "none" for p in psi]})
    hist = pl.DataFrame({"date": pl.date_range(dt.date(2022, 1, 1), dt.date(2022, 3, 31), "1w", eager=True)}
                        ).with_columns(pl.Series("score", np.linspace(0.05, 0.3, 13)))
    _check_png(plots.drift_plot(table, 0.3, hist, DriftSpec(), title="drift"), not_title="drift")
    _check_png(plots.drift_plot(table, 0.3, None, title="drift"), not_title="drift")
    _check_png(plots.drift_plot(table.head(0), 0.3, None, title="drift"), not_title="drift")
    assert plots.drift_plot(table.head(0), None, None, title="drift") == plots.no_data_png("drift")


def test_shap_top_features_plot():
    rng = np.random.default_rng(2)
    rows = [{"model": m, "regime": r, "feature": f"f_{i}_with_a_rather_long_name", "importance": float(rng.uniform())}
            for m in ("rf", "logreg") for r in REGIMES for i in range(25)]
    df = pl.DataFrame(rows)
    png = plots.shap_top_features_plot(df, "rf", 10, title="shap")
    _check_png(png, not_title="shap")
    assert plots.shap_top_features_plot(df, "missing_model", 10, title="shap") == plots.no_data_png("shap")


def test_replay_timeline_plot():
    as_of = pl.date_range(dt.date(2020, 1, 4), dt.date(2020, 12, 26), "1w", eager=True)
    n = len(as_of)
    score = np.clip(np.sin(np.arange(n) / 6) * 0.2 + 0.15, 0, 1)
    tl = pl.DataFrame({
        "as_of": as_of,
        "drift_score": score,
        "retrain": (score >= 0.15).tolist(),
        "captured_event": [None] * 10 + ["captured_2020-02-20_2020-03-13_crash"] + [None] * (n - 11),
        "vix": np.linspace(15, 45, n),
    }, schema_overrides={"captured_event": pl.Utf8})
    _check_png(plots.replay_timeline_plot(tl, threshold=0.15, title="tl"), not_title="tl")
    _check_png(plots.replay_timeline_plot(tl.drop("vix", "captured_event"), title="tl"), not_title="tl")


@pytest.mark.parametrize("call,title", [
    (lambda t: plots.regime_shares_plot(pl.DataFrame(schema={"symbol": pl.Utf8, "date": pl.Date, "regime": pl.Utf8}),
                                        DEFAULT_EVENTS, title=t), "a"),
    (lambda t: plots.regime_metric_bars(pl.DataFrame(), "accuracy", title=t), "b"),
    (lambda t: plots.walk_forward_arms_plot(pl.DataFrame(), title=t), "c"),
    (lambda t: plots.drift_plot(pl.DataFrame(), None, pl.DataFrame(), title=t), "d"),
    (lambda t: plots.shap_top_features_plot(pl.DataFrame(), "rf", 10, title=t), "e"),
    (lambda t: plots.replay_timeline_plot(pl.DataFrame(), title=t), "f"),
    (lambda t: plots.class_balance_plot(pl.DataFrame(), title=t), "g"),
    (lambda t: plots.regime_shares_plot(None, None, title=t), "h"),
])
def test_empty_inputs_give_placeholder(call, title):
    png = call(title)
    assert png.startswith(PNG_MAGIC)
    assert png == plots.no_data_png(title)
