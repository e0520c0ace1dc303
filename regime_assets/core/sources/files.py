"""Reading price, index, VIX and sector files (CSV cells as text, Parquet typed) into checked frames, and the
bundled and folder sources built on them. Every price row carries ``_file`` and ``_row`` (its 1-based data row
within that file) so that errors name the file, symbol and row."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import polars as pl

from regime_assets.core.sources.data import (
    _EMPTY_SECTORS,
    COLUMN_ALIASES,
    DATA_DIR,
    DATE_FORMATS,
    FILE_SUFFIXES,
    VALUE_COLUMNS,
    PriceValidationError,
    SourceData,
)
from regime_assets.core.sources.validate import (
    _concat,
    _report,
    _where,
    duplicate_rows,
    long_gaps,
    price_problems,
    raise_problems,
    unsorted_rows,
)
from regime_assets.spec import DataSpec


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


def _is_typed(label: str) -> bool:
    """Parquet files carry their column types: they are checked, never cast from text."""
    return not label.lower().endswith(".csv")


def _parse_dates(df: pl.DataFrame, label: str, symbol: str | None) -> pl.DataFrame:
    """``df`` with its ``date`` column as dates, in ONE format per file: the format that reads most of the file's
    rows (ties: the order of DATE_FORMATS); a row in another format, or in none, raises naming file, symbol, row.
    A typed (Parquet) file must hold dates or datetimes."""
    s = df["date"]
    if s.dtype == pl.Date:
        return df
    if isinstance(s.dtype, pl.Datetime):
        return df.with_columns(pl.col("date").dt.date())
    if _is_typed(label):
        raise PriceValidationError(f"{_where(label, symbol)}: column 'date' has type {s.dtype}, expected Date or "
                                   "Datetime (a typed Parquet file: its dates are not parsed from other types)")
    text = s.cast(pl.Utf8).str.strip_chars()
    parsed = {fmt: (text.str.slice(0, 10) if fmt == DATE_FORMATS[0] else text).str.to_date(fmt, strict=False)
              for fmt in DATE_FORMATS}
    fmt = max(DATE_FORMATS, key=lambda f: parsed[f].is_not_null().sum())  # max keeps the first of equals
    dates = parsed[fmt]
    if dates.null_count():
        other = pl.any_horizontal([parsed[f].is_not_null() for f in DATE_FORMATS if f != fmt])
        bad = df.with_columns(other.alias("_other"), pl.col("date").cast(pl.Utf8).fill_null("")).filter(
            dates.is_null())
        mixed = bool(bad["_other"].any())
        raise_problems(_report(bad, pl.when(pl.col("_other")).then(pl.format(
            f"date '{{}}' is not in this file's date format {fmt} (one date format per file: a date like "
            "01/02/2021 cannot be told apart from 02/01/2021 across formats)", pl.col("date"))).otherwise(
            pl.format("date '{}' is not a date (expected YYYY-MM-DD)", pl.col("date")))),
            "mixed date formats" if mixed else "unparseable dates")
    return df.with_columns(dates.alias("date"))


def _parse_frame(raw: pl.DataFrame, label: str, symbol: str | None, values: tuple[str, ...] = VALUE_COLUMNS,
                 required: tuple[str, ...] = ("date", "close")) -> pl.DataFrame:
    """Typed ``_file, _row, symbol, date`` + value columns of one file; text in a date or number cell raises,
    and so does a typed (Parquet) column of the wrong type.

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
    where = _where(label, None if long_format else symbol)
    df = _parse_dates(df, label, None if long_format else symbol)
    for col in [c for c in values if c in df.columns]:
        raw_col = df[col]
        if raw_col.dtype == pl.Utf8 and _is_typed(label):
            raise PriceValidationError(f"{where}: column '{col}' has type String, expected numbers (a typed "
                                       "Parquet file: text is not cast to numbers)")
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
            raise PriceValidationError(f"{where}: column '{col}' has type {raw_col.dtype}, expected numbers")
    return df.select("_file", "_row", "symbol", "date", *[c for c in values if c in df.columns])


def _series_file(folder: Path, name: str, value: str, max_gap_days: int) -> pl.DataFrame:
    """An index (value 'close') or VIX (value 'vix') file as ``date, <value>``, checked like prices (values,
    duplicates, order and calendar gaps)."""
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
    check_series(df, name, max_gap_days)
    return df.select("date", pl.col("close").alias(value))


def check_series(df: pl.DataFrame, what: str, max_gap_days: int) -> None:
    """An index or VIX series (``symbol`` names it) gets the price files' value and calendar checks."""
    raise_problems(price_problems(df), f"bad values in {what}")
    raise_problems(_concat([duplicate_rows(df), unsorted_rows(df)]), f"duplicate or unsorted dates in {what}")
    raise_problems(long_gaps(df, max_gap_days), f"calendar gaps in {what}")


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
    index = _series_file(folder, data_spec.index_file, "close", data_spec.max_gap_days) if data_spec.index_file else None
    vix = _series_file(folder, data_spec.vix_file, "vix", data_spec.max_gap_days) if data_spec.vix_file else None
    sectors = _read_sectors(folder / data_spec.sectors_file, data_spec.sectors_file) if data_spec.sectors_file \
        else _EMPTY_SECTORS
    return SourceData(prices, index, vix, sectors, origin)


def _bundled_sectors() -> pl.DataFrame:
    """Fallback sectors for a source without them: the bundled table (matches by ticker)."""
    return pl.read_csv(DATA_DIR / "sectors.csv", schema={"symbol": pl.Utf8, "sector": pl.Utf8})

