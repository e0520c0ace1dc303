"""Calibration and meta-learner weighting, measured on a materialized home's validation block.

    REGIME_ASSETS_HOME=/tmp/home uv run regime-assets materialize
    uv run python bench/calibration.py --home /tmp/home [--json out.json]

Reads the warehouse (``training_set``: validation rows and the training rows the baselines use) and the model
store versions the latest ``model_*``/``meta_learner`` tables name. Prints, on the validation block:

1. per model: log-loss before calibration (the estimator's own probabilities) and after (the stored model), next
   to the regime-prior baseline (class frequencies per regime of the training split) and uniform (ln 3);
2. the calibration methods compared: each fitted on a model's stored out-of-fold raw probabilities (its
   calibration rows) and scored on the validation block -- temperature / vector / matrix (core/calibration.py)
   and scikit-learn style one-vs-rest sigmoid and isotonic (per-class maps renormalised, what
   ``CalibratedClassifierCV`` does around a frozen estimator);
3. the meta-learner refitted on the stored out-of-fold rows with and without the rows' sample weights
   (both methods, weighted and stacking): validation log-loss and balanced accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from regime_assets.core import calibration as cal  # noqa: E402
from regime_assets.core import registry  # noqa: E402
from regime_assets.core.ensemble import fit_meta, weighted_metrics  # noqa: E402
from regime_assets.core.evaluation import baseline_predictions, metrics  # noqa: E402
from regime_assets.core.model_store import ModelStore  # noqa: E402
from regime_assets.core.models import PROBA_COLUMNS, RAW_COLUMNS, encode_labels  # noqa: E402
from regime_assets.spec import load_spec  # noqa: E402


def _ovr(raw_fit: np.ndarray, y_fit: np.ndarray, raw_eval: np.ndarray, kind: str) -> np.ndarray:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    out = np.zeros_like(raw_eval)
    for k in range(raw_fit.shape[1]):
        t = (y_fit == k).astype(int)
        if kind == "sigmoid":
            m = LogisticRegression(C=1e6, max_iter=1000).fit(raw_fit[:, [k]], t)
            out[:, k] = m.predict_proba(raw_eval[:, [k]])[:, 1]
        else:
            m = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(raw_fit[:, k], t)
            out[:, k] = m.predict(raw_eval[:, k])
    s = out.sum(axis=1, keepdims=True)
    return np.where(s > 0, out / np.where(s > 0, s, 1), 1 / 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True)
    ap.add_argument("--spec", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    home = Path(a.home)
    spec = load_spec(a.spec)
    store = ModelStore(home / "models")
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        ts = pl.DataFrame(conn.sql("select * from training_set").to_arrow_table())
        recs = {}
        for m in [f"model_{x.name}" for x in spec.enabled_models] + ["meta_learner"]:
            recs[m] = pl.DataFrame(conn.sql(f"select * from {m}").to_arrow_table())
    val = ts.filter((pl.col("split") == "validation") & pl.col("label").is_not_null()).sort("symbol", "date")
    train = ts.filter(pl.col("split") == "train").select("label", "regime")
    win = ts.filter((pl.col("split") == "train") & (pl.col("source") == "window") & pl.col("label").is_not_null())
    yw = encode_labels(win["label"])
    window_prior = np.bincount(yw, minlength=3) / max(yw.size, 1)
    y = encode_labels(val["label"])
    prior = baseline_predictions(val.select("date", "regime", "label"), train)
    p_prior = prior.filter(pl.col("model") == "baseline_regime_prior").select(PROBA_COLUMNS).to_numpy()
    out: dict = {"validation_rows": int(val.height), "regime_prior": cal.log_loss(y, p_prior),
                 "uniform": math.log(3), "models": {}, "methods": {}, "meta": {}}
    print(f"validation rows {val.height}; regime-prior log-loss {out['regime_prior']:.4f}; uniform {math.log(3):.4f}")
    models = {m: registry.load_registered_model(store, r["model_name"][0], r["version"][0]) for m, r in recs.items()}
    base_cal, base_raw = {}, {}
    print("\nmodel                    before   after   (validation log-loss; balanced accuracy before/after)")
    for m, reg in models.items():
        if m == "meta_learner":
            continue
        fm = reg.model
        raw = fm.raw_proba_matrix(fm.matrix(val))
        calp = fm.predict_proba(val)
        base_raw[m.removeprefix("model_")], base_cal[m.removeprefix("model_")] = raw, calp
        mb, ma = metrics(y, raw), metrics(y, calp)
        out["models"][m] = {"before": mb["log_loss"], "after": ma["log_loss"], "bacc_before": mb["balanced_accuracy"],
                            "bacc_after": ma["balanced_accuracy"], "calibration": fm.calibration_report}
        print(f"{m:24s} {mb['log_loss']:7.4f} {ma['log_loss']:7.4f}   {mb['balanced_accuracy']:.4f} / "
              f"{ma['balanced_accuracy']:.4f}")
    meta = models["meta_learner"].model
    raw_old = meta.raw_proba_from(base_raw)  # ensemble of uncalibrated models, no ensemble calibration
    raw_meta = meta.raw_proba_from(base_cal)
    final = meta.predict_proba_from(base_cal)
    out["meta_learner"] = {"raw_bases_raw_ensemble": cal.log_loss(y, raw_old),
                           "calibrated_bases_raw_ensemble": cal.log_loss(y, raw_meta),
                           "final": cal.log_loss(y, final),
                           "bacc_final": metrics(y, final)["balanced_accuracy"]}
    print(f"meta_learner: uncalibrated bases {out['meta_learner']['raw_bases_raw_ensemble']:.4f}, calibrated bases "
          f"{out['meta_learner']['calibrated_bases_raw_ensemble']:.4f}, + ensemble calibration (stored) "
          f"{out['meta_learner']['final']:.4f}")

    print("\ncalibration method (fitted on each model's OOF raw rows, validation log-loss)")
    meths = ["none", "temperature", "vector", "matrix", "ovr_sigmoid", "ovr_isotonic",
             "temperature+anchor", "vector+anchor", "matrix+anchor"]
    print(f"{'model':24s} " + " ".join(f"{x:>12s}" for x in [m.removesuffix('+anchor')[:6] + ('+a' if '+' in m else '')
                                                          for m in meths]))
    for m, reg in models.items():
        if m == "meta_learner" or reg.oof is None or not set(RAW_COLUMNS) <= set(reg.oof.columns):
            continue
        oof = reg.oof
        r_fit = oof.select(RAW_COLUMNS).to_numpy()
        y_fit = encode_labels(oof["label"])
        r_val = base_raw[m.removeprefix("model_")]
        row = {}
        for k in meths:
            if k.removesuffix("+anchor") in cal.METHODS:
                c = cal.fit_calibrator(r_fit, y_fit, k.removesuffix("+anchor"), spec.calibration.l2,
                                       spec.calibration.min_rows, window_prior if k.endswith("+anchor") else None)
                row[k] = cal.log_loss(y, c.transform(r_val))
            else:
                row[k] = cal.log_loss(y, _ovr(r_fit, y_fit, r_val, k.removeprefix("ovr_")))
        out["methods"][m] = row
        print(f"{m:24s} " + " ".join(f"{row[k]:12.4f}" for k in meths))
    mean = {k: float(np.mean([r[k] for r in out["methods"].values()])) for k in meths}
    out["methods"]["mean"] = mean
    print(f"{'mean':24s} " + " ".join(f"{mean[k]:12.4f}" for k in meths))

    print("\nmeta-learner with / without the OOF rows' sample weights (validation)")
    oofs = {m.removeprefix("model_"): reg.oof for m, reg in models.items() if m != "meta_learner"}
    for method, ens in (("weighted", False), ("stacking", False), ("weighted", True), ("stacking", True)):
        for use_w in (False, True):
            ms = spec.meta.model_copy(update={"method": method, "use_sample_weights": use_w})
            cs = spec.calibration.model_copy(update={"ensemble": ens})
            learner = fit_meta(oofs, ms, calibration=cs, prior=window_prior)
            p = learner.predict_proba_from(base_cal)
            pr = learner.raw_proba_from(base_cal)
            mm, mr = metrics(y, p), metrics(y, pr)
            key = f"{method}_{'weighted' if use_w else 'unweighted'}{'_ensemble_map' if ens else ''}"
            out["meta"][key] = {"log_loss": mm["log_loss"], "balanced_accuracy": mm["balanced_accuracy"],
                                "log_loss_uncalibrated": mr["log_loss"],
                                "balanced_accuracy_uncalibrated": mr["balanced_accuracy"],
                                "weights": dict(zip(learner.models, learner.weights.round(4).tolist()))}
            print(f"{key:35s} log-loss {mm['log_loss']:.4f} (before its calibration {mr['log_loss']:.4f}), "
                  f"balanced accuracy {mm['balanced_accuracy']:.4f} ({mr['balanced_accuracy']:.4f})")
    _ = weighted_metrics
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
