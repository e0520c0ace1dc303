"""The short summary `regime-assets materialize` prints after a run: rows per asset, regime shares, archive
events, input warnings, the production model's per-regime results with intervals next to the baselines, the
promotion decision and the walk-forward verdicts."""

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


NO_ROWS = "no rows of this regime in the validation block"
BASELINE_NOTE = ("baselines: both predict one class per regime (the majority class, the regime's most frequent\n"
                 "  class), so their balanced accuracy (mean recall of sell, hold, buy) is 1/3 = 0.333 in every regime\n"
                 "  by construction; the regime prior's log-loss (class frequencies per regime of the training rows)\n"
                 "  is the level a useful model must beat.")


def _cell(value: float | None, lo: float | None, hi: float | None) -> str | None:
    if value is None:
        return None
    if lo is None or hi is None:
        return f"{value:.3f} (too few rows for a CI)"
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def evaluation_table(ev: pl.DataFrame, model: str) -> pl.DataFrame:
    """Per regime: n, the model's balanced accuracy, log-loss and IC (95 % CI), the regime prior's log-loss
    (the baseline that tells something) and why a regime has no figures."""
    from regime_assets.core.evaluation import BASELINE_REGIME_PRIOR

    def metric(m: str, name: str, col: str) -> pl.DataFrame:
        t = ev.filter((pl.col("model") == m) & (pl.col("metric") == name))
        return pl.DataFrame({"regime": t["regime"].to_list(),
                             col: [_cell(*r) for r in t.select("value", "ci_low", "ci_high").iter_rows()]},
                            schema={"regime": pl.Utf8, col: pl.Utf8})

    n = ev.filter((pl.col("model") == model) & (pl.col("metric") == "balanced_accuracy")).select("regime", "n")
    full = pl.DataFrame({"regime": ["overall", *REGIMES]}).join(n, on="regime", how="left").with_columns(
        pl.col("n").fill_null(0))
    for m, name, col in ((model, "balanced_accuracy", f"balanced accuracy ({model})"),
                         (model, "log_loss", "log-loss"), (model, "ic", "IC"),
                         (BASELINE_REGIME_PRIOR, "log_loss", "log-loss (regime prior)")):
        full = full.join(metric(m, name, col), on="regime", how="left")
    note = pl.when(pl.col("n") == 0).then(pl.lit(NO_ROWS)).otherwise(
        pl.when(pl.col("IC").is_null()).then(pl.lit("IC: too few rows per date")).otherwise(pl.lit("")))
    return full.with_columns(note.alias("note"))


