"""The short summary `regime-assets materialize` prints after a run: rows per asset, regime shares, archive
events, and the production model's per-regime results with intervals next to the baselines."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from regime_assets.resources.warehouse import DEFAULT_SCHEMA, read_table, warehouse_path
from regime_assets.spec import REGIMES, Spec


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def table_text(df: pl.DataFrame, max_rows: int = 40) -> str:
    if df.height == 0:
        return "  (no rows)"
    cols = df.columns
    rows = [[_fmt(v) for v in r] for r in df.head(max_rows).iter_rows()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = "  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    out = [line, "  " + "  ".join("-" * w for w in widths)]
    out += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def asset_rows(result) -> pl.DataFrame:
    """Rows per materialized asset and the step's wall time, from the run's events."""
    rows: dict[str, dict] = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        key = mat.asset_key.to_user_string()
        meta = mat.metadata
        n = meta.get("row_count") or meta.get("rows")
        rows[key] = {"asset": key, "rows": int(n.value) if n is not None and not isinstance(n.value, str) else None}
    return pl.DataFrame(list(rows.values()), schema={"asset": pl.Utf8, "rows": pl.Int64})


def walk_forward_table(conn: duckdb.DuckDBPyConnection, name: str,
                       metrics: tuple[str, ...] = ("log_loss", "balanced_accuracy", "rank_ic")) -> pl.DataFrame | None:
    """The walk-forward table of candidate ``name`` and both baselines by regime: value [interval] per metric."""
    ev = read_table(conn, DEFAULT_SCHEMA, "walk_forward_evaluation")
    if ev is None or "table" not in ev.columns:
        return None
    want = [name, "baseline_prior", "baseline_regime_prior"]
    t = ev.filter((pl.col("table") == "metrics") & (pl.col("year") == "all") & pl.col("model").is_in(want)
                  & pl.col("metric").is_in(list(metrics)))
    if t.height == 0:
        return None
    cell = (pl.when(pl.col("value").is_null()).then(pl.col("reason"))
            .when(pl.col("ci_low").is_null()).then(pl.format("{} (no interval)", pl.col("value").round(3)))
            .otherwise(pl.format("{} [{}, {}]", pl.col("value").round(3), pl.col("ci_low").round(3),
                                 pl.col("ci_high").round(3))))
    t = t.with_columns(cell.alias("cell"), pl.format("{} {}", "model", "metric").alias("col"))
    wide = t.pivot(on="col", index="regime", values="cell")
    n = t.filter((pl.col("model") == name) & (pl.col("metric") == metrics[0])).select("regime", "n")
    order = pl.DataFrame({"regime": ["overall", *REGIMES]})
    full = order.join(n, on="regime", how="left").join(wide, on="regime", how="left").with_columns(
        pl.col("n").fill_null(0))
    cols = [f"{m} {mm}" for mm in metrics for m in want if f"{m} {mm}" in full.columns]
    return full.select(["regime", "n", *cols])


def production_table(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    ev = read_table(conn, DEFAULT_SCHEMA, "regime_evaluation")
    prod = read_table(conn, DEFAULT_SCHEMA, "production_model")
    if ev is None or prod is None or prod.height == 0 or prod["model_name"][0] == "none":
        return None
    name = prod["evaluated_as"][0] if "evaluated_as" in prod.columns else "meta_learner"
    want = [name, "baseline_majority", "baseline_regime_prior"]
    metric = "balanced_accuracy"
    t = ev.filter(pl.col("model").is_in(want) & (pl.col("metric") == metric))
    if t.height == 0:
        return None
    ci = pl.format("{} [{}, {}]", pl.col("value").round(3), pl.col("ci_low").round(3), pl.col("ci_high").round(3))
    t = t.with_columns(pl.when(pl.col("ci_low").is_not_null()).then(ci)
                       .otherwise(pl.format("{} (too few rows for a CI)", pl.col("value").round(3))).alias("cell"))
    wide = t.pivot(on="model", index="regime", values="cell")
    n = t.filter(pl.col("model") == name).select("regime", "n")
    order = ["overall", *REGIMES]
    full = pl.DataFrame({"regime": order}).join(n, on="regime", how="left").join(wide, on="regime", how="left")
    full = full.with_columns(pl.col("n").fill_null(0))
    return full.select(["regime", "n", *[c for c in want if c in full.columns]])


def archive_counts(arch: pl.DataFrame, spec: Spec, labels: pl.DataFrame | None) -> pl.DataFrame:
    """Rows per event: the spec's events in spec order (with ``outside data range`` / ``no labelled rows`` when
    they gave none), then events captured later."""
    counts = dict(arch.group_by("event_id").len().iter_rows()) if arch.height else {}
    lo = labels.get_column("date").min() if labels is not None and labels.height else None
    hi = labels.get_column("date").max() if labels is not None and labels.height else None
    rows = []
    for e in spec.events:
        n = int(counts.pop(e.id, 0))
        outside = lo is None or e.end < lo or e.start > hi
        status = "ok" if n else ("outside data range" if outside else "no labelled rows")
        rows.append({"event_id": e.id, "dates": f"{e.start}..{e.end}", "rows": n, "status": status})
    for eid, n in sorted(counts.items()):
        rows.append({"event_id": eid, "dates": "captured", "rows": int(n), "status": "ok"})
    return pl.DataFrame(rows, schema={"event_id": pl.Utf8, "dates": pl.Utf8, "rows": pl.Int64, "status": pl.Utf8})


def print_summary(defs, home: Path, spec: Spec, result, elapsed: float) -> None:
    print(f"regime_assets: spec '{spec.name}' ({spec.spec_hash}), source {spec.data.source}, home {home}")
    print(f"materialized in {elapsed:.1f} s")
    print("\nrows per asset:")
    print(table_text(asset_rows(result).sort("asset"), 80))
    db = warehouse_path(home)
    if not db.exists():
        return
    with duckdb.connect(str(db), read_only=True) as conn:
        labels = read_table(conn, DEFAULT_SCHEMA, "regime_labels")
        if labels is not None and labels.height:
            from regime_assets.core.regimes import regime_shares

            print("\nregime shares (symbol-days):")
            print(table_text(regime_shares(labels)))
        arch = read_table(conn, DEFAULT_SCHEMA, "rare_event_archive")
        if arch is not None:
            print("\nrare-event archive rows per event:")
            print(table_text(archive_counts(arch, spec, labels)))
        prod = production_table(conn)
        p0 = read_table(conn, DEFAULT_SCHEMA, "production_model")
        if p0 is not None and p0.height and p0["model_name"][0] == "none":
            print("\nproduction model: none \u2014 no candidate has beaten the baselines on the walk-forward yet, so "
                  "nothing was promoted (downstream assets run without a production model)")
        if prod is not None:
            p = read_table(conn, DEFAULT_SCHEMA, "production_model")
            row = p.row(0, named=True)
            print(f"\nproduction model: {row.get('model_name')} {row.get('version')} "
                  f"(promoted: {row.get('reason', '')})")
            print("balanced accuracy on the validation block, 95 % block-bootstrap CI, vs baselines:")
            print(table_text(prod))
        dec = read_table(conn, DEFAULT_SCHEMA, "promotion_decision")
        if dec is not None and dec.height:
            d = dec.row(0, named=True)
            print(f"\npromotion decision: promote={d.get('promoted')} — {d.get('reason')}")
        dec = dec if dec is not None and dec.height else None
        cand = None if dec is None else str(dec["challenger"][0]).removeprefix("model_")
        wft = walk_forward_table(conn, cand) if cand else None
        if wft is not None:
            print(f"\nwalk-forward, out of sample: challenger {cand} and both baselines by regime "
                  "(95 % block-bootstrap intervals):")
            print(table_text(wft))
        wf = read_table(conn, DEFAULT_SCHEMA, "walk_forward_evaluation")
        if wf is not None and wf.height and "sentence" in wf.columns:
            print("\nwalk-forward arms (paired differences, Holm-adjusted):")
            for s in wf.filter(pl.col("table") == "arm_difference")["sentence"].drop_nulls().to_list()[:60]:
                print("  " + s)
