"""What every price source returns (``SourceData``), its error type, and the constants the readers share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
SYMBOL_PATTERN = r"^[A-Za-z0-9.^_=-]{1,20}$"
OPTIONAL_COLUMNS: tuple[str, ...] = ("open", "high", "low", "volume")
VALUE_COLUMNS: tuple[str, ...] = ("close", *OPTIONAL_COLUMNS)
FILE_SUFFIXES = (".csv", ".parquet", ".pq")
DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%m/%d/%Y")
MAX_SHOWN = 5
# canonical column name for each recognised header (lower case, runs of space/_/- collapsed to one space)
COLUMN_ALIASES: dict[str, str] = {
    "symbol": "symbol", "ticker": "symbol",
    "date": "date", "datetime": "date", "timestamp": "date", "time": "date", "day": "date",
    "close": "close", "adj close": "adj_close", "adjclose": "adj_close", "adjusted close": "adj_close",
    "open": "open", "high": "high", "low": "low", "volume": "volume",
    "vix": "vix", "vix close": "vix", "sector": "sector", "gics sector": "sector",
}
_EMPTY_SECTORS = pl.DataFrame(schema={"symbol": pl.Utf8, "sector": pl.Utf8})

Downloader = Callable[[list[str], str, str | None], Any]


class PriceValidationError(ValueError):
    """Bad price input; the message names the file, symbol, row and date (or the column)."""


@dataclass
class SourceData:
    prices: pl.DataFrame
    index: pl.DataFrame | None  # date, close (None until load_source derives one)
    vix: pl.DataFrame | None  # date, vix
    sectors: pl.DataFrame  # symbol, sector
    origin: dict[str, str] = field(default_factory=dict)  # symbol -> file it came from
    states: pl.DataFrame | None = None  # synthetic only: date, state, episode (the true market episode)
