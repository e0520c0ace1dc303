"""Small labelled panels (symbols x weekdays) shared by the core tests."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from regime_assets.spec import CLASSES, REGIMES


def labeled_panel(n_symbols: int, start: dt.date, end: dt.date, horizon: int = 5, seed: int = 0,
                  regime_p: list[float] | None = None) -> pl.DataFrame:
    """labeled_samples-shaped rows with random features, regimes and labels; the last ``horizon`` days unlabelled."""
    days = pl.date_range(start, end, "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    syms = pl.DataFrame({"symbol": [f"S{i:02d}" for i in range(n_symbols)]})
    df = syms.join(pl.DataFrame({"date": days}), how="cross").sort("symbol", "date")
    n = df.height
    rng = np.random.default_rng(seed)
    last = days.tail(horizon).implode()
    return df.with_columns(
        pl.lit("Tech").alias("sector"),
        pl.lit(3, dtype=pl.Int32).alias("sector_code"),
        pl.Series("f_mom", rng.normal(size=n)),
        pl.Series("f_vol", rng.random(n)),
        pl.Series("regime", rng.choice(REGIMES, n, p=regime_p)),
        pl.Series("fwd_return", rng.normal(0, 0.02, n)),
        pl.Series("label", rng.choice(CLASSES, n)),
    ).with_columns(pl.when(pl.col("date").is_in(last)).then(None).otherwise(pl.col("label")).alias("label"))
