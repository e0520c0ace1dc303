"""Today's signals: the production model's class probabilities on the latest dates with features, as a ranked
table a trader can read.

Per (date, symbol): ``p_sell, p_hold, p_buy`` (the model's probabilities, ``CLASSES`` order), ``score = p_buy -
p_sell``, ``rank`` (1 = highest score of the date; ties share the lower rank) out of ``n_symbols``, ``action``
(``signals.action``: argmax of the probabilities, ties to the lower class index, or thresholds on the score),
the symbol's ``regime`` and the date's ``vix_source``, and the model's name and version, the spec hash and the
``as_of`` date (the last date with features). Features at t use data up to t only, so a signal for t does not
change when later prices do.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from regime_assets.spec import CLASSES, SignalSpec

SIGNAL_SCHEMA = {
    "as_of": pl.Date, "date": pl.Date, "symbol": pl.Utf8, "p_sell": pl.Float64, "p_hold": pl.Float64,
    "p_buy": pl.Float64, "score": pl.Float64, "rank": pl.Int64, "n_symbols": pl.Int64, "action": pl.Utf8,
    "regime": pl.Utf8, "vix_source": pl.Utf8, "model_name": pl.Utf8, "model_version": pl.Utf8, "spec_hash": pl.Utf8,
}


class SignalError(ValueError):
    """Inputs that give no signals; the message says which."""


def signal_dates(features: pl.DataFrame, n_dates: int) -> list[dt.date]:
    """The last ``n_dates`` distinct dates of the features frame (oldest first)."""
    if features.height == 0:
        raise SignalError("features: no rows, so no date to score")
    return features.select(pl.col("date").unique().sort().tail(n_dates))["date"].to_list()


def signal_rows(features: pl.DataFrame, dates: list[dt.date]) -> pl.DataFrame:
    """The feature rows of those dates, sorted by date and symbol."""
    return features.filter(pl.col("date").is_in(dates)).sort("date", "symbol")


def actions(proba: np.ndarray, score: np.ndarray, sspec: SignalSpec) -> np.ndarray:
    """Action per row: argmax of the probabilities, or the score against the spec's thresholds."""
    if sspec.action == "argmax":
        return np.asarray(CLASSES, dtype=object)[np.argmax(proba, axis=1)]
    return np.where(score >= sspec.buy_threshold, "buy", np.where(score <= -sspec.sell_threshold, "sell", "hold"))


def build_signals(rows: pl.DataFrame, proba: np.ndarray, regime_labels: pl.DataFrame,
                  market_context: pl.DataFrame, sspec: SignalSpec, model_name: str, model_version: str,
                  spec_hash: str) -> pl.DataFrame:
    """The signals table (``SIGNAL_SCHEMA``) for ``rows`` (symbol, date) and the model's ``proba`` on them."""
    p = np.asarray(proba, dtype=np.float64)
    if p.shape != (rows.height, len(CLASSES)):
        raise SignalError(f"probabilities: shape {p.shape}, expected ({rows.height}, {len(CLASSES)})")
    if not np.isfinite(p).all():
        i = int(np.flatnonzero(~np.isfinite(p).all(axis=1))[0])
        r = rows.row(i, named=True)
        raise SignalError(f"probabilities: non-finite value for symbol {r['symbol']} on {r['date']}")
    score = p[:, 2] - p[:, 0]
    base = rows.select("symbol", pl.col("date").cast(pl.Date)).with_columns(
        pl.Series("p_sell", p[:, 0]), pl.Series("p_hold", p[:, 1]), pl.Series("p_buy", p[:, 2]),
        pl.Series("score", score), pl.Series("action", actions(p, score, sspec), dtype=pl.Utf8))
    reg = regime_labels.select("symbol", pl.col("date").cast(pl.Date), pl.col("regime").cast(pl.Utf8))
    ctx = market_context.select(pl.col("date").cast(pl.Date), pl.col("vix_source").cast(pl.Utf8))
    out = (base.join(reg, on=["symbol", "date"], how="left").join(ctx, on="date", how="left")
           .with_columns(pl.col("score").rank("min", descending=True).over("date").cast(pl.Int64).alias("rank"),
                         pl.len().over("date").cast(pl.Int64).alias("n_symbols"),
                         pl.col("date").max().alias("as_of"), pl.lit(model_name).alias("model_name"),
                         pl.lit(model_version).alias("model_version"), pl.lit(spec_hash).alias("spec_hash")))
    return out.select([pl.col(c).cast(t) for c, t in SIGNAL_SCHEMA.items()]).sort("date", "rank", "symbol")


def top_bottom(signals: pl.DataFrame, k: int, date: dt.date | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ``k`` highest and lowest scores of ``date`` (default: the as-of date)."""
    if signals.height == 0:
        return signals, signals
    d = date or signals["date"].max()
    day = signals.filter(pl.col("date") == d).sort("score", "symbol", descending=[True, False])
    return day.head(k), day.sort("score", "symbol").head(k)
