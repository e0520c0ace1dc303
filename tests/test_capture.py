import datetime as dt

import polars as pl
import pytest

from regime_assets.core.capture import (
    CaptureError,
    as_event_specs,
    existing_windows,
    find_candidate_events,
    plan_retrains,
)
from regime_assets.spec import CaptureSpec, DriftSpec, EventSpec

CSPEC = CaptureSpec()
DAYS = pl.date_range(dt.date(2021, 1, 1), dt.date(2021, 12, 31), eager=True).filter(
    pl.date_range(dt.date(2021, 1, 1), dt.date(2021, 12, 31), eager=True).dt.weekday() <= 5
).to_list()
BASE_VIX = 20.0


def _context(spikes: dict[int, float] | None = None) -> pl.DataFrame:
    """Market context on business days; ``spikes`` maps day index -> VIX."""
    vix = [BASE_VIX] * len(DAYS)
    for i, v in (spikes or {}).items():
        vix[i] = v
    return pl.DataFrame({"date": DAYS, "vix": vix})


def _labels(n_symbols: int = 4, crash: dict[int, int] | None = None, other: dict[int, tuple[str, int]] | None = None
            ) -> pl.DataFrame:
    """Regime labels: ``crash`` maps day index -> number of crash symbols; ``other`` -> (regime, count)."""
    syms, dates, regs = [], [], []
    for i, d in enumerate(DAYS):
        k = (crash or {}).get(i, 0)
        o_reg, o_k = (other or {}).get(i, ("normal", 0))
        for s in range(n_symbols):
            syms.append(f"S{s:03d}")
            dates.append(d)
            regs.append("crash" if s < k else o_reg if s < k + o_k else "normal")
    return pl.DataFrame({"symbol": syms, "date": dates, "regime": regs})


def _find(mc, rl, as_of_idx, existing=(), drift=None, cspec=CSPEC, **kw):
    return find_candidate_events(mc, rl, drift, DAYS[as_of_idx], list(existing), cspec, **kw)


def test_three_days_above_level_captured():
    out = _find(_context({100: 40.01, 101: 40.01, 102: 40.01}), _labels(), 110)
    assert out.height == 1
    row = out.row(0, named=True)
    assert (row["start"], row["end"]) == (DAYS[100], DAYS[102])
    assert row["trigger"] == "vix" and row["peak_vix"] == pytest.approx(40.01)
    assert row["weight"] == CSPEC.default_weight
    assert row["event_id"] == f"captured_{DAYS[100].isoformat()}_{row['regime']}"  # the end is not in the id
    assert row["status"] == "created" and row["extent_days"] == 3
    assert out.columns == ["event_id", "start", "end", "regime", "weight", "trigger", "peak_vix", "crash_share",
                           "status", "extent_days"]


def test_two_days_not_captured_and_gap_breaks_run():
    assert _find(_context({100: 45.0, 101: 45.0}), _labels(), 110).height == 0
    assert _find(_context({100: 45.0, 101: 45.0, 103: 45.0, 104: 45.0}), _labels(), 110).height == 0


def test_exactly_level_is_not_captured():
    assert _find(_context({100: 40.0, 101: 40.0, 102: 40.0}), _labels(), 110).height == 0


def test_null_vix_breaks_run():
    mc = _context({100: 45.0, 101: 45.0, 102: 45.0}).with_columns(
        pl.when(pl.col("date") == DAYS[101]).then(None).otherwise(pl.col("vix")).alias("vix"))
    assert _find(mc, _labels(), 110).height == 0


def test_crash_share_strict_boundary():
    mc = _context()
    exactly_half = _labels(100, crash={50: 50})
    assert _find(mc, exactly_half, 60).height == 0
    above = _labels(100, crash={50: 51, 51: 60})
    out = _find(mc, above, 60)
    assert out.height == 1
    row = out.row(0, named=True)
    assert (row["start"], row["end"], row["trigger"], row["regime"]) == (DAYS[50], DAYS[51], "crash_share", "crash")
    assert row["crash_share"] == pytest.approx(0.60)


