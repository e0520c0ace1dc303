"""Price sources (bundled, folder, yahoo, synthetic) and their validation.

Every source returns a ``SourceData``: long prices ``symbol, date, close`` (+ ``open, high, low, volume`` where
present), the market index ``date, close``, real VIX ``date, vix`` where known, and sectors ``symbol, sector``.

Validation happens on the way in and stops at the first kind of problem with a ``PriceValidationError`` whose
message names the file, the symbol, the data row (1-based, within its file) and the date of up to five offending
rows. The column-level schema is a pandera schema; the panel checks (duplicates, order, history, gaps) are
vectorised polars expressions, also exported for the Dagster asset checks.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandera.polars as pa
import polars as pl

from regime_assets.spec import DataSpec

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SYMBOL_RE = r"^[A-Za-z0-9.^_=-]{1,20}$"
REQUIRED = ("date", "close")
OPTIONAL = ("open", "high", "low", "volume")
ALIASES = {
    "adj close": "close", "adj_close": "close", "adjclose": "close", "adjusted_close": "close",
    "adjusted close": "close", "price": "close", "ticker": "symbol", "timestamp": "date", "day": "date",
}
SUFFIXES = {".csv", ".parquet", ".pq"}
MAX_SHOWN = 5


class PriceValidationError(ValueError):
    """Bad input: the message names the file, symbol, row and date (or the column)."""


@dataclass
class SourceData:
    prices: pl.DataFrame
    index: pl.DataFrame
    vix: pl.DataFrame | None
    sectors: pl.DataFrame
    origin: dict[str, str] = field(default_factory=dict)
    states: pl.DataFrame | None = None  # synthetic only: the true market state per date


# ---------------------------------------------------------------------------------------------------------------
# problem finders: each returns the offending rows (symbol, date, problem [+ _file, _row]); empty = fine


def _ctx(df: pl.DataFrame) -> list[str]:
    return [c for c in ("_file", "_row") if c in df.columns]


def nonpositive_or_nonfinite(prices: pl.DataFrame) -> pl.DataFrame:
    c = pl.col("close")
    bad = prices.filter(c.is_null() | c.is_nan() | c.is_infinite() | (c <= 0))
    return bad.select(*_ctx(bad), "symbol", "date", "close", pl.when(pl.col("close").is_null() | pl.col(
        "close").is_nan()).then(pl.lit("missing/NaN close")).when(pl.col("close").is_infinite()).then(
        pl.lit("infinite close")).otherwise(pl.lit("close <= 0")).alias("problem"))


def duplicate_rows(prices: pl.DataFrame) -> pl.DataFrame:
    bad = prices.filter(pl.len().over("symbol", "date") > 1)
    return bad.select(*_ctx(bad), "symbol", "date", pl.lit("duplicate (symbol, date)").alias("problem"))


def unsorted_rows(prices: pl.DataFrame) -> pl.DataFrame:
    """Rows whose date is not after the previous row's date of the same symbol (in file order)."""
    prev = pl.col("date").shift(1).over("symbol")
    bad = prices.filter(prev.is_not_null() & (pl.col("date") < prev))
    return bad.select(*_ctx(bad), "symbol", "date", pl.lit("date before the previous row's date").alias("problem"))


def short_history(prices: pl.DataFrame, min_rows: int) -> pl.DataFrame:
    g = prices.group_by("symbol").agg(pl.len().alias("rows"), pl.col("date").min().alias("date"),
                                      *[pl.col(c).first() for c in _ctx(prices)])
    bad = g.filter(pl.col("rows") < min_rows)
    return bad.select(*_ctx(bad), "symbol", "date",
                      pl.format("only {} rows (minimum {})", pl.col("rows"), pl.lit(min_rows)).alias("problem"))


