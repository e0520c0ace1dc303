"""Forward labels: the buy/hold/sell class of each symbol-day from its forward return.

* ``fwd_return = close[t+h] / close[t] - 1`` with ``h = labels.horizon`` rows of the symbol's prices.
* ``label = buy`` if ``close[t+h] / close[t] > 1 + buy_threshold``, ``sell`` if ``< 1 - sell_threshold``, else
  ``hold`` (strict: a return of exactly the threshold is hold). Comparing the price ratio with ``1 +/- threshold``
  is the same rule as ``fwd_return > threshold`` but does not misclassify a decimal boundary such as
  100 -> 102 through rounding in ``102 / 100 - 1``.
* With ``labels.vol_scaled`` both thresholds are ``vol_multiplier * sigma_t * sqrt(horizon)``, ``sigma_t`` the
  sample std (ddof=1) of the last ``vol_window`` daily simple returns up to t (point-in-time); rows without a
  full vol window get a null label.
* Rows whose forward window runs past the symbol's last price have a null ``fwd_return`` and a null ``label``:
  kept, never filled.

The output (labeled_samples) is the features columns + ``regime, fwd_return, label``, one row per features row
that has a regime label (inner join on symbol, date), in the order of the features rows.
"""

from __future__ import annotations

import polars as pl

from regime_assets.spec import CLASSES, REGIMES, LabelSpec

LABEL_COLUMNS = ("regime", "fwd_return", "label")


class LabelError(ValueError):
    """Inputs that labels cannot be built from; the message names the frame, column, symbol or date."""


