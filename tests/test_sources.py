"""Price sources and validation: broken input folders, good folders, bundled data, the yahoo adapter."""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regime_assets.core import sources
from regime_assets.core.sources import (
    PriceValidationError,
    equal_weight_index,
    frame_from_yahoo,
    load_source,
    load_yahoo,
    price_problems,
    validate_prices,
)
from regime_assets.spec import DataSpec

DATA = Path(__file__).parent / "data"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
TODAY = dt.date.fromisoformat(MANIFEST["_today"])
BAD = sorted(k for k in MANIFEST if not k.startswith("_"))
GOOD_LONG = dict(index_file="index.csv", vix_file="vix.csv", sectors_file="sectors.csv")


def folder_spec(name: str, **kw) -> DataSpec:
    return DataSpec(source="folder", folder=str(DATA / name), **{"min_history_days": 20, **kw})


# ---------------------------------------------------------------------------------------------------------------
# broken folders


@pytest.mark.parametrize("name", BAD)
def test_bad_folder_names_file_symbol_row_and_date(name):
    exp = MANIFEST[name]
    with pytest.raises(PriceValidationError) as err:
        load_source(folder_spec(name, **exp.get("spec", {})), today=TODAY)
    msg = str(err.value)
    assert f"file {exp['file']}" in msg
    assert f"symbol {exp['symbol']}" in msg
    assert exp["problem"] in msg
    if isinstance(exp["row"], int):
        assert f"row {exp['row']}," in msg
    elif exp["row"] == "header row":
        assert "header row" in msg and f"'{exp['column']}'" in msg
    if exp["date"]:
        assert f"date {exp['date']}" in msg


def test_bad_folders_cover_every_problem():
    expected = {"bad_nan", "bad_inf", "bad_zero", "bad_negative", "bad_duplicate_dates", "bad_unsorted_dates",
                "bad_missing_column", "bad_misspelled_column", "bad_text_in_close", "bad_empty_file",
                "bad_path_symbol", "bad_future_dates", "bad_mixed_date_formats", "bad_parquet_text_close",
                "bad_index_gap", "bad_jump"}
    assert expected <= set(BAD)
    for name in BAD:
        assert (DATA / name / MANIFEST[name]["file"]).is_file() or name == "bad_nan"


def test_future_dates_allowed_when_the_spec_says_so():
    spec = folder_spec("bad_future_dates", allow_future_dates=True, max_gap_days=40_000)
    data = load_source(spec, today=TODAY)
    assert data.prices["date"].max() > TODAY


def test_row_numbers_count_data_rows_of_a_long_file():
    # bad_nan is one long file: ACME's rows come first, so ZED's bad row is numbered within the whole file
    raw = pl.read_csv(DATA / "bad_nan" / "prices.csv", infer_schema_length=0)
    nan_row = raw.with_row_index("i").filter(pl.col("close") == "NaN")["i"].item() + 1
    with pytest.raises(PriceValidationError, match=f"row {nan_row},"):
        load_source(folder_spec("bad_nan"), today=TODAY)


def test_zero_byte_file_and_missing_special_files(tmp_path):
    (tmp_path / "EMPTY.csv").write_bytes(b"")
    with pytest.raises(PriceValidationError, match="file EMPTY.csv, symbol EMPTY: empty file"):
        load_source(DataSpec(source="folder", folder=str(tmp_path)), today=TODAY)
    with pytest.raises(PriceValidationError, match="nope.csv: not found"):
        load_source(folder_spec("good_long", **{**GOOD_LONG, "index_file": "nope.csv"}), today=TODAY)
    with pytest.raises(PriceValidationError,
                       match=r"sectors.csv, header row: missing column 'date'.*data.sectors_file"):
        load_source(folder_spec("good_long", index_file="index.csv", vix_file="vix.csv"), today=TODAY)
    with pytest.raises(PriceValidationError, match="is not a folder"):
        load_source(DataSpec(source="folder", folder=str(tmp_path / "missing")), today=TODAY)


