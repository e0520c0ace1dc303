"""Market context: index close, VIX, and a calibrated VIX proxy where real VIX is missing.

The proxy reads stress from the index alone, point-in-time (every input at t uses index closes up to t):

    ln(proxy_t) = c_0 + sum_w c_w * sqrt(rv_w,t) + sum_d c_d * max(dd_d,t, clip_d)

* ``rv_w`` -- the annualised (x sqrt(252) x 100) standard deviation of the last ``w`` daily log returns, for
  ``w`` in ``vix_proxy.windows`` (5, 10, 21, 63): short windows follow a shock, long ones the level;
* ``dd_d`` -- the drawdown ``close_t / max(close over the last d days) - 1`` for ``d`` in
  ``vix_proxy.drawdown_windows`` (21 = from the one-month high, 252 = from the 52-week high); the asymmetric term:
  implied volatility rises more after falls than realized volatility alone says. Each drawdown is held at
  ``vix_proxy.drawdown_clip`` (the deepest drawdown of the fitting data), so the fitted slope is never
  extrapolated beyond the range it was fitted on;
* the log link and the square-root of realized volatility: VIX is close to log-normal, and the square root lets
  the proxy rise with realized volatility faster than a log-log fit on calm years would (the variance risk premium
  shrinks in crises) but slower than a level fit of the log.

The coefficients are fitted by least squares of ``ln VIX`` on the dates where real VIX exists. ``calibrate``
fits them on the overlap's dates before ``vix_proxy.holdout_start`` and reports the out-of-sample correlation, MAE
and VIX-band agreement on the dates from it. By default (``calibration: fixed``) the coefficients in the spec are
used (fitted on the bundled 2014-2018 overlap), so every proxy value depends on index data up to t only;
``calibration: overlap`` refits them on the data's own overlap (not strictly point-in-time before its end).

``validate_proxy`` compares the proxy with the published VIX closes at stress dates and yearly averages shipped
in ``regime_assets/data/vix_published.csv`` (CBOE VIX history; see DATA_NOTES.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from regime_assets.spec import RegimeSpec, VixProxySpec

ANNUAL = float(np.sqrt(252.0)) * 100.0
PUBLISHED_PATH = Path(__file__).resolve().parent.parent / "data" / "vix_published.csv"
BANDS = ("low_vol", "normal", "high_vol", "crash")


class ProxyError(ValueError):
    """Inputs the VIX proxy cannot use; the message names what is wrong."""


def rv_names(vspec: VixProxySpec) -> list[str]:
    return [f"rv_{w}" for w in vspec.windows]


def dd_names(vspec: VixProxySpec) -> list[str]:
    return [f"dd_{d}" for d in vspec.drawdown_windows]


def proxy_inputs(vspec: VixProxySpec) -> list[str]:
    """The proxy's input columns, in coefficient order (after the intercept)."""
    return rv_names(vspec) + dd_names(vspec)


def vol_inputs(index: pl.DataFrame, vspec: VixProxySpec) -> pl.DataFrame:
    """Per date: the index close and the proxy's inputs (realized vols in VIX points, drawdowns as fractions).

    Rows before the longest realized-vol window is full have null inputs; a drawdown uses the highest close of
    the last ``d`` days seen so far (fewer at the start of the data).
    """
    idx = index.sort("date").select("date", pl.col("close").cast(pl.Float64).alias("index_close"))
    r = pl.col("index_close").log().diff()
    c = pl.col("index_close")
    out = idx.with_columns(r.alias("_r")).with_columns(
        *[(pl.col("_r").rolling_std(w, min_samples=w) * ANNUAL).alias(f"rv_{w}") for w in vspec.windows],
        *[(c / c.rolling_max(d, min_samples=1) - 1.0).alias(f"dd_{d}") for d in vspec.drawdown_windows],
    )
    longest = f"rv_{max(vspec.windows)}"
    out = out.with_columns([pl.when(pl.col(longest).is_null()).then(None).otherwise(pl.col(n)).alias(n)
                            for n in dd_names(vspec)])
    return out.drop("_r")


def _design(inputs: pl.DataFrame, vspec: VixProxySpec, clip: list[float]) -> np.ndarray:
    rv = [np.sqrt(np.maximum(inputs.get_column(n).to_numpy(), 0.0)) for n in rv_names(vspec)]
    dd = [np.maximum(inputs.get_column(n).to_numpy(), lo) for n, lo in zip(dd_names(vspec), clip)]
    return np.column_stack([np.ones(inputs.height), *rv, *dd])


def _predict(design: np.ndarray, coef: list[float] | np.ndarray, floor: float) -> np.ndarray:
    return np.maximum(np.exp(design @ np.asarray(coef, dtype=float)), floor)