def _require(df: pl.DataFrame, cols: tuple[str, ...], frame: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise LabelError(f"labels: {frame} is missing columns {missing} (has {df.columns})")
    if df.schema["date"] != pl.Date:
        raise LabelError(f"labels: {frame}.date must be pl.Date, got {df.schema['date']}")


def _dup_expr() -> pl.Expr:
    """True on a row repeating the previous row's (symbol, date); the frame sorted by symbol, date."""
    return ((pl.col("symbol") == pl.col("symbol").shift(1)) & (pl.col("date") == pl.col("date").shift(1))
            ).fill_null(False)


def _check_unique(df: pl.DataFrame, frame: str) -> None:
    keys = df.select(pl.col("symbol").cast(pl.Utf8), "date")
    strictly_sorted = ((pl.col("symbol") > pl.col("symbol").shift(1))
                       | ((pl.col("symbol") == pl.col("symbol").shift(1)) & (pl.col("date") > pl.col("date").shift(1)))
                       ).fill_null(True).all()
    if keys.select(strictly_sorted).item():  # the usual case, and it proves uniqueness
        return
    dup = keys.sort("symbol", "date").filter(_dup_expr())
    if dup.height:
        s, d = dup.row(0)
        raise LabelError(f"labels: {frame} has duplicate rows for symbol {s} on {d}")


def _with_key(df: pl.DataFrame, symbols: pl.Enum) -> pl.DataFrame:
    """``df`` with an Int64 ``_k`` ordered like (symbol, date), sorted by it: joins on it are merge joins."""
    k = (pl.col("symbol").cast(symbols).to_physical().cast(pl.Int64) * (1 << 32)
         + pl.col("date").cast(pl.Int32).cast(pl.Int64))
    return df.with_columns(k.alias("_k")).sort("_k").with_columns(pl.col("_k").set_sorted())


def forward_returns(prices: pl.DataFrame, lspec: LabelSpec) -> pl.DataFrame:
    """Per price row: symbol, date, fwd_return, label (see the module docstring)."""
    _require(prices, ("symbol", "date", "close"), "prices")
    close = pl.col("close").cast(pl.Float64)
    bad = prices.filter(close.is_null() | ~close.is_finite() | (close <= 0))
    if bad.height:
        s, d, v = bad.select("symbol", "date", "close").row(0)
        raise LabelError(f"labels: prices.close must be finite and > 0; symbol {s} on {d} has {v!r}")
    h = lspec.horizon
    c = pl.col("close")
    df = prices.select(pl.col("symbol").cast(pl.Utf8), "date", close.alias("close")).sort("symbol", "date")
    dup = df.filter(_dup_expr())
    if dup.height:
        s, d = dup.select("symbol", "date").row(0)
        raise LabelError(f"labels: prices has duplicate rows for symbol {s} on {d}")
    df = df.with_columns((c.shift(-h) / c).over("symbol").alias("_ratio"))
    if lspec.vol_scaled:
        sigma = (c / c.shift(1) - 1.0).rolling_std(lspec.vol_window, min_samples=lspec.vol_window).over("symbol")
        thr = lspec.vol_multiplier * sigma * (h ** 0.5)
        up, down = 1.0 + thr, 1.0 - thr
    else:
        thr = pl.lit(lspec.buy_threshold)
        up, down = pl.lit(1.0 + lspec.buy_threshold), pl.lit(1.0 - lspec.sell_threshold)
    ratio = pl.col("_ratio")
    label = (
        pl.when(ratio.is_null() | thr.is_null()).then(pl.lit(None, dtype=pl.Utf8))
        .when(ratio > up).then(pl.lit(CLASSES[2]))
        .when(ratio < down).then(pl.lit(CLASSES[0]))
        .otherwise(pl.lit(CLASSES[1]))
    )
    return df.select("symbol", "date", (ratio - 1.0).alias("fwd_return"), label.alias("label"))


def label_columns(keys: pl.DataFrame, regime_labels: pl.DataFrame, lspec: LabelSpec,
                  prices: pl.DataFrame) -> pl.DataFrame:
    """The label part of labeled_samples for the features keys ``keys`` (``symbol, date``, one per features row):
    ``_row`` (the row's position in ``keys``), ``symbol, date, regime, fwd_return, label``, one row per key that
    has a regime label, in the order of ``keys``. ``build_labels`` attaches these to the features; the
    ``labeled_samples`` asset joins them to the stored features table in the warehouse."""
    _require(keys, ("symbol", "date"), "features")
    _require(regime_labels, ("symbol", "date", "regime"), "regime_labels")
    clash = [c for c in LABEL_COLUMNS if c in keys.columns]
    if clash:
        raise LabelError(f"labels: features already has columns {clash}")
    _check_unique(keys, "features")
    _check_unique(regime_labels, "regime_labels")
    bad = regime_labels.filter(pl.col("regime").is_null() | ~pl.col("regime").is_in(list(REGIMES)))
    if bad.height:
        s, d, r = bad.select("symbol", "date", "regime").row(0)
        raise LabelError(f"labels: regime_labels has regime {r!r} for symbol {s} on {d}; "
                         f"expected one of {list(REGIMES)}")
    fwd = forward_returns(prices, lspec).with_columns(pl.lit(True).alias("_priced"))
    reg = regime_labels.select(pl.col("symbol").cast(pl.Utf8), "date", pl.col("regime").cast(pl.Utf8))
    keys = keys.select(pl.col("symbol").cast(pl.Utf8), "date").with_row_index("_row")
    symbols = pl.Enum(pl.concat([f.get_column("symbol").unique() for f in (keys, fwd, reg)]).unique().sort())
    keys, fwd, reg = (_with_key(f, symbols) for f in (keys, fwd, reg))
    # join on the keys only: the (wide) features are never part of it
    lab = keys.join(fwd.drop("symbol", "date"), on="_k", how="left")
    orphan = lab.filter(pl.col("_priced").is_null())
    if orphan.height:
        s, d = orphan.sort("_row").select("symbol", "date").row(0)
        raise LabelError(f"labels: features row for symbol {s} on {d} has no price row ({orphan.height} such rows)")
    lab = lab.join(reg.drop("symbol", "date"), on="_k", how="inner").sort("_row")
    return lab.select("_row", "symbol", "date", *LABEL_COLUMNS)


def build_labels(features: pl.DataFrame, regime_labels: pl.DataFrame, lspec: LabelSpec,
                 prices: pl.DataFrame) -> pl.DataFrame:
    """labeled_samples: the features columns + regime, fwd_return (Float64), label (Utf8 in CLASSES or null)."""
    _require(features, ("symbol", "date"), "features")
    clash = [c for c in LABEL_COLUMNS if c in features.columns]
    if clash:
        raise LabelError(f"labels: features already has columns {clash}")
    lab = label_columns(features.select("symbol", "date"), regime_labels, lspec, prices)
    base = features if lab.height == features.height else features[lab.get_column("_row")]
    return base.hstack(lab.select(*LABEL_COLUMNS))