def test_bad_index_file_names_its_row(tmp_path):
    src = DATA / "good_long"
    for f in ("prices.csv", "sectors.csv"):
        (tmp_path / f).write_bytes((src / f).read_bytes())
    idx = pl.read_csv(src / "index.csv").with_columns(
        pl.when(pl.int_range(pl.len()) == 9).then(-1.0).otherwise(pl.col("Close")).alias("Close"))
    idx.write_csv(tmp_path / "index.csv")
    with pytest.raises(PriceValidationError, match=r"file index.csv, symbol index, row 10, .*close is negative"):
        load_source(DataSpec(source="folder", folder=str(tmp_path), index_file="index.csv",
                             sectors_file="sectors.csv"), today=TODAY)


# ---------------------------------------------------------------------------------------------------------------
# good folders


def test_good_long_folder_loads():
    data = load_source(folder_spec("good_long", **GOOD_LONG), today=TODAY)
    p = data.prices
    assert p.columns == ["symbol", "date", "close", "open", "high", "low", "volume"]
    assert p.group_by("symbol").len().sort("symbol").rows() == [("AAA", 400), ("BBB", 400), ("CCC", 400)]
    assert p.equals(p.sort("symbol", "date")) and p.schema["date"] == pl.Date and p.schema["close"] == pl.Float64
    raw = pl.read_csv(DATA / "good_long" / "prices.csv", try_parse_dates=True)
    assert np.allclose(p["close"].to_numpy(), raw.sort("symbol", "date")["close"].to_numpy())
    index_file = pl.read_csv(DATA / "good_long" / "index.csv", try_parse_dates=True)
    assert data.index.columns == ["date", "close"]
    assert np.allclose(data.index["close"].to_numpy(), index_file["Close"].to_numpy())
    assert data.vix is not None and data.vix.columns == ["date", "vix"] and data.vix.height == 400
    assert dict(data.sectors.rows()) == dict(pl.read_csv(DATA / "good_long" / "sectors.csv").rows())
    assert data.origin == {"AAA": "prices.csv", "BBB": "prices.csv", "CCC": "prices.csv"}


def test_good_per_symbol_parquet_prefers_adjusted_close():
    data = load_source(folder_spec("good_per_symbol", index_file="index.parquet"), today=TODAY)
    raw = pl.read_parquet(DATA / "good_per_symbol" / "BBB.parquet")
    bbb = data.prices.filter(pl.col("symbol") == "BBB")
    assert np.allclose(bbb["close"].to_numpy(), raw["Adj Close"].to_numpy())
    assert np.allclose(bbb["volume"].to_numpy(), raw["Volume"].to_numpy())
    assert data.origin["BBB"] == "BBB.parquet"
    assert data.vix is None
    assert set(data.sectors["sector"]) == {"unknown"}


def test_without_index_file_the_index_is_equal_weight():
    data = load_source(folder_spec("good_per_symbol"), today=TODAY)
    wide = data.prices.pivot(on="symbol", index="date", values="close").sort("date")
    rets = wide.drop("date").to_numpy()
    expected = 100.0 * np.cumprod(np.r_[1.0, (rets[1:] / rets[:-1] - 1).mean(axis=1) + 1])
    assert data.index["date"].equals(wide["date"])
    assert np.allclose(data.index["close"].to_numpy(), expected)


def test_equal_weight_index_handles_late_entrants():
    prices = pl.DataFrame({
        "symbol": ["A", "A", "A", "B", "B"],
        "date": [dt.date(2020, 1, d) for d in (1, 2, 3, 2, 3)],
        "close": [10.0, 11.0, 12.1, 50.0, 45.0],
    })
    idx = equal_weight_index(prices)
    # day 2: only A has a return (+10 %); day 3: mean of +10 % and -10 %
    assert np.allclose(idx["close"].to_numpy(), [100.0, 110.0, 110.0])


def test_filters_symbols_and_dates():
    spec = folder_spec("good_long", symbols=["BBB", "CCC"], start=dt.date(2020, 3, 1), end=dt.date(2020, 12, 31),
                       **GOOD_LONG)
    data = load_source(spec, today=TODAY)
    assert data.prices["symbol"].unique().sort().to_list() == ["BBB", "CCC"]
    assert data.prices["date"].min() >= dt.date(2020, 3, 1) and data.prices["date"].max() <= dt.date(2020, 12, 31)
    assert data.index["date"].min() >= dt.date(2020, 3, 1) and data.index["date"].max() <= dt.date(2020, 12, 31)
    assert data.sectors["symbol"].to_list() == ["BBB", "CCC"] and set(data.origin) == {"BBB", "CCC"}
    with pytest.raises(PriceValidationError, match="not in the folder source: ZZZ"):
        load_source(folder_spec("good_long", symbols=["AAA", "ZZZ"], **GOOD_LONG), today=TODAY)


