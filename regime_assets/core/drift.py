"""Drift of the current market against the production model's reference window.

Three components, each in [0, 1]:

* **feature** -- per feature ``f_*`` the population stability index on the reference's quantile bins
  (``drift.psi_bins`` bins, deciles by default)::

      PSI = sum_b (c_b - r_b) * ln(c_b / r_b)

  with ``r_b`` / ``c_b`` the reference / current share of bin ``b`` (floored at ``PSI_EPSILON`` so empty bins
  stay finite; nulls and NaN dropped). Bins are ``(-inf, q_1], (q_1, q_2], ..., (q_{k-1}, inf)`` on the
  reference quantiles ``q_i = Q(i / psi_bins)`` (duplicates merged). A feature's level is ``major`` when
  ``PSI >= psi_major``, ``moderate`` when ``PSI >= psi_moderate``, else ``none``. The component is the mean
  over features of ``min(PSI / psi_major, 1)``; features without data in either window are left out.
  The two-sample KS statistic (as ``scipy.stats.ks_2samp``) is reported beside PSI and does not enter the score.
* **regime** -- total variation distance of the regime shares: ``0.5 * sum_r |cur_r - ref_r|`` over REGIMES.
* **prediction** -- total variation distance of the production model's predicted class shares (argmax of the
  class probabilities, or the predicted classes) on the current vs the reference window.

Calibration against the reference's own windows (``drift.calibration: reference_windows``, the default).
A raw statistic of a few weeks against years is large even in a calm market: four weeks sit in one corner of
any slow feature's distribution (VIX level, 200-day trend) and in one or two regimes. So each statistic is
compared with what the *reference itself* shows for windows of the same length: the reference is cut into
consecutive ``drift.current_weeks``-week windows (a window with fewer than half the median rows is dropped),
the same statistic is computed for each window against the whole reference, and ``q`` is its
``drift.null_quantile`` quantile (the ``null``). The calibrated value is the excess over that null::

    excess(x) = min(max(x / max(q, floor) - 1, 0), 1)

0 while the current window looks like an ordinary window of the reference, 1 at twice the null quantile or more.
Per feature two statistics are calibrated so: ``PSI`` (``floor = psi_moderate``) and the mean shift
``z = |mean_cur - mean_ref| / sd_ref`` (``floor = drift.z_floor``) -- PSI on reference deciles saturates once a
window sits in one or two bins, which an ordinary few weeks of a slow feature already do, so it cannot tell
"in the reference's calm corner" from "far beyond anything the reference saw"; the mean shift can. A feature's
excess is the larger of the two and the feature component is the mean excess over features; the regime component uses the regime TVD with ``floor = drift.tvd_floor``; the prediction component
uses the prediction TVD of the validation predictions' windows (when their dates are given) with the same floor.
A component whose reference yields fewer than ``drift.min_null_windows`` windows falls back to its raw value
(``min(PSI / psi_major, 1)`` averaged, or the TVD). ``drift.calibration: none`` gives the raw components.

Overall::

    score = sum_c w_c * s_c / sum_c w_c      (c over the available components, w = drift.score_weights)

Without predictions (no production model) the prediction component is 0 and unavailable: its weight is
redistributed over the other components in proportion to their weights. If the available weights sum to 0,
the score is 0. The score is in [0, 1]; ``drift.retrain_threshold`` compares against it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from regime_assets.spec import CLASSES, REGIMES, DriftSpec

PSI_EPSILON = 1e-4
LEVELS = ("none", "moderate", "major")
FEATURE_TABLE_SCHEMA = {"feature": pl.Utf8, "psi": pl.Float64, "ks": pl.Float64, "level": pl.Utf8,
                        "null_psi": pl.Float64, "excess": pl.Float64}


class DriftError(ValueError):
    """Inputs the drift report cannot use; the message names what is wrong."""


def _clean(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def _ecdf_at_values(sorted_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted sample and its right-continuous ECDF at them."""
    last = np.r_[sorted_x[1:] != sorted_x[:-1], True]
    return sorted_x[last], (np.flatnonzero(last) + 1) / sorted_x.size