@dataclass
class ProxyCalibration:
    coefficients: list[float]  # intercept, then one per proxy_inputs()
    drawdown_clip: list[float]
    inputs: list[str]
    n_overlap: int = 0
    n_fit: int = 0
    n_holdout: int = 0
    oos_corr: float | None = None
    oos_mae: float | None = None
    oos_band_agreement: float | None = None
    in_sample_corr: float | None = None
    holdout: str = ""
    fitted_on: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def named_coefficients(self) -> dict[str, float]:
        return dict(zip(["intercept", *[f"sqrt_{n}" if n.startswith("rv_") else n for n in self.inputs]],
                        [round(float(c), 6) for c in self.coefficients]))


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def vix_band(vix: pl.Expr, rspec: RegimeSpec) -> pl.Expr:
    """The market-wide VIX band of the regime rules (low_vol / normal / high_vol / crash)."""
    return (pl.when(vix > rspec.crash_vix).then(pl.lit("crash"))
            .when(vix >= rspec.high_vol_vix).then(pl.lit("high_vol"))
            .when(vix >= rspec.normal_vix).then(pl.lit("normal"))
            .otherwise(pl.lit("low_vol")))


def _bands(x: np.ndarray, rspec: RegimeSpec) -> np.ndarray:
    return pl.select(vix_band(pl.lit(pl.Series(x, dtype=pl.Float64)), rspec)).to_series().to_numpy()


def calibrate(inputs: pl.DataFrame, vix: pl.DataFrame | None, vspec: VixProxySpec,
              rspec: RegimeSpec | None = None) -> ProxyCalibration:
    """Fit the proxy on the overlap of ``inputs`` (vol_inputs) and real ``vix`` (date, vix).

    The out-of-sample figures always come from a fit on the overlap's dates before ``vspec.holdout_start``
    (or its earlier ``1 - holdout_fraction`` when that leaves fewer than 60 days on either side), scored on the
    rest. With ``calibration == "fixed"`` the spec's coefficients and drawdown clip are used; with ``"overlap"``
    the fit on the whole overlap (its clip = the overlap's deepest drawdowns).
    """
    rspec = rspec or RegimeSpec()
    names = proxy_inputs(vspec)
    fixed = ProxyCalibration(list(vspec.coefficients), list(vspec.drawdown_clip), names)
    if vix is None or vix.height == 0:
        fixed.fitted_on, fixed.notes = "spec", ["no real VIX: the spec's coefficients"]
        return fixed
    ov = inputs.join(vix.select("date", pl.col("vix").cast(pl.Float64)), on="date", how="inner").drop_nulls(
        [*names, "vix"]).filter(pl.col("vix") > 0).sort("date")
    n = ov.height
    if n < 120:
        fixed.n_overlap, fixed.fitted_on = n, "spec"
        fixed.notes = [f"overlap of {n} days is too short to calibrate: the spec's coefficients"]
        return fixed
    y = ov.get_column("vix").to_numpy()
    dates = ov.get_column("date")
    fit_mask = (dates < vspec.holdout_start).to_numpy() if vspec.holdout_start is not None else np.zeros(n, bool)
    holdout = f"fit before {vspec.holdout_start}, scored from it"
    if fit_mask.sum() < 60 or (~fit_mask).sum() < 60:
        cut = int(round(n * (1.0 - vspec.holdout_fraction)))
        fit_mask = np.arange(n) < cut
        holdout = f"fit on the earlier {1 - vspec.holdout_fraction:.0%} of the overlap, scored on the rest"

    def _fit(rows: pl.DataFrame, target: np.ndarray) -> tuple[np.ndarray, list[float]]:
        clip = [float(rows.get_column(c).min()) for c in dd_names(vspec)]
        coef, *_ = np.linalg.lstsq(_design(rows, vspec, clip), np.log(target), rcond=None)
        return coef, clip

    coef_fit, clip_fit = _fit(ov.filter(pl.Series(fit_mask)), y[fit_mask])
    hold = ov.filter(pl.Series(~fit_mask))
    pred = _predict(_design(hold, vspec, clip_fit), coef_fit, vspec.floor)
    yh = y[~fit_mask]
    agree = float(np.mean(_bands(pred, rspec) == _bands(yh, rspec)))
    if vspec.calibration == "overlap":
        c, clip = _fit(ov, y)
        coef, fitted_on = [float(v) for v in c], f"overlap {dates[0]}..{dates[-1]}"
    else:
        coef, clip, fitted_on = list(vspec.coefficients), list(vspec.drawdown_clip), "spec (fixed coefficients)"
    ins = _corr(_predict(_design(ov, vspec, clip), coef, vspec.floor), y)
    return ProxyCalibration(coef, clip, names, n_overlap=n, n_fit=int(fit_mask.sum()), n_holdout=int((~fit_mask).sum()),
                            oos_corr=_corr(pred, yh), oos_mae=float(np.mean(np.abs(pred - yh))),
                            oos_band_agreement=agree, in_sample_corr=ins, holdout=holdout, fitted_on=fitted_on)


