import datetime as dt

import numpy as np
import polars as pl
import pytest

from regime_assets.core.archive import build_archive
from regime_assets.core.splits import months_before, years_before
from regime_assets.core.training_set import TrainingSetError, build_training_set, regime_validation_sets
from _panels import labeled_panel
from regime_assets.spec import REGIMES, EventSpec, TrainingSetSpec

H = 5


def _labeled(n_symbols: int = 3, start: dt.date = dt.date(2014, 1, 1), end: dt.date = dt.date(2020, 12, 31),
             seed: int = 0) -> pl.DataFrame:
    return labeled_panel(n_symbols, start, end, H, seed, regime_p=[0.25, 0.4, 0.2, 0.05, 0.1])


EVENTS = [
    EventSpec(id="old_crash", start=dt.date(2015, 8, 1), end=dt.date(2015, 9, 30), regime="crash", weight=0.2),
    EventSpec(id="pre_purge", start=dt.date(2020, 5, 1), end=dt.date(2020, 7, 10), regime="high_vol", weight=0.15),
    EventSpec(id="late", start=dt.date(2020, 10, 1), end=dt.date(2020, 12, 31), regime="recovery", weight=0.05),
]


def _trading_index(lab: pl.DataFrame) -> dict[dt.date, int]:
    return {d: i for i, d in enumerate(lab.get_column("date").unique().sort().to_list())}


def test_default_as_of_purge_and_validation_block():
    lab = _labeled()
    arch, _ = build_archive(lab, EVENTS)
    ts, s = build_training_set(lab, arch, None, TrainingSetSpec(), H)
    last_labelled = lab.filter(pl.col("label").is_not_null()).get_column("date").max()
    assert s["as_of"] == last_labelled
    assert ts.get_column("date").max() <= last_labelled
    assert ts.get_column("label").null_count() == 0
    idx = _trading_index(lab)
    vstart = idx[s["validation_start"]]
    train = ts.filter(pl.col("split") == "train")
    tpos = np.array([idx[d] for d in train.get_column("date").to_list()])
    assert (tpos + H < vstart).all()  # every training label window ends before the validation block
    assert (tpos + H <= idx[s["as_of"]]).all()
    assert tpos.max() + H == vstart - 1  # and the purge is no wider than needed
    val = ts.filter(pl.col("split") == "validation")
    assert set(val.get_column("source")) == {"window"}
    cutoff = months_before(s["as_of"], 6)
    expected_val = lab.filter(pl.col("label").is_not_null() & (pl.col("date") > cutoff)
                              & (pl.col("date") <= s["as_of"]))
    assert val.height == expected_val.height
    assert val.get_column("date").min() == s["validation_start"]
    assert s["purge_end"] < s["validation_start"] and idx[s["purge_end"]] - idx[s["purge_start"]] == H - 1


def test_window_bounds_and_sources_tagged():
    lab = _labeled()
    arch, _ = build_archive(lab, EVENTS)
    replay = lab.filter(pl.col("label").is_not_null()).sample(300, seed=3).with_columns(
        pl.lit(1.0).alias("replay_loss"))
    ts, s = build_training_set(lab, arch, replay, TrainingSetSpec(), H)
    assert ts.columns == [*lab.columns, "source", "split", "event_id", "event_weight"]
    win = ts.filter(pl.col("source") == "window")
    assert win.get_column("date").min() > years_before(s["as_of"], 3.0)
    assert win.get_column("event_id").null_count() == win.height
    assert win.get_column("event_weight").null_count() == win.height
    old = ts.filter(pl.col("event_id") == "old_crash")  # archive rows reach back before the window
    assert old.height > 0 and set(old.get_column("source")) == {"archive"}
    assert set(old.get_column("event_weight")) == {0.2}
    arc = ts.filter(pl.col("source") == "archive")
    assert arc.get_column("event_id").null_count() == 0 and set(arc.get_column("split")) == {"train"}
    rep = ts.filter(pl.col("source") == "replay")
    assert rep.height > 0 and rep.get_column("event_id").null_count() == rep.height
    assert "replay_loss" not in ts.columns
    assert s["rows_by_source"] == {src: ts.filter(pl.col("source") == src).height
                                   for src in ("window", "archive", "replay")}
    counts = s["counts"]
    assert counts.height == 30 and counts.get_column("rows").sum() == ts.height
    direct = ts.filter((pl.col("source") == "archive") & (pl.col("regime") == "crash")).height
    assert counts.filter((pl.col("source") == "archive") & (pl.col("regime") == "crash")
                         & (pl.col("split") == "train")).get_column("rows")[0] == direct