def _psi_sorted(rs: np.ndarray, cs: np.ndarray, bins: int, eps: float) -> float:
    if rs.size == 0 or cs.size == 0:
        return float("nan")
    edges = np.unique(np.quantile(rs, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    # bins (-inf, e1], (e1, e2], ..., (e_last, inf): cumulative counts of values <= each edge
    r = np.diff(np.r_[0, np.searchsorted(rs, edges, side="right"), rs.size]) / rs.size
    c = np.diff(np.r_[0, np.searchsorted(cs, edges, side="right"), cs.size]) / cs.size
    r = np.maximum(r, eps)
    c = np.maximum(c, eps)
    return float(np.sum((c - r) * np.log(c / r)))


def _ks_sorted(rs: np.ndarray, cs: np.ndarray) -> float:
    """sup |F_r - F_c| over the pooled sample (the two-sample KS statistic), on sorted inputs."""
    if rs.size == 0 or cs.size == 0:
        return float("nan")
    rv, rf = _ecdf_at_values(rs)
    cv, cf = _ecdf_at_values(cs)
    d_r = np.abs(rf - np.searchsorted(cs, rv, side="right") / cs.size).max()
    d_c = np.abs(np.searchsorted(rs, cv, side="right") / rs.size - cf).max()
    return float(max(d_r, d_c))


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10, eps: float = PSI_EPSILON) -> float:
    """Population stability index of ``current`` vs ``reference`` on the reference's quantile bins.

    NaN/null values are dropped; NaN is returned when either sample is then empty.
    """
    if bins < 2:
        raise DriftError(f"psi: bins must be >= 2 (got {bins})")
    return _psi_sorted(np.sort(_clean(reference)), np.sort(_clean(current)), bins, eps)


def ks(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic, as ``scipy.stats.ks_2samp`` (NaN/null dropped; NaN when
    either sample is empty)."""
    return _ks_sorted(np.sort(_clean(reference)), np.sort(_clean(current)))


def _level(value: float, dspec: DriftSpec) -> str:
    if not np.isfinite(value):
        return "none"
    if value >= dspec.psi_major:
        return "major"
    if value >= dspec.psi_moderate:
        return "moderate"
    return "none"


def _column(df: pl.DataFrame, name: str) -> np.ndarray:
    return df.get_column(name).cast(pl.Float64).to_numpy()


def _tvd(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum())


def _regime_shares(df: pl.DataFrame, which: str) -> np.ndarray:
    reg = df.get_column("regime").drop_nulls()
    bad = sorted(set(reg.unique().to_list()) - set(REGIMES))
    if bad:
        raise DriftError(f"drift_report: {which} frame has unknown regime values {bad}; expected {list(REGIMES)}")
    counts = reg.value_counts()
    m = dict(zip(counts.get_column("regime").to_list(), counts.get_column("count").to_list()))
    arr = np.array([m.get(r, 0) for r in REGIMES], dtype=np.float64)
    total = arr.sum()
    return arr / total if total > 0 else arr


def _class_codes(pred: np.ndarray, which: str = "ref_pred") -> np.ndarray:
    """Class index per row (argmax of probabilities, or classes as names or indices)."""
    a = np.asarray(pred)
    if a.ndim == 2:
        if a.shape[1] != len(CLASSES):
            raise DriftError(f"drift_report: {which} probabilities need {len(CLASSES)} columns {list(CLASSES)}, "
                             f"got shape {a.shape}")
        idx = np.argmax(a, axis=1)
    elif a.ndim == 1:
        if a.dtype.kind in "iu":
            idx = a.astype(np.int64)
        elif a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                raise DriftError(f"drift_report: {which} predicted classes must be integer indices into {CLASSES}")
            idx = a.astype(np.int64)
        else:
            lookup = {c: i for i, c in enumerate(CLASSES)}
            bad = sorted({str(x) for x in a.tolist() if x not in lookup})
            if bad:
                raise DriftError(f"drift_report: {which} has unknown classes {bad}; expected {list(CLASSES)}")
            idx = np.array([lookup[x] for x in a.tolist()], dtype=np.int64) if a.size else np.zeros(0, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(CLASSES)):
            raise DriftError(f"drift_report: {which} class indices must be in 0..{len(CLASSES) - 1}")
    else:
        raise DriftError(f"drift_report: {which} must be 1-D classes or 2-D probabilities, got {a.ndim}-D")
    return idx


def _class_shares(pred: np.ndarray, which: str) -> np.ndarray:
    idx = _class_codes(pred, which)
    counts = np.bincount(idx, minlength=len(CLASSES)).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def _date_range(df: pl.DataFrame) -> tuple[str | None, str | None]:
    if "date" not in df.columns or df.height == 0:
        return None, None
    d = df.get_column("date")
    return str(d.min()), str(d.max())


# ----------------------------------------------------------------------------------------------- calibration


def window_ids(dates: Any, weeks: int) -> np.ndarray:
    """Consecutive ``weeks``-week windows of a date column (0, 1, ... from its first date); -1 for windows with
    fewer than half the median rows (the ragged ends)."""
    d = pl.Series(dates).cast(pl.Date).to_physical().cast(pl.Int64).to_numpy()
    if d.size == 0:
        return np.zeros(0, dtype=np.int64)
    ids = (d - d.min()) // (7 * int(weeks))
    counts = np.bincount(ids)
    med = np.median(counts[counts > 0])
    keep = counts >= 0.5 * med
    return np.where(keep[ids], ids, -1)


def _psi_by_window(values: np.ndarray, ids: np.ndarray, bins: int, eps: float) -> np.ndarray:
    """PSI of every window (``ids`` >= 0) of ``values`` against all of ``values``, on the same quantile bins as
    ``psi``; NaN for a window without finite values."""
    ok = np.isfinite(values)
    x, w = values[ok], ids[ok]
    n_win = int(ids.max()) + 1 if ids.size and ids.max() >= 0 else 0
    if x.size == 0 or n_win == 0:
        return np.full(n_win, np.nan)
    rs = np.sort(x)
    edges = np.unique(np.quantile(rs, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    nb = edges.size + 1
    r = np.diff(np.r_[0, np.searchsorted(rs, edges, side="right"), rs.size]) / rs.size
    b = np.searchsorted(edges, x, side="left")  # (e_k, e_k+1] -> k, as the cumulative counts above
    sel = w >= 0
    counts = np.bincount(w[sel] * nb + b[sel], minlength=n_win * nb).reshape(n_win, nb).astype(np.float64)
    tot = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.maximum(counts / tot, eps)
        out = np.sum((c - np.maximum(r, eps)) * np.log(c / np.maximum(r, eps)), axis=1)
    out[tot[:, 0] == 0] = np.nan
    return out


def _z_by_window(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """|mean of each window - mean of all| / sd of all (NaN for a window without finite values)."""
    ok = np.isfinite(values)
    x, w = values[ok], ids[ok]
    n_win = int(ids.max()) + 1 if ids.size and ids.max() >= 0 else 0
    if x.size < 2 or n_win == 0:
        return np.full(n_win, np.nan)
    sel = w >= 0
    sums = np.bincount(w[sel], weights=x[sel], minlength=n_win)
    cnt = np.bincount(w[sel], minlength=n_win).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(sums / cnt - x.mean()) / _sd(x)


def _sd(x: np.ndarray) -> float:
    sd = float(np.std(x))
    return sd if sd > 0 else float("inf")


def _z(ref: np.ndarray, cur: np.ndarray) -> float:
    if ref.size < 2 or cur.size == 0:
        return float("nan")
    return float(abs(cur.mean() - ref.mean()) / _sd(ref))


def _shares_by_window(codes: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    sel = (ids >= 0) & (codes >= 0)
    n_win = int(ids.max()) + 1 if ids.size and ids.max() >= 0 else 0
    counts = np.bincount(ids[sel] * k + codes[sel], minlength=n_win * k).reshape(n_win, k).astype(np.float64)
    tot = counts.sum(axis=1, keepdims=True)
    keep = tot[:, 0] > 0
    return counts[keep] / tot[keep]


def excess(x: float, q: float, floor: float) -> float:
    """``min(max(x / max(q, floor) - 1, 0), 1)``: how far ``x`` exceeds the null quantile ``q``."""
    if not np.isfinite(x):
        return float("nan")
    base = max(q, floor) if np.isfinite(q) else floor
    return float(min(max(x / base - 1.0, 0.0), 1.0))


def _null_quantile(stats_: np.ndarray, dspec: DriftSpec) -> tuple[float, int]:
    v = stats_[np.isfinite(stats_)]
    if v.size < dspec.min_null_windows:
        return float("nan"), int(v.size)
    return float(np.quantile(v, dspec.null_quantile)), int(v.size)


def drift_report(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: list[str],
    dspec: DriftSpec,
    ref_pred: np.ndarray | None = None,
    cur_pred: np.ndarray | None = None,
    ref_pred_dates: Any = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Per-feature PSI/KS table (``feature, psi, ks, level``, most drifted first) and a summary dict.

    ``ref_pred`` are the production model's predictions (class probabilities ``(n, 3)`` in CLASSES order, or
    classes as names or indices) on its own validation data, ``cur_pred`` on the current window; the two need
    not have the same length. Either being None makes the prediction component unavailable. ``ref_pred_dates``
    (one date per ``ref_pred`` row) lets the prediction component be calibrated on the validation windows.

    The summary holds ``feature_score, regime_score, prediction_score, score, weights`` (the effective ones),
    ``prediction_available, above_threshold, top_features, n_features, n_moderate, n_major, n_reference,
    n_current, regime_shares_reference, regime_shares_current, prediction_shares_reference,
    prediction_shares_current`` and the windows' dates.
    """
    for which, df in (("reference", reference), ("current", current)):
        missing = [c for c in [*features, "regime"] if c not in df.columns]
        if missing:
            raise DriftError(f"drift_report: {which} frame is missing columns {missing[:10]}")
        if df.height == 0:
            raise DriftError(f"drift_report: the {which} window has no rows")
    if (ref_pred is None) != (cur_pred is None):
        ref_pred = cur_pred = None  # one side alone cannot be compared
    for which, pred in (("ref_pred", ref_pred), ("cur_pred", cur_pred)):
        if pred is not None and len(pred) == 0:
            raise DriftError(f"drift_report: {which} has no rows")

    calibrate = dspec.calibration == "reference_windows" and "date" in reference.columns
    ids = window_ids(reference.get_column("date"), dspec.current_weeks) if calibrate else None
    psis: list[float] = []
    kss: list[float] = []
    nulls: list[float] = []
    z_exc: list[float] = []
    n_null = 0
    for f in features:
        col = _column(reference, f)
        rs, cs = np.sort(_clean(col)), np.sort(_clean(_column(current, f)))
        psis.append(_psi_sorted(rs, cs, dspec.psi_bins, PSI_EPSILON))
        kss.append(_ks_sorted(rs, cs))
        if ids is not None:
            q, n_null = _null_quantile(_psi_by_window(col, ids, dspec.psi_bins, PSI_EPSILON), dspec)
            qz, _ = _null_quantile(_z_by_window(col, ids), dspec)
            nulls.append(q)
            z_exc.append(excess(_z(rs, cs), qz, dspec.z_floor) if np.isfinite(qz) else float("nan"))
        else:
            nulls.append(float("nan"))
            z_exc.append(float("nan"))
    psi_arr = np.array(psis, dtype=np.float64)
    null_arr = np.array(nulls, dtype=np.float64)
    feat_cal = calibrate and np.isfinite(null_arr).any()
    if feat_cal:
        exc = np.array([max(excess(p, q, dspec.psi_moderate), z if np.isfinite(z) else 0.0)
                        for p, q, z in zip(psi_arr, null_arr, z_exc)])
        exc[~np.isfinite(psi_arr)] = np.nan
    else:
        exc = np.minimum(psi_arr / dspec.psi_major, 1.0)
    table = (
        pl.DataFrame(
            {
                "feature": list(features),
                "psi": [None if not np.isfinite(v) else v for v in psis],
                "ks": [None if not np.isfinite(v) else v for v in kss],
                "level": [_level(v, dspec) for v in psis],
                "null_psi": [None if not np.isfinite(v) else v for v in nulls],
                "excess": [None if not np.isfinite(v) else float(v) for v in exc],
            },
            schema=FEATURE_TABLE_SCHEMA,
        )
        .sort(["excess", "psi", "feature"], descending=[True, True, False], nulls_last=True)
    )

    finite = psi_arr[np.isfinite(psi_arr)]
    feature_raw = float(np.mean(np.minimum(finite / dspec.psi_major, 1.0))) if finite.size else 0.0
    exc_f = exc[np.isfinite(exc)]
    feature_score = float(np.mean(exc_f)) if exc_f.size else 0.0
    ref_shares, cur_shares = _regime_shares(reference, "reference"), _regime_shares(current, "current")
    regime_raw = _tvd(ref_shares, cur_shares)
    regime_null = float("nan")
    if calibrate:
        codes = reference.get_column("regime").replace_strict(
            {r: i for i, r in enumerate(REGIMES)}, default=-1, return_dtype=pl.Int64).fill_null(-1).to_numpy()
        win = _shares_by_window(codes, ids, len(REGIMES))
        regime_null, _ = _null_quantile(np.array([_tvd(ref_shares, w) for w in win]), dspec)
    regime_score = excess(regime_raw, regime_null, dspec.tvd_floor) if np.isfinite(regime_null) else regime_raw
    pred_available = ref_pred is not None
    prediction_raw = 0.0
    pred_null = float("nan")
    if pred_available:
        ref_cls, cur_cls = _class_shares(ref_pred, "ref_pred"), _class_shares(cur_pred, "cur_pred")
        prediction_raw = _tvd(ref_cls, cur_cls)
        if dspec.calibration == "reference_windows" and ref_pred_dates is not None and len(ref_pred_dates) == len(
                ref_pred):
            codes = _class_codes(np.asarray(ref_pred))
            pids = window_ids(ref_pred_dates, dspec.current_weeks)
            win = _shares_by_window(codes.astype(np.int64), pids, len(CLASSES))
            pred_null, _ = _null_quantile(np.array([_tvd(ref_cls, w) for w in win]), dspec)
        prediction_score = (excess(prediction_raw, pred_null, dspec.tvd_floor) if np.isfinite(pred_null)
                            else prediction_raw)
    else:
        ref_cls = cur_cls = None
        prediction_score = 0.0

    comps = {"feature": feature_score, "regime": regime_score, "prediction": prediction_score}
    raw_w = dict(dspec.score_weights)
    if not pred_available:
        raw_w["prediction"] = 0.0
    wsum = sum(raw_w.values())
    weights = {k: (v / wsum if wsum > 0 else 0.0) for k, v in raw_w.items()}
    score = float(np.clip(sum(weights[k] * comps[k] for k in comps), 0.0, 1.0))

    ref_start, ref_end = _date_range(reference)
    cur_start, cur_end = _date_range(current)
    levels = table.get_column("level")
    summary: dict[str, Any] = {
        "feature_score": feature_score,
        "regime_score": regime_score,
        "prediction_score": prediction_score,
        "score": score,
        "weights": weights,
        "calibration": dspec.calibration if calibrate else "none",
        "null_windows": n_null,
        "raw": {"feature": feature_raw, "regime": regime_raw, "prediction": prediction_raw},
        "null_quantiles": {"feature_median": float(np.nanmedian(null_arr)) if np.isfinite(null_arr).any() else None,
                           "regime": regime_null if np.isfinite(regime_null) else None,
                           "prediction": pred_null if np.isfinite(pred_null) else None},
        "prediction_available": pred_available,
        "retrain_threshold": dspec.retrain_threshold,
        "above_threshold": score >= dspec.retrain_threshold,
        "top_features": table.filter(pl.col("psi").is_not_null() & (pl.col("excess") > 0)).head(dspec.top_features)
        .get_column("feature").to_list(),
        "n_features": len(features),
        "n_moderate": int((levels == "moderate").sum()),
        "n_major": int((levels == "major").sum()),
        "n_reference": reference.height,
        "n_current": current.height,
        "reference_start": ref_start,
        "reference_end": ref_end,
        "current_start": cur_start,
        "current_end": cur_end,
        "regime_shares_reference": dict(zip(REGIMES, ref_shares.round(6).tolist())),
        "regime_shares_current": dict(zip(REGIMES, cur_shares.round(6).tolist())),
        "prediction_shares_reference": None if ref_cls is None else dict(zip(CLASSES, ref_cls.round(6).tolist())),
        "prediction_shares_current": None if cur_cls is None else dict(zip(CLASSES, cur_cls.round(6).tolist())),
    }
    return table, summary


def select_windows(
    labeled: pl.DataFrame,
    as_of: dt.date,
    reference_start: dt.date,
    reference_end: dt.date,
    current_weeks: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(reference, current): reference = dates in [reference_start, min(reference_end, as_of)],
    current = dates in (as_of - current_weeks weeks, as_of]. Nothing after ``as_of`` is returned."""
    if "date" not in labeled.columns:
        raise DriftError("select_windows: frame has no 'date' column")
    if reference_start > reference_end:
        raise DriftError(f"select_windows: reference_start {reference_start} is after reference_end {reference_end}")
    if current_weeks < 1:
        raise DriftError(f"select_windows: current_weeks must be >= 1 (got {current_weeks})")
    ref_hi = min(reference_end, as_of)
    cur_lo = as_of - dt.timedelta(weeks=current_weeks)
    d = pl.col("date")
    reference = labeled.filter((d >= reference_start) & (d <= ref_hi))
    current = labeled.filter((d > cur_lo) & (d <= as_of))
    return reference, current
