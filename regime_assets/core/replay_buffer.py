"""Error replay buffer: the rows after its training window that the production model got most wrong.

The candidates are the labelled rows dated after the champion's training window (``after_training_window``:
``date > train_end`` from its registry record, up to the as-of date) -- its out-of-sample predictions, never its
own training rows, whose in-sample errors are mostly noise.

Per labelled row the loss is the log-loss of the true class, ``replay_loss = -ln(max(p_true, LOSS_EPSILON))``,
with ``p`` the previous production model's class probabilities in CLASSES order (rows renormalised to sum to
1). The buffer keeps the ``ceil(replay_buffer.worst_fraction * n_labelled)`` rows with the largest loss,
capped at ``replay_buffer.max_rows`` (ties keep the earlier row). Rows whose label is null are never chosen.
Output: the input's columns + ``replay_loss`` (Float64), sorted by symbol, date.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl

from regime_assets.spec import CLASSES, ReplayBufferSpec

LOSS_EPSILON = 1e-15


class ReplayBufferError(ValueError):
    """Inputs the replay buffer cannot use; the message names what is wrong."""


def empty_like(labeled: pl.DataFrame) -> pl.DataFrame:
    """An empty buffer with the schema of ``labeled`` + ``replay_loss``."""
    return labeled.head(0).with_columns(pl.lit(None, dtype=pl.Float64).alias("replay_loss"))


def replay_losses(labels: pl.Series, proba: np.ndarray) -> np.ndarray:
    """Per-row log-loss of the true class (NaN where the label is null)."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(CLASSES):
        raise ReplayBufferError(f"replay buffer: proba must have shape (n, {len(CLASSES)}) in order {list(CLASSES)}, "
                                f"got {p.shape}")
    if p.shape[0] != labels.len():
        raise ReplayBufferError(f"replay buffer: proba has {p.shape[0]} rows, the labelled frame has {labels.len()}")
    bad_rows = np.flatnonzero(~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1) | (p.sum(axis=1) <= 0))
    if bad_rows.size:
        raise ReplayBufferError(f"replay buffer: proba row {int(bad_rows[0])} is not a probability vector "
                                f"({bad_rows.size} bad rows)")
    idx = labels.cast(pl.Utf8).replace_strict(list(CLASSES), list(range(len(CLASSES))), default=-1,
                                              return_dtype=pl.Int64)
    unknown = labels.is_not_null() & (idx == -1)
    if unknown.any():
        first = int(unknown.arg_true()[0])
        raise ReplayBufferError(f"replay buffer: label {labels[first]!r} at row {first} is not one of {list(CLASSES)}")
    idx_np = idx.fill_null(-1).to_numpy()
    has = idx_np >= 0
    p = p / p.sum(axis=1, keepdims=True)
    p_true = np.full(p.shape[0], np.nan)
    rows = np.flatnonzero(has)
    p_true[rows] = p[rows, idx_np[rows]]
    return -np.log(np.maximum(p_true, LOSS_EPSILON))


def after_training_window(labeled: pl.DataFrame, train_end: dt.date | None,
                          as_of: dt.date | None = None) -> pl.DataFrame:
    """Labelled rows dated after ``train_end`` (the model's last training date) and up to ``as_of``; empty when
    ``train_end`` is unknown (no row can then be shown to lie outside the training window)."""
    for c in ("date", "label"):
        if c not in labeled.columns:
            raise ReplayBufferError(f"replay buffer: the labelled frame has no {c!r} column")
    if train_end is None:
        return labeled.head(0)
    keep = (pl.col("date") > train_end) & pl.col("label").is_not_null()
    if as_of is not None:
        keep = keep & (pl.col("date") <= as_of)
    return labeled.filter(keep)


def error_replay_buffer(labeled_recent: pl.DataFrame, proba: np.ndarray | None,
                        rspec: ReplayBufferSpec, train_end: dt.date | None = None) -> pl.DataFrame:
    """The worst ``worst_fraction`` of labelled rows by log-loss (at most ``max_rows``) + ``replay_loss``.

    ``proba`` is None when there is no previous production model: the buffer is then empty. With
    ``train_end`` every row must be dated after it (pass ``after_training_window``'s rows): a row of the
    model's own training window is refused.
    """
    if "label" not in labeled_recent.columns:
        raise ReplayBufferError("replay buffer: the labelled frame has no 'label' column")
    if train_end is not None and labeled_recent.height:
        inside = labeled_recent.filter(pl.col("date") <= train_end)
        if inside.height:
            sym = inside["symbol"][0] if "symbol" in inside.columns else "?"
            raise ReplayBufferError(f"replay buffer: {inside.height} rows lie in the model's training window "
                                    f"(first: symbol {sym} on {inside['date'][0]}, training ends {train_end})")
    if proba is None or labeled_recent.height == 0:
        return empty_like(labeled_recent)
    loss = replay_losses(labeled_recent.get_column("label"), proba)
    valid = np.flatnonzero(np.isfinite(loss))
    k = min(math.ceil(round(rspec.worst_fraction * valid.size, 9)), rspec.max_rows, valid.size)
    if k <= 0:
        return empty_like(labeled_recent)
    order = valid[np.argsort(-loss[valid], kind="stable")[:k]]
    order.sort()
    out = labeled_recent[order].with_columns(pl.Series("replay_loss", loss[order], dtype=pl.Float64))
    keys = [c for c in ("symbol", "date") if c in out.columns]
    return out.sort(keys) if keys else out