def test_overlapping_triggers_merge():
    mc = _context({100: 41.0, 101: 41.0, 102: 41.0})
    rl = _labels(4, crash={102: 3, 103: 3, 104: 3})
    out = _find(mc, rl, 110)
    assert out.height == 1
    row = out.row(0, named=True)
    assert row["trigger"] == "vix+crash_share"
    assert (row["start"], row["end"]) == (DAYS[100], DAYS[104])
    assert row["crash_share"] == pytest.approx(0.75)


def test_overlap_with_existing_event_skips():
    mc = _context({100: 41.0, 101: 41.0, 102: 41.0})
    seeded = EventSpec(id="seeded", start=DAYS[102], end=DAYS[120], regime="crash", weight=0.2)
    assert _find(mc, _labels(), 110, existing=[seeded]).height == 0
    touching_before = ("other", DAYS[90], DAYS[99])  # ends the day before: no overlap
    assert _find(mc, _labels(), 110, existing=[touching_before]).height == 1


def test_same_window_twice_same_id():
    mc = _context({100: 41.0, 101: 41.0, 102: 41.0})
    a = _find(mc, _labels(), 105)
    b = _find(mc, _labels(), 115)  # later as-of, run still inside the lookback
    assert a.get_column("event_id").to_list() == b.get_column("event_id").to_list()
    assert a.height == 1


def test_growing_window_extends_its_event():
    spikes = {i: 45.0 for i in range(100, 110)}
    mc = _context(spikes)
    week1 = _find(mc, _labels(), 102)  # run of 3 days so far
    assert week1.height == 1 and week1.row(0, named=True)["end"] == DAYS[102]
    week2_fresh = _find(mc, _labels(), 107)
    assert week2_fresh.get_column("event_id").to_list() == week1.get_column("event_id").to_list()  # stable id
    week2 = _find(mc, _labels(), 107, growable_events=as_event_specs(week1))
    row = week2.row(0, named=True)
    assert week2.height == 1 and row["status"] == "extended"
    assert (row["event_id"], row["start"], row["end"]) == (week1["event_id"][0], DAYS[100], DAYS[107])
    assert row["extent_days"] == 8
    # a captured event passed as fixed (not growable) still blocks, as a seeded one does
    assert _find(mc, _labels(), 107, existing=as_event_specs(week1)).height == 0
    # nothing new once the run has stopped inside the event
    done = as_event_specs(_find(mc, _labels(), 120, growable_events=as_event_specs(week1)))
    assert done[0].end == DAYS[109]
    assert _find(mc, _labels(), 125, growable_events=done).height == 0


def test_event_extended_over_three_steps_keeps_one_id_and_triggers_only_the_planned_runs():
    """An ongoing episode (VIX > 40 from day 100 on), captured weekly: one id throughout; a run when it is
    created and when it has grown by regrow_days trading days since the last run -- never twice per extent."""
    mc = _context({i: 45.0 for i in range(100, 140)})
    cspec = CaptureSpec(regrow_days=10)
    captured, history, runs, ids = [], None, [], set()
    for as_of in (102, 107, 114, 114, 119):  # the 4th step repeats the 3rd (a re-run of the same day)
        cand = _find(mc, _labels(), as_of, cspec=cspec, growable_events=captured)
        cand = plan_retrains(cand, history, cspec.regrow_days)
        ids |= set(cand["event_id"].to_list())
        runs += cand.filter(pl.col("retrain"))["run_key"].to_list()
        by_id = {e.id: e for e in captured} | {e.id: e for e in as_event_specs(cand)}
        captured = list(by_id.values())
        history = cand if history is None else pl.concat([history, cand])
    assert len(ids) == 1 and len(captured) == 1
    eid = ids.pop()
    assert history["extent_days"].to_list() == [3, 8, 15, 20]  # the repeated day adds no row
    assert history["status"].to_list() == ["created", "extended", "extended", "extended"]
    # created at 3 days; 8 - 3 < 10: no run; 15 - 3 >= 10: run; 20 - 15 < 10: no run
    assert runs == [f"{eid}@3", f"{eid}@15"]
    assert captured[0].start == DAYS[100] and captured[0].end == DAYS[119]


