"""Price sources (bundled, folder, yahoo, synthetic) and their validation; ``load_source`` dispatches.

Modules: ``data`` (SourceData, the error type, shared constants), ``validate`` (schema and row/panel checks),
``files`` (reading files; the bundled and folder sources), ``yahoo`` (the yfinance adapter). This package
re-exports their public names.

Every source gives a ``SourceData``: long prices ``symbol, date, close`` (+ ``open, high, low, volume`` where
present), the market index ``date, close``, real VIX ``date, vix`` where known, sectors ``symbol, sector`` and
``origin`` (symbol -> the file it came from).

While loading, every price row carries ``_file`` and ``_row`` (its 1-based data row within that file) so that a
``PriceValidationError`` can name the file, symbol, row and date of the first offending rows (up to five).
The column-level schema is a pandera schema; the row and panel checks are vectorised polars expressions, each
exported as a function returning the offending rows (``symbol, date, problem`` [+ ``file, row``]; empty = fine)
for reuse by the asset checks.
"""


from __future__ import annotations

import datetime as dt

import polars as pl

from regime_assets.core.sources.data import (
    COLUMN_ALIASES,
    DATA_DIR,
    DATE_FORMATS,
    FILE_SUFFIXES,
    MAX_SHOWN,
    OPTIONAL_COLUMNS,
    SYMBOL_PATTERN,
    VALUE_COLUMNS,
    Downloader,
    PriceValidationError,
    SourceData,
)
from regime_assets.core.sources.files import (
    _bundled_sectors,
    check_series,
    load_bundled,
    load_folder,
)
from regime_assets.core.sources.validate import (
    all_problems,
    bad_symbols,
    duplicate_rows,
    future_dates,
    large_jumps,
    long_gaps,
    nonpositive_or_nonfinite,
    price_problems,
    price_schema,
    raise_problems,
    short_history,
    symbol_is_safe,
    unsorted_rows,
    validate_prices,
)
from regime_assets.core.sources.yahoo import frame_from_yahoo, load_yahoo
from regime_assets.spec import DataSpec

__all__ = [
    "COLUMN_ALIASES", "DATA_DIR", "DATE_FORMATS", "FILE_SUFFIXES", "MAX_SHOWN", "OPTIONAL_COLUMNS", "SYMBOL_PATTERN",
    "VALUE_COLUMNS", "Downloader", "PriceValidationError", "SourceData", "all_problems", "bad_symbols",
    "duplicate_rows", "equal_weight_index", "frame_from_yahoo", "future_dates", "large_jumps", "load_bundled", "load_folder",
    "load_source", "load_synthetic", "load_yahoo", "long_gaps", "nonpositive_or_nonfinite", "price_problems",
    "price_schema", "check_series", "raise_problems", "short_history", "symbol_is_safe", "unsorted_rows", "validate_prices",
]


def load_synthetic(data_spec: DataSpec) -> SourceData:
    """The seeded synthetic market of the spec (``data.synthetic_*``)."""
    # imported here, not at the top: synthetic imports sources.data, which runs this package first
    from regime_assets.core.synthetic import generate_synthetic

    data = generate_synthetic(data_spec.synthetic_symbols, data_spec.synthetic_years, data_spec.synthetic_seed,
                              data_spec.synthetic_start)
    data.prices = data.prices.with_columns(pl.lit("synthetic").alias("_file"),
                                           (pl.int_range(pl.len(), dtype=pl.Int64).over("symbol") + 1).alias("_row"))
    return data


def equal_weight_index(prices: pl.DataFrame, base: float = 100.0) -> pl.DataFrame:
    """``date, close``: an equal-weight index of the symbols' normalised closes, chained from the daily mean
    return of the symbols present on each date (so symbols may start or end at different dates)."""
    ret = pl.col("close") / pl.col("close").shift(1).over("symbol") - 1.0
    daily = prices.sort("symbol", "date").with_columns(ret.alias("_r")).group_by("date").agg(
        pl.col("_r").mean()).sort("date")
    return daily.select("date", (base * (1.0 + pl.col("_r").fill_null(0.0)).cum_prod()).alias("close"))


