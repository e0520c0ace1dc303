"""False alarms in calm years and detection delay in the seeded episodes: the drift score vs Evidently's default
data-drift rule, on the same reference and current windows of a weekly history rewind.

    uv run python bench/drift_evidence.py [--spec PATH] [--out DIR] [--quick]

Rewinds each window below on the spec (default: the packaged default spec on the bundled data), keeps the
timelines (``<out>/rewind_<start>_<end>.csv``) and prints

* calm years (2013, 2019): weeks with an alarm / weeks (drift score >= drift.retrain_threshold; Evidently: dataset
  drift, i.e. >= 50 % of the columns drifted);
* each episode (the spec's seeded events 2008, 2011, 2015, 2018, 2020 crash, 2022): weeks from its start to the
  first alarm at or after the start (within the episode; null = none), and to the first retraining run of any
  trigger (drift or new-event sensor).

``--quick`` rewinds 2019-12-01..2020-04-30 only (a cost check). Timelines already in ``<out>`` are reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import polars as pl

from regime_assets.rewind import run_rewind
from regime_assets.spec import load_spec

# (start, end, every): each episode from 4 weeks before its start to 10 weeks after, weekly; the calm years every
# second week (a weekly step costs ~20 s on a shared 2-core machine)
EPISODE_WINDOWS = [(dt.date(2008, 8, 4), dt.date(2008, 11, 10)), (dt.date(2011, 6, 3), dt.date(2011, 9, 9)),
                   (dt.date(2015, 7, 3), dt.date(2015, 10, 9)), (dt.date(2018, 1, 4), dt.date(2018, 4, 12)),
                   (dt.date(2020, 1, 23), dt.date(2020, 4, 30)), (dt.date(2021, 12, 3), dt.date(2022, 3, 11))]
WINDOWS = ([(s, e, "week") for s, e in EPISODE_WINDOWS]
           + [(dt.date(2013, 1, 1), dt.date(2013, 12, 31), "2week"), (dt.date(2019, 1, 1), dt.date(2019, 12, 31), "2week")])
QUICK = [(dt.date(2019, 12, 1), dt.date(2020, 4, 30), "week")]
CALM_YEARS = (2013, 2019)
EPISODES = ("2008_crash", "2011_debt", "2015_china", "2018_volmageddon", "2020_covid_crash", "2022_bear")


def _delay(tl: pl.DataFrame, start: dt.date, end: dt.date, flag: str) -> int | None:
    hit = tl.filter((pl.col("as_of") >= start) & (pl.col("as_of") <= end) & pl.col(flag)).sort("as_of")
    if hit.height == 0:
        return None
    return (hit["as_of"][0] - start).days // 7


def evidence(timeline: pl.DataFrame, spec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(calm-year false alarms, episode delays) from a weekly timeline with drift_score and evidently_drift."""
    tl = timeline.with_columns((pl.col("drift_score") >= spec.drift.retrain_threshold).alias("score_alarm"))
    calm = (tl.filter(pl.col("as_of").dt.year().is_in(CALM_YEARS))
            .group_by(pl.col("as_of").dt.year().alias("year"))
            .agg(pl.len().alias("weeks"), pl.col("score_alarm").sum().alias("score_alarms"),
                 pl.col("retrain").sum().alias("retrains"),
                 pl.col("evidently_drift").sum().alias("evidently_alarms"),
                 pl.col("drift_score").max().round(3).alias("max_score"),
                 pl.col("evidently_share").mean().round(3).alias("mean_evidently_share"))
            .sort("year"))
    events = {e.id: e for e in spec.events}
    rows = []
    for eid in EPISODES:
        e = events.get(eid)
        if e is None:
            continue
        inside = tl.filter((pl.col("as_of") >= e.start) & (pl.col("as_of") <= e.end))
        rows.append({"episode": eid, "start": e.start, "weeks_seen": inside.height,
                     "score_delay_weeks": _delay(tl, e.start, e.end, "score_alarm"),
                     "evidently_delay_weeks": _delay(tl, e.start, e.end, "evidently_drift"),
                     "any_retrain_delay_weeks": _delay(tl, e.start, e.end, "retrain"),
                     "max_score": round(float(inside["drift_score"].max() or 0.0), 3) if inside.height else None})
    return calm, pl.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=None)
    ap.add_argument("--out", default="/tmp/drift_evidence")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated indices into the window list (run parts in "
                                                 "parallel, then once more without --only to print the tables)")
    args = ap.parse_args(argv)
    spec = load_spec(args.spec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    windows = QUICK if args.quick else WINDOWS
    if args.only:
        windows = [windows[int(i)] for i in args.only.split(",")]
    for start, end, every in windows:
        path = out / f"rewind_{start}_{end}_{every}.csv"
        if path.exists():
            parts.append(pl.read_csv(path, try_parse_dates=True))
            continue
        t0 = time.perf_counter()
        tl = run_rewind(spec, start, end, every, out_dir=None, verbose=True)
        tl.write_csv(path)
        print(f"window {start}..{end}: {tl.height} steps in {time.perf_counter() - t0:.0f} s", flush=True)
        parts.append(tl)
    timeline = pl.concat(parts, how="vertical_relaxed").unique("as_of", keep="first").sort("as_of")
    calm, delays = evidence(timeline, spec)
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(200)
    print(f"threshold {spec.drift.retrain_threshold}; spec {spec.spec_hash}")
    print("calm years: weeks with an alarm (drift score >= threshold; Evidently default rule: dataset drift)")
    print(calm)
    print("episodes: weeks from the start to the first alarm (null = no alarm inside the episode)")
    print(delays)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