def long_gaps(prices: pl.DataFrame, max_gap_days: int) -> pl.DataFrame:
    df = prices.sort("symbol", "date")
    gap = (pl.col("date") - pl.col("date").shift(1).over("symbol")).dt.total_days()
    bad = df.with_columns(gap.alias("_gap")).filter(pl.col("_gap") > max_gap_days)
    return bad.select(*_ctx(bad), "symbol", "date",
                      pl.format("gap of {} calendar days before this row (maximum {})", pl.col("_gap"),
                                pl.lit(max_gap_days)).alias("problem"))


def bad_symbols(prices: pl.DataFrame) -> pl.DataFrame:
    bad = prices.filter(~pl.col("symbol").str.contains(SYMBOL_RE)).unique("symbol", keep="first")
    return bad.select(*_ctx(bad), "symbol", "date",
                      pl.lit("symbol name must match " + SYMBOL_RE + " (no path characters)").alias("problem"))


def future_dates(prices: pl.DataFrame, today: dt.date) -> pl.DataFrame:
    bad = prices.filter(pl.col("date") > today)
    return bad.select(*_ctx(bad), "symbol", "date", pl.lit(f"date after today ({today})").alias("problem"))


def _raise(problems: pl.DataFrame, what: str) -> None:
    if problems.height == 0:
        return
    lines = []
    for r in problems.head(MAX_SHOWN).iter_rows(named=True):
        where = f"file {r['_file']}, " if r.get("_file") else ""
        row = f"row {r['_row']}, " if r.get("_row") is not None else ""
        lines.append(f"{where}symbol {r['symbol']}, {row}date {r['date']}: {r['problem']}")
    more = f" (and {problems.height - MAX_SHOWN} more)" if problems.height > MAX_SHOWN else ""
    raise PriceValidationError(f"{what}: " + "; ".join(lines) + more)


# ---------------------------------------------------------------------------------------------------------------
# column schema (pandera) and parsing

PRICE_SCHEMA = pa.DataFrameSchema(
    {
        "symbol": pa.Column(pl.Utf8, nullable=False),
        "date": pa.Column(pl.Date, nullable=True),
        "close": pa.Column(pl.Float64, nullable=True),
    },
    strict=False,
)


def _normalise_columns(df: pl.DataFrame, file: str) -> pl.DataFrame:
    mapping = {}
    for c in df.columns:
        key = c.strip().lower()
        key = ALIASES.get(key, key).replace(" ", "_")
        mapping[c] = ALIASES.get(key, key)
    # prefer an adjusted close over a raw close when both exist
    targets = list(mapping.values())
    if targets.count("close") > 1:
        adj = [c for c in df.columns if "adj" in c.lower()]
        mapping = {c: (v if not (v == "close" and c not in adj) else "close_raw") for c, v in mapping.items()}
    return df.rename(mapping)


def _missing_column_error(df: pl.DataFrame, file: str, col: str) -> PriceValidationError:
    guess = difflib.get_close_matches(col, df.columns, n=1, cutoff=0.6)
    hint = f" (did you mean '{guess[0]}'?)" if guess else ""
    return PriceValidationError(
        f"file {file}: missing column '{col}'{hint}; columns found: {', '.join(df.columns) or 'none'}")


