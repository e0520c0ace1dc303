"""Regenerate the test input folders: one broken folder per input problem, two good folders and a recorded
yfinance frame.  Run from the repository root:  uv run python tests/data/make_bad_inputs.py

Every broken folder holds a good per-symbol file ACME.csv plus one bad file; manifest.json records, per folder,
the file, symbol, 1-based data row and date (or the column) that the validation error must name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

HERE = Path(__file__).resolve().parent
BAD_ROWS = 60  # rows per file in the broken folders
GOOD_ROWS = 400  # business days per symbol in the good folders
K = 23  # 0-based position of the injected problem in the bad file
TODAY = "2024-06-28"  # the `today` the tests validate against


def _walk(seed: int, n: int, start: str = "2021-01-04") -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, periods=n).values.astype("datetime64[D]")
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
    open_ = close * np.exp(rng.normal(0, 0.004, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.006, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.006, n)))
    volume = rng.integers(100_000, 2_000_000, n)
    return pl.DataFrame({"date": dates, "open": open_.round(4), "high": high.round(4), "low": low.round(4),
                         "close": close.round(4), "volume": volume})


def _fresh(name: str) -> Path:
    d = HERE / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def _write_csv(df: pl.DataFrame, path: Path) -> None:
    df.with_columns(pl.col(pl.Date).cast(pl.Utf8)).write_csv(path)


def _good_folders() -> None:
    symbols = ["AAA", "BBB", "CCC"]
    frames = {s: _walk(i + 1, GOOD_ROWS, "2020-01-02") for i, s in enumerate(symbols)}
    mean_ret = np.mean([f["close"].pct_change().fill_null(0).to_numpy() for f in frames.values()], axis=0)
    index = pl.DataFrame({"date": frames["AAA"]["date"], "close": (3000 * np.cumprod(1 + mean_ret)).round(2)})
    vix = pl.DataFrame({"date": frames["AAA"]["date"],
                        "vix": (18 + 6 * np.sin(np.arange(GOOD_ROWS) / 30.0)).round(2)})
    sectors = pl.DataFrame({"symbol": symbols, "sector": ["Energy", "Financials", "Health Care"]})

    d = _fresh("good_long")
    long = pl.concat([f.select(pl.lit(s).alias("symbol"), pl.all()) for s, f in frames.items()])
    _write_csv(long, d / "prices.csv")
    _write_csv(index.rename({"date": "Date", "close": "Close"}), d / "index.csv")
    _write_csv(vix, d / "vix.csv")
    sectors.write_csv(d / "sectors.csv")

    d = _fresh("good_per_symbol")
    for s, f in frames.items():  # Yahoo-style headers; "Adj Close" must win over "Close"
        f.select(pl.col("date").alias("Date"), pl.col("open").alias("Open"), pl.col("high").alias("High"),
                 pl.col("low").alias("Low"), (pl.col("close") * 1.01).alias("Close"),
                 pl.col("close").alias("Adj Close"), pl.col("volume").alias("Volume")).write_parquet(d / f"{s}.parquet")
    index.rename({"date": "Date", "close": "Close"}).write_parquet(d / "index.parquet")


def _bad_folders() -> dict[str, dict]:
    manifest: dict[str, dict] = {}
    good = _walk(100, BAD_ROWS).select("date", "close")
    base = _walk(200, BAD_ROWS).select("date", "close")
    date_k = str(base["date"][K])

    def per_symbol(name: str, bad: pl.DataFrame | str, row, date, ext: str = "csv", **extra) -> None:
        d = _fresh(name)
        _write_csv(good, d / "ACME.csv")
        path = d / f"ZED.{ext}"
        if isinstance(bad, str):
            path.write_text(bad)
        elif ext == "csv":
            _write_csv(bad, path)
        else:
            bad.write_parquet(path)
        manifest[name] = {"file": path.name, "symbol": "ZED", "row": row, "date": date, **extra}

    def with_close(value) -> pl.DataFrame:
        return base.with_columns(pl.when(pl.int_range(pl.len()) == K).then(pl.lit(value)).otherwise(
            pl.col("close")).alias("close"))

    # NaN: a long file (ACME rows first), so the row number counts rows of the whole file
    d = _fresh("bad_nan")
    long = pl.concat([good.select(pl.lit("ACME").alias("symbol"), pl.all()),
                      with_close(float("nan")).select(pl.lit("ZED").alias("symbol"), pl.all())])
    _write_csv(long, d / "prices.csv")
    manifest["bad_nan"] = {"file": "prices.csv", "symbol": "ZED", "row": BAD_ROWS + K + 1, "date": date_k,
                           "problem": "close is NaN"}

    per_symbol("bad_inf", with_close(float("inf")), K + 1, date_k, ext="parquet", problem="close is inf")
    per_symbol("bad_zero", with_close(0.0), K + 1, date_k, problem="close is 0")
    per_symbol("bad_negative", with_close(-3.5), K + 1, date_k, problem="close is negative")

    dup = base.with_columns(pl.when(pl.int_range(pl.len()) == K).then(pl.col("date").shift(1)).otherwise(
        pl.col("date")).alias("date"))
    per_symbol("bad_duplicate_dates", dup, K + 1, str(base["date"][K - 1]), problem="occurs 2 times")

    order = list(range(BAD_ROWS))
    order[K - 1], order[K] = order[K], order[K - 1]
    per_symbol("bad_unsorted_dates", base[order], K + 1, str(base["date"][K - 1]), problem="before the previous")

    per_symbol("bad_missing_column", base.select("date", pl.col("close").alias("open")), "header row", None,
               column="close", problem="missing column 'close'")
    per_symbol("bad_misspelled_column", base.rename({"date": "Date", "close": "Clsoe"}), "header row", None,
               column="close", problem="did you mean 'Clsoe'")
    text = base.with_columns(pl.col("close").cast(pl.Utf8)).with_columns(
        pl.when(pl.int_range(pl.len()) == K).then(pl.lit("abc")).otherwise(pl.col("close")).alias("close"))
    per_symbol("bad_text_in_close", text, K + 1, date_k, problem="close 'abc' is not a number")
    bad_date = base.with_columns(pl.col("date").cast(pl.Utf8)).with_columns(
        pl.when(pl.int_range(pl.len()) == K).then(pl.lit("2021-13-45")).otherwise(pl.col("date")).alias("date"))
    per_symbol("bad_unparseable_date", bad_date, K + 1, "2021-13-45", problem="is not a date")
    per_symbol("bad_empty_file", "date,close\n", None, None, problem="empty file")

    d = _fresh("bad_path_symbol")
    long = pl.concat([good.select(pl.lit("ACME").alias("symbol"), pl.all()),
                      base.select(pl.lit("../x").alias("symbol"), pl.all())])
    _write_csv(long, d / "prices.csv")
    manifest["bad_path_symbol"] = {"file": "prices.csv", "symbol": "../x", "row": BAD_ROWS + 1,
                                   "date": str(base["date"][0]), "problem": "symbol name must match"}

    # one file, two date formats: most rows ISO, one MM/DD/YYYY (ambiguous across formats: rejected, not guessed)
    us = base["date"][K].strftime("%m/%d/%Y")
    mixed = base.with_columns(pl.col("date").cast(pl.Utf8)).with_columns(
        pl.when(pl.int_range(pl.len()) == K).then(pl.lit(us)).otherwise(pl.col("date")).alias("date"))
    per_symbol("bad_mixed_date_formats", mixed, K + 1, us, problem="is not in this file's date format %Y-%m-%d")

    # a typed file whose close column is text: rejected naming file and column, never cast
    per_symbol("bad_parquet_text_close", base.with_columns(pl.col("close").cast(pl.Utf8)), "column 'close'", None,
               ext="parquet", column="close", problem="column 'close' has type String, expected numbers")

    # an index file with a month-long gap while both stocks trade every day of it
    d = _fresh("bad_index_gap")
    _write_csv(good, d / "ACME.csv")
    _write_csv(base, d / "ZED.csv")
    gap = 16  # business days missing from the index after its row K
    _write_csv(base.filter((pl.int_range(pl.len()) < K) | (pl.int_range(pl.len()) >= K + gap)), d / "index.csv")
    manifest["bad_index_gap"] = {"file": "index.csv", "symbol": "index", "row": K + 1,
                                 "date": str(base["date"][K + gap]), "spec": {"index_file": "index.csv"},
                                 "problem": f"calendar days after the previous row ({base['date'][K - 1]})"}

    # an unadjusted split: the close jumps 1000-fold from one day to the next (rejected when the spec says so)
    split = base.with_columns(pl.when(pl.int_range(pl.len()) >= K).then(pl.col("close") * 1000).otherwise(
        pl.col("close")).alias("close"))
    per_symbol("bad_jump", split, K + 1, date_k, spec={"jump_action": "reject"}, problem="close jumps from")

    later = pd.bdate_range("2099-01-02", periods=3).values.astype("datetime64[D]")
    future = pl.concat([base, pl.DataFrame({"date": later, "close": [60.0, 61.0, 62.0]})])
    per_symbol("bad_future_dates", future, BAD_ROWS + 1, "2099-01-02", problem="after today")
    return manifest


def _yahoo_recorded() -> None:
    """A frame shaped like yfinance.download(["AAPL", "MSFT", "^GSPC", "^VIX"], auto_adjust=True)."""
    rng = np.random.default_rng(5)
    idx = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=60), name="Date")
    tickers = ["AAPL", "MSFT", "^GSPC", "^VIX"]
    levels = {"AAPL": 185.0, "MSFT": 370.0, "^GSPC": 4700.0, "^VIX": 13.0}
    data = {}
    for t in tickers:
        close = levels[t] * np.exp(np.cumsum(rng.normal(0, 0.01, len(idx))))
        open_ = close * np.exp(rng.normal(0, 0.003, len(idx)))
        vol = np.zeros(len(idx)) if t == "^VIX" else rng.integers(10**6, 10**8, len(idx)).astype(float)
        cols = {"Close": close, "High": np.maximum(open_, close) * 1.004, "Low": np.minimum(open_, close) * 0.996,
                "Open": open_, "Volume": vol}
        for f, v in cols.items():
            data[(f, t)] = v
    df = pd.DataFrame(data, index=idx)
    df.columns = pd.MultiIndex.from_tuples(df.columns, names=["Price", "Ticker"])
    df = df.sort_index(axis=1, level=0)
    df.loc[df.index[:5], (slice(None), "MSFT")] = np.nan  # MSFT "not yet listed": yfinance pads with NaN
    df.to_parquet(HERE / "yahoo_recorded.parquet")


def main() -> None:
    _good_folders()
    manifest = _bad_folders()
    manifest["_today"] = TODAY
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _yahoo_recorded()


if __name__ == "__main__":
    main()