def production_table(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    ev = read_table(conn, DEFAULT_SCHEMA, "regime_evaluation")
    prod = read_table(conn, DEFAULT_SCHEMA, "production_model")
    if ev is None or prod is None or prod.height == 0 or prod["model_name"][0] == "none":
        return None
    name = prod["evaluated_as"][0] if "evaluated_as" in prod.columns else "meta_learner"
    if ev.filter(pl.col("model") == name).height == 0:
        return None
    return evaluation_table(ev, name)


def promotion_text(promoted: bool | None, reason: str | None) -> str:
    """The promotion decision in plain words ("no champion" means the first version, promoted)."""
    reason = (reason or "").strip()
    if promoted and reason.startswith("no champion"):
        rest = reason[len("no champion"):].lstrip(";, ")
        return "promoted (first version: no champion to beat)" + (f"; {rest}" if rest else "")
    return f"{'promoted' if promoted else 'not promoted'}" + (f": {reason}" if reason else "")


VERDICT = {"yes": "helps", "no": "hurts", "inconclusive": "inconclusive"}


def arm_verdict_table(wf: pl.DataFrame) -> pl.DataFrame:
    """The walk-forward arms as one table, "<arm> vs <comparator>" x regime: helps / hurts / inconclusive (the
    Holm-adjusted paired verdict) with the two levels the paired difference is taken of, read from the walk-forward
    evaluation's long table (`arm_difference` rows for the verdicts, `metrics` rows for the levels)."""
    diff = wf.filter((pl.col("table") == "arm_difference") & (pl.col("year") == "all"))
    if diff.height == 0:
        return pl.DataFrame(schema={"arms": pl.Utf8})
    metric = diff["metric"][0]
    lv = (wf.filter((pl.col("table") == "metrics") & (pl.col("year") == "all") & (pl.col("metric") == metric))
          .select("model", "regime", "value"))
    levels = {(m, r): v for m, r, v in lv.iter_rows()}
    cells: dict[str, dict[str, str]] = {}
    for r in diff.iter_rows(named=True):  # one row per pair x regime: a few dozen
        a, b = levels.get((r["model"], r["regime"])), levels.get((r["comparator"], r["regime"]))
        if not r["n"] or r["value"] is None or a is None or b is None:
            cell = "no test rows"
        else:
            cell = f"{VERDICT.get(r['verdict'], r['verdict'])} {a:.3f} vs {b:.3f}"
        cells.setdefault(f"{r['model']} vs {r['comparator']}", {})[r["regime"]] = cell
    scopes = [c for c in ["overall", *REGIMES] if any(c in v for v in cells.values())]
    return pl.DataFrame([{"arms": k, **{c: v.get(c, "-") for c in scopes}} for k, v in cells.items()],
                        schema={"arms": pl.Utf8, **{c: pl.Utf8 for c in scopes}})


def input_warnings(conn: duckdb.DuckDBPyConnection, spec: Spec) -> pl.DataFrame | None:
    """Daily jumps beyond data.max_abs_log_return in the stored prices (the raw_prices warning check)."""
    from regime_assets.core.sources import large_jumps

    prices = read_table(conn, DEFAULT_SCHEMA, "raw_prices")
    if prices is None or prices.height == 0:
        return None
    jumps = large_jumps(prices.select("symbol", "date", "close"), spec.data.max_abs_log_return)
    return jumps if jumps.height else None


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
        jumps = input_warnings(conn, spec)
        if jumps is not None:
            print(f"\ninput warnings: {jumps.height} daily close move(s) beyond |log return| "
                  f"{spec.data.max_abs_log_return:.3f} (data.jump_action {spec.data.jump_action}; asset check "
                  "prices_no_large_jumps):")
            print(table_text(jumps.select("symbol", "date", "problem"), 10))
        prod = production_table(conn)
        p0 = read_table(conn, DEFAULT_SCHEMA, "production_model")
        if p0 is not None and p0.height and p0["model_name"][0] == "none":
            print("\nproduction model: none \u2014 no candidate has beaten the baselines on the walk-forward yet, so "
                  "nothing was promoted (downstream assets run without a production model)")
        if prod is not None:
            p = read_table(conn, DEFAULT_SCHEMA, "production_model")
            row = p.row(0, named=True)
            print(f"\nproduction model: {row.get('model_name')} {row.get('version')} "
                  f"({promotion_text(True, row.get('reason'))})")
            print("on the validation block, 95 % block-bootstrap CI:")
            print(table_text(prod))
            print("  " + BASELINE_NOTE)
        dec = read_table(conn, DEFAULT_SCHEMA, "promotion_decision")
        if dec is not None and dec.height:
            d = dec.row(0, named=True)
            print(f"\npromotion decision: {promotion_text(d.get('promoted'), d.get('reason'))}")
        dec = dec if dec is not None and dec.height else None
        cand = None if dec is None else str(dec["challenger"][0]).removeprefix("model_")
        wft = walk_forward_table(conn, cand) if cand else None
        if wft is not None:
            print(f"\nwalk-forward, out of sample: challenger {cand} and both baselines by regime "
                  "(95 % block-bootstrap intervals):")
            print(table_text(wft))
        wf = read_table(conn, DEFAULT_SCHEMA, "walk_forward_evaluation")
        if wf is not None and wf.height and {"table", "comparator", "verdict"} <= set(wf.columns):
            arms = arm_verdict_table(wf)
            if arms.height:
                n = wf.filter(pl.col("table") == "arm_difference").height
                metric = wf.filter(pl.col("table") == "arm_difference")["metric"][0].replace("_", " ")
                print(f"\nwalk-forward arms: {metric} of each pair on the same test rows (helps / hurts: the paired "
                      f"block-bootstrap difference is significant after Holm's correction over {n} comparisons):")
                print(table_text(arms))
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