def _parse(df: pl.DataFrame, file: str, symbol_from_name: str | None) -> pl.DataFrame:
    """Typed frame with symbol, date, close (+ optional columns), _file, _row; bad cells raise, naming the row."""
    if df.height == 0:
        raise PriceValidationError(f"file {file}: empty file (no data rows)")
    df = _normalise_columns(df, file)
    for col in REQUIRED:
        if col not in df.columns:
            raise _missing_column_error(df, file, col)
    if "symbol" not in df.columns:
        if symbol_from_name is None:
            raise _missing_column_error(df, file, "symbol")
        df = df.with_columns(pl.lit(symbol_from_name).alias("symbol"))
    df = df.with_columns(pl.lit(file).alias("_file"), pl.int_range(1, pl.len() + 1).alias("_row"))
    keep = ["_file", "_row", "symbol", "date", "close", *[c for c in OPTIONAL if c in df.columns]]
    df = df.select(keep)
    # dates
    date_col = df["date"]
    if date_col.dtype == pl.Utf8:
        parsed = date_col.str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
        alt = date_col.str.strip_chars().str.to_date(strict=False)
        parsed = parsed.fill_null(alt)
    elif date_col.dtype == pl.Date:
        parsed = date_col
    elif isinstance(date_col.dtype, pl.Datetime):
        parsed = date_col.dt.date()
    else:
        parsed = date_col.cast(pl.Utf8).str.to_date(strict=False)
    bad = df.filter(parsed.is_null())
    if bad.height:
        _raise(bad.select("_file", "_row", pl.col("symbol").cast(pl.Utf8), pl.col("date").cast(pl.Utf8),
                          pl.lit("unparseable date").alias("problem")), "bad date")
    df = df.with_columns(parsed.alias("date"), pl.col("symbol").cast(pl.Utf8))
    # numbers
    for col in ["close", *[c for c in OPTIONAL if c in df.columns]]:
        raw = df[col]
        if raw.dtype == pl.Utf8:
            num = raw.str.strip_chars().cast(pl.Float64, strict=False)
            text = df.filter(num.is_null() & raw.is_not_null() & (raw.str.strip_chars() != ""))
            if text.height:
                _raise(text.select("_file", "_row", "symbol", "date",
                                   pl.format("non-numeric {} '{}'", pl.lit(col), pl.col(col)).alias("problem")),
                       f"wrong type in column '{col}'")
            df = df.with_columns(num.alias(col))
        else:
            try:
                df = df.with_columns(pl.col(col).cast(pl.Float64))
            except pl.exceptions.InvalidOperationError:
                raise PriceValidationError(f"file {file}: column '{col}' has type {raw.dtype}, not numeric") from None
    PRICE_SCHEMA.validate(df)
    return df


def _read(path: Path) -> pl.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            if path.stat().st_size == 0:
                return pl.DataFrame()
            return pl.read_csv(path, infer_schema_length=0, try_parse_dates=False)
        return pl.read_parquet(path)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as err:
        if isinstance(err, pl.exceptions.NoDataError):
            return pl.DataFrame()
        raise PriceValidationError(f"file {path.name}: cannot be read ({err})") from None


def validate_prices(prices: pl.DataFrame, data_spec: DataSpec, today: dt.date | None = None,
                    panel: bool = True, rows: bool = True) -> None:
    """Raise PriceValidationError at the first kind of problem (with ``rows``: values, symbols, order,
    duplicates, dates; with ``panel``: the history length and gaps)."""
    if rows:
        validate_rows(prices, data_spec, today)
    if panel:
        _raise(short_history(prices, data_spec.min_history_days), "too little history")
        _raise(long_gaps(prices, data_spec.max_gap_days), "calendar gap too long")


def validate_rows(prices: pl.DataFrame, data_spec: DataSpec, today: dt.date | None = None) -> None:
    _raise(nonpositive_or_nonfinite(prices), "bad price")
    _raise(bad_symbols(prices), "bad symbol")
    _raise(unsorted_rows(prices), "unsorted dates")
    _raise(duplicate_rows(prices), "duplicate dates")
    if today is not None and not data_spec.allow_future_dates:
        _raise(future_dates(prices, today), "date in the future")


# ---------------------------------------------------------------------------------------------------------------
# sources


def _bundled() -> SourceData:
    prices = pl.read_parquet(DATA_DIR / "sp500_stocks.parquet").with_columns(
        pl.lit("sp500_stocks.parquet").alias("_file"), (pl.int_range(pl.len()) + 1).alias("_row"))
    index = pl.read_parquet(DATA_DIR / "sp500_index.parquet")
    vix = pl.read_parquet(DATA_DIR / "vix.parquet")
    sectors = pl.read_csv(DATA_DIR / "sectors.csv")
    return SourceData(prices, index, vix, sectors, origin={s: "sp500_stocks.parquet" for s in
                                                           prices["symbol"].unique().to_list()})