def build_market_context(index: pl.DataFrame, vix: pl.DataFrame | None, vspec: VixProxySpec,
                         rspec: RegimeSpec | None = None) -> tuple[pl.DataFrame, ProxyCalibration]:
    """Per index date: index_close, vix (real where it exists, else the proxy), vix_source, vix_real, vix_proxy
    and the proxy's inputs."""
    if vix is not None and vix.height and "vix" not in vix.columns:
        raise ProxyError("build_market_context: the VIX frame needs columns date, vix")
    inputs = vol_inputs(index, vspec)
    cal = calibrate(inputs, vix, vspec, rspec)
    names = proxy_inputs(vspec)
    ok = inputs.select(pl.all_horizontal([pl.col(n).is_not_null() for n in names])).to_series().to_numpy()
    proxy = np.full(inputs.height, np.nan)
    if ok.any():
        proxy[ok] = _predict(_design(inputs.filter(pl.Series(ok)), vspec, cal.drawdown_clip), cal.coefficients,
                             vspec.floor)
    out = inputs.with_columns(pl.Series("vix_proxy", proxy, dtype=pl.Float64).fill_nan(None))
    if vix is not None and vix.height:
        out = out.join(vix.select("date", pl.col("vix").cast(pl.Float64).alias("vix_real")), on="date", how="left")
    else:
        out = out.with_columns(pl.lit(None, dtype=pl.Float64).alias("vix_real"))
    out = out.with_columns(
        pl.coalesce("vix_real", "vix_proxy").alias("vix"),
        pl.when(pl.col("vix_real").is_not_null()).then(pl.lit("real")).otherwise(pl.lit("proxy")).alias("vix_source"),
    )
    # the first days have neither real VIX nor a full proxy window: backfill is not point-in-time, so drop them
    out = out.filter(pl.col("vix").is_not_null())
    return out.select("date", "index_close", "vix", "vix_source", "vix_real", "vix_proxy", *names), cal


# ------------------------------------------------------------------------------------------------ validation


def load_published(path: str | Path | None = None) -> pl.DataFrame:
    """The shipped published VIX figures: ``kind`` ('close' | 'year_mean'), ``period`` (ISO date or year),
    ``vix``, ``note``."""
    p = Path(path) if path is not None else PUBLISHED_PATH
    if not p.exists():
        raise ProxyError(f"published VIX table not found: {p}")
    df = pl.read_csv(p, schema_overrides={"period": pl.Utf8, "vix": pl.Float64})
    missing = [c for c in ("kind", "period", "vix") if c not in df.columns]
    if missing:
        raise ProxyError(f"{p}: missing columns {missing}")
    bad = df.filter(~pl.col("kind").is_in(["close", "year_mean"]))
    if bad.height:
        raise ProxyError(f"{p}: row {bad.row(0)} has kind {bad['kind'][0]!r}; expected 'close' or 'year_mean'")
    return df


def validate_proxy(ctx: pl.DataFrame, published: pl.DataFrame, rspec: RegimeSpec | None = None
                   ) -> tuple[pl.DataFrame, dict]:
    """The proxy (``ctx.vix_proxy``) against published VIX figures: one row per published figure
    (``kind, period, published, proxy, error, band_published, band_proxy``) and a summary
    (``stress_mae`` over the closes, ``year_mean_mae``, ``band_agreement`` over the closes)."""
    rspec = rspec or RegimeSpec()
    px = ctx.select("date", "vix_proxy")
    closes = (published.filter(pl.col("kind") == "close")
              .with_columns(pl.col("period").str.to_date().alias("date"))
              .join(px, on="date", how="left").rename({"vix_proxy": "proxy"}))
    years = published.filter(pl.col("kind") == "year_mean").with_columns(pl.col("period").cast(pl.Int32).alias("y"))
    ymean = px.group_by(pl.col("date").dt.year().cast(pl.Int32).alias("y")).agg(
        pl.col("vix_proxy").mean().alias("proxy"))
    years = years.join(ymean, on="y", how="left")
    cols = ["kind", "period", pl.col("vix").alias("published"), "proxy"]
    table = pl.concat([closes.select(cols), years.select(cols)], how="vertical_relaxed").with_columns(
        (pl.col("proxy") - pl.col("published")).alias("error"),
        vix_band(pl.col("published"), rspec).alias("band_published"),
        pl.when(pl.col("proxy").is_null()).then(None).otherwise(vix_band(pl.col("proxy"), rspec)).alias("band_proxy"),
    ).with_columns(pl.col("proxy").round(2), pl.col("error").round(2))
    c = table.filter((pl.col("kind") == "close") & pl.col("proxy").is_not_null())
    y = table.filter((pl.col("kind") == "year_mean") & pl.col("proxy").is_not_null())
    summary = {
        "stress_dates": c.height,
        "stress_mae": float(c["error"].abs().mean()) if c.height else None,
        "stress_band_agreement": float((c["band_published"] == c["band_proxy"]).mean()) if c.height else None,
        "year_means": y.height,
        "year_mean_mae": float(y["error"].abs().mean()) if y.height else None,
        "missing": table.filter(pl.col("proxy").is_null())["period"].to_list(),
    }
    return table, summary