def test_plan_retrains_never_plans_an_extent_twice():
    mc = _context({i: 45.0 for i in range(100, 140)})
    first = plan_retrains(_find(mc, _labels(), 102), None, 10)
    again = plan_retrains(_find(mc, _labels(), 102), first, 10)
    assert first["retrain"].to_list() == [True] and again["retrain"].to_list() == [False]
    with pytest.raises(CaptureError, match="regrow_days"):
        plan_retrains(first, None, 0)


def test_point_in_time_ignores_future():
    spikes = {i: 45.0 for i in range(99, 106)}  # run straddles as_of
    out = _find(_context(spikes), _labels(4, crash={i: 4 for i in range(101, 106)}), 100)
    assert out.height == 0  # only 2 VIX days and no crash day up to as_of
    later = _find(_context(spikes), _labels(4, crash={i: 4 for i in range(101, 106)}), 101)
    assert later.height == 1 and later.row(0, named=True)["end"] == DAYS[101]


def test_lookback_limits_scan():
    mc = _context({10: 45.0, 11: 45.0, 12: 45.0})
    cs = CaptureSpec(lookback_days=20)
    assert _find(mc, _labels(), 40, cspec=cs).height == 0
    assert _find(mc, _labels(), 25, cspec=cs).height == 1


def test_drift_trigger_window_and_regime():
    mc, weeks = _context(), DriftSpec().current_weeks
    rl = _labels(4, other={i: ("high_vol", 2) for i in range(150, 160)} | {159: ("recovery", 1)})
    as_of = DAYS[159]
    assert _find(mc, rl, 159, drift=CSPEC.drift_score).height == 0  # strict
    assert _find(mc, rl, 159, drift=None).height == 0
    out = _find(mc, rl, 159, drift=CSPEC.drift_score + 0.01)
    row = out.row(0, named=True)
    first = min(d for d in DAYS if d > as_of - dt.timedelta(weeks=weeks))
    assert (row["start"], row["end"], row["trigger"]) == (first, as_of, "drift")
    assert row["regime"] == "high_vol"
    short = _find(mc, rl, 159, drift=0.9, drift_weeks=1)
    assert short.row(0, named=True)["start"] == min(d for d in DAYS if d > as_of - dt.timedelta(weeks=1))


def test_regime_all_normal_window():
    out = _find(_context(), _labels(), 100, drift=0.9)
    assert out.row(0, named=True)["regime"] == "normal"


def test_existing_event_forms():
    s, e = dt.date(2021, 1, 4), dt.date(2021, 1, 8)
    spec = EventSpec(id="x", start=s, end=e, regime="crash", weight=0.1)
    frame = pl.DataFrame({"event_id": ["x"], "start": [s], "end": [e]})
    archive = pl.DataFrame({"event_id": ["x", "x", "x"], "date": [s, dt.date(2021, 1, 6), e], "symbol": list("ABC")})
    expected = [("x", s, e)]
    assert existing_windows([spec]) == expected
    assert existing_windows([("x", s, e)]) == expected
    assert existing_windows([{"event_id": "x", "start": s.isoformat(), "end": e}]) == expected
    assert existing_windows(frame) == expected
    assert existing_windows(archive) == expected
    with pytest.raises(CaptureError, match="start/end"):
        existing_windows([{"id": "y"}])


def test_bad_inputs_raise():
    with pytest.raises(CaptureError, match="vix"):
        find_candidate_events(_context().drop("vix"), _labels(), None, DAYS[10], [], CSPEC)
    with pytest.raises(CaptureError, match="unknown regimes"):
        find_candidate_events(_context(), _labels().with_columns(pl.lit("panic").alias("regime")), None, DAYS[10],
                              [], CSPEC)


def test_as_event_specs_valid():
    out = _find(_context({100: 41.0, 101: 41.0, 102: 41.0}), _labels(), 110)
    specs = as_event_specs(out, DAYS[110])
    assert [s.id for s in specs] == out.get_column("event_id").to_list()
    assert specs[0].weight == CSPEC.default_weight and "vix" in specs[0].description
