"""Walk-forward metrics, paired differences and verdicts, from the out-of-sample prediction frames.

Metrics (names and directions: ``core.evaluation.METRIC_DIRECTIONS``, the one copy):
accuracy, balanced_accuracy, macro_f1, log_loss (as ``core.evaluation``); ``brier`` = mean over rows of
``sum_k (p_k - 1[y = k])^2``; ``ece`` = expected calibration error of the top class over ``ECE_BINS`` equal-width
confidence bins (``sum_b n_b / n * |accuracy_b - confidence_b|``); ``ic`` / ``rank_ic`` = per date the Pearson /
Spearman correlation of ``p_buy - p_sell`` with ``fwd_return`` (dates with fewer than ``MIN_IC_ROWS`` rows or no
variation left out), averaged over dates; ``ic_ir`` / ``rank_ic_ir`` = their mean / standard deviation over dates.

Intervals: the stationary block bootstrap over dates of ``core.evaluation.bootstrap_counts`` (mean block
``evaluation.block_length_days``, ``evaluation.bootstrap_reps`` replicates, seed ``evaluation.seed``); replicates
are products of draw counts with per-date sufficient statistics, never refits. Groups: candidate x regime
(``overall`` and the five) x test year (and ``all``). A group without rows is a row with ``n = 0`` and a reason;
one with fewer than ``evaluation.min_rows`` rows or 2 dates has no interval, and says so.

Paired differences of the arms: ``core.evaluation.paired_difference`` of the primary metric per scope; the
two-sided p-value is normal with the bootstrap standard error, ``se = (ci_high - ci_low) / (2 z)`` (``z`` the
normal quantile of the interval's level; replicate shares alone cannot go below ``1 / reps``, too coarse for a
family of dozens of comparisons), and it is adjusted with Holm's step-down over every comparison of the family
(all pairs x scopes with an interval); ``helps`` is ``yes`` / ``no``
when the adjusted p-value is below ``1 - evaluation.confidence`` and the difference is on the better / worse side,
else ``inconclusive``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from regime_assets.core.evaluation import (
    METRIC_DIRECTIONS,
    MIN_IC_ROWS,
    _ci,
    _from_counts,
    _row_log_loss,
    bootstrap_counts,
    improvement_sign,
    paired_difference,
)
from regime_assets.core.models import encode_labels
from regime_assets.spec import CLASSES, REGIMES, EvaluationSpec

OVERALL = "overall"
ALL_YEARS = "all"
SCOPES: tuple[str, ...] = (OVERALL, *REGIMES)
CLASS_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "brier", "ece")
IC_METRICS: tuple[str, ...] = ("ic", "rank_ic", "ic_ir", "rank_ic_ir")
WF_METRICS: tuple[str, ...] = (*CLASS_METRICS, *IC_METRICS)
ECE_BINS = 10
K = len(CLASSES)
PROBA = tuple(f"p_{c}" for c in CLASSES)
assert all(m in METRIC_DIRECTIONS for m in WF_METRICS)

TABLE_SCHEMA = {"table": pl.Utf8, "model": pl.Utf8, "comparator": pl.Utf8, "event_id": pl.Utf8, "regime": pl.Utf8,
                "year": pl.Utf8, "metric": pl.Utf8, "direction": pl.Utf8, "n": pl.Int64, "n_dates": pl.Int64,
                "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "p_value": pl.Float64,
                "p_adjusted": pl.Float64, "verdict": pl.Utf8, "reason": pl.Utf8, "sentence": pl.Utf8}


def _finite(x: Any) -> bool:
    return x is not None and bool(np.isfinite(x))


# ----------------------------------------------------------------------------------------------- per-date statistics


def _per_date_corr(didx: np.ndarray, D: int, score: np.ndarray, ret: np.ndarray, method: str) -> np.ndarray:
    ok = np.isfinite(ret) & np.isfinite(score)
    frame = pl.DataFrame({"d": didx[ok], "s": score[ok], "r": ret[ok]})
    agg = frame.group_by("d").agg(c=pl.corr("s", "r", method=method), rows=pl.len())
    out = np.full(D, np.nan)
    c = agg.with_columns(pl.when(pl.col("rows") >= MIN_IC_ROWS).then(pl.col("c")).otherwise(None))
    out[c["d"].to_numpy()] = c["c"].cast(pl.Float64).fill_null(float("nan")).fill_nan(float("nan")).to_numpy()
    out[~np.isfinite(out)] = np.nan
    return out


class DateStats:
    """Per-date sufficient statistics of one set of prediction rows."""

    def __init__(self, day: np.ndarray, y: np.ndarray, p: np.ndarray, ret: np.ndarray | None) -> None:
        self.dates, didx = np.unique(day, return_inverse=True)
        self.D, self.n = self.dates.size, y.size
        pred = p.argmax(axis=1) if y.size else np.zeros(0, dtype=np.int64)
        self.rows = np.bincount(didx, minlength=self.D).astype(np.float64)
        self.C = np.bincount(didx * K * K + y * K + pred, minlength=self.D * K * K).reshape(self.D, K * K)
        self.C = self.C.astype(np.float64)
        self.L = np.bincount(didx, weights=_row_log_loss(y, p), minlength=self.D) if y.size else np.zeros(self.D)
        onehot = np.zeros_like(p)
        onehot[np.arange(y.size), y] = 1.0
        self.B = np.bincount(didx, weights=((p - onehot) ** 2).sum(axis=1), minlength=self.D)
        conf = p.max(axis=1) if y.size else np.zeros(0)
        b = np.minimum((conf * ECE_BINS).astype(np.int64), ECE_BINS - 1)
        base = didx * ECE_BINS + b
        E = np.zeros((self.D * ECE_BINS, 3))
        E[:, 0] = np.bincount(base, minlength=self.D * ECE_BINS)
        E[:, 1] = np.bincount(base, weights=conf, minlength=self.D * ECE_BINS)
        E[:, 2] = np.bincount(base, weights=(pred == y).astype(np.float64), minlength=self.D * ECE_BINS)
        self.E = E.reshape(self.D, ECE_BINS * 3)
        self.ic = self.ric = None
        if ret is not None and y.size:
            score = p[:, 2] - p[:, 0]
            self.ic = _per_date_corr(didx, self.D, score, ret, "pearson")
            self.ric = _per_date_corr(didx, self.D, score, ret, "spearman")

    def subset(self, keep: np.ndarray) -> "DateStats":
        """The statistics of the dates where ``keep`` (a boolean mask over ``dates``) holds."""
        out = object.__new__(DateStats)
        out.dates, out.D = self.dates[keep], int(keep.sum())
        out.rows, out.C, out.L, out.B, out.E = self.rows[keep], self.C[keep], self.L[keep], self.B[keep], self.E[keep]
        out.n = int(out.rows.sum())
        out.ic = None if self.ic is None else self.ic[keep]
        out.ric = None if self.ric is None else self.ric[keep]
        return out

    def _ic(self, metric: str) -> np.ndarray | None:
        return self.ic if metric in ("ic", "ic_ir") else self.ric

    def n_dates(self, metric: str) -> int:
        if metric in IC_METRICS:
            v = self._ic(metric)
            return 0 if v is None else int(np.isfinite(v).sum())
        return self.D

    def values(self, metric: str, M: np.ndarray) -> np.ndarray:
        """The metric for each row of draw counts ``M`` (reps, D); ``M = ones((1, D))`` gives the estimate."""
        with np.errstate(invalid="ignore", divide="ignore"):
            if metric in IC_METRICS:
                v = self._ic(metric)
                if v is None:
                    return np.full(M.shape[0], np.nan)
                ok = np.isfinite(v)
                Mo, x = M[:, ok], v[ok]
                cnt = Mo.sum(axis=1)
                m1 = np.where(cnt > 0, (Mo @ x) / np.where(cnt > 0, cnt, 1), np.nan)
                if metric in ("ic", "rank_ic"):
                    return m1
                m2 = np.where(cnt > 0, (Mo @ (x * x)) / np.where(cnt > 0, cnt, 1), np.nan)
                sd = np.sqrt(np.maximum(m2 - m1 * m1, 0.0) * np.where(cnt > 1, cnt / np.maximum(cnt - 1, 1), np.nan))
                return np.where(sd > 0, m1 / np.where(sd > 0, sd, 1), np.nan)
            n = M @ self.rows
            if metric == "brier":
                return np.where(n > 0, (M @ self.B) / np.where(n > 0, n, 1), np.nan)
            if metric == "ece":
                E = (M @ self.E).reshape(M.shape[0], ECE_BINS, 3)
                cnt = E[..., 0]
                gap = np.abs(E[..., 2] - E[..., 1])  # |correct - confidence| summed per bin = n_b |acc_b - conf_b|
                return np.where(n > 0, gap.sum(axis=1) / np.where(n > 0, n, 1), np.nan) * (cnt.sum(1) > 0)
            return _from_counts(M @ self.C, M @ self.L, metric)

    def value(self, metric: str) -> float:
        return float(self.values(metric, np.ones((1, self.D)))[0]) if self.D else float("nan")


def _arrays(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    day = frame.get_column("date").cast(pl.Date).to_physical().to_numpy().astype(np.int64)
    y = encode_labels(frame.get_column("label"), "walk-forward labels")
    p = frame.select(PROBA).to_numpy().astype(np.float64)
    ret = frame.get_column("fwd_return").cast(pl.Float64).fill_null(float("nan")).to_numpy()
    regimes = frame.get_column("regime").cast(pl.Utf8).to_numpy().astype(str)
    return day, y, p, ret, regimes


def _years_of(stats: DateStats) -> np.ndarray:
    return (stats.dates.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970)


class _Boot:
    """Draw counts cached by the number of dates (the same seed gives the same draws for the same size)."""

    def __init__(self, espec: EvaluationSpec) -> None:
        self.espec, self.cache = espec, {}

    def __call__(self, D: int) -> np.ndarray:
        if D not in self.cache:
            self.cache[D] = bootstrap_counts(D, self.espec)
        return self.cache[D]


def _group_rows(model: str, regime: str, year: str, st: DateStats | None, espec: EvaluationSpec, boot: _Boot,
                table: str = "metrics", event_id: str | None = None,
                metrics: tuple[str, ...] = WF_METRICS) -> list[dict[str, Any]]:
    out = []
    for m in metrics:
        row = {"table": table, "model": model, "comparator": None, "event_id": event_id, "regime": regime,
               "year": year, "metric": m, "direction": METRIC_DIRECTIONS[m], "n": 0, "n_dates": 0, "value": None,
               "ci_low": None, "ci_high": None, "p_value": None, "p_adjusted": None, "verdict": None,
               "reason": "no rows", "sentence": None}
        if st is None or st.n == 0:
            out.append(row)
            continue
        nd = st.n_dates(m)
        v = st.value(m)
        row.update(n=st.n, n_dates=nd, value=v if _finite(v) else None, reason="ok")
        if not _finite(v):
            row["reason"] = "undefined (too few rows per date or no variation)" if m in IC_METRICS else "undefined"
        elif st.n < espec.min_rows or nd < 2:
            row["reason"] = f"no interval: {st.n} rows, {nd} dates (< evaluation.min_rows {espec.min_rows} or 2 dates)"
        else:
            lo, hi = _ci(st.values(m, boot(st.D)), espec)
            row.update(ci_low=min(lo, v) if _finite(lo) else None, ci_high=max(hi, v) if _finite(hi) else None)
        out.append(row)
    return out


def candidate_metrics(model: str, frame: pl.DataFrame, espec: EvaluationSpec, years: list[int],
                      boot: _Boot | None = None) -> list[dict[str, Any]]:
    """Rows of ``TABLE_SCHEMA`` (table ``metrics``) for one model's predictions: every scope x (each of ``years``
    and ``all``) x metric; empty groups included with n = 0."""
    boot = boot or _Boot(espec)
    out: list[dict[str, Any]] = []
    if frame.height == 0:
        for scope in SCOPES:
            for yr in [ALL_YEARS, *map(str, years)]:
                out.extend(_group_rows(model, scope, yr, None, espec, boot))
        return out
    day, y, p, ret, regimes = _arrays(frame.sort("date"))
    for scope in SCOPES:
        sel = np.ones(y.size, bool) if scope == OVERALL else regimes == scope
        st = DateStats(day[sel], y[sel], p[sel], ret[sel]) if sel.any() else None
        out.extend(_group_rows(model, scope, ALL_YEARS, st, espec, boot))
        yrs = _years_of(st) if st is not None else np.zeros(0, dtype=np.int64)
        for yr in years:
            keep = yrs == yr
            out.extend(_group_rows(model, scope, str(yr), st.subset(keep) if st is not None and keep.any() else None,
                                   espec, boot))
    return out


# ----------------------------------------------------------------------------------------------- paired + Holm


def holm(p: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None)."""
    idx = [i for i, v in enumerate(p) if _finite(v)]
    order = sorted(idx, key=lambda i: p[i])
    m = len(order)
    out: list[float | None] = [None] * len(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return out


def bootstrap_p(diff: float | None, lo: float | None, hi: float | None, confidence: float) -> float | None:
    """Two-sided p-value of a paired difference, normal with the bootstrap standard error from the interval."""
    from scipy.stats import norm

    if not (_finite(diff) and _finite(lo) and _finite(hi)):
        return None
    se = (hi - lo) / (2.0 * norm.ppf(0.5 + confidence / 2.0))
    if se <= 0:
        return 0.0 if diff != 0 else 1.0
    return float(2.0 * norm.sf(abs(diff) / se))


def _fmt(x: float | None) -> str:
    return "n/a" if not _finite(x) else f"{x:+.3f}".replace("-", "\u2212")


def paired_rows(pairs: list[tuple[str, str]], load: Callable[[str], pl.DataFrame], metric: str,
                espec: EvaluationSpec, table: str = "arm_difference",
                label: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """Per pair (model, comparator) and scope: ``metric(model) - metric(comparator)`` on the same rows with its
    bootstrap interval, p-value, Holm-adjusted p-value over the whole family and a verdict sentence."""
    label = label or (lambda s: s)
    sign = improvement_sign(metric)
    rows: list[dict[str, Any]] = []
    for a, b in pairs:
        fa, fb = load(a), load(b)
        if fa.height == 0 or fb.height == 0:
            for scope in SCOPES:
                rows.append({"table": table, "model": a, "comparator": b, "event_id": None, "regime": scope,
                             "year": ALL_YEARS, "metric": metric, "direction": METRIC_DIRECTIONS[metric], "n": 0,
                             "n_dates": 0, "value": None, "ci_low": None, "ci_high": None, "p_value": None,
                             "p_adjusted": None, "verdict": "inconclusive", "reason": "no rows", "sentence": None})
            continue
        pdiff = paired_difference(fb, fa, metric, espec)  # value_b - value_a = a - b
        by = {r["regime"]: r for r in pdiff.iter_rows(named=True)}
        for scope in SCOPES:
            r = by.get(scope)
            row = {"table": table, "model": a, "comparator": b, "event_id": None, "regime": scope, "year": ALL_YEARS,
                   "metric": metric, "direction": METRIC_DIRECTIONS[metric], "n": 0, "n_dates": 0, "value": None,
                   "ci_low": None, "ci_high": None, "p_value": None, "p_adjusted": None, "verdict": "inconclusive",
                   "reason": "no rows", "sentence": None}
            if r is not None:
                d, lo, hi = r["diff"], r["ci_low"], r["ci_high"]
                if _finite(d) and _finite(lo) and _finite(hi):
                    lo, hi = min(lo, d), max(hi, d)
                row.update(n=r["n"], n_dates=r["n_dates"], value=d, ci_low=lo, ci_high=hi,
                           p_value=bootstrap_p(d, r["ci_low"], r["ci_high"], espec.confidence),
                           reason="ok" if _finite(lo) else f"no interval: {r['n']} rows, {r['n_dates']} dates")
            rows.append(row)
    adj = holm([r["p_value"] for r in rows])
    alpha = 1.0 - espec.confidence
    for r, pa in zip(rows, adj):
        r["p_adjusted"] = pa
        if _finite(pa) and pa < alpha and _finite(r["value"]):
            r["verdict"] = "yes" if sign * r["value"] > 0 else "no"
        ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if _finite(r["ci_low"]) else "[no interval]"
        if r["n"] == 0:
            r["sentence"] = f"{label(r['model'])} vs {label(r['comparator'])}, {r['regime']}: no test rows \u2014 " \
                            f"inconclusive"
        else:
            r["sentence"] = (f"{label(r['model'])} vs {label(r['comparator'])}, {r['regime']}: "
                             f"{metric.replace('_', ' ')} {_fmt(r['value'])} {ci} \u2014 {r['verdict']} "
                             f"(Holm-adjusted p {r['p_adjusted']:.3f} of {len([x for x in adj if _finite(x)])} "
                             f"comparisons; {r['n']} rows, {r['n_dates']} dates)"
                             if _finite(r["p_adjusted"]) else
                             f"{label(r['model'])} vs {label(r['comparator'])}, {r['regime']}: "
                             f"{metric.replace('_', ' ')} {_fmt(r['value'])} {ci} \u2014 inconclusive "
                             f"({r['n']} rows, {r['n_dates']} dates)")
    return rows


def arm_pairs(arms: list[str], production_arms: list[str], models: list[str], arm_name: Callable[[str, str], str],
              prod_name: Callable[[str], str], meta: str) -> list[tuple[str, str]]:
    """Every comparison the arms question needs: each arm vs ``unweighted``, ``full`` vs ``no_archive`` (the
    archive), ``no_archive`` vs ``balanced`` (the weights given balancing), the production candidate vs each
    production arm (the part removed) and vs ``unweighted``."""
    pairs: list[tuple[str, str]] = []
    for m in models:
        if "unweighted" in arms:
            pairs += [(arm_name(a, m), arm_name("unweighted", m)) for a in arms if a != "unweighted"]
        if {"full", "no_archive"} <= set(arms):
            pairs.append((arm_name("full", m), arm_name("no_archive", m)))
        if {"no_archive", "balanced"} <= set(arms):
            pairs.append((arm_name("no_archive", m), arm_name("balanced", m)))
    pairs += [(meta, prod_name(p)) for p in production_arms]
    if "unweighted" in arms and models:
        pairs.append((meta, arm_name("unweighted", models[0])))
    return pairs


def loco_rows(loco: pl.DataFrame, espec: EvaluationSpec, metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """Leave-one-crisis-out as rows (table ``loco``): model x event x metric on the event's rows (regime
    ``overall``, year ``all``), with bootstrap intervals over the event's dates."""
    boot = _Boot(espec)
    out: list[dict[str, Any]] = []
    if loco.height == 0:
        return out
    for (eid, model), f in loco.sort("date").group_by(["event_id", "model"], maintain_order=True):
        day, y, p, ret, _ = _arrays(f)
        out.extend(_group_rows(model, OVERALL, ALL_YEARS, DateStats(day, y, p, ret), espec, boot, table="loco",
                               event_id=eid, metrics=metrics))
    return out


def empty_table() -> pl.DataFrame:
    return pl.DataFrame(schema=TABLE_SCHEMA)


def as_table(rows: list[dict[str, Any]]) -> pl.DataFrame:
    if not rows:
        return empty_table()
    return pl.DataFrame(rows, schema=TABLE_SCHEMA, orient="row").with_columns(
        pl.col(c).fill_nan(None) for c in ("value", "ci_low", "ci_high", "p_value", "p_adjusted"))