def _series_file(folder: Path, name: str, value: str) -> pl.DataFrame:
    path = folder / name
    if not path.exists():
        raise PriceValidationError(f"file {name}: not found in {folder}")
    df = _normalise_columns(_read(path), name)
    if df.height == 0:
        raise PriceValidationError(f"file {name}: empty file (no data rows)")
    col = value if value in df.columns else ("close" if "close" in df.columns else None)
    if col is None or "date" not in df.columns:
        raise _missing_column_error(df, name, "date" if "date" not in df.columns else value)
    parsed = _parse(df.rename({col: "close"}) if col != "close" else df, name, name)
    _raise(nonpositive_or_nonfinite(parsed), f"bad value in {name}")
    return parsed.select("date", pl.col("close").alias(value)).sort("date")


def _folder(ds: DataSpec) -> SourceData:
    folder = Path(ds.folder or "").expanduser()
    if not folder.is_dir():
        raise PriceValidationError(f"data folder {folder} does not exist")
    special = {x for x in (ds.index_file, ds.vix_file, ds.sectors_file) if x}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.name not in special)
    if not files:
        raise PriceValidationError(f"data folder {folder}: no CSV or Parquet price files")
    frames = []
    for path in files:
        raw = _read(path)
        frames.append(_parse(raw, path.name, path.stem))
    prices = pl.concat(frames, how="diagonal_relaxed")
    index = _series_file(folder, ds.index_file, "close") if ds.index_file else None
    vix = _series_file(folder, ds.vix_file, "vix") if ds.vix_file else None
    if ds.sectors_file:
        sectors = _normalise_columns(_read(folder / ds.sectors_file), ds.sectors_file)
        if "symbol" not in sectors.columns or "sector" not in sectors.columns:
            raise _missing_column_error(sectors, ds.sectors_file, "sector")
        sectors = sectors.select("symbol", "sector")
    else:
        sectors = pl.DataFrame({"symbol": [], "sector": []}, schema={"symbol": pl.Utf8, "sector": pl.Utf8})
    origin = dict(prices.select("symbol", "_file").unique("symbol").iter_rows())
    return SourceData(prices, index, vix, sectors, origin)


def frame_from_yahoo(df) -> pl.DataFrame:
    """Long ``symbol, date, close, open, high, low, volume`` from a yfinance.download frame (MultiIndex columns
    (field, ticker) or a single ticker's flat columns)."""
    import pandas as pd

    if isinstance(df.columns, pd.MultiIndex):
        names = [str(n).lower() if n else "" for n in df.columns.names]
        level = names.index("ticker") if "ticker" in names else 1
        stacked = df.stack(level=level, future_stack=True).reset_index()
        stacked.columns = [str(c) for c in stacked.columns]
        ticker_col = [c for c in stacked.columns if c.lower() in ("ticker", f"level_{1}")]
        stacked = stacked.rename(columns={ticker_col[0] if ticker_col else stacked.columns[1]: "symbol"})
    else:
        stacked = df.reset_index()
        stacked["symbol"] = getattr(df, "name", None) or "TICKER"
    out = pl.from_pandas(stacked)
    out = _normalise_columns(out, "yahoo")
    keep = ["symbol", "date", "close", *[c for c in OPTIONAL if c in out.columns]]
    out = out.select(keep).drop_nulls("close")
    return out.with_columns(pl.col("date").cast(pl.Date), pl.col("close").cast(pl.Float64)).sort("symbol", "date")


