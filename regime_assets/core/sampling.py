"""Regime-balanced sampling of the training split.

* Only rows with ``split == 'train'`` are drawn. The set size is ``N = min(balance.target_size, train rows)``:
  a small training split is not inflated as a whole, only its scarce regimes are.
* Each regime's target is ``ratio * N`` rows (largest-remainder rounding, so the targets sum to ``N``).
* A regime with at least its target draws that many rows without replacement. A regime with fewer rows is
  up-sampled with replacement, at most to ``floor(max_replacement_factor * available)`` rows, as evenly as possible
  (every row ``k`` or ``k + 1`` times). What it still lacks is its ``shortfall``.
* A shortfall is not filled from other regimes: the set is smaller than ``N`` by the total shortfall. The other
  regimes then keep exactly their target rows, so their ratios to each other stay as specified and no regime is
  pushed above its target share by borrowed rows (``achieved_ratio`` reports the real shares).
* The draw is seeded by ``balance.seed`` and does not depend on the input row order; the output is shuffled
  and gets ``row_id`` 0..n-1.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from regime_assets.spec import REGIMES, BalanceSpec

SUMMARY_SCHEMA = {
    "regime": pl.Utf8,
    "available": pl.Int64,
    "target_rows": pl.Int64,
    "drawn_rows": pl.Int64,
    "target_ratio": pl.Float64,
    "achieved_ratio": pl.Float64,
    "with_replacement": pl.Boolean,
    "shortfall": pl.Int64,
}


class SamplingError(ValueError):
    """Inputs the sampler cannot use; the message names what is wrong."""


def allocate(total: int, ratios: dict[str, float]) -> dict[str, int]:
    """Split ``total`` rows by ``ratios`` (largest remainder; ties go to the earlier regime in REGIMES)."""
    raw = {r: ratios[r] * total for r in REGIMES}
    out = {r: int(math.floor(raw[r] + 1e-9)) for r in REGIMES}
    rest = total - sum(out.values())
    order = sorted(REGIMES, key=lambda r: (-(raw[r] - out[r]), REGIMES.index(r)))
    for r in order[:max(rest, 0)]:
        out[r] += 1
    return out


def _draw(rng: np.random.Generator, n_avail: int, target: int, factor: float) -> tuple[np.ndarray, bool]:
    """Positions 0..n_avail-1 to take: without replacement when possible, else evenly repeated (capped)."""
    if target <= n_avail:
        return rng.choice(n_avail, size=target, replace=False), False
    cap = int(math.floor(factor * n_avail + 1e-9))
    n = min(target, cap)
    copies, rest = divmod(n, n_avail)
    idx = np.concatenate([np.tile(np.arange(n_avail), copies), rng.choice(n_avail, size=rest, replace=False)])
    return idx, n > n_avail


def balanced_sample(train: pl.DataFrame, bspec: BalanceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(balanced_training_set, summary); see the module doc.

    balanced: the training_set columns (train split rows only) + ``row_id``. summary: ``regime, available,
    target_rows, drawn_rows, target_ratio, achieved_ratio, with_replacement, shortfall``.
    """
    missing = [c for c in ("split", "regime") if c not in train.columns]
    if missing:
        raise SamplingError(f"balanced sample: training_set is missing columns {missing}")
    if "row_id" in train.columns:
        raise SamplingError("balanced sample: training_set already has a row_id column")
    rows = train.filter(pl.col("split") == "train")
    bad = rows.filter(pl.col("regime").is_null() | ~pl.col("regime").is_in(list(REGIMES)))
    if bad.height:
        where = ", ".join(f"{c} {bad.get_column(c)[0]}" for c in ("symbol", "date") if c in bad.columns)
        raise SamplingError(f"balanced sample: regime {bad.get_column('regime')[0]!r} ({where}) is not one of "
                            f"{list(REGIMES)}")
    keys = [c for c in ("symbol", "date", "source", "event_id") if c in rows.columns]
    if keys:
        rows = rows.sort(keys, nulls_last=True, maintain_order=True)

    total = min(int(bspec.target_size), rows.height)
    targets = allocate(total, bspec.ratios)
    regime_col = rows.get_column("regime").to_numpy()
    rng = np.random.default_rng(bspec.seed)
    picks: list[np.ndarray] = []
    summary = []
    for r in REGIMES:
        where = np.flatnonzero(regime_col == r)
        target = targets[r]
        if where.size == 0:
            idx, repl = np.empty(0, dtype=np.int64), False
        else:
            idx, repl = _draw(rng, where.size, target, bspec.max_replacement_factor)
        picks.append(where[idx])
        summary.append({"regime": r, "available": int(where.size), "target_rows": target, "drawn_rows": int(idx.size),
                        "target_ratio": float(bspec.ratios[r]), "with_replacement": repl,
                        "shortfall": target - int(idx.size)})
    take = np.concatenate(picks) if picks else np.empty(0, dtype=np.int64)
    take = take[rng.permutation(take.size)]
    out = rows[take].with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("row_id"))
    n = max(out.height, 1)
    for s in summary:
        s["achieved_ratio"] = s["drawn_rows"] / n if out.height else 0.0
    return out, pl.DataFrame(summary, schema=SUMMARY_SCHEMA).select(list(SUMMARY_SCHEMA))
