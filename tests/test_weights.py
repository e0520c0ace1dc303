import numpy as np
import polars as pl
import pytest

from regime_assets.core.weights import WeightError, sample_weights
from regime_assets.spec import REGIMES, WeightSpec


def _balanced(n: int = 2000, archive_share: float = 0.3, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    source = np.where(rng.random(n) < archive_share, "archive", "window")
    events = {"e2008": 0.20, "e2015": 0.15, "e2022": 0.05}
    eid = rng.choice(list(events), n)
    return pl.DataFrame({
        "row_id": np.arange(n)[::-1].copy(),
        "regime": rng.choice(REGIMES, n),
        "source": source,
        "event_id": [e if s == "archive" else None for e, s in zip(eid, source)],
        "event_weight": [events[e] if s == "archive" else None for e, s in zip(eid, source)],
        "f_x": rng.normal(size=n),
    })


def test_mean_one_and_regime_ratios():
    bal = _balanced()
    spec = WeightSpec()
    w = sample_weights(bal, spec)
    assert w.columns == ["row_id", "regime", "source", "weight"]
    assert w.get_column("row_id").to_list() == bal.get_column("row_id").to_list()
    assert w.get_column("weight").mean() == pytest.approx(1.0)
    win = w.filter(pl.col("source") == "window")
    per = {r: win.filter(pl.col("regime") == r).get_column("weight") for r in REGIMES}
    for r in REGIMES:
        assert per[r].n_unique() == 1  # window rows: the weight depends on the regime only
    for r in REGIMES:
        assert per[r][0] / per["normal"][0] == pytest.approx(spec.regime_weights[r] / spec.regime_weights["normal"])
    assert per["crash"][0] / per["low_vol"][0] == pytest.approx(2.0 / 0.8)


def test_archive_event_multiplier_relative_to_mean_event_weight():
    bal = _balanced()
    spec = WeightSpec()
    w = sample_weights(bal, spec).join(bal.select("row_id", "event_id", "event_weight"), on="row_id")
    arch = w.filter(pl.col("source") == "archive")
    base = arch.get_column("regime").replace_strict(spec.regime_weights, return_dtype=pl.Float64)
    mult = arch.get_column("weight") / base
    ew = arch.get_column("event_weight")
    # the multiplier is proportional to the event weight and averages to the window's multiplier (1)
    window_scale = (w.filter((pl.col("source") == "window") & (pl.col("regime") == "normal"))
                    .get_column("weight")[0])
    assert np.allclose((mult / window_scale).to_numpy(), (ew / ew.mean()).to_numpy())
    assert (mult / window_scale).mean() == pytest.approx(1.0)
    a = arch.filter((pl.col("event_id") == "e2008") & (pl.col("regime") == "crash")).get_column("weight")[0]
    b = arch.filter((pl.col("event_id") == "e2022") & (pl.col("regime") == "crash")).get_column("weight")[0]
    assert a / b == pytest.approx(4.0)


def test_multiplier_off_ignores_events():
    bal = _balanced()
    w = sample_weights(bal, WeightSpec(archive_event_multiplier=False))
    spread = w.group_by("regime").agg(pl.col("weight").n_unique().alias("k"))
    assert spread.get_column("k").max() == 1
    assert w.get_column("weight").mean() == pytest.approx(1.0)


def test_no_archive_rows_and_empty():
    bal = _balanced(archive_share=0.0)
    w = sample_weights(bal, WeightSpec())
    assert w.get_column("weight").mean() == pytest.approx(1.0)
    assert sample_weights(bal.head(0), WeightSpec()).height == 0


def test_bad_inputs():
    bal = _balanced()
    broken = bal.with_columns(pl.when(pl.col("source") == "archive").then(None).otherwise(pl.col("event_weight"))
                              .alias("event_weight"))
    with pytest.raises(WeightError, match="event_weight"):
        sample_weights(broken, WeightSpec())
    with pytest.raises(WeightError, match="regime"):
        sample_weights(bal.with_columns(pl.lit("panic").alias("regime")), WeightSpec())
    with pytest.raises(WeightError, match="row_id"):
        sample_weights(bal.with_columns(pl.lit(1).alias("row_id")), WeightSpec())