def load_yahoo(ds: DataSpec, downloader=None) -> SourceData:
    """Yahoo Finance through yfinance (optional extra: `uv sync --extra yahoo`); ``downloader`` for tests."""
    if not ds.symbols:
        raise PriceValidationError("data.symbols: the yahoo source needs a list of symbols")
    if downloader is None:
        try:
            import yfinance
        except ImportError:
            raise PriceValidationError(
                "the yahoo source needs yfinance: run `uv sync --extra yahoo`") from None

        def downloader(tickers, start, end):
            return yfinance.download(tickers, start=start, end=end, auto_adjust=True, progress=False,
                                     group_by="column")
    start = ds.start.isoformat() if ds.start else "1990-01-01"
    end = ds.end.isoformat() if ds.end else None
    raw = frame_from_yahoo(downloader(list(ds.symbols), start, end))
    idx = frame_from_yahoo(downloader([ds.index_symbol], start, end)).select("date", "close")
    try:
        vix = frame_from_yahoo(downloader([ds.vix_symbol], start, end)).select("date", pl.col("close").alias("vix"))
    except Exception:  # VIX is optional: the proxy covers it
        vix = None
    prices = raw.with_columns(pl.lit("yahoo").alias("_file"), (pl.int_range(pl.len()).over("symbol") + 1)
                              .alias("_row"))
    sectors = pl.DataFrame({"symbol": [], "sector": []}, schema={"symbol": pl.Utf8, "sector": pl.Utf8})
    return SourceData(prices, idx, vix, sectors, origin={s: "yahoo" for s in ds.symbols})


def _equal_weight_index(prices: pl.DataFrame) -> pl.DataFrame:
    norm = prices.with_columns((pl.col("close") / pl.col("close").first().over("symbol")).alias("_n"))
    return norm.group_by("date").agg(pl.col("_n").mean().alias("close")).sort("date").with_columns(
        pl.col("close") * 100.0)


def load_source(ds: DataSpec, today: dt.date | None = None, downloader=None) -> SourceData:
    """Load, filter (symbols, start, end) and validate the spec's source."""
    if ds.source == "bundled":
        data = _bundled()
    elif ds.source == "folder":
        data = _folder(ds)
    elif ds.source == "yahoo":
        data = load_yahoo(ds, downloader)
    elif ds.source == "synthetic":
        from regime_assets.core.synthetic import generate_synthetic

        data = generate_synthetic(ds.synthetic_symbols, ds.synthetic_years, ds.synthetic_seed, ds.synthetic_start)
        data.prices = data.prices.with_columns(pl.lit("synthetic").alias("_file"),
                                               (pl.int_range(pl.len()).over("symbol") + 1).alias("_row"))
    else:  # pragma: no cover - the spec's Literal forbids it
        raise PriceValidationError(f"data.source: unknown source {ds.source!r}")
    prices = data.prices
    if "_file" not in prices.columns:
        prices = prices.with_columns(pl.lit(ds.source).alias("_file"), (pl.int_range(pl.len()) + 1).alias("_row"))
    validate_prices(prices, ds, today, panel=False)
    if ds.symbols:
        missing = sorted(set(ds.symbols) - set(prices["symbol"].unique().to_list()))
        if missing:
            raise PriceValidationError(f"data.symbols: not in the source: {', '.join(missing)}")
        prices = prices.filter(pl.col("symbol").is_in(list(ds.symbols)))
    if ds.start:
        prices = prices.filter(pl.col("date") >= ds.start)
    if ds.end:
        prices = prices.filter(pl.col("date") <= ds.end)
    validate_prices(prices, ds, None, panel=True, rows=False)
    index = data.index if data.index is not None else _equal_weight_index(prices)
    index = index.filter(pl.col("date").is_between(prices["date"].min(), prices["date"].max()))
    if index.height == 0:
        raise PriceValidationError("index: no index rows within the price dates")
    sectors = pl.DataFrame({"symbol": prices["symbol"].unique().sort()}).join(
        data.sectors.with_columns(pl.col("symbol").cast(pl.Utf8)), on="symbol", how="left").with_columns(
        pl.col("sector").fill_null("unknown"))
    data.prices = prices.drop("_file", "_row").sort("symbol", "date")
    data.index = index.sort("date")
    data.sectors = sectors
    return data


def symbol_is_safe(symbol: str) -> bool:
    return re.match(SYMBOL_RE, symbol) is not None
