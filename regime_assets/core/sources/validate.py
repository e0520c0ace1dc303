"""Price validation: a pandera column schema and vectorised polars row and panel checks.

Every check is a function returning the offending rows (``symbol, date, problem`` [+ ``file, row``]; empty =
fine) so the asset checks reuse them; ``validate_prices`` runs them in stages and raises at the first failing
stage, naming the file, symbol, row and date of the first offending rows (up to ``MAX_SHOWN``)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import polars as pl

from regime_assets.core.sources.data import (
    MAX_SHOWN,
    OPTIONAL_COLUMNS,
    SYMBOL_PATTERN,
    VALUE_COLUMNS,
    PriceValidationError,
)
from regime_assets.spec import DataSpec


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


def large_jumps(prices: pl.DataFrame, max_abs_log_return: float) -> pl.DataFrame:
    """Rows whose close moved more than ``max_abs_log_return`` in log terms from the symbol's previous row (an
    unadjusted split, a price in the wrong unit)."""
    df = prices.sort("symbol", "date", maintain_order=True)
    prev = pl.col("close").shift(1).over("symbol")
    bad = df.with_columns(prev.alias("_prev"), pl.col("date").shift(1).over("symbol").alias("_prev_date"),
                          (pl.col("close") / prev).log().alias("_lr")).filter(
        pl.col("_lr").abs() > max_abs_log_return)
    return _report(bad, pl.format("close jumps from {} ({}) to {}: log return {}, beyond data.max_abs_log_return "
                                  "{} (an unadjusted split?)", pl.col("_prev"), pl.col("_prev_date"),
                                  pl.col("close"), pl.col("_lr").round(3), pl.lit(round(max_abs_log_return, 3))))


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
        *([("daily jumps (data.jump_action is reject)", [lambda: large_jumps(prices, ds.max_abs_log_return)])]
          if ds.jump_action == "reject" else []),
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



def symbol_is_safe(symbol: str) -> bool:
    return re.match(SYMBOL_PATTERN, symbol) is not None