def _filter(prices: pl.DataFrame, ds: DataSpec) -> pl.DataFrame:
    if ds.symbols:
        have = set(prices["symbol"].unique().to_list())
        missing = [s for s in ds.symbols if s not in have]
        if missing:
            avail = ", ".join(sorted(str(s) for s in have)[:30])
            raise PriceValidationError(f"data.symbols: not in the {ds.source} source: {', '.join(missing)} "
                                       f"(available: {avail}{' ...' if len(have) > 30 else ''})")
        prices = prices.filter(pl.col("symbol").is_in(list(ds.symbols)))
    if ds.start:
        prices = prices.filter(pl.col("date") >= ds.start)
    if ds.end:
        prices = prices.filter(pl.col("date") <= ds.end)
    if prices.height == 0:
        raise PriceValidationError(f"no price rows in the {ds.source} source between data.start ({ds.start}) "
                                   f"and data.end ({ds.end})")
    return prices


def load_source(data_spec: DataSpec, today: dt.date | None = None,
                downloader: Downloader | None = None) -> SourceData:
    """Load the spec's source, keep its symbols and start..end, validate, and return clean frames.

    prices: symbol, date, close (+ open, high, low, volume) sorted by symbol, date; index: date, close over the
    price dates (the equal-weight index when the source has none); vix: date, vix or None; sectors: one row
    per symbol ('unknown' where not known). ``today`` (default: the current date) bounds the dates unless
    ``data.allow_future_dates``; synthetic dates are fictional and exempt."""
    ds = data_spec
    if ds.source == "bundled":
        data = load_bundled()
    elif ds.source == "folder":
        data = load_folder(ds)
    elif ds.source == "yahoo":
        data = load_yahoo(ds, downloader)
    elif ds.source == "synthetic":
        data = load_synthetic(ds)
        ds = ds.model_copy(update={"allow_future_dates": True})
    else:  # pragma: no cover - the spec's Literal forbids it
        raise PriceValidationError(f"data.source: unknown source {ds.source!r}")
    prices = _filter(data.prices, ds)
    validate_prices(prices, data.origin, ds, today)
    first, last = prices["date"].min(), prices["date"].max()
    index = data.index if data.index is not None else equal_weight_index(prices)
    index = index.filter(pl.col("date").is_between(first, last))
    if index.height == 0:
        raise PriceValidationError(f"index: no index rows between the first and last price dates ({first} .. "
                                   f"{last})")
    vix = data.vix.filter(pl.col("date").is_between(first, last)) if data.vix is not None else None
    if ds.source != "folder":  # folder series were checked while reading
        # (the bundled VIX has empty holiday rows: the market context reads VIX where present, so only those count)
        for name, series in (("index", index if data.index is not None else None),
                             ("VIX", vix.drop_nulls("vix") if vix is not None else None)):
            if series is not None and series.height:
                value = pl.col("vix" if name == "VIX" else "close").alias("close")
                check_series(series.select(pl.lit(name).alias("symbol"), "date", value), f"the {ds.source} {name}",
                             ds.max_gap_days)
    symbols = prices["symbol"].unique().sort()
    known = data.sectors if data.sectors.height or ds.source == "synthetic" else _bundled_sectors()
    sectors = pl.DataFrame({"symbol": symbols}).join(known, on="symbol", how="left").with_columns(
        pl.col("sector").fill_null("unknown"))
    keep = ["symbol", "date", *[c for c in VALUE_COLUMNS if c in prices.columns]]
    kept = set(symbols.to_list())
    return SourceData(prices=prices.select(keep).sort("symbol", "date"), index=index.sort("date"),
                      vix=vix if vix is None or vix.height else None, sectors=sectors,
                      origin={s: f for s, f in data.origin.items() if s in kept},
                      states=None if data.states is None
                      else data.states.filter(pl.col("date").is_between(first, last)))

