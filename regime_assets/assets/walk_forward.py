"""Group `evaluation`, the walk-forward part: out-of-sample predictions of every candidate fold by fold, and
their metrics, paired differences and leave-one-crisis-out rows.

`walk_forward_predictions` streams: it reads one fold's rows at a time from the warehouse (only the labelled rows
and columns the fold needs), fits what the fold store does not hold yet, and appends the fold's predictions to a
staging table that replaces `walk_forward_predictions` in one step at the end. Both prediction tables are written
here, not through the IO manager, so the whole frame is never in memory; downstream assets read them by model.
"""


import datetime as dt
from typing import Any

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, AssetSpec, MaterializeResult, MetadataValue, Output, asset, multi_asset

from regime_assets.assets._meta import md, num, plot_md
from regime_assets.assets.state import production_record
from regime_assets.assets.training import freeze_metadata, memo_metadata, memo_store, thaw_metadata
from regime_assets.core import models as model_core
from regime_assets.core.memo import memo_key
from regime_assets.rendering import plots
from regime_assets.core.splits import to_days
from regime_assets.core.walk_forward import (
    BASELINES,
    CHAMPION,
    META_MODEL,
    NO_SHRINKAGE,
    Champion,
    FoldStore,
    arm_model_name,
    build_recipe,
    candidate_names,
    production_arm_name,
    run_code_hash,
    run_walk_forward,
)
from regime_assets.core.walk_forward import report
from regime_assets.core.walk_forward.fit import TEST_COLUMNS
from regime_assets.resources.settings import RegimeSettings
from regime_assets.resources.tables import TableSink as _TableSink, date_ranges, query as _query
from regime_assets.resources.warehouse import DEFAULT_SCHEMA
from regime_assets.spec import REGIMES, Spec, spec_from_dict

OWNERS = ["team:quant-research"]
GROUP = "evaluation"
PREDICTIONS = "walk_forward_predictions"
LOCO_PREDICTIONS = "leave_one_crisis_out_predictions"
TABLE_METRICS = ("log_loss", "balanced_accuracy", "rank_ic")
DUCKDB_MEMORY = "1GB"


def fold_store(settings: RegimeSettings) -> FoldStore:
    return FoldStore(settings.home_path / "folds" if settings.spec.walk_forward.fold_store else None)


class WarehouseRows:
    """A ``RowSource`` over the warehouse tables: each call reads only the labelled rows of the dates asked for."""

    def __init__(self, conn, labeled: str = "labeled_samples", archive: str = "rare_event_archive") -> None:
        self.conn, self.lab, self.arch = conn, f'"{DEFAULT_SCHEMA}"."{labeled}"', f'"{DEFAULT_SCHEMA}"."{archive}"'
        cols = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
            "order by ordinal_position", [DEFAULT_SCHEMA, labeled]).fetchall()]
        if not cols:
            raise RuntimeError(f"walk forward: the warehouse has no table {labeled}")
        self.features = [c for c in cols if c.startswith("f_")]
        self.has_archive = bool(conn.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [DEFAULT_SCHEMA, archive]).fetchall()[0][0])
        self._cols = ", ".join(f'"{c}"' for c in [*TEST_COLUMNS, *self.features])

    _where = staticmethod(date_ranges)

    def days(self) -> np.ndarray:
        sql = f"select distinct date from {self.lab}"
        if self.has_archive:
            sql += f" union select distinct date from {self.arch}"
        d = _query(self.conn, sql).to_series()
        return np.unique(to_days(d.cast(pl.Date)))

    def labeled(self, ranges) -> pl.DataFrame:
        where, params = self._where(ranges)
        return _query(self.conn,
            f"select {self._cols} from {self.lab} where label is not null and {where} order by symbol, date",
            params)

    def archive(self, ranges) -> pl.DataFrame:
        if not self.has_archive:
            return self.labeled([]).with_columns(pl.lit(None, dtype=pl.Utf8).alias("event_id"),
                                                 pl.lit(None, dtype=pl.Utf8).alias("event_regime"),
                                                 pl.lit(None, dtype=pl.Float64).alias("event_weight"))
        where, params = self._where(ranges)
        return _query(self.conn,
            f"select {self._cols}, event_id, event_regime, cast(event_weight as double) as event_weight "
            f"from {self.arch} where label is not null and {where} order by event_id, symbol, date", params)

    def archive_events(self) -> pl.DataFrame:
        if not self.has_archive:
            return pl.DataFrame(schema={"event_id": pl.Utf8, "event_regime": pl.Utf8, "lo": pl.Date, "hi": pl.Date})
        return _query(self.conn,
            f"select event_id, first(event_regime) as event_regime, min(date) as lo, max(date) as hi from {self.arch} "
            f"where label is not null group by event_id order by lo, event_id")


