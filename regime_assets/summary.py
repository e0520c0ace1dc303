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


def production_table(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    ev = read_table(conn, DEFAULT_SCHEMA, "regime_evaluation")
    prod = read_table(conn, DEFAULT_SCHEMA, "production_model")
    if ev is None or prod is None or prod.height == 0:
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
        wf = read_table(conn, DEFAULT_SCHEMA, "walk_forward_evaluation")
        if wf is not None and wf.height and "sentence" in wf.columns:
            print("\nwalk-forward arms (paired vs unweighted):")
            for s in wf["sentence"].drop_nulls().unique(maintain_order=True).to_list()[:40]:
                print("  " + s)
        print_backtest(conn, spec)
        print_signals(conn, spec)


def print_backtest(conn: duckdb.DuckDBPyConnection, spec: Spec) -> None:
    """The production candidate's economics after costs (long-short, overall), next to the benchmarks."""
    metrics = read_table(conn, DEFAULT_SCHEMA, "signal_backtest")
    if metrics is None or metrics.height == 0:
        return
    from regime_assets.core.backtest import headline

    b = spec.backtest
    head = headline(metrics)
    order = {"candidate": 0, "model": 1, "arm": 2, "baseline": 3, "benchmark": 4}
    head = head.sort(pl.col("kind").replace_strict(order, default=9, return_dtype=pl.Int32), "model")
    print(f"\nbacktest of the out-of-sample predictions after costs (open {b.open_cost_bps:g} bps, close "
          f"{b.close_cost_bps:g} bps; long-short top/bottom {b.top_k}, held {b.holding_days or spec.labels.horizon} "
          f"days; {b.confidence:.0%} block-bootstrap intervals):")
    print(table_text(head.drop("group"), 40))


def has_promoted(prod: pl.DataFrame | None) -> bool:
    """A stored production_model row names a promoted version (not an empty table or a 'none' row)."""
    return prod is not None and prod.height > 0 and "promoted" in prod.columns and bool(
        prod["promoted"].fill_null(False).any())


def print_signals(conn: duckdb.DuckDBPyConnection, spec: Spec) -> None:
    """Today's top and bottom symbols by score, or why there are none."""
    prod = read_table(conn, DEFAULT_SCHEMA, "production_model")
    sig = read_table(conn, DEFAULT_SCHEMA, "signals")
    if not has_promoted(prod):
        print("\nno promoted model: no signals")
        return
    if sig is None or sig.height == 0:
        return
    from regime_assets.core.signals import top_bottom

    k = spec.signals.top
    top, bottom = top_bottom(sig, k)
    d = sig.filter(pl.col("date") == sig["date"].max()).row(0, named=True)
    cols = ["symbol", "score", "rank", "action", "p_buy", "p_sell", "regime"]
    print(f"\nsignals for {d['date']} ({d['model_name']} {d['model_version']}, VIX {d['vix_source']}): "
          f"top {k}")
    print(table_text(top.select(cols)))
    print(f"bottom {k}")
    print(table_text(bottom.select(cols)))
