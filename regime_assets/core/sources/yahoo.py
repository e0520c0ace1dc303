"""The Yahoo Finance source (through the optional yfinance package) and the adapter from its download frames."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from regime_assets.core.sources.data import (
    _EMPTY_SECTORS,
    OPTIONAL_COLUMNS,
    Downloader,
    PriceValidationError,
    SourceData,
)
from regime_assets.core.sources.files import _canonical
from regime_assets.spec import DataSpec


def frame_from_yahoo(df: Any, symbol: str | None = None) -> pl.DataFrame:
    """Long ``symbol, date, close, open, high, low, volume`` (sorted) from a ``yfinance.download`` frame.

    Handles MultiIndex columns in either order ((field, ticker) or (ticker, field)) and flat single-ticker
    columns (then ``symbol`` names the ticker). An adjusted close is preferred; days without a close (a ticker
    not yet listed, or a holiday of another ticker's exchange) are dropped."""
    import pandas as pd

    fields = {"close", "adj_close", *OPTIONAL_COLUMNS}
    if isinstance(df.columns, pd.MultiIndex):
        if df.columns.nlevels != 2:
            raise PriceValidationError(f"yahoo: expected two column levels (field, ticker), got "
                                       f"{df.columns.nlevels}")
        names = [str(n).lower() for n in df.columns.names]
        if "price" in names or "ticker" in names:
            field_level = names.index("price") if "price" in names else 1 - names.index("ticker")
        else:  # unnamed levels: the field level is the one whose values are all known field names
            share = [np.mean([_canonical(v) in fields for v in df.columns.get_level_values(i).unique()])
                     for i in (0, 1)]
            field_level = int(np.argmax(share))
        wide = {}
        for name in df.columns.get_level_values(field_level).unique():
            canon = _canonical(name)
            if canon in fields:
                wide[canon] = df.xs(name, axis=1, level=field_level)
    else:
        if symbol is None:
            raise PriceValidationError("yahoo: a frame with flat columns needs the ticker (symbol=...)")
        wide = {_canonical(c): df[[c]].set_axis([symbol], axis=1) for c in df.columns
                if _canonical(c) in fields}
    if "adj_close" in wide:
        wide["close"] = wide.pop("adj_close")
    if "close" not in wide:
        raise PriceValidationError(f"yahoo: no Close column in the download (columns: {list(df.columns)[:10]})")
    long = None
    for name in ["close", *[c for c in OPTIONAL_COLUMNS if c in wide]]:
        w = wide[name]
        w = w.set_axis([str(c) for c in w.columns], axis=1).rename_axis("date").reset_index()
        part = pl.from_pandas(w).unpivot(index="date", variable_name="symbol", value_name=name)
        long = part if long is None else long.join(part, on=["date", "symbol"], how="left")
    date = pl.col("date")
    long = long.with_columns(date.dt.date() if isinstance(long["date"].dtype, pl.Datetime) else date.cast(pl.Date))
    long = long.filter(pl.col("close").is_not_null() & ~pl.col("close").cast(pl.Float64).is_nan())
    cols = ["symbol", "date", "close", *[c for c in OPTIONAL_COLUMNS if c in long.columns]]
    return long.select(pl.col("symbol").cast(pl.Utf8), "date", *[pl.col(c).cast(pl.Float64) for c in cols[2:]]) \
        .sort("symbol", "date")


def _yfinance_downloader() -> Downloader:
    try:
        import yfinance
    except ImportError:
        raise ImportError("the 'yahoo' data source needs the optional yfinance package: run "
                          "`uv sync --extra yahoo`") from None

    def download(tickers: list[str], start: str, end: str | None) -> Any:
        return yfinance.download(tickers, start=start, end=end, auto_adjust=True, progress=False,
                                 group_by="column", threads=True)

    return download


def load_yahoo(data_spec: DataSpec, downloader: Downloader | None = None) -> SourceData:
    """Prices, index (``data.index_symbol``) and VIX (``data.vix_symbol``) from Yahoo Finance via yfinance.

    ``downloader(tickers, start, end)`` returns a ``yfinance.download``-shaped pandas frame (tests inject one)."""
    if not data_spec.symbols:
        raise PriceValidationError("data.symbols: the yahoo source needs an explicit list of symbols")
    download = downloader or _yfinance_downloader()
    start = (data_spec.start or dt.date(1990, 1, 1)).isoformat()
    end = (data_spec.end + dt.timedelta(days=1)).isoformat() if data_spec.end else None  # yahoo's end is exclusive

    def fetch(tickers: list[str]) -> pl.DataFrame:
        raw = download(tickers, start, end)
        return frame_from_yahoo(raw, symbol=tickers[0] if len(tickers) == 1 else None)

    prices = fetch(list(data_spec.symbols))
    prices = prices.with_columns(pl.format("yahoo:{}", pl.col("symbol")).alias("_file"),
                                 (pl.int_range(pl.len(), dtype=pl.Int64).over("symbol") + 1).alias("_row"))
    index = fetch([data_spec.index_symbol]).select("date", "close")
    try:  # real VIX is optional: the market context falls back to its proxy
        vix_frame = fetch([data_spec.vix_symbol]).select("date", pl.col("close").alias("vix"))
    except PriceValidationError:
        vix_frame = pl.DataFrame(schema={"date": pl.Date, "vix": pl.Float64})
    origin = {s: f"yahoo:{s}" for s in prices["symbol"].unique(maintain_order=True).to_list()}
    return SourceData(prices.select("_file", "_row", *prices.columns[:-2]), index,
                      vix_frame if vix_frame.height else None, _EMPTY_SECTORS, origin)