def champion_recipe(settings: RegimeSettings, store: FoldStore) -> tuple[dict | None, Champion | None, str | None]:
    """(production record, Champion to compute or None, the champion's recipe hash or None).

    The champion's recipe comes from the spec it was trained with (the fold store's recipe index). When the
    current spec gives the same recipe hash for that candidate, its rows are the current candidate's and nothing
    extra is computed."""
    rec = production_record(settings)
    if rec is None:
        return None, None, None
    cand = str(rec["model_name"]).removeprefix("model_")
    stored = store.read_recipes(str(rec.get("spec_hash")))
    if stored is None:
        return rec, None, None
    try:
        cspec = spec_from_dict(stored["spec"], f"stored spec {rec.get('spec_hash')}")
        h = build_recipe(cspec, with_arms=False).hashes.get(cand)
    except Exception:  # a stored spec this code can no longer read: the champion cannot be recomputed
        return rec, None, None
    current = build_recipe(settings.spec, with_arms=False).hashes.get(cand)
    if h is None:
        return rec, None, None
    return rec, (None if h == current else Champion(spec=cspec, candidate=cand)), h


@multi_asset(
    specs=[
        AssetSpec(PREDICTIONS, group_name=GROUP, owners=OWNERS, kinds={"polars", "duckdb"},
                  deps=["labeled_samples", "rare_event_archive"],
                  description="Out-of-sample class probabilities for every test block from walk_forward.start_year "
                              "to the end of the data (purged, embargoed): every spec model and the meta-learner "
                              "built with the production recipe (archive + replay, balancing, weights, out-of-fold "
                              "meta), both baselines (class frequencies overall and per regime of the fold's "
                              "training rows), the ablation arms (arm:<name>) and, when its recipe differs, the "
                              "champion. One row per model x fold x symbol x date; fold results are memoized by "
                              "fold window, rows hash and recipe hash."),
        AssetSpec(LOCO_PREDICTIONS, group_name=GROUP, owners=OWNERS, kinds={"polars", "duckdb"},
                  deps=["labeled_samples", "rare_event_archive"],
                  description="Leave-one-crisis-out: per event, the production candidates, the baselines and the "
                              "unweighted/full arms trained around the event (purged before, embargoed after) and "
                              "tested on its rows."),
    ],
    name="walk_forward", pool="warehouse",
)
def walk_forward(context: AssetExecutionContext, settings: RegimeSettings):
    spec = settings.spec
    store = fold_store(settings)
    rec, champ, champ_hash = champion_recipe(settings, store)
    memo = memo_store(settings)
    with settings.connect() as conn:
        # the whole step's memo: both tables are a function of the rows it reads, the spec and the champion's
        # recipe; when a previous run with the same key left exactly the tables it wrote, nothing is read again
        key = memo_key("walk_forward", labeled=table_hash(conn, "labeled_samples"),
                       archive=table_hash(conn, "rare_event_archive"), spec=spec.spec_hash,
                       champion=None if champ is None else [champ.spec.spec_hash, champ.candidate],
                       fold_store=store.root is not None, libraries=model_core.library_versions(),
                       code=run_code_hash())
        hit = memo.get("walk_forward", key)
        outputs = (PREDICTIONS, LOCO_PREDICTIONS)
        if hit is not None and (hit.info.get("outputs") != {t: table_hash(conn, t) for t in outputs}
                                or (store.root is not None and store.read_recipes(spec.spec_hash) is None)):
            hit = None
    if hit is not None:
        context.log.info(f"walk forward: rows, spec and champion unchanged (memo key {key}): the stored tables "
                         "are this run's, nothing read or fitted")
        for asset_key in outputs:
            meta = thaw_metadata(hit.info["metadata"][asset_key])
            meta.update(fits=num(0), champion=MetadataValue.text(_champion_text(rec, champ, champ_hash)),
                        **memo_metadata(True, key))
            if asset_key == LOCO_PREDICTIONS:
                meta.pop("champion")
            yield MaterializeResult(asset_key=asset_key, metadata=meta)
        return
    metas = _walk_forward_run(context, settings, store, rec, champ, champ_hash)
    with settings.connect() as conn:
        outs = {t: table_hash(conn, t) for t in outputs}
    memo.put("walk_forward", key, {}, {"outputs": outs,
                                       "metadata": {k: freeze_metadata(v) for k, v in metas.items()}})
    for asset_key in outputs:
        yield MaterializeResult(asset_key=asset_key, metadata={**metas[asset_key], **memo_metadata(False, key)})


