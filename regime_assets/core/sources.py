"""Price sources (bundled, folder, yahoo, synthetic) and their validation.

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
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from regime_assets.spec import DataSpec

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
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


# ---------------------------------------------------------------------------------------------------------------
# problem finders: offending rows as symbol, date, problem (+ file, row where the input has _file/_row)


def _report(bad: pl.DataFrame, problem: pl.Expr | str) -> pl.DataFrame:
    prob = pl.lit(problem) if isinstance(problem, str) else problem
    extra = [pl.col("_file").alias("file"), pl.col("_row").alias("row")] if "_file" in bad.columns else []
    return bad.select(pl.col("symbol"), pl.col("date"), prob.cast(pl.Utf8).alias("problem"), *extra)


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f.height] or frames[:1]
    out = pl.concat(frames, how="diagonal_relaxed")
    return out.sort("file", "row", nulls_last=True) if "file" in out.columns else out


def price_problems(prices: pl.DataFrame) -> pl.DataFrame:
    """Rows whose close is missing, NaN, infinite or <= 0, or whose open/high/low (<= 0, inf) or volume
    (< 0, inf) is impossible (missing optional values are fine)."""
    frames = []
    for col in [c for c in VALUE_COLUMNS if c in prices.columns]:
        x = pl.col(col)
        floor_bad = (x < 0) if col == "volume" else (x <= 0)
        if col == "close":
            cond = x.is_null() | x.is_nan() | x.is_infinite() | floor_bad
        else:
            cond = x.is_not_null() & ~x.is_nan() & (x.is_infinite() | floor_bad)
        what = (pl.when(x.is_null()).then(pl.lit(f"{col} is missing"))
                .when(x.is_nan()).then(pl.lit(f"{col} is NaN"))
                .when(x.is_infinite()).then(pl.format(f"{col} is {{}}", x))
                .when(x == 0).then(pl.lit(f"{col} is 0"))
                .otherwise(pl.format(f"{col} is negative ({{}})", x)))
        frames.append(_report(prices.filter(cond), what))
    return _concat(frames)


nonpositive_or_nonfinite = price_problems


def bad_symbols(prices: pl.DataFrame) -> pl.DataFrame:
    """The first row of every symbol that is missing or does not match SYMBOL_PATTERN (e.g. path characters)."""
    s = pl.col("symbol")
    bad = prices.filter(s.is_null() | ~s.str.contains(SYMBOL_PATTERN))
    bad = bad.unique("symbol", keep="first", maintain_order=True)
    return _report(bad, pl.when(s.is_null()).then(pl.lit("symbol is missing")).otherwise(
        pl.lit(f"symbol name must match {SYMBOL_PATTERN} (letters, digits and . ^ _ = - only, no path "
               "characters)")))


def future_dates(prices: pl.DataFrame, today: dt.date) -> pl.DataFrame:
    """Rows dated after ``today``."""
    return _report(prices.filter(pl.col("date") > today), f"date is after today ({today})")


def duplicate_rows(prices: pl.DataFrame) -> pl.DataFrame:
    """Every row whose (symbol, date) occurs more than once."""
    per = prices.group_by("symbol").agg(pl.len().alias("_rows"), pl.col("date").n_unique().alias("_dates"))
    suspects = per.filter(pl.col("_rows") > pl.col("_dates"))["symbol"]  # cheap pass before the (symbol, date) hash
    sub = prices.filter(pl.col("symbol").is_in(suspects.implode(), nulls_equal=True))
    n = pl.len().over("symbol", "date")
    bad = sub.filter(n > 1).with_columns(n.alias("_n"))
    return _report(bad, pl.format("(symbol, date) occurs {} times", pl.col("_n")))


def unsorted_rows(prices: pl.DataFrame) -> pl.DataFrame:
    """Rows dated before the previous row of the same symbol (within the same file, in file order)."""
    keys = ["symbol", *(["_file"] if "_file" in prices.columns else [])]
    prev = pl.col("date").shift(1).over(keys)
    bad = prices.with_columns(prev.alias("_prev")).filter(pl.col("date") < pl.col("_prev"))
    return _report(bad, pl.format("date is before the previous row's date {}: dates must be sorted ascending",
                                  pl.col("_prev")))


def short_history(prices: pl.DataFrame, min_rows: int) -> pl.DataFrame:
    """The first row of every symbol with fewer than ``min_rows`` rows."""
    n = pl.len().over("symbol")
    bad = prices.with_columns(n.alias("_n"), pl.col("date").max().over("symbol").alias("_last")).filter(
        pl.col("_n") < min_rows).unique("symbol", keep="first", maintain_order=True)
    return _report(bad, pl.format("only {} rows ({} .. {}), data.min_history_days is {}", pl.col("_n"),
                                  pl.col("date"), pl.col("_last"), pl.lit(min_rows)))


def long_gaps(prices: pl.DataFrame, max_gap_days: int) -> pl.DataFrame:
    """Rows that follow a calendar gap of more than ``max_gap_days`` days within their symbol."""
    df = prices.sort("symbol", "date", maintain_order=True)
    prev = pl.col("date").shift(1).over("symbol")
    bad = df.with_columns(prev.alias("_prev"), (pl.col("date") - prev).dt.total_days().alias("_gap")).filter(
        pl.col("_gap") > max_gap_days)
    return _report(bad, pl.format("{} calendar days after the previous row ({}), data.max_gap_days is {}",
                                  pl.col("_gap"), pl.col("_prev"), pl.lit(max_gap_days)))


def all_problems(prices: pl.DataFrame, data_spec: DataSpec, today: dt.date | None = None) -> pl.DataFrame:
    """Every problem the validation looks for, in one frame (symbol, date, problem [+ file, row])."""
    return _concat([check() for _, stage in _stages(prices, data_spec, today) for check in stage])


def _stages(prices: pl.DataFrame, ds: DataSpec,
            today: dt.date | None) -> list[tuple[str, list[Callable[[], pl.DataFrame]]]]:
    """The validation stages in order, each a title and its checks (run lazily: a stage runs only when the
    previous ones passed)."""
    first = [lambda: bad_symbols(prices), lambda: price_problems(prices)]
    if not ds.allow_future_dates:
        first.append(lambda: future_dates(prices, today or dt.date.today()))
    return [
        ("bad price rows", first),
        ("duplicate or unsorted dates", [lambda: duplicate_rows(prices), lambda: unsorted_rows(prices)]),
        ("too little history or calendar gaps", [lambda: short_history(prices, ds.min_history_days),
                                                 lambda: long_gaps(prices, ds.max_gap_days)]),
    ]


# ---------------------------------------------------------------------------------------------------------------
# validation


def _where(file: str | None, symbol: str | None = None, row: Any = None, date: Any = None) -> str:
    parts = [f"file {file}" if file else None, f"symbol {symbol}" if symbol is not None else None,
             f"row {row}" if row is not None else None, f"date {date}" if date is not None else None]
    return ", ".join(p for p in parts if p)


def raise_problems(problems: pl.DataFrame, what: str) -> None:
    """Raise PriceValidationError listing the first MAX_SHOWN offending rows (no-op when empty)."""
    if problems.height == 0:
        return
    lines = [f"{_where(r.get('file'), r['symbol'], r.get('row'), r['date'])}: {r['problem']}"
             for r in problems.head(MAX_SHOWN).iter_rows(named=True)]
    more = f" (and {problems.height - MAX_SHOWN} more)" if problems.height > MAX_SHOWN else ""
    raise PriceValidationError(f"{what} in {problems.height} row(s): " + "; ".join(lines) + more)


_SCHEMA = None


def price_schema():
    """The pandera schema of a price frame: column presence, dtypes, non-null symbol and date."""
    global _SCHEMA
    if _SCHEMA is None:
        import pandera.polars as pa

        _SCHEMA = pa.DataFrameSchema(
            {
                "symbol": pa.Column(pl.Utf8, nullable=False),
                "date": pa.Column(pl.Date, nullable=False),
                "close": pa.Column(pl.Float64, nullable=True),  # NaN/null closes are reported by price_problems
                **{c: pa.Column(pl.Float64, nullable=True, required=False) for c in OPTIONAL_COLUMNS},
            },
            strict=False,
        )
    return _SCHEMA


def _with_context(prices: pl.DataFrame, origin: dict[str, str] | None) -> pl.DataFrame:
    """Add _file (from ``origin``) and _row (position within the symbol) when the frame lacks them."""
    if "_file" in prices.columns and "_row" in prices.columns:
        return prices
    origin = origin or {}
    file = pl.col("symbol").replace_strict(origin, default="<prices>", return_dtype=pl.Utf8) if origin \
        else pl.lit("<prices>")
    return prices.with_columns(file.alias("_file"), (pl.int_range(pl.len()).over("symbol") + 1).alias("_row"))


def _coerce_lenient(prices: pl.DataFrame) -> pl.DataFrame:
    """Cast numeric value columns to Float64 and datetimes to dates; anything else is left for the schema."""
    casts = [pl.col(c).cast(pl.Float64) for c in VALUE_COLUMNS
             if c in prices.columns and prices[c].dtype.is_numeric() and prices[c].dtype != pl.Float64]
    if "date" in prices.columns and isinstance(prices["date"].dtype, pl.Datetime):
        casts.append(pl.col("date").dt.date())
    return prices.with_columns(casts) if casts else prices


def _check_schema(prices: pl.DataFrame, origin: dict[str, str] | None) -> None:
    from pandera.errors import SchemaErrors

    try:
        price_schema().validate(prices, lazy=True)
        return
    except SchemaErrors as err:
        fc = err.failure_cases
    frame_level = fc.filter(pl.col("index").is_null())
    if frame_level.height:
        if "_file" in prices.columns:
            files = prices["_file"].unique(maintain_order=True).head(MAX_SHOWN).to_list()
        else:
            files = sorted(set((origin or {}).values()))[:MAX_SHOWN]
        msgs = []
        for r in frame_level.head(MAX_SHOWN).iter_rows(named=True):
            if r["check"] == "column_in_dataframe":
                msgs.append(f"missing column '{r['failure_case']}'")
            else:
                expected = re.sub(r"^dtype\('(.*)'\)$", r"\1", str(r["check"]))
                msgs.append(f"column '{r['column']}' has type {r['failure_case']}, expected {expected}")
        raise PriceValidationError(f"file {', '.join(map(str, files)) or '<prices>'}: " + "; ".join(msgs))
    rows = fc.select(pl.col("index").cast(pl.Int64), "column").unique("index", keep="first", maintain_order=True)
    bad = _with_context(prices, origin).with_row_index("_i").join(
        rows, left_on=pl.col("_i").cast(pl.Int64), right_on="index").sort("_i")
    raise_problems(_report(bad, pl.format("{} is missing", pl.col("column"))), "missing values")


def validate_prices(prices: pl.DataFrame, origin: dict[str, str] | None, data_spec: DataSpec,
                    today: dt.date | None = None) -> None:
    """Raise PriceValidationError at the first failing stage: column schema; symbols, values and future dates;
    duplicates and order; history length and gaps. ``today`` defaults to the current date. Rows are named by
    their ``_file``/``_row`` columns where present, else by ``origin[symbol]`` and the row's position within its
    symbol."""
    prices = _coerce_lenient(prices)
    _check_schema(prices, origin)
    prices = _with_context(prices, origin)
    for title, checks in _stages(prices, data_spec, today):
        raise_problems(_concat([check() for check in checks]), title)


# ---------------------------------------------------------------------------------------------------------------
# reading and parsing files


def _canonical(name: str) -> str:
    key = re.sub(r"[\s_\-]+", " ", str(name).strip().lower())
    return COLUMN_ALIASES.get(key, COLUMN_ALIASES.get(key.replace(" ", ""), key))


def _read_table(path: Path, label: str) -> pl.DataFrame:
    """A file as a frame (CSV cells as text, Parquet typed); an empty CSV gives an empty frame."""
    try:
        if path.suffix.lower() == ".csv":
            if path.stat().st_size == 0:
                return pl.DataFrame()
            return pl.read_csv(path, infer_schema_length=0)
        return pl.read_parquet(path)
    except pl.exceptions.NoDataError:
        return pl.DataFrame()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise PriceValidationError(f"file {label}: cannot be read ({type(err).__name__}: {err})") from None


def _rename_columns(df: pl.DataFrame, label: str, symbol: str | None) -> pl.DataFrame:
    """Canonical lower-case names; an adjusted close wins over a raw close; unknown columns are dropped."""
    canon = {c: _canonical(c) for c in df.columns}
    if "adj_close" in canon.values():
        canon = {c: ("close" if v == "adj_close" else None if v == "close" else v) for c, v in canon.items()}
    seen: dict[str, str] = {}
    for c, v in canon.items():
        if v is None:
            continue
        if v in seen:
            raise PriceValidationError(f"{_where(label, symbol)}, header row: columns '{seen[v]}' and '{c}' "
                                       f"both mean '{v}'")
        seen[v] = c
    return df.select([pl.col(c).alias(v) for v, c in seen.items()])


def _missing_column(raw_columns: list[str], label: str, symbol: str | None, col: str) -> PriceValidationError:
    unknown = [c for c in raw_columns if _canonical(c) not in COLUMN_ALIASES.values()]
    guess = difflib.get_close_matches(col, [c.lower() for c in unknown], n=1, cutoff=0.5)
    hint = f" (did you mean '{unknown[[c.lower() for c in unknown].index(guess[0])]}'?)" if guess else ""
    canon = {_canonical(c) for c in raw_columns}
    if "sector" in canon and col != "sector":
        hint += " (a sectors table? name it in data.sectors_file)"
    elif "vix" in canon and col != "vix":
        hint += " (a VIX series? name it in data.vix_file)"
    found = ", ".join(repr(c) for c in raw_columns) or "none"
    return PriceValidationError(f"{_where(label, symbol)}, header row: missing column '{col}'{hint}; "
                                f"columns found: {found}")


def _parse_dates(s: pl.Series) -> pl.Series:
    if s.dtype == pl.Date:
        return s
    if isinstance(s.dtype, pl.Datetime):
        return s.dt.date()
    text = s.cast(pl.Utf8).str.strip_chars()
    out = text.str.slice(0, 10).str.to_date(DATE_FORMATS[0], strict=False)
    for fmt in DATE_FORMATS[1:]:
        out = out.fill_null(text.str.to_date(fmt, strict=False))
    return out


def _parse_frame(raw: pl.DataFrame, label: str, symbol: str | None, values: tuple[str, ...] = VALUE_COLUMNS,
                 required: tuple[str, ...] = ("date", "close")) -> pl.DataFrame:
    """Typed ``_file, _row, symbol, date`` + value columns of one file; text in a date or number cell raises.

    ``symbol`` names the series of a file without a symbol column (one file per symbol)."""
    if raw.height == 0:
        raise PriceValidationError(f"{_where(label, symbol)}: empty file (no data rows)")
    df = _rename_columns(raw, label, symbol)
    long_format = "symbol" in df.columns
    for col in required:
        if col not in df.columns:
            raise _missing_column(raw.columns, label, None if long_format else symbol, col)
    df = df.with_columns(pl.lit(label).alias("_file"), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_row"))
    if not long_format:
        df = df.with_columns(pl.lit(symbol, dtype=pl.Utf8).alias("symbol"))
    df = df.with_columns(pl.col("symbol").cast(pl.Utf8))
    dates = _parse_dates(df["date"])
    bad = df.filter(dates.is_null())
    if bad.height:
        raise_problems(_report(bad.with_columns(pl.col("date").cast(pl.Utf8)), pl.format(
            "date '{}' is not a date (expected YYYY-MM-DD)", pl.col("date").cast(pl.Utf8).fill_null(""))),
            "unparseable dates")
    df = df.with_columns(dates.alias("date"))
    for col in [c for c in values if c in df.columns]:
        raw_col = df[col]
        if raw_col.dtype == pl.Utf8:
            text = raw_col.str.strip_chars()
            num = text.cast(pl.Float64, strict=False)
            bad = df.filter(num.is_null() & text.is_not_null() & (text != ""))
            if bad.height:
                raise_problems(_report(bad, pl.format(f"{col} '{{}}' is not a number", pl.col(col))),
                               f"non-numeric {col}")
            df = df.with_columns(num.alias(col))
        elif raw_col.dtype.is_numeric():
            df = df.with_columns(pl.col(col).cast(pl.Float64))
        else:
            raise PriceValidationError(f"{_where(label, None if long_format else symbol)}: column '{col}' has "
                                       f"type {raw_col.dtype}, expected numbers")
    return df.select("_file", "_row", "symbol", "date", *[c for c in values if c in df.columns])


def _series_file(folder: Path, name: str, value: str) -> pl.DataFrame:
    """An index (value 'close') or VIX (value 'vix') file as ``date, <value>``, checked like prices."""
    path = folder / name
    if not path.is_file():
        raise PriceValidationError(f"file {name}: not found in {folder}")
    raw = _read_table(path, name)
    if value == "vix" and raw.height:
        names = {c: _canonical(c) for c in raw.columns}
        if "vix" in names.values():  # the VIX file's value column may be called vix or close
            raw = raw.select([pl.col(c).alias("close" if v == "vix" else c)
                              for c, v in names.items() if v not in ("close", "adj_close")])
        elif not {"close", "adj_close"} & set(names.values()):
            raise _missing_column(raw.columns, name, None, "vix")
    label = "index" if value == "close" else "VIX"
    df = _parse_frame(raw.drop([c for c in raw.columns if _canonical(c) == "symbol"]), name, label,
                      values=("close",))
    _check_series(df, name)
    return df.select("date", pl.col("close").alias(value))


def _check_series(df: pl.DataFrame, what: str) -> None:
    raise_problems(price_problems(df), f"bad values in {what}")
    raise_problems(_concat([duplicate_rows(df), unsorted_rows(df)]), f"duplicate or unsorted dates in {what}")


def _read_sectors(path: Path, label: str) -> pl.DataFrame:
    if not path.is_file():
        raise PriceValidationError(f"file {label}: not found in {path.parent}")
    raw = _read_table(path, label)
    if raw.height == 0:
        raise PriceValidationError(f"file {label}: empty file (no data rows)")
    df = _rename_columns(raw, label, None)
    for col in ("symbol", "sector"):
        if col not in df.columns:
            raise _missing_column(raw.columns, label, None, col)
    df = df.select(pl.col("symbol").cast(pl.Utf8).str.strip_chars(), pl.col("sector").cast(pl.Utf8))
    dup = df.with_row_index("_i").filter(pl.col("symbol").is_duplicated())
    if dup.height:
        r = dup.row(0, named=True)
        raise PriceValidationError(f"file {label}, symbol {r['symbol']}, row {r['_i'] + 1}: symbol listed twice")
    return df


# ---------------------------------------------------------------------------------------------------------------
# sources


def load_bundled() -> SourceData:
    """The bundled 20 S&P 500 stocks, the S&P 500 index, 2014-2018 VIX and GICS sectors."""
    name = "sp500_stocks.parquet"
    prices = pl.read_parquet(DATA_DIR / name).select(
        pl.lit(name).alias("_file"), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_row"),
        pl.col("symbol").cast(pl.Utf8), "date", pl.col("close").cast(pl.Float64))
    index = pl.read_parquet(DATA_DIR / "sp500_index.parquet").select("date", pl.col("close").cast(pl.Float64))
    vix = pl.read_parquet(DATA_DIR / "vix.parquet").select("date", pl.col("vix").cast(pl.Float64))
    sectors = pl.read_csv(DATA_DIR / "sectors.csv", schema={"symbol": pl.Utf8, "sector": pl.Utf8})
    origin = {s: name for s in prices["symbol"].unique(maintain_order=True).to_list()}
    return SourceData(prices, index, vix, sectors, origin)


def load_folder(data_spec: DataSpec) -> SourceData:
    """CSV/Parquet files of a folder: long tables (with a symbol column) and/or one file per symbol (the file
    stem is the symbol); the spec's index, VIX and sectors files (relative to the folder) are read separately."""
    folder = Path(data_spec.folder or "").expanduser()
    if not folder.is_dir():
        raise PriceValidationError(f"data.folder: {folder} is not a folder")
    named = [x for x in (data_spec.index_file, data_spec.vix_file, data_spec.sectors_file) if x]
    for name in named:
        if not (folder / name).is_file():
            raise PriceValidationError(f"file {name}: not found in {folder}")
    special = {(folder / x).resolve() for x in named}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FILE_SUFFIXES
                   and not p.name.startswith(".") and p.resolve() not in special)
    if not files:
        raise PriceValidationError(f"data.folder: {folder} has no CSV or Parquet price files")
    frames = [_parse_frame(_read_table(p, p.name), p.name, p.stem) for p in files]
    prices = pl.concat(frames, how="diagonal_relaxed")
    origin: dict[str, str] = {}
    for sym, file in prices.select("symbol", "_file").unique(maintain_order=True).iter_rows():
        origin[sym] = f"{origin[sym]}, {file}" if sym in origin else file
    index = _series_file(folder, data_spec.index_file, "close") if data_spec.index_file else None
    vix = _series_file(folder, data_spec.vix_file, "vix") if data_spec.vix_file else None
    sectors = _read_sectors(folder / data_spec.sectors_file, data_spec.sectors_file) if data_spec.sectors_file \
        else _EMPTY_SECTORS
    return SourceData(prices, index, vix, sectors, origin)


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


def load_synthetic(data_spec: DataSpec) -> SourceData:
    """The seeded synthetic market of the spec (``data.synthetic_*``)."""
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
    if data.index is not None and ds.source != "folder":  # folder series were checked while reading
        _check_series(index.with_columns(pl.lit("index").alias("symbol")), f"the {ds.source} index")
    vix = data.vix.filter(pl.col("date").is_between(first, last)) if data.vix is not None else None
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


def _bundled_sectors() -> pl.DataFrame:
    """Fallback sectors for a source without them: the bundled table (matches by ticker)."""
    return pl.read_csv(DATA_DIR / "sectors.csv", schema={"symbol": pl.Utf8, "sector": pl.Utf8})


def symbol_is_safe(symbol: str) -> bool:
    return re.match(SYMBOL_PATTERN, symbol) is not None