def test_history_and_gap_limits_name_symbol_and_date():
    with pytest.raises(PriceValidationError, match=r"symbol AAA, row 1, date 2020-01-02: only 400 rows"):
        load_source(folder_spec("good_long", min_history_days=500, **GOOD_LONG), today=TODAY)
    data = load_source(folder_spec("good_long", **GOOD_LONG), today=TODAY)
    p = data.prices.filter(~pl.col("date").is_between(dt.date(2020, 6, 1), dt.date(2020, 6, 30))
                           | (pl.col("symbol") != "BBB"))
    first_after = p.filter((pl.col("symbol") == "BBB") & (pl.col("date") > dt.date(2020, 6, 30)))["date"].min()
    with pytest.raises(PriceValidationError, match=f"symbol BBB, row .*, date {first_after}: .* calendar days"):
        validate_prices(p, {"BBB": "b.csv"}, DataSpec(max_gap_days=10, min_history_days=20), TODAY)


def test_alias_headers_in_a_long_file(tmp_path):
    pl.DataFrame({"Ticker": ["X1"] * 3, "DATE": ["2021-01-04", "2021-01-05", "2021-01-06"],
                  "Adj_Close": ["1.5", "1.6", "1.7"], "Dividends": ["0", "0", "0"]}).write_csv(tmp_path / "p.csv")
    data = load_source(DataSpec(source="folder", folder=str(tmp_path), min_history_days=3), today=TODAY)
    assert data.prices.columns == ["symbol", "date", "close"]
    assert data.prices["close"].to_list() == [1.5, 1.6, 1.7]


# ---------------------------------------------------------------------------------------------------------------
# validate_prices and the exported checks


def _frame(n: int = 30, symbols=("AA", "BB")) -> pl.DataFrame:
    dates = pd.bdate_range("2021-01-04", periods=n).values.astype("datetime64[D]")
    return pl.concat([pl.DataFrame({"symbol": s, "date": dates, "close": np.linspace(10, 20, n)}) for s in symbols])


def test_validate_names_origin_file_without_row_columns():
    df = _frame().with_columns(pl.when((pl.col("symbol") == "BB") & (pl.int_range(pl.len()).over("symbol") == 4))
                               .then(0.0).otherwise(pl.col("close")).alias("close"))
    with pytest.raises(PriceValidationError, match=r"file bb\.csv, symbol BB, row 5, date 2021-01-08: close is 0"):
        validate_prices(df, {"AA": "aa.csv", "BB": "bb.csv"}, DataSpec(min_history_days=5), TODAY)


def test_schema_errors_name_the_column():
    with pytest.raises(PriceValidationError, match="missing column 'close'"):
        validate_prices(_frame().drop("close"), {}, DataSpec(min_history_days=5), TODAY)
    with pytest.raises(PriceValidationError, match="column 'close' has type String"):
        validate_prices(_frame().with_columns(pl.col("close").cast(pl.Utf8)), {}, DataSpec(min_history_days=5), TODAY)
    nulls = _frame().with_columns(pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("date"))
                                  .alias("date"))
    with pytest.raises(PriceValidationError, match="file <prices>, symbol AA, row 4: date is missing"):
        validate_prices(nulls, {}, DataSpec(min_history_days=5), TODAY)


def test_exported_checks_return_offending_rows():
    clean = _frame()
    for check in (price_problems(clean), sources.duplicate_rows(clean), sources.unsorted_rows(clean),
                  sources.bad_symbols(clean), sources.short_history(clean, 30), sources.long_gaps(clean, 5),
                  sources.future_dates(clean, TODAY)):
        assert check.height == 0 and check.columns[:3] == ["symbol", "date", "problem"]
    bad = clean.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(float("inf")).when(
        pl.int_range(pl.len()) == 7).then(-1.0).otherwise(pl.col("close")).alias("close"))
    probs = price_problems(bad)
    assert probs.height == 2 and probs["date"].to_list() == bad["date"].gather([2, 7]).to_list()
    assert sources.duplicate_rows(pl.concat([clean, clean.head(1)])).height == 2
    assert sources.short_history(clean, 31)["symbol"].to_list() == ["AA", "BB"]
    assert sources.all_problems(bad, DataSpec(min_history_days=31), TODAY).height == 4