def _champion_text(rec, champ, champ_hash) -> str:
    return "none" if rec is None else (
        f"{rec['model_name']} {rec['version']}: " + (
            "recipe unknown (no stored spec): not compared on the walk-forward" if champ_hash is None else
            f"recipe {champ_hash} = a current candidate's" if champ is None else
            f"recipe {champ_hash} recomputed from its stored spec as model 'champion'"))


def _walk_forward_run(context, settings: RegimeSettings, store: FoldStore, rec, champ, champ_hash) -> dict:
    """Run the walk-forward (folds from the fold store where it holds them); {asset: metadata}."""
    spec = settings.spec
    with settings.connect() as conn:
        conn.execute(f"set memory_limit = '{DUCKDB_MEMORY}'")  # DuckDB's buffers, not the default 80 % of RAM
        src = WarehouseRows(conn)
        sink = _TableSink(conn, PREDICTIONS)
        res = run_walk_forward(src, None, spec, store=store, sink=sink, champion=champ, progress=context.log.info)
        from regime_assets.core.walk_forward import PREDICTION_SCHEMA
        sink.commit(pl.DataFrame(schema=PREDICTION_SCHEMA))
        loco = res.loco_predictions
        arrow = loco.to_arrow()  # noqa: F841
        conn.execute(f'create or replace table "{DEFAULT_SCHEMA}"."{LOCO_PREDICTIONS}" as select * from arrow')
        models = _query(conn,
            f'select model, any_value(recipe_hash) as recipe_hash, count(*) as rows from "{DEFAULT_SCHEMA}".'
            f'"{PREDICTIONS}" group by model order by model')
    wf_folds = res.folds.filter(pl.col("event_id").is_null())
    loco_folds = res.folds.filter(pl.col("event_id").is_not_null())
    champ_text = _champion_text(rec, champ, champ_hash)
    common = {
        "spec_hash": MetadataValue.text(spec.spec_hash), "seconds": num(round(res.seconds, 1)),
        "fits": num(res.settings["fits"]), "reused_from_fold_store": num(res.settings["reused"]),
        "fold_store": MetadataValue.text(str(store.root) if store.root else "off"),
    }
    pred_meta = {
        **common, "rows": num(sink.rows), "folds": md(wf_folds.drop("event_id", "event_regime", "after_start",
                                                                    "after_end"), 40),
        "models": md(models, 60), "folds_run": num(res.settings["folds_run"]),
        "champion": MetadataValue.text(champ_text),
        "regime_shrinkage": md(res.shrinkage.filter(pl.col("model") == META_MODEL).select(
            "fold", "regime", "past_rows", "lambda_fitted", "lambda", "source", "log_loss_model", "log_loss_shrunk"), 120),
        "recipes": MetadataValue.json(res.recipes),
        "fit_seconds_by_model": md(res.fit_log.group_by("model").agg(
            pl.col("seconds").sum().round(2), (~pl.col("cached")).sum().alias("fits"),
            pl.col("cached").sum().alias("reused")).sort("model"), 60),
    }
    loco_meta = {
        **common, "rows": num(loco.height), "events": md(loco_folds.select(
            "event_id", "event_regime", "test_start", "test_end", "test_rows", "train_rows", "archive_rows",
            "fits", "reused", "status"), 40)}
    return {PREDICTIONS: pred_meta, LOCO_PREDICTIONS: loco_meta}


