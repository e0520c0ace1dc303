"""The production meta-learner's regime shrinkage, read from the warehouse (the walk-forward's raw meta rows and
the training set's window rows); the weights themselves come from ``core/shrinkage.py``."""

import polars as pl

from regime_assets.core import shrinkage as shrink_core
from regime_assets.core.walk_forward import NO_SHRINKAGE
from regime_assets.resources.settings import RegimeSettings
from regime_assets.resources.tables import query
from regime_assets.resources.warehouse import DEFAULT_SCHEMA

WF_PREDICTIONS = "walk_forward_predictions"


def production_shrinkage(settings: RegimeSettings):
    """The production meta-learner's regime shrinkage (``core/shrinkage.py``), or None when the spec turns it off.

    Weights from the walk-forward's raw meta-learner rows (``arm:meta_no_shrinkage``, each with its fold's regime
    prior) dated on or before the training set's last train date, so no validation label informs them; priors
    from the training window's own train rows. Without walk-forward predictions in the warehouse every regime takes the
    default weight (spec meta.shrinkage_default) and the report says so."""
    spec = settings.spec
    if not spec.meta.regime_shrinkage:
        return None
    t = f'"{DEFAULT_SCHEMA}"'
    with settings.connect() as conn:
        window = query(conn, f"select date, regime, label from {t}.training_set where source = 'window' and "
                              f"split = 'train' and label is not null")
        last = window["date"].max() if window.height else None
        have = conn.execute("select count(*) from information_schema.tables where table_schema = ? and "
                            "table_name = ?", [DEFAULT_SCHEMA, WF_PREDICTIONS]).fetchall()[0][0]
        cols = "fold, symbol, date, regime, label, p_sell, p_hold, p_buy"
        if have and last is not None:
            raw = query(conn, f"select {cols} from {t}.{WF_PREDICTIONS} where model = ? and date <= ?",
                         [NO_SHRINKAGE, last])
            prior = query(conn, f"select {cols} from {t}.{WF_PREDICTIONS} where model = ? and date <= ?",
                           ["baseline_regime_prior", last])
        else:
            raw = prior = pl.DataFrame(schema={"fold": pl.Int32, "symbol": pl.Utf8, "date": pl.Date,
                                               "regime": pl.Utf8, "label": pl.Utf8, "p_sell": pl.Float64,
                                               "p_hold": pl.Float64, "p_buy": pl.Float64})
    return shrink_core.production_shrinkage(raw, prior, window, last, spec.meta.shrinkage_step,
                                            spec.meta.shrinkage_prior_rows, spec.meta.shrinkage_default)
