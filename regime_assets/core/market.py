"""Market context: index close, VIX, and a calibrated VIX proxy where real VIX is missing.

The proxy is an affine map of three realized-volatility measures of the index, each computed from index
returns up to and including day t (point-in-time):

    proxy_t = a + b1 * rv_short_t + b2 * rv_long_t + b3 * ewma_t

with rv_w the annualised (x sqrt(252) x 100) standard deviation of the last w daily log returns and ewma the
RiskMetrics volatility with decay lambda. The coefficients are fitted by least squares on the dates where real
VIX exists. ``calibrate`` fits them on the earlier part of the overlap and reports the out-of-sample
correlation and MAE on the later part. By default (``calibration: fixed``) the coefficients in the spec are
used, so every proxy value depends on index data up to t only; ``calibration: overlap`` refits them on the
data's own overlap (documented as not strictly point-in-time before the overlap's end).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from regime_assets.spec import VixProxySpec

ANNUAL = float(np.sqrt(252.0)) * 100.0
PROXY_INPUTS = ("rv_short", "rv_long", "ewma")


def vol_inputs(index: pl.DataFrame, vspec: VixProxySpec) -> pl.DataFrame:
    """Per date: the index's realized-vol inputs of the proxy (annualised, in VIX points)."""
    idx = index.sort("date").select("date", pl.col("close").cast(pl.Float64).alias("index_close"))
    r = pl.col("index_close").log().diff()
    out = idx.with_columns(r.alias("_r")).with_columns(
        (pl.col("_r").rolling_std(vspec.short_window) * ANNUAL).alias("rv_short"),
        (pl.col("_r").rolling_std(vspec.long_window) * ANNUAL).alias("rv_long"),
        ((pl.col("_r").fill_null(0.0) ** 2).ewm_mean(alpha=1.0 - vspec.ewma_lambda, adjust=False).sqrt() * ANNUAL)
        .alias("ewma"),
    )
    # the EWMA needs a warm-up too: blank it where the long window is not yet full
    out = out.with_columns(pl.when(pl.col("rv_long").is_null()).then(None).otherwise(pl.col("ewma")).alias("ewma"))
    return out.drop("_r")


@dataclass
class ProxyCalibration:
    coefficients: list[float]  # intercept, rv_short, rv_long, ewma
    n_overlap: int = 0
    n_fit: int = 0
    n_holdout: int = 0
    oos_corr: float | None = None
    oos_mae: float | None = None
    in_sample_corr: float | None = None
    fitted_on: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    design = np.column_stack([np.ones(len(x)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coef


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _apply(x: np.ndarray, coef: np.ndarray | list[float]) -> np.ndarray:
    c = np.asarray(coef, dtype=float)
    return c[0] + x @ c[1:]


def calibrate(inputs: pl.DataFrame, vix: pl.DataFrame | None, vspec: VixProxySpec) -> ProxyCalibration:
    """Fit the affine proxy on the overlap of ``inputs`` (vol_inputs) and real ``vix`` (date, vix).

    The out-of-sample figures always come from a fit on the earlier part of the overlap, scored on the later
    part. With ``calibration == "fixed"`` the spec's coefficients are used (and scored on the whole overlap);
    with ``"overlap"`` the fit on the whole overlap is used.
    """
    fixed = list(vspec.coefficients)
    if vix is None or vix.height == 0:
        return ProxyCalibration(fixed, notes=["no real VIX: the spec's coefficients"], fitted_on="spec")
    ov = inputs.join(vix.select("date", pl.col("vix").cast(pl.Float64)), on="date", how="inner").drop_nulls(
        list(PROXY_INPUTS) + ["vix"]).sort("date")
    n = ov.height
    if n < 60:
        return ProxyCalibration(fixed, n_overlap=n, fitted_on="spec",
                                notes=[f"overlap of {n} days is too short to calibrate: the spec's coefficients"])
    x = ov.select(PROXY_INPUTS).to_numpy()
    y = ov["vix"].to_numpy()
    cut = int(round(n * (1.0 - vspec.holdout_fraction)))
    coef_fit = _lstsq(x[:cut], y[:cut])
    pred = _apply(x[cut:], coef_fit)
    oos_corr = _corr(pred, y[cut:])
    oos_mae = float(np.mean(np.abs(pred - y[cut:])))
    d0, d1 = ov["date"][0], ov["date"][-1]
    if vspec.calibration == "overlap":
        coef = [float(c) for c in _lstsq(x, y)]
        fitted_on = f"overlap {d0}..{d1}"
    else:
        coef = fixed
        fitted_on = "spec (fixed coefficients)"
    ins = _corr(_apply(x, coef), y)
    return ProxyCalibration(coef, n_overlap=n, n_fit=cut, n_holdout=n - cut, oos_corr=oos_corr, oos_mae=oos_mae,
                            in_sample_corr=ins, fitted_on=fitted_on)


def build_market_context(index: pl.DataFrame, vix: pl.DataFrame | None,
                         vspec: VixProxySpec) -> tuple[pl.DataFrame, ProxyCalibration]:
    """Per index date: index_close, vix (real where it exists, else the proxy), vix_source, vix_real, vix_proxy."""
    inputs = vol_inputs(index, vspec)
    cal = calibrate(inputs, vix, vspec)
    c = cal.coefficients
    proxy = (pl.lit(c[0]) + pl.col("rv_short") * c[1] + pl.col("rv_long") * c[2] + pl.col("ewma") * c[3])
    # a VIX reading below ~9 has never been observed; keep the proxy in a plausible range
    out = inputs.with_columns(proxy.clip(lower_bound=vspec.floor).alias("vix_proxy"))
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
    return out.select("date", "index_close", "vix", "vix_source", "vix_real", "vix_proxy",
                      *PROXY_INPUTS), cal
