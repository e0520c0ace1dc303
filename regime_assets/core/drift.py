"""Drift of the current weeks against the recent past: features, regime mix, predictions and a domain classifier.

The windows (which rows are the reference, which the current weeks) are chosen in ``core/monitoring.py``; this
module only compares two frames. Five statistics, each calibrated on the reference's own windows:

* **feature** -- per feature ``f_*`` three statistics of the current vs the reference sample (nulls/NaN dropped):
  the population stability index on the reference's quantile bins (``drift.psi_bins``, deciles)::

      PSI = sum_b (c_b - r_b) * ln(c_b / r_b)        (shares floored at PSI_EPSILON)

  the two-sample Kolmogorov-Smirnov statistic ``sup |F_c - F_r|`` (as ``scipy.stats.ks_2samp``), and the
  Wasserstein-1 distance normed by the reference's standard deviation, ``W1(c, r) / sd_r`` (as
  ``scipy.stats.wasserstein_distance`` / sd; it grows with "how far beyond the reference", where PSI and KS
  saturate once a window sits in one corner). A feature's level is ``major`` when ``PSI >= psi_major``,
  ``moderate`` when ``PSI >= psi_moderate``, else ``none``.
* **regime** -- total variation distance of the regime shares: ``0.5 * sum_r |cur_r - ref_r|`` over REGIMES.
* **prediction** -- total variation distance of the production model's predicted class shares (argmax of the
  class probabilities, or the predicted classes) on the current weeks vs on the reference rows it did not train on.
* **domain** -- a small LightGBM classifier told current rows from reference rows, cross-validated with folds
  by date (a date's rows are never split across folds); its out-of-fold AUROC. Only features whose windows are all
  at most ``drift.domain_max_window`` days enter it (a slow feature places any four weeks in one corner of the
  reference, and calendar features name the month: either would make every window separable).

Calibration (``drift.calibration: reference_windows``, the default). Four weeks against three years look
different even in a calm market, so each statistic is compared with what the *reference itself* shows for
windows of the same length: the reference is cut into consecutive ``drift.current_weeks``-week windows (a window
with fewer than half the median rows is dropped), the same statistic is computed for each window against the
whole reference (for the domain classifier: ``drift.domain_null_windows`` evenly spaced windows, each against the
rest of the reference), and ``q`` is its ``drift.null_quantile`` quantile (the ``null``). The calibrated value is
the excess over that null::

    excess(x) = min(max(x / max(q, floor) - 1, 0), 1)

0 while the current window looks like an ordinary window of the reference, 1 at twice the null quantile or more.
Floors: PSI ``psi_moderate``, KS ``drift.ks_floor``, Wasserstein ``drift.wasserstein_floor``, TVDs
``drift.tvd_floor``, AUROC - 0.5 ``drift.domain_floor`` (on ``AUROC - 0.5``). A feature's excess is the largest of
its three; the feature component is the mean excess over features. A component whose reference yields fewer than
``drift.min_null_windows`` windows falls back to its raw value (``min(PSI / psi_major, 1)`` averaged; the TVDs;
``max(2 * AUROC - 1, 0)``). ``drift.calibration: none`` gives the raw components.

Overall::

    score = sum_c w_c * s_c / sum_c w_c      (c over the available components, w = drift.score_weights)

Without predictions (no production model) the prediction component is unavailable, and without enough rows
(or with ``drift.domain_classifier: false``) the domain component is: their weights are redistributed over the
others in proportion to their weights. If the available weights sum to 0, the score is 0. The score is in
[0, 1]; ``drift.retrain_threshold`` compares against it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from regime_assets.spec import CLASSES, REGIMES, DriftSpec

PSI_EPSILON = 1e-4
LEVELS = ("none", "moderate", "major")
FEATURE_TABLE_SCHEMA = {"feature": pl.Utf8, "psi": pl.Float64, "ks": pl.Float64, "wasserstein": pl.Float64,
                        "level": pl.Utf8, "null_psi": pl.Float64, "null_ks": pl.Float64,
                        "null_wasserstein": pl.Float64, "excess": pl.Float64}


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


def _sd(x: np.ndarray) -> float:
    sd = float(np.std(x))
    return sd if sd > 0 else float("inf")


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


COMPONENTS = ("feature", "regime", "prediction", "domain")
CALENDAR_FEATURES = ("f_dow", "f_month", "f_vix_is_real")


def _window_ecdf_stats(values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(KS, W1 / sd) of every window (``ids`` >= 0) of ``values`` against all of ``values``; NaN for a window
    without finite values. Exact: a window's values are reference values, so both ECDFs step only at the
    reference's distinct values."""
    ok = np.isfinite(values)
    x, w = values[ok], ids[ok]
    n_win = int(ids.max()) + 1 if ids.size and ids.max() >= 0 else 0
    nan = np.full(n_win, np.nan)
    if x.size < 2 or n_win == 0:
        return nan, nan.copy()
    uniq, cnt = np.unique(x, return_counts=True)
    f_ref = np.cumsum(cnt) / x.size
    pos = np.searchsorted(uniq, x)
    sel = w >= 0
    u = uniq.size
    counts = np.bincount(w[sel] * u + pos[sel], minlength=n_win * u).reshape(n_win, u).astype(np.float64)
    tot = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.abs(np.cumsum(counts, axis=1) / tot - f_ref)
    ks_w = diff.max(axis=1)
    w1 = (diff[:, :-1] * np.diff(uniq)).sum(axis=1) / _sd(x) if u > 1 else np.zeros(n_win)
    empty = tot[:, 0] == 0
    ks_w[empty], w1[empty] = np.nan, np.nan
    return ks_w, w1


def wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance(current, reference) / sd(reference)`` (NaN/null dropped; NaN when
    either sample is empty; 0 for a constant reference and an equal current)."""
    from scipy.stats import wasserstein_distance

    r, c = _clean(reference), _clean(current)
    if r.size == 0 or c.size == 0:
        return float("nan")
    d = float(wasserstein_distance(c, r))
    return d / _sd(r) if d > 0 else 0.0


def domain_features(features: list[str], max_window: int) -> list[str]:
    """Features the domain classifier reads: every window in the name (``f_vol_ratio_5_10`` -> 5, 10) at most
    ``max_window`` days; calendar features and features without a window are left out."""
    import re

    out = []
    for f in features:
        if f in CALENDAR_FEATURES:
            continue
        nums = [int(n) for n in re.findall(r"_(\d+)", f)]
        if nums and max(nums) <= max_window:
            out.append(f)
    return out


def domain_auc(reference: pl.DataFrame, current: pl.DataFrame, features: list[str], dspec: DriftSpec,
               seed: int = 0) -> float:
    """Out-of-fold AUROC of a small LightGBM classifier told ``current`` (1) from ``reference`` (0) rows.

    Folds are drawn by date (``drift.domain_folds``), so a date's rows are all in one fold; the reference is
    subsampled to ``drift.domain_max_rows`` rows. NaN when a side has too few rows or dates for the folds."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    if not features or current.height < 20 or reference.height < 20:
        return float("nan")
    if reference.height > dspec.domain_max_rows:
        reference = reference.sample(dspec.domain_max_rows, seed=seed)
    x = np.vstack([reference.select(features).cast(pl.Float32).to_numpy(),
                   current.select(features).cast(pl.Float32).to_numpy()])
    y = np.r_[np.zeros(reference.height), np.ones(current.height)]
    days = np.r_[reference.get_column("date").to_physical().to_numpy(),
                 current.get_column("date").to_physical().to_numpy()]
    uniq, inv = np.unique(days, return_inverse=True)
    k = dspec.domain_folds
    fold = np.random.default_rng(seed).permutation(np.arange(uniq.size) % k)[inv]
    p = np.full(y.size, np.nan)
    for f in range(k):
        tr, te = fold != f, fold == f
        if len(np.unique(y[tr])) < 2 or not te.any():
            return float("nan")
        m = lgb.LGBMClassifier(n_estimators=dspec.domain_trees, num_leaves=15, learning_rate=0.1, subsample=0.8,
                               subsample_freq=1, colsample_bytree=0.5, min_child_samples=20, n_jobs=1,
                               verbose=-1, random_state=seed, is_unbalance=True)
        m.fit(x[tr], y[tr])
        p[te] = m.predict_proba(x[te])[:, 1]
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def _domain_null(reference: pl.DataFrame, ids: np.ndarray, features: list[str], dspec: DriftSpec,
                 seed: int) -> np.ndarray:
    valid = np.unique(ids[ids >= 0])
    if valid.size < 2:
        return np.zeros(0)
    pick = valid[np.unique(np.linspace(0, valid.size - 1, min(dspec.domain_null_windows, valid.size)).round()
                           .astype(int))]
    out = []
    for w in pick:
        inside = pl.Series(ids == w)
        out.append(domain_auc(reference.filter(~inside), reference.filter(inside), features, dspec, seed + int(w)))
    return np.array(out, dtype=np.float64)