def table_hash(conn, table: str) -> str:
    """A content hash of a warehouse table (columns, types, and every row in its stored order), computed in DuckDB
    (``hash`` of each row with its position), with DuckDB's version; ``missing`` for no table."""
    import duckdb

    cols = conn.execute("select column_name, data_type from information_schema.columns where table_schema = ? and "
                        "table_name = ? order by ordinal_position", [DEFAULT_SCHEMA, table]).fetchall()
    if not cols:
        return "missing"
    n, h = conn.execute(f'select count(*), sum(hash(t, t.rowid)) from "{DEFAULT_SCHEMA}"."{table}" t').fetchall()[0]
    return f"duckdb={duckdb.__version__}|{cols}|{n}|{h}"


def _read_model(conn, table: str, model: str) -> pl.DataFrame:
    return _query(conn,
        f'select * from "{DEFAULT_SCHEMA}"."{table}" where model = ? order by date, symbol', [model])


def read_predictions(settings: RegimeSettings, models: list[str], table: str = PREDICTIONS) -> dict[str, pl.DataFrame]:
    with settings.connect(read_only=False) as conn:
        return {m: _read_model(conn, table, m) for m in models}


def headline_table(ev: pl.DataFrame, models: list[str], metrics=TABLE_METRICS) -> pl.DataFrame:
    """model x regime (overall + five) x metric, year 'all', with the interval as text."""
    t = ev.filter((pl.col("table") == "metrics") & (pl.col("year") == report.ALL_YEARS)
                  & pl.col("model").is_in(models) & pl.col("metric").is_in(list(metrics)))
    cell = pl.when(pl.col("value").is_null()).then(pl.col("reason")).when(pl.col("ci_low").is_null()).then(
        pl.format("{} ({})", pl.col("value").round(4), pl.col("reason"))).otherwise(
        pl.format("{} [{}, {}]", pl.col("value").round(4), pl.col("ci_low").round(4), pl.col("ci_high").round(4)))
    t = t.with_columns(cell.alias("cell"))
    order = {r: i for i, r in enumerate(report.SCOPES)}
    morder = {m: i for i, m in enumerate(models)}
    n = t.filter(pl.col("metric") == metrics[0]).select("model", "regime", "n")
    wide = n.join(t.pivot(on="metric", index=["model", "regime"], values="cell"), on=["model", "regime"],
                  how="right")
    return wide.sort(pl.col("model").replace_strict(morder, default=99), pl.col("regime").replace_strict(
        order, default=99)).select(["model", "regime", "n", *[m for m in metrics if m in wide.columns]])


@asset(group_name=GROUP, owners=OWNERS, kinds={"polars", "duckdb"}, pool="warehouse",
       deps=[PREDICTIONS, LOCO_PREDICTIONS],
       description="From walk_forward_predictions: per candidate x regime (overall + five) x test year (and all): "
                   "accuracy, balanced accuracy, macro-F1, log-loss, Brier, ECE, IC and rank IC per date with "
                   "ICIR, each with block-bootstrap intervals over dates (table 'metrics'); paired differences of "
                   "the arms with Holm's correction over the family (table 'arm_difference'); leave-one-crisis-out "
                   "rows (table 'loco'). A regime or year without rows is a row with n = 0 and a reason.")
def walk_forward_evaluation(context: AssetExecutionContext, settings: RegimeSettings) -> Output[pl.DataFrame]:
    spec = settings.spec
    espec, wf = spec.evaluation, spec.walk_forward
    metric = spec.gate.primary_metric
    with settings.connect() as conn:
        # the bootstraps are seeded: the table is a deterministic function of both prediction tables and the spec
        key = memo_key("walk_forward_evaluation", predictions=table_hash(conn, PREDICTIONS),
                       loco=table_hash(conn, LOCO_PREDICTIONS), evaluation=espec, metric=metric,
                       arms=list(wf.arms), production_arms=list(wf.production_arms), models=list(wf.models))
        memo = memo_store(settings)
        hit = memo.get("walk_forward_evaluation", key)
        models = [r[0] for r in conn.execute(
            f'select distinct model from "{DEFAULT_SCHEMA}"."{PREDICTIONS}" order by model').fetchall()]
    if hit is not None:
        out = hit.frames["frame"]
    else:
        out = _walk_forward_table(settings, models)
        memo.put("walk_forward_evaluation", key, {"frame": out})
    return Output(out, metadata={**_walk_forward_metadata(spec, out, models), **memo_metadata(hit is not None, key)})