# ---------------------------------------------------------------------------------------------------------------
# bundled, synthetic and yahoo sources


def test_bundled_loads_20_symbols_1990_to_2022_quickly():
    load_source(DataSpec(), today=TODAY)  # first call pays the imports
    t = time.perf_counter()
    data = load_source(DataSpec(), today=TODAY)
    elapsed = time.perf_counter() - t
    assert elapsed < 1.0, f"bundled load took {elapsed:.2f}s"
    p = data.prices
    assert p["symbol"].n_unique() == 20 and p.columns == ["symbol", "date", "close"]
    assert p["date"].min().year == 1990 and p["date"].max().year == 2022
    assert data.index["date"].min().year == 1990 and data.vix is not None
    assert data.sectors.height == 20 and "unknown" not in data.sectors["sector"].to_list()
    assert set(data.origin.values()) == {"sp500_stocks.parquet"}


def test_synthetic_source_is_exempt_from_future_dates():
    spec = DataSpec(source="synthetic", synthetic_symbols=3, synthetic_years=40, min_history_days=20)
    data = load_source(spec, today=TODAY)
    assert data.prices["date"].max() > TODAY and data.prices["symbol"].n_unique() == 3
    assert data.states is not None and data.states.height == data.index.height


@pytest.fixture(scope="module")
def recorded() -> pd.DataFrame:
    return pd.read_parquet(DATA / "yahoo_recorded.parquet")


def test_frame_from_yahoo_on_the_recorded_download(recorded):
    out = frame_from_yahoo(recorded)
    assert out.columns == ["symbol", "date", "close", "open", "high", "low", "volume"]
    tickers = sorted(recorded.columns.get_level_values("Ticker").unique())
    assert out["symbol"].unique().sort().to_list() == tickers
    counts = dict(out.group_by("symbol").len().rows())
    for t in tickers:
        assert counts[t] == int(recorded[("Close", t)].notna().sum())
    assert not out["close"].is_nan().any() and out.equals(out.sort("symbol", "date"))
    when = recorded.index[10]
    row = out.filter((pl.col("symbol") == "MSFT") & (pl.col("date") == when.date()))
    assert row["close"].item() == pytest.approx(recorded[("Close", "MSFT")].iloc[10])
    assert row["volume"].item() == pytest.approx(recorded[("Volume", "MSFT")].iloc[10])
    # ticker-first columns (group_by="ticker") and a flat single-ticker frame give the same rows
    assert frame_from_yahoo(recorded.swaplevel(axis=1)).equals(out)
    unnamed = recorded.swaplevel(axis=1)
    unnamed.columns = unnamed.columns.set_names([None, None])
    assert frame_from_yahoo(unnamed).equals(out)
    flat = recorded.xs("AAPL", axis=1, level="Ticker")
    assert frame_from_yahoo(flat, symbol="AAPL").equals(out.filter(pl.col("symbol") == "AAPL"))


def _downloader(recorded: pd.DataFrame, calls: list):
    def download(tickers, start, end):
        calls.append((tuple(tickers), start, end))
        keep = recorded.columns.get_level_values("Ticker").isin(tickers)
        return recorded.loc[:, keep]
    return download


def test_load_yahoo_and_load_source_with_an_injected_downloader(recorded):
    calls: list = []
    spec = DataSpec(source="yahoo", symbols=["AAPL", "MSFT"], end=dt.date(2024, 3, 1), min_history_days=20)
    raw = load_yahoo(spec, downloader=_downloader(recorded, calls))
    assert calls[0] == (("AAPL", "MSFT"), "1990-01-01", "2024-03-02")
    assert [c[0] for c in calls[1:]] == [("^GSPC",), ("^VIX",)]
    assert raw.origin == {"AAPL": "yahoo:AAPL", "MSFT": "yahoo:MSFT"}
    data = load_source(spec, today=TODAY, downloader=_downloader(recorded, []))
    assert data.prices["symbol"].unique().sort().to_list() == ["AAPL", "MSFT"]
    assert data.prices["date"].max() <= dt.date(2024, 3, 1)
    assert np.allclose(data.index["close"].to_numpy()[:3], recorded[("Close", "^GSPC")].to_numpy()[:3])
    assert data.vix is not None and data.vix.columns == ["date", "vix"]
    assert dict(data.sectors.rows())["MSFT"] == "Information Technology"  # from the bundled sector table