def test_archive_rows_in_validation_purge_never_train():
    lab = _labeled()
    arch, _ = build_archive(lab, EVENTS)
    ts, s = build_training_set(lab, arch, None, TrainingSetSpec(), H)
    late = ts.filter(pl.col("event_id") == "late")
    assert late.height == 0  # entirely inside the validation block
    pre = ts.filter(pl.col("event_id") == "pre_purge")
    assert pre.height > 0 and pre.get_column("date").max() <= s["train_end"]
    arch_pre = arch.filter(pl.col("event_id") == "pre_purge")
    in_purge = arch_pre.filter(pl.col("date").is_between(s["purge_start"], s["purge_end"])).height
    in_val = arch.filter(pl.col("date") >= s["validation_start"]).height
    assert in_purge > 0 and in_val > 0
    dropped = {(r["source"], r["zone"]): r["rows"] for r in s["dropped"].iter_rows(named=True)}
    assert dropped[("archive", "validation")] == in_val
    assert dropped[("archive", "purge")] == in_purge
    win_purge = lab.filter(pl.col("label").is_not_null()
                           & pl.col("date").is_between(s["purge_start"], s["purge_end"])).height
    assert dropped[("window", "purge")] == win_purge == 3 * H
    assert s["purged_rows"] == win_purge + in_purge
    assert pre.height + in_purge + arch_pre.filter(pl.col("date") >= s["validation_start"]).height \
        == arch_pre.height


def test_as_of_in_the_past_excludes_later_rows_and_embargo():
    lab = _labeled()
    after_event = EventSpec(id="april", start=dt.date(2020, 4, 1), end=dt.date(2020, 4, 30), regime="recovery",
                            weight=0.1)
    arch, _ = build_archive(lab, [*EVENTS, after_event])
    as_of = dt.date(2020, 3, 31)
    tspec = TrainingSetSpec(as_of=as_of, window_years=2, validation_months=3, embargo_days=7)
    ts, s = build_training_set(lab, arch, None, tspec, H)
    assert s["as_of"] == as_of
    assert ts.get_column("date").max() <= as_of
    assert ts.filter(pl.col("event_id").is_in(["pre_purge", "late", "april"])).height == 0
    idx = _trading_index(lab)
    days = sorted(idx)
    embargo = days[idx[s["validation_end"]] + 1: idx[s["validation_end"]] + 8]
    assert s["embargo_end"] == embargo[-1]
    assert ts.filter(pl.col("date").is_in(embargo)).height == 0
    dropped = {(r["source"], r["zone"]): r["rows"] for r in s["dropped"].iter_rows(named=True)}
    in_emb = arch.filter(pl.col("date").is_in(embargo)).height
    after = arch.filter(pl.col("date") > embargo[-1]).height
    assert dropped[("archive", "embargo")] == in_emb > 0
    assert dropped[("archive", "after_as_of")] == after > 0
    assert s["embargoed_rows"] == in_emb
    tpos = np.array([idx[d] for d in ts.filter(pl.col("split") == "train").get_column("date").to_list()])
    assert (tpos + H <= idx[as_of]).all() and (tpos + H < idx[s["validation_start"]]).all()


