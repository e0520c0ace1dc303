"""A comparison rule for the drift score: Evidently's default data-drift preset, computed here.

Evidently (``DataDriftPreset`` / ``DatasetDriftMetric`` with default options) tests every column of the current
data against the reference and calls the *dataset* drifted when the share of drifted columns reaches
``drift_share`` (0.5). The test per column depends on the reference size and the column:

* reference with more than 1000 rows: a numerical column with more than 5 distinct values drifts when the
  Wasserstein-1 distance normed by the reference's standard deviation (floored at 0.001) is >= 0.1; a column with
  at most 5 distinct values (categorical) when the Jensen-Shannon distance of the value shares is >= 0.1;
* reference with at most 1000 rows: numerical -- two-sample KS test p-value < 0.05; categorical -- chi-square
  test of the current counts against the reference shares, p-value < 0.05.

Null and non-finite values are dropped per column. The rule uses the same reference and current frames as the
drift score (``core/monitoring.drift_windows``), so the two can be compared window by window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

THRESHOLD = 0.1
P_VALUE = 0.05
DRIFT_SHARE = 0.5
LARGE_REFERENCE = 1000
MAX_CATEGORIES = 5
TABLE_SCHEMA = {"column": pl.Utf8, "test": pl.Utf8, "statistic": pl.Float64, "drifted": pl.Boolean}


def _clean(df: pl.DataFrame, col: str) -> np.ndarray:
    a = df.get_column(col).cast(pl.Float64).to_numpy()
    return a[np.isfinite(a)]


def _shares(values: np.ndarray, cats: np.ndarray) -> np.ndarray:
    counts = np.array([(values == c).sum() for c in cats], dtype=np.float64)
    return counts / counts.sum() if counts.sum() > 0 else counts


def column_drift(ref: np.ndarray, cur: np.ndarray) -> tuple[str, float, bool]:
    """(test, statistic, drifted) for one column under the default rule."""
    from scipy import stats
    from scipy.spatial.distance import jensenshannon

    if ref.size == 0 or cur.size == 0:
        return "none", float("nan"), False
    categorical = np.unique(ref).size <= MAX_CATEGORIES
    if ref.size > LARGE_REFERENCE:
        if categorical:
            cats = np.union1d(np.unique(ref), np.unique(cur))
            d = float(jensenshannon(_shares(ref, cats), _shares(cur, cats)))
            return "jensenshannon", d, bool(d >= THRESHOLD)
        d = float(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
        return "wasserstein", d, bool(d >= THRESHOLD)
    if categorical:
        cats = np.union1d(np.unique(ref), np.unique(cur))
        exp = _shares(ref, cats) * cur.size
        obs = np.array([(cur == c).sum() for c in cats], dtype=np.float64)
        keep = exp > 0
        if (obs[~keep] > 0).any():  # a category the reference never had
            return "chisquare", 0.0, True
        p = float(stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue)
        return "chisquare", p, bool(p < P_VALUE)
    p = float(stats.ks_2samp(ref, cur).pvalue)
    return "ks", p, bool(p < P_VALUE)


def default_rule(reference: pl.DataFrame, current: pl.DataFrame, columns: list[str],
                 drift_share: float = DRIFT_SHARE) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Per column ``column, test, statistic, drifted`` and a summary: ``share`` of drifted columns (over the
    columns with data on both sides), ``n_drifted``, ``n_columns``, ``dataset_drift`` (share >= drift_share)."""
    missing = [c for c in columns if c not in reference.columns or c not in current.columns]
    if missing:
        raise ValueError(f"default_rule: columns missing from reference or current: {missing[:10]}")
    rows = []
    for c in columns:
        test, stat, drifted = column_drift(_clean(reference, c), _clean(current, c))
        rows.append({"column": c, "test": test, "statistic": stat, "drifted": drifted})
    table = pl.DataFrame(rows, schema=TABLE_SCHEMA)
    tested = table.filter(pl.col("test") != "none")
    n = tested.height
    k = int(tested["drifted"].sum()) if n else 0
    share = k / n if n else 0.0
    return table, {"share": share, "n_drifted": k, "n_columns": n, "dataset_drift": bool(n and share >= drift_share)}
