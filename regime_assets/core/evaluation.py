"""Honest evaluation: metrics per model and regime with block-bootstrap intervals over dates.

Metrics (classes ``CLASSES``, predictions = argmax of ``p_sell, p_hold, p_buy``, ties to the lower index):

* ``accuracy``; ``balanced_accuracy`` = mean recall over the classes present in the true labels;
  ``macro_f1`` = mean F1 over the classes present in the true or predicted labels (as scikit-learn);
  ``log_loss`` = mean ``-ln p(true class)`` with probabilities renormalised and clipped at machine epsilon.
* ``ic`` (information coefficient) = per date the Spearman rank correlation of ``p_buy - p_sell`` with
  ``fwd_return`` across that date's rows (dates with fewer than ``MIN_IC_ROWS`` rows or no variation are left
  out), averaged over dates with equal weight.

Intervals: rows are grouped by date; a stationary bootstrap (``arch``; mean block ``block_length_days``,
``bootstrap_reps`` replicates, seed ``evaluation.seed``) resamples the ordered distinct dates of the evaluated
set, and a replicate gathers every row of the drawn dates. The replicates are matrix products of the draw counts
with per-date sufficient statistics (confusion counts, summed log loss, the per-date IC), never refits. Per regime
the bootstrap runs over the dates on which that regime has rows. The interval is the percentile interval at
``confidence``; it is null when the group has fewer than ``min_rows`` rows or fewer than 2 dates.

Baselines (rows with model ``baseline_majority`` and ``baseline_regime_prior``) are scored on the evaluated rows:
the majority class of the training labels as a one-hot prediction, and the training class frequencies within
each regime as probabilities (overall frequencies for a regime absent from training). Without training rows both
come from the evaluated rows themselves, which flatters them.
Rows with a null label are not evaluated.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from regime_assets.core.models import ModelError, encode_labels
from regime_assets.spec import CLASSES, REGIMES, EvaluationSpec

PROBA_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in CLASSES)
METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss")
ALL_METRICS: tuple[str, ...] = (*METRICS, "ic")
# the one table of metric names and their direction ("higher" or "lower" is better), shared with the walk-forward
METRIC_DIRECTIONS: dict[str, str] = {
    "accuracy": "higher", "balanced_accuracy": "higher", "macro_f1": "higher", "log_loss": "lower",
    "brier": "lower", "ece": "lower", "ic": "higher", "rank_ic": "higher", "ic_ir": "higher",
    "rank_ic_ir": "higher",
}
LOWER_IS_BETTER: frozenset[str] = frozenset(m for m, d in METRIC_DIRECTIONS.items() if d == "lower")


def improvement_sign(metric: str) -> float:
    """+1 when higher is better, -1 when lower is better: ``sign * (b - a)`` > 0 means b is better."""
    if metric not in METRIC_DIRECTIONS:
        raise EvaluationError(f"unknown metric '{metric}'; expected one of {list(METRIC_DIRECTIONS)}")
    return -1.0 if METRIC_DIRECTIONS[metric] == "lower" else 1.0
OVERALL = "overall"
BASELINE_MAJORITY = "baseline_majority"
BASELINE_REGIME_PRIOR = "baseline_regime_prior"
MIN_IC_ROWS = 3
K = len(CLASSES)
LONG_SCHEMA = {"model": pl.Utf8, "regime": pl.Utf8, "n": pl.Int64, "n_dates": pl.Int64, "metric": pl.Utf8,
               "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64}
PAIRED_SCHEMA = {"regime": pl.Utf8, "n": pl.Int64, "n_dates": pl.Int64, "metric": pl.Utf8, "value_a": pl.Float64,
                 "value_b": pl.Float64, "diff": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
                 "share_positive": pl.Float64}


class EvaluationError(ValueError):
    """A prediction frame that cannot be evaluated; the message names what is wrong."""


# ----------------------------------------------------------------------------------------------- metric kernels


def _labels(y) -> np.ndarray:
    try:
        return encode_labels(y if isinstance(y, pl.Series) else pl.Series("label", y), "evaluation labels")
    except ModelError as err:
        raise EvaluationError(str(err)) from None


def _proba(p, n: int, what: str = "probabilities") -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape != (n, K):
        raise EvaluationError(f"{what}: shape {p.shape}, expected ({n}, {K})")
    if not np.isfinite(p).all():
        bad = int(np.flatnonzero(~np.isfinite(p).all(axis=1))[0])
        raise EvaluationError(f"{what}: non-finite probability in row {bad}")
    return p


def _row_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    eps = np.finfo(np.float64).eps
    s = p.sum(axis=1)
    pt = p[np.arange(y.size), y] / np.where(s > 0, s, 1.0)
    return -np.log(np.clip(pt, eps, 1.0))


def _from_counts(C: np.ndarray, L: np.ndarray, metric: str) -> np.ndarray:
    """Metric from confusion counts ``C`` (..., K*K; true-major) and summed log loss ``L`` (...)."""
    C = C.reshape(*C.shape[:-1], K, K)
    n = C.sum(axis=(-1, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "log_loss":
            return np.where(n > 0, L / np.where(n > 0, n, 1), np.nan)
        tp = np.diagonal(C, axis1=-2, axis2=-1)
        if metric == "accuracy":
            return np.where(n > 0, tp.sum(-1) / np.where(n > 0, n, 1), np.nan)
        support = C.sum(axis=-1)
        if metric == "balanced_accuracy":
            has = support > 0
            rec = np.where(has, tp / np.where(has, support, 1), 0.0)
            k = has.sum(-1)
            return np.where(k > 0, rec.sum(-1) / np.where(k > 0, k, 1), np.nan)
        if metric == "macro_f1":
            denom = support + C.sum(axis=-2)
            has = denom > 0
            f1 = np.where(has, 2 * tp / np.where(has, denom, 1), 0.0)
            k = has.sum(-1)
            return np.where(k > 0, f1.sum(-1) / np.where(k > 0, k, 1), np.nan)
    raise EvaluationError(f"unknown metric '{metric}'; expected one of {list(ALL_METRICS)}")


def metrics(y_true, proba) -> dict[str, float]:
    """n, accuracy, balanced_accuracy, macro_f1, log_loss of (n, 3) probabilities against labels."""
    y = _labels(y_true)
    p = _proba(proba, y.size)
    pred = p.argmax(axis=1) if y.size else np.zeros(0, dtype=np.int64)
    C = np.bincount(y * K + pred, minlength=K * K).astype(np.float64)
    L = np.array(_row_log_loss(y, p).sum() if y.size else 0.0)
    out: dict[str, float] = {"n": int(y.size)}
    for m in METRICS:
        out[m] = float(_from_counts(C, L, m))
    return out


# ----------------------------------------------------------------------------------------------- bootstrap


def _alpha(espec: EvaluationSpec) -> tuple[float, float]:
    a = (1.0 - espec.confidence) / 2.0
    return a, 1.0 - a


def bootstrap_counts(n_dates: int, espec: EvaluationSpec, reps: int | None = None) -> np.ndarray:
    """(reps, n_dates) draw counts of a stationary bootstrap over ordered dates (seeded by ``espec.seed``)."""
    from arch.bootstrap import StationaryBootstrap

    reps = int(reps or espec.bootstrap_reps)
    M = np.zeros((reps, n_dates))
    if n_dates == 0:
        return M
    bs = StationaryBootstrap(espec.block_length_days, np.arange(n_dates), seed=espec.seed)
    for r, (pos, _) in enumerate(bs.bootstrap(reps)):
        M[r] = np.bincount(pos[0], minlength=n_dates)
    return M


def _ci(values: np.ndarray, espec: EvaluationSpec) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, _alpha(espec))
    return float(lo), float(hi)


class _Group:
    """Per-date sufficient statistics of one set of rows (one model, one regime)."""

    def __init__(self, day: np.ndarray, y: np.ndarray, p: np.ndarray, ret: np.ndarray | None) -> None:
        self.dates, didx = np.unique(day, return_inverse=True)
        self.D = self.dates.size
        self.n = y.size
        pred = p.argmax(axis=1)
        self.C = np.bincount(didx * K * K + y * K + pred, minlength=self.D * K * K).reshape(self.D, K * K)
        self.C = self.C.astype(np.float64)
        self.L = np.bincount(didx, weights=_row_log_loss(y, p), minlength=self.D)
        self.ic = None
        if ret is not None:
            self.ic, self.ic_rows = _per_date_ic(didx, self.D, p[:, 2] - p[:, 0], ret)

    def value(self, metric: str) -> float:
        if metric == "ic":
            ok = np.isfinite(self.ic)
            return float(self.ic[ok].mean()) if ok.any() else float("nan")
        return float(_from_counts(self.C.sum(0), self.L.sum(), metric))

    def replicates(self, metric: str, M: np.ndarray) -> np.ndarray:
        if metric == "ic":
            ok = np.isfinite(self.ic)
            cnt = M[:, ok].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(cnt > 0, (M[:, ok] @ self.ic[ok]) / np.where(cnt > 0, cnt, 1), np.nan)
        return _from_counts(M @ self.C, M @ self.L, metric)


def _per_date_ic(didx: np.ndarray, D: int, score: np.ndarray, ret: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlation of score and return within each date (NaN where undefined); rows used per date."""
    ok = np.isfinite(ret) & np.isfinite(score)
    frame = pl.DataFrame({"d": didx[ok], "s": score[ok], "r": ret[ok]})
    agg = (frame.group_by("d")
           .agg(ic=pl.corr("s", "r", method="spearman"), rows=pl.len())
           .with_columns(ic=pl.when(pl.col("rows") >= MIN_IC_ROWS).then(pl.col("ic")).otherwise(None)))
    ic = np.full(D, np.nan)
    rows = np.zeros(D, dtype=np.int64)
    d = agg["d"].to_numpy()
    ic[d] = agg["ic"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    rows[d] = agg["rows"].to_numpy()
    ic[~np.isfinite(ic)] = np.nan
    return ic, rows


# ----------------------------------------------------------------------------------------------- frames


def _prepare(frame: pl.DataFrame, what: str, need_model: bool = False) -> pl.DataFrame:
    need = ["date", "regime", "label", *PROBA_COLUMNS] + (["model"] if need_model else [])
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise EvaluationError(f"{what}: missing columns {missing}")
    out = frame.filter(pl.col("label").is_not_null())
    if out["date"].null_count():
        raise EvaluationError(f"{what}: {out['date'].null_count()} rows with a null date")
    if out["regime"].null_count():
        raise EvaluationError(f"{what}: {out['regime'].null_count()} rows with a null regime")
    return out


def _arrays(df: pl.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    day = df["date"].cast(pl.Date).to_physical().to_numpy().astype(np.int64)
    y = _labels(df["label"])
    p = _proba(df.select(PROBA_COLUMNS).to_numpy(), df.height, what)
    ret = None
    if "fwd_return" in df.columns:
        ret = df["fwd_return"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    return day, y, p, ret


def _regime_order(values: list[str]) -> list[str]:
    known = [r for r in REGIMES if r in values]
    return known + sorted(v for v in values if v not in REGIMES)


def class_priors(train: pl.DataFrame) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    """Majority class code, overall class frequencies and per-regime class frequencies of labelled rows."""
    t = train.filter(pl.col("label").is_not_null())
    if t.height == 0:
        raise EvaluationError("baselines: no labelled training rows")
    y = _labels(t["label"])
    overall = np.bincount(y, minlength=K) / y.size
    per = {}
    regimes = t["regime"].to_numpy() if "regime" in t.columns else np.array([OVERALL] * t.height)
    for r in np.unique(regimes.astype(str)):
        yr = y[regimes == r]
        per[str(r)] = np.bincount(yr, minlength=K) / yr.size
    return int(np.argmax(overall)), overall, per


def baseline_predictions(rows: pl.DataFrame, train: pl.DataFrame | None = None) -> pl.DataFrame:
    """``rows`` twice with model ``baseline_majority`` / ``baseline_regime_prior`` and their p_* columns."""
    base = rows.drop([c for c in (*PROBA_COLUMNS, "model") if c in rows.columns])
    majority, overall, per = class_priors(train if train is not None else rows)
    onehot = np.zeros(K)
    onehot[majority] = 1.0
    regimes = base["regime"].cast(pl.Utf8).to_numpy().astype(str)
    prior = np.tile(overall, (base.height, 1))
    for r, f in per.items():
        prior[regimes == r] = f
    out = []
    for name, p in ((BASELINE_MAJORITY, np.tile(onehot, (base.height, 1))), (BASELINE_REGIME_PRIOR, prior)):
        out.append(base.with_columns(
            model=pl.lit(name), **{c: pl.Series(c, p[:, i], dtype=pl.Float64) for i, c in enumerate(PROBA_COLUMNS)}))
    return pl.concat(out, how="vertical_relaxed")


def _group_rows(model: str, regime: str, g: _Group, espec: EvaluationSpec, M: np.ndarray | None) -> list[dict]:
    out = []
    names = list(METRICS) + (["ic"] if g.ic is not None else [])
    for m in names:
        n_dates = int(np.isfinite(g.ic).sum()) if m == "ic" else g.D
        n = int(g.ic_rows[np.isfinite(g.ic)].sum()) if m == "ic" else g.n
        lo = hi = float("nan")
        if M is not None and n_dates >= 2:
            lo, hi = _ci(g.replicates(m, M), espec)
        out.append({"model": model, "regime": regime, "n": n, "n_dates": n_dates, "metric": m,
                    "value": g.value(m), "ci_low": lo, "ci_high": hi})
    return out


def regime_metrics_with_ci(frame: pl.DataFrame, espec: EvaluationSpec, train: pl.DataFrame | None = None,
                           baselines: bool = True) -> pl.DataFrame:
    """Long table ``model, regime, n, n_dates, metric, value, ci_low, ci_high`` per model x regime and 'overall'.

    ``frame``: ``model, date, regime, label, p_sell, p_hold, p_buy`` (+ ``fwd_return`` for the IC rows).
    ``train``: labelled training rows (``label, regime``) for the baselines; see the module docstring.
    """
    df = _prepare(frame if "model" in frame.columns else frame.with_columns(model=pl.lit("model")), "evaluation frame")
    models = df["model"].unique(maintain_order=True).to_list()
    if baselines and df.height:
        first = df.filter(pl.col("model") == models[0]).drop("model")
        df = pl.concat([df, baseline_predictions(first, train).select(df.columns)], how="vertical_relaxed")
        models = models + [BASELINE_MAJORITY, BASELINE_REGIME_PRIOR]
    rows: list[dict] = []
    boot_cache: dict[int, np.ndarray] = {}
    for model in models:
        dm = df.filter(pl.col("model") == model).sort("date")
        day, y, p, ret = _arrays(dm, f"evaluation frame, model {model}")
        regimes = dm["regime"].cast(pl.Utf8).to_numpy().astype(str)
        for regime in _regime_order(list(np.unique(regimes))) + [OVERALL]:
            sel = np.ones(y.size, bool) if regime == OVERALL else regimes == regime
            g = _Group(day[sel], y[sel], p[sel], None if ret is None else ret[sel])
            M = None
            if g.n >= espec.min_rows and g.D >= 2:
                if g.D not in boot_cache:
                    boot_cache[g.D] = bootstrap_counts(g.D, espec)
                M = boot_cache[g.D]
            rows.extend(_group_rows(model, regime, g, espec, M))
    out = pl.DataFrame(rows, schema=LONG_SCHEMA, orient="row") if rows else pl.DataFrame(schema=LONG_SCHEMA)
    return out.with_columns(pl.col(c).fill_nan(None) for c in ("value", "ci_low", "ci_high"))


def metrics_wide(long: pl.DataFrame) -> pl.DataFrame:
    """One row per model x regime: n, n_dates, and ``<metric>, <metric>_ci_low, <metric>_ci_high`` columns."""
    if long.height == 0:
        return pl.DataFrame(schema={"model": pl.Utf8, "regime": pl.Utf8, "n": pl.Int64, "n_dates": pl.Int64})
    keys = long.filter(pl.col("metric") == "accuracy").select("model", "regime", "n", "n_dates")
    out = keys
    for m in long["metric"].unique(maintain_order=True).to_list():
        part = long.filter(pl.col("metric") == m).select(
            "model", "regime", pl.col("value").alias(m), pl.col("ci_low").alias(f"{m}_ci_low"),
            pl.col("ci_high").alias(f"{m}_ci_high"))
        out = out.join(part, on=["model", "regime"], how="left", maintain_order="left")
    return out


# ----------------------------------------------------------------------------------------------- segments


def segment_metrics(frame: pl.DataFrame, by: str) -> pl.DataFrame:
    """Per (model,) segment: ``n, accuracy, balanced_accuracy, macro_f1, log_loss``; ``by`` 'sector' or 'symbol'."""
    if by not in ("sector", "symbol"):
        raise EvaluationError(f"segment_metrics: by must be 'sector' or 'symbol', got {by!r}")
    if by not in frame.columns:
        raise EvaluationError(f"segment_metrics: frame has no '{by}' column")
    missing = [c for c in ("label", *PROBA_COLUMNS) if c not in frame.columns]
    if missing:
        raise EvaluationError(f"segment_metrics: missing columns {missing}")
    df = frame.filter(pl.col("label").is_not_null())
    has_model = "model" in df.columns
    keys = (["model"] if has_model else []) + [by]
    seg = df.select(pl.struct(keys).rank("dense").cast(pl.Int64) - 1).to_series().to_numpy()
    y = _labels(df["label"])
    p = _proba(df.select(PROBA_COLUMNS).to_numpy(), df.height, "segment_metrics")
    S = int(seg.max()) + 1 if seg.size else 0
    C = np.bincount(seg * K * K + y * K + p.argmax(axis=1), minlength=S * K * K).reshape(S, K * K).astype(float)
    L = np.bincount(seg, weights=_row_log_loss(y, p), minlength=S)
    first = pl.DataFrame({"_seg": seg}).with_row_index("_i").group_by("_seg").agg(pl.col("_i").min()).sort("_seg")
    out = df.select(keys)[first["_i"].to_numpy()]
    out = out.with_columns(n=pl.Series(C.sum(1).astype(np.int64)),
                           **{m: pl.Series(_from_counts(C, L, m)) for m in METRICS})
    return out.sort(keys)


# ----------------------------------------------------------------------------------------------- paired


def _align(frame_a: pl.DataFrame, frame_b: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    if "row_id" in frame_a.columns and "row_id" in frame_b.columns:
        key = ["row_id"]
    elif all(c in f.columns for c in ("symbol", "date") for f in (frame_a, frame_b)):
        key = ["symbol", "date"]
    else:
        raise EvaluationError("paired comparison: frames need a common 'row_id' or 'symbol' and 'date' key")
    a = _prepare(frame_a, "paired comparison, frame a")
    b = _prepare(frame_b, "paired comparison, frame b")
    for name, f in (("a", a), ("b", b)):
        if f.select(key).is_duplicated().any():
            raise EvaluationError(f"paired comparison: frame {name} has duplicate keys {key}")
    keep_a = [*key, *[c for c in ("date", "regime", "label", "fwd_return") if c not in key and c in a.columns],
              *PROBA_COLUMNS]
    bb = b.select(*key, pl.col("label").alias("_label_b"), *[pl.col(c).alias(f"{c}_b") for c in PROBA_COLUMNS])
    joined = a.select(keep_a).join(bb, on=key, how="inner")
    if joined.height == 0:
        raise EvaluationError(f"paired comparison: frames a and b share no rows on {key}")
    diff = joined.filter(pl.col("label").cast(pl.Utf8) != pl.col("_label_b").cast(pl.Utf8))
    if diff.height:
        raise EvaluationError(f"paired comparison: labels differ between frames on {diff.height} rows "
                              f"(first {diff.select(key).row(0)})")
    return joined.sort("date"), key


def paired_difference(frame_a: pl.DataFrame, frame_b: pl.DataFrame, metric: str, espec: EvaluationSpec,
                      reps: int | None = None) -> pl.DataFrame:
    """Paired bootstrap over dates of ``metric(b) - metric(a)`` per regime and 'overall' on the common rows.

    Columns ``regime, n, n_dates, metric, value_a, value_b, diff, ci_low, ci_high, share_positive``
    (``share_positive`` = share of replicates with a positive difference). Rows are matched on ``row_id`` when
    both frames have it, else on ``symbol, date``.
    """
    if metric not in ALL_METRICS:
        raise EvaluationError(f"paired comparison: unknown metric '{metric}'; expected one of {list(ALL_METRICS)}")
    j, _ = _align(frame_a, frame_b)
    if metric == "ic" and "fwd_return" not in j.columns:
        raise EvaluationError("paired comparison: metric 'ic' needs a 'fwd_return' column in frame a")
    day, y, pa, ret = _arrays(j, "paired comparison, frame a")
    pb = _proba(j.select(f"{c}_b" for c in PROBA_COLUMNS).to_numpy(), j.height, "paired comparison, frame b")
    regimes = j["regime"].cast(pl.Utf8).to_numpy().astype(str)
    rows = []
    for regime in _regime_order(list(np.unique(regimes))) + [OVERALL]:
        sel = np.ones(y.size, bool) if regime == OVERALL else regimes == regime
        r = None if ret is None else ret[sel]
        ga, gb = _Group(day[sel], y[sel], pa[sel], r), _Group(day[sel], y[sel], pb[sel], r)
        va, vb = ga.value(metric), gb.value(metric)
        n, n_dates = ga.n, ga.D
        if metric == "ic":
            ok = np.isfinite(ga.ic) & np.isfinite(gb.ic)
            ga.ic, gb.ic = np.where(ok, ga.ic, np.nan), np.where(ok, gb.ic, np.nan)
            va, vb = ga.value(metric), gb.value(metric)
            n, n_dates = int(ga.ic_rows[ok].sum()), int(ok.sum())
        lo = hi = share = float("nan")
        if n >= espec.min_rows and n_dates >= 2:
            M = bootstrap_counts(ga.D, espec, reps)
            d = gb.replicates(metric, M) - ga.replicates(metric, M)
            lo, hi = _ci(d, espec)
            fin = d[np.isfinite(d)]
            share = float((fin > 0).mean()) if fin.size else float("nan")
        rows.append({"regime": regime, "n": n, "n_dates": n_dates, "metric": metric, "value_a": va,
                     "value_b": vb, "diff": vb - va, "ci_low": lo, "ci_high": hi, "share_positive": share})
    out = pl.DataFrame(rows, schema=PAIRED_SCHEMA, orient="row")
    return out.with_columns(pl.col(c).fill_nan(None) for c in ("value_a", "value_b", "diff", "ci_low", "ci_high",
                                                                 "share_positive"))