def test_duplicate_symbol_days_kept_per_source():
    lab = _labeled()
    ev = [EventSpec(id="in_window", start=dt.date(2019, 3, 1), end=dt.date(2019, 3, 29), regime="crash",
                    weight=0.1)]
    arch, _ = build_archive(lab, ev)
    ts, _ = build_training_set(lab, arch, None, TrainingSetSpec(), H)
    march = ts.filter(pl.col("date").is_between(dt.date(2019, 3, 1), dt.date(2019, 3, 29)))
    assert march.height == 2 * arch.height
    assert march.group_by("source").len().sort("source").get_column("len").to_list() == [arch.height] * 2


def test_sources_switch_off():
    lab = _labeled()
    arch, _ = build_archive(lab, EVENTS)
    replay = lab.filter(pl.col("label").is_not_null()).head(200)
    ts, s = build_training_set(lab, arch, replay, TrainingSetSpec(use_archive=False, use_replay=False), H)
    assert set(ts.get_column("source")) == {"window"}
    assert set(s["dropped"].get_column("source")) == {"window"}
    ts2, _ = build_training_set(lab, None, None, TrainingSetSpec(), H)
    assert ts2.equals(ts)


def test_regime_validation_sets_flags_small_and_empty():
    lab = _labeled().with_columns(
        pl.when(pl.col("regime") == "crash").then(pl.lit("high_vol")).otherwise(pl.col("regime")).alias("regime"))
    ts, _ = build_training_set(lab, None, None, TrainingSetSpec(), H)
    val = ts.filter(pl.col("split") == "validation")
    n_rec = val.filter(pl.col("regime") == "recovery").height
    sets, summ = regime_validation_sets(ts, min_rows=n_rec + 1)
    assert list(sets) == list(REGIMES) and summ.get_column("regime").to_list() == list(REGIMES)
    for r in REGIMES:
        assert sets[r].equals(val.filter(pl.col("regime") == r))
        row = summ.filter(pl.col("regime") == r).row(0, named=True)
        assert row["rows"] == sets[r].height
        assert row["flagged"] == (sets[r].height < n_rec + 1)
    crash = summ.filter(pl.col("regime") == "crash").row(0, named=True)
    assert crash["rows"] == 0 and crash["flagged"] and "no validation rows" in crash["reason"]
    rec = summ.filter(pl.col("regime") == "recovery").row(0, named=True)
    assert rec["flagged"] and str(n_rec) in rec["reason"]
    assert summ.filter(~pl.col("flagged")).get_column("reason").to_list() == ["ok"] * summ.filter(
        ~pl.col("flagged")).height


def test_errors_name_the_problem():
    lab = _labeled(n_symbols=2, start=dt.date(2019, 1, 1))
    with pytest.raises(TrainingSetError, match="validation_months"):
        build_training_set(lab, None, None, TrainingSetSpec(window_years=0.5, validation_months=6), H)
    with pytest.raises(TrainingSetError, match="label"):
        build_training_set(lab.drop("label"), None, None, TrainingSetSpec(), H)
    bad = lab.with_columns(pl.when(pl.col("date") == dt.date(2019, 5, 6)).then(pl.lit("panic"))
                           .otherwise(pl.col("regime")).alias("regime"))
    with pytest.raises(TrainingSetError, match="2019-05-06"):
        build_training_set(bad, None, None, TrainingSetSpec(), H)
    with pytest.raises(TrainingSetError, match="duplicate"):
        dup = pl.concat([lab, lab.filter(pl.col("date") == dt.date(2020, 2, 3)).head(1)])
        build_training_set(dup, None, None, TrainingSetSpec(), H)
    with pytest.raises(TrainingSetError, match="event_weight"):
        build_training_set(lab, lab.with_columns(pl.lit("e").alias("event_id")), None, TrainingSetSpec(), H)
    with pytest.raises(TrainingSetError, match="before the first"):
        build_training_set(lab, None, None, TrainingSetSpec(as_of=dt.date(2010, 1, 1)), H)
