"""Sample weights for the balanced training set.

``weight = regime_weight[regime] * event_multiplier``, then divided by its mean so the weights average 1.

``event_multiplier`` is 1 for window and replay rows. For archive rows (when ``weights.archive_event_multiplier``)
it is ``event_weight / mean(event_weight over the archive rows of the set)``: the seeded event weights
(20/15/15/20/10/10/5/5 %) act as relative multipliers between events, while the archive rows as a whole keep an
average multiplier of 1, so the archive's total influence is set by how many archive rows were drawn, not by the
absolute size of the event weights.
"""

from __future__ import annotations

import polars as pl

from regime_assets.spec import REGIMES, WeightSpec

SCHEMA = {"row_id": pl.Int64, "regime": pl.Utf8, "source": pl.Utf8, "weight": pl.Float64}


class WeightError(ValueError):
    """Inputs the weighting cannot use; the message names what is wrong."""


def sample_weights(balanced: pl.DataFrame, wspec: WeightSpec) -> pl.DataFrame:
    """``row_id, regime, source, weight`` (Float64, mean 1), in the order of ``balanced``."""
    need = ["row_id", "regime", "source"] + (["event_weight"] if wspec.archive_event_multiplier else [])
    missing = [c for c in need if c not in balanced.columns]
    if missing:
        raise WeightError(f"sample weights: balanced_training_set is missing columns {missing}")
    if balanced.height == 0:
        return pl.DataFrame(schema=SCHEMA)
    if balanced.get_column("row_id").is_duplicated().any():
        raise WeightError("sample weights: balanced_training_set.row_id has duplicates")
    bad = balanced.filter(pl.col("regime").is_null() | ~pl.col("regime").is_in(list(REGIMES)))
    if bad.height:
        raise WeightError(f"sample weights: row_id {bad.get_column('row_id')[0]} has regime "
                          f"{bad.get_column('regime')[0]!r}, expected one of {list(REGIMES)}")
    base = pl.col("regime").replace_strict(list(wspec.regime_weights), list(wspec.regime_weights.values()),
                                           return_dtype=pl.Float64)
    w = base
    if wspec.archive_event_multiplier:
        is_arch = pl.col("source") == "archive"
        arch = balanced.filter(is_arch)
        if arch.height:
            ew = arch.get_column("event_weight").cast(pl.Float64)
            if ew.null_count() or (ew.fill_null(0.0) <= 0).any():
                first = arch.filter(pl.col("event_weight").is_null() | (pl.col("event_weight") <= 0))
                raise WeightError(f"sample weights: archive row_id {first.get_column('row_id')[0]} has event_weight "
                                  f"{first.get_column('event_weight')[0]!r}; it must be > 0")
            mean_ew = float(ew.mean())
            w = base * pl.when(is_arch).then(pl.col("event_weight").cast(pl.Float64) / mean_ew).otherwise(1.0)
    out = balanced.select(pl.col("row_id").cast(pl.Int64), "regime", pl.col("source").cast(pl.Utf8),
                          w.alias("weight"))
    return out.with_columns(pl.col("weight") / pl.col("weight").mean())
