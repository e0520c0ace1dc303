"""The walk-forward test panel: weekdays 2000-2007, a signal that flips sign in crash months."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from regime_assets.spec import spec_from_dict

HORIZON = 5
EMBARGO = 5
# month -> regime: every calendar year has every regime; the signal flips sign in crash months
MONTH_REGIME = ["low_vol"] * 4 + ["normal"] * 3 + ["high_vol"] * 2 + ["crash", "recovery", "normal"]
EVENTS = [
    {"id": "e2001", "start": "2001-10-01", "end": "2001-10-31", "regime": "crash", "weight": 0.2},
    {"id": "e2004", "start": "2004-10-01", "end": "2004-10-31", "regime": "crash", "weight": 0.1},
    {"id": "e2006", "start": "2006-08-01", "end": "2006-09-30", "regime": "high_vol", "weight": 0.15},
    {"id": "e2030", "start": "2030-01-01", "end": "2030-02-01", "regime": "crash", "weight": 0.1},
]


def make_panel(n_sym: int = 6, seed: int = 0) -> pl.DataFrame:
    """Weekdays 2000-2007; label from f_sig (flipped in crash months) + noise; f_n1, f_n2 pure noise."""
    days = pl.date_range(dt.date(2000, 1, 3), dt.date(2007, 12, 31), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    nd = days.len()
    reg = np.array([MONTH_REGIME[m - 1] for m in days.dt.month().to_numpy()])
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_sym):
        sig, n1, n2 = rng.normal(size=nd), rng.normal(size=nd), rng.normal(size=nd)
        score = np.where(reg == "crash", -1.0, 1.0) * sig + 0.3 * rng.normal(size=nd)
        lab = np.where(score > 0.4, "buy", np.where(score < -0.4, "sell", "hold")).astype(object)
        lab[nd - HORIZON:] = None
        frames.append(pl.DataFrame({
            "symbol": f"S{i}", "date": days, "sector": "tech", "sector_code": 0, "f_sig": sig, "f_n1": n1,
            "f_n2": n2, "regime": reg, "fwd_return": score * 0.01, "label": pl.Series(lab, dtype=pl.Utf8)}))
    return pl.concat(frames)


def make_spec(**wf):
    w = {"start_year": 2003, "test_years": 2, "train_years": 3, "n_estimators": 10, "max_train_rows": 2000,
         "min_train_rows": 500, "model_params": {"lightgbm": {"num_leaves": 7, "min_child_samples": 20}},
         "meta_models": ["lightgbm", "logreg"], "n_jobs": 2}
    w.update(wf)
    return spec_from_dict({"events": EVENTS, "labels": {"horizon": HORIZON},
                           "training_set": {"embargo_days": EMBARGO}, "balance": {"target_size": 2000},
                           "evaluation": {"bootstrap_reps": 40, "min_rows": 20}, "walk_forward": w})