def _walk_forward_table(settings: RegimeSettings, models: list[str]) -> pl.DataFrame:
    spec = settings.spec
    espec, wf = spec.evaluation, spec.walk_forward
    metric = spec.gate.primary_metric
    with settings.connect() as conn:
        span = conn.execute(f'select min(test_start), max(test_end) from "{DEFAULT_SCHEMA}"."{PREDICTIONS}"'
                            ).fetchall()[0]
        years = list(range(span[0].year, span[1].year + 1)) if span[0] is not None else []
        boot = report._Boot(espec)
        rows: list[dict[str, Any]] = []
        for m in models:
            rows.extend(report.candidate_metrics(m, _read_model(conn, PREDICTIONS, m), espec, years, boot))
        n_models = len(wf.models)
        pairs = report.arm_pairs(list(wf.arms), list(wf.production_arms), list(wf.models),
                                 lambda a, m: arm_model_name(a, m, n_models), production_arm_name, META_MODEL)
        pairs.append((META_MODEL, NO_SHRINKAGE))  # does the regime shrinkage help?
        pairs = [(a, b) for a, b in pairs if a in models and b in models]
        cache: dict[str, pl.DataFrame] = {}

        def load(m: str) -> pl.DataFrame:
            if m not in cache:
                if len(cache) > 2:
                    cache.pop(next(iter(cache)))
                cache[m] = _read_model(conn, PREDICTIONS, m)
            return cache[m]

        diffs = report.paired_rows(pairs, load, metric, espec)
        cache.clear()
        loco = _query(conn, f'select * from "{DEFAULT_SCHEMA}"."{LOCO_PREDICTIONS}"')
    loco_rows = report.loco_rows(loco, espec, ("balanced_accuracy", "log_loss", "brier", "rank_ic"))
    return report.as_table([*rows, *diffs, *loco_rows])


def _walk_forward_metadata(spec: Spec, out: pl.DataFrame, models: list[str]) -> dict:
    espec, metric = spec.evaluation, spec.gate.primary_metric
    cands = candidate_names(spec)
    show = [c for c in [META_MODEL, *BASELINES] if c in models]
    best = (out.filter((pl.col("table") == "metrics") & (pl.col("regime") == "overall") & (pl.col("year") == "all")
                       & (pl.col("metric") == metric) & pl.col("model").is_in(cands[:-1]))
            .sort("value", descending=metric != "log_loss", nulls_last=True).head(1))
    if best.height:
        show.insert(1, best["model"][0])
    arm_diffs = out.filter(pl.col("table") == "arm_difference")
    n_family = int(arm_diffs["p_value"].is_not_null().sum())
    empty = out.filter((pl.col("table") == "metrics") & (pl.col("n") == 0)).select("model", "regime", "year").unique()
    meta = {
        "rows": num(out.height), "spec_hash": MetadataValue.text(spec.spec_hash),
        "candidates_and_baselines_by_regime": md(headline_table(out, show), 80),
        "all_models_overall": md(headline_table(out, models).filter(pl.col("regime") == "overall"), 80),
        "multiplicity": MetadataValue.text(
            f"Holm's step-down over {n_family} paired comparisons (arm pairs x scopes), family-wise level "
            f"{1 - espec.confidence:.2f}; intervals are unadjusted {espec.confidence:.0%} block-bootstrap intervals"),
        "answer": MetadataValue.md("\n".join(f"- {s}" for s in arm_diffs["sentence"].drop_nulls().to_list())),
        "arms_plot": plot_md(plots.png_markdown(plots.walk_forward_arms_plot(
            arm_diffs.rename({"value": "diff"}).with_columns(pl.format("{} vs {}", "model", "comparator")
                                                             .alias("arm"))), "walk-forward arms")),
        "leave_one_crisis_out": md(out.filter(pl.col("table") == "loco").select(
            "model", "event_id", "metric", "n", "value", "ci_low", "ci_high"), 80),
        "empty_groups": MetadataValue.md(
            f"{empty.height} model x regime x year groups have no rows (kept as n = 0 rows): " +
            ", ".join(sorted({f"{r} {y}" for _, r, y in empty.iter_rows()})[:40])),
    }
    return meta