def test_yahoo_without_yfinance_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "yfinance", None)
    with pytest.raises(ImportError, match="uv sync --extra yahoo"):
        load_yahoo(DataSpec(source="yahoo", symbols=["AAPL"]))


# ---------------------------------------------------------------------------------------------------------------
# properties


KINDS = ("nan", "negative", "zero", "inf", "null", "duplicate", "swap", "bad_symbol", "null_date")


@st.composite
def price_frames(draw):
    n_sym = draw(st.integers(1, 3))
    n = draw(st.integers(3, 40))
    frame = _frame(n, [f"S{i}" for i in range(n_sym)])
    drop = draw(st.lists(st.integers(1, n - 2), max_size=4, unique=True))  # holes create calendar gaps
    frame = frame.filter(~(pl.int_range(pl.len()).over("symbol").is_in(drop) & (pl.col("symbol") == "S0")))
    injections = draw(st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 10_000)), max_size=3))
    return frame, injections, draw(st.integers(1, 45)), draw(st.integers(1, 12))


def _inject(frame: pl.DataFrame, injections) -> pl.DataFrame:
    rows = frame.to_dicts()
    for kind, pos in injections:
        i = pos % len(rows)
        if kind == "duplicate":
            rows.insert(i, dict(rows[i]))
        elif kind == "swap":
            same = [j for j in range(len(rows)) if rows[j]["symbol"] == rows[i]["symbol"] and j != i]
            j = same[pos % len(same)] if same else i
            rows[i], rows[j] = rows[j], rows[i]
        elif kind == "bad_symbol":
            rows[i]["symbol"] = "../etc"
        elif kind == "null_date":
            rows[i]["date"] = None
        else:
            rows[i]["close"] = {"nan": float("nan"), "negative": -1.0, "zero": 0.0, "inf": float("inf"),
                                "null": None}[kind]
    return pl.DataFrame(rows, schema=frame.schema)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(price_frames())
def test_validate_prices_raises_only_price_validation_errors(case):
    frame, injections, min_rows, max_gap = case
    df = _inject(frame, injections)
    spec = DataSpec(min_history_days=min_rows, max_gap_days=max_gap)
    swaps_effective = any(k == "swap" for k, _ in injections) and not df.equals(frame)
    corrupted = any(k != "swap" for k, _ in injections) or swaps_effective
    clean_short = frame.group_by("symbol").len()["len"].min() < min_rows
    gaps = frame.group_by("symbol").agg(pl.col("date").diff().dt.total_days().max().alias("g"))["g"]
    clean_gap = bool((gaps.fill_null(0) > max_gap).any())
    try:
        validate_prices(df, {"S0": "s0.csv"}, spec, TODAY)
    except PriceValidationError as err:
        assert "symbol" in str(err) or "file" in str(err)
        assert corrupted or clean_short or clean_gap
    else:
        assert not corrupted and not clean_short and not clean_gap


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["2021-01-04", "2021-01-05", "x", "", "2021-13-01", "01/06/2021"]),
                          st.text(max_size=6)), min_size=0, max_size=8),
       st.sampled_from(["date,close", "Date,Adj Close", "date,price", "day,close,volume"]))
def test_any_csv_text_loads_or_raises_price_validation_error(cells, header):
    with tempfile.TemporaryDirectory() as tmp:
        ncol = len(header.split(","))
        lines = [header] + [",".join([d, v.replace(",", ";").replace("\n", " ").replace("\r", " ").replace('"', "'")]
                                     + ["1"] * (ncol - 2)) for d, v in cells]
        Path(tmp, "SYM.csv").write_text("\n".join(lines) + "\n")
        try:
            data = load_source(DataSpec(source="folder", folder=tmp, min_history_days=1), today=TODAY)
        except PriceValidationError:
            return
        assert data.prices.height >= 1 and (data.prices["close"] > 0).all()