def drift_report(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: list[str],
    dspec: DriftSpec,
    ref_pred: np.ndarray | None = None,
    cur_pred: np.ndarray | None = None,
    ref_pred_dates: Any = None,
    seed: int = 0,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Per-feature table (``feature, psi, ks, wasserstein, level, null_psi, null_ks, null_wasserstein, excess``,
    most drifted first) and a summary dict.

    ``ref_pred`` are the production model's predictions (class probabilities ``(n, 3)`` in CLASSES order, or
    classes as names or indices) on reference rows it did not train on, ``cur_pred`` on the current window; the
    two need not have the same length. Either being None makes the prediction component unavailable.
    ``ref_pred_dates`` (one date per ``ref_pred`` row) lets the prediction component be calibrated on its windows.

    The summary holds ``feature_score, regime_score, prediction_score, domain_score, score, weights`` (the
    effective ones), ``raw``, ``null_quantiles``, ``prediction_available, domain_available, above_threshold,
    top_features, n_features, n_moderate, n_major, n_reference, n_current``, the shares and the windows' dates.
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
    n = len(features)
    psis, kss, w1s = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    q_psi, q_ks, q_w1 = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    n_null = 0
    for i, f in enumerate(features):
        col = _column(reference, f)
        cur_col = _column(current, f)
        rs, cs = np.sort(_clean(col)), np.sort(_clean(cur_col))
        psis[i] = _psi_sorted(rs, cs, dspec.psi_bins, PSI_EPSILON)
        kss[i] = _ks_sorted(rs, cs)
        w1s[i] = wasserstein(rs, cs)
        if ids is not None:
            q_psi[i], n_null = _null_quantile(_psi_by_window(col, ids, dspec.psi_bins, PSI_EPSILON), dspec)
            k_w, w_w = _window_ecdf_stats(col, ids)
            q_ks[i], _ = _null_quantile(k_w, dspec)
            q_w1[i], _ = _null_quantile(w_w, dspec)
    feat_cal = calibrate and np.isfinite(q_psi).any()
    if feat_cal:
        exc = np.array([np.nanmax([excess(p, qp, dspec.psi_moderate), excess(k, qk, dspec.ks_floor),
                                   excess(w, qw, dspec.wasserstein_floor)])
                        if np.isfinite(p) else np.nan
                        for p, qp, k, qk, w, qw in zip(psis, q_psi, kss, q_ks, w1s, q_w1)])
    else:
        exc = np.minimum(psis / dspec.psi_major, 1.0)

    def _opt(a: np.ndarray) -> list[float | None]:
        return [None if not np.isfinite(v) else float(v) for v in a]

    table = (
        pl.DataFrame(
            {"feature": list(features), "psi": _opt(psis), "ks": _opt(kss), "wasserstein": _opt(w1s),
             "level": [_level(v, dspec) for v in psis], "null_psi": _opt(q_psi), "null_ks": _opt(q_ks),
             "null_wasserstein": _opt(q_w1), "excess": _opt(exc)},
            schema=FEATURE_TABLE_SCHEMA,
        )
        .sort(["excess", "psi", "feature"], descending=[True, True, False], nulls_last=True)
    )

    finite = psis[np.isfinite(psis)]
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

    dom_feats = domain_features(list(features), dspec.domain_max_window)
    domain_raw, domain_null, domain_score = float("nan"), float("nan"), 0.0
    wants_domain = dspec.domain_classifier and dspec.score_weights.get("domain", 0.0) > 0 and dom_feats
    if wants_domain and "date" in reference.columns and "date" in current.columns:
        domain_raw = domain_auc(reference, current, dom_feats, dspec, seed)
        if np.isfinite(domain_raw) and ids is not None:
            nulls = _domain_null(reference, ids, dom_feats, dspec, seed)
            domain_null, _ = _null_quantile(nulls, dspec)
        if np.isfinite(domain_raw):
            domain_score = (excess(domain_raw - 0.5, domain_null - 0.5, dspec.domain_floor)
                            if np.isfinite(domain_null) else max(2.0 * domain_raw - 1.0, 0.0))
    domain_available = bool(np.isfinite(domain_raw))

    comps = {"feature": feature_score, "regime": regime_score, "prediction": prediction_score,
             "domain": domain_score}
    raw_w = {c: float(dspec.score_weights.get(c, 0.0)) for c in COMPONENTS}
    if not pred_available:
        raw_w["prediction"] = 0.0
    if not domain_available:
        raw_w["domain"] = 0.0
    wsum = sum(raw_w.values())
    weights = {k: (v / wsum if wsum > 0 else 0.0) for k, v in raw_w.items()}
    score = float(np.clip(sum(weights[k] * comps[k] for k in comps), 0.0, 1.0))

    ref_start, ref_end = _date_range(reference)
    cur_start, cur_end = _date_range(current)
    levels = table.get_column("level")

    def _fin(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    summary: dict[str, Any] = {
        "feature_score": feature_score,
        "regime_score": regime_score,
        "prediction_score": prediction_score,
        "domain_score": domain_score,
        "score": score,
        "weights": weights,
        "calibration": dspec.calibration if calibrate else "none",
        "null_windows": n_null,
        "raw": {"feature": feature_raw, "regime": regime_raw, "prediction": prediction_raw,
                "domain_auc": _fin(domain_raw),
                "psi_mean": _fin(np.nanmean(psis)) if np.isfinite(psis).any() else None,
                "ks_mean": _fin(np.nanmean(kss)) if np.isfinite(kss).any() else None,
                "wasserstein_mean": _fin(np.nanmean(w1s)) if np.isfinite(w1s).any() else None},
        "null_quantiles": {"psi_median": _fin(np.nanmedian(q_psi)) if np.isfinite(q_psi).any() else None,
                           "ks_median": _fin(np.nanmedian(q_ks)) if np.isfinite(q_ks).any() else None,
                           "wasserstein_median": _fin(np.nanmedian(q_w1)) if np.isfinite(q_w1).any() else None,
                           "regime": _fin(regime_null), "prediction": _fin(pred_null),
                           "domain_auc": _fin(domain_null)},
        "domain_features": len(dom_feats),
        "prediction_available": pred_available,
        "domain_available": domain_available,
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
