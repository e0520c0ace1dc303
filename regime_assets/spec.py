"""The declarative spec: every tunable number of the pipeline, with the seeds' values as defaults.

The spec is one pydantic model loaded from YAML (``spec.yaml`` next to this file is the default). Unknown fields
and out-of-range values are rejected with a message that names the field. ``spec_hash`` is a stable hash of the
resolved spec; it is stored with every model version and training run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REGIMES: tuple[str, ...] = ("low_vol", "normal", "high_vol", "crash", "recovery")
CLASSES: tuple[str, ...] = ("sell", "hold", "buy")
DEFAULT_SPEC_PATH = Path(__file__).with_name("spec.yaml")
SPEC_ENV = "REGIME_ASSETS_SPEC"


class SpecError(ValueError):
    """A spec that cannot be used; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .nan/.inf in YAML are errors


class DataSpec(_Strict):
    source: Literal["bundled", "folder", "yahoo", "synthetic"] = "bundled"
    symbols: list[str] | None = Field(default=None, description="Subset of symbols; None = all the source has.")
    start: dt.date | None = None
    end: dt.date | None = None
    # folder source
    folder: str | None = Field(default=None, description="Folder of CSV/Parquet files (long or one per symbol).")
    index_file: str | None = Field(default=None, description="File with date,close of the market index.")
    vix_file: str | None = Field(default=None, description="Optional file with date,vix.")
    sectors_file: str | None = None
    # yahoo source
    index_symbol: str = "^GSPC"
    vix_symbol: str = "^VIX"
    # synthetic source
    synthetic_symbols: int = Field(default=12, ge=1, le=5000)
    synthetic_years: float = Field(default=8.0, gt=0.5, le=60)
    synthetic_seed: int = 7
    synthetic_start: dt.date = dt.date(2005, 1, 3)
    # validation
    min_history_days: int = Field(default=252, ge=1)
    max_gap_days: int = Field(default=10, ge=1, description="Longest calendar gap allowed between two rows of a symbol.")
    allow_future_dates: bool = False
    max_abs_log_return: float = Field(
        default=math.log(5), gt=0, description="Largest |daily log return| of a close taken without comment (ln 5: "
                                              "a fivefold move in a day; an unadjusted split is larger).")
    jump_action: Literal["warn", "reject"] = Field(
        default="warn", description="A larger jump warns (an asset check on raw_prices and a line in the summary) "
                                    "or rejects the input, naming symbol and date.")

    @model_validator(mode="after")
    def _dates(self) -> "DataSpec":
        if self.start and self.end and self.start >= self.end:
            raise ValueError("data.start must be before data.end")
        if self.source == "folder" and not self.folder:
            raise ValueError("data.folder is required when data.source is 'folder'")
        return self


class VixProxySpec(_Strict):
    windows: list[int] = Field(default=[5, 10, 21, 63], min_length=1,
                               description="Realized-volatility windows (trading days) of the proxy.")
    drawdown_windows: list[int] = Field(default=[21, 252], description="Drawdown from the high of the last d days.")
    drawdown_clip: list[float] = Field(
        default=[-0.157424, -0.197782],
        description="Per drawdown window, the deepest drawdown the fit saw (bundled 2014-2018 overlap); deeper "
                    "drawdowns are held at it, so the fitted slope is never extrapolated.")
    holdout_start: dt.date | None = Field(
        default=dt.date(2017, 1, 1), description="Out-of-sample check: fit on the overlap before this date, score "
                                                 "from it (None: the later holdout_fraction).")
    holdout_fraction: float = Field(default=0.3, gt=0, lt=0.9, description="Later part of the overlap held out.")
    calibration: Literal["fixed", "overlap"] = Field(
        default="fixed", description="fixed: use `coefficients` (strictly point-in-time); overlap: refit on the "
                                     "data's real-VIX overlap (uses later data for earlier proxy values).")
    coefficients: list[float] = Field(
        default=[1.96492, 0.033519, 0.002177, 0.045114, 0.098615, -5.238121, -0.82892], min_length=4,
        description="ln VIX = intercept + sum_w c_w sqrt(rv_w) + sum_d c_d max(dd_d, clip_d): intercept, one per "
                    "window, one per drawdown window; fitted on the bundled 2014-2018 overlap.")
    floor: float = Field(default=9.0, ge=0, description="Lowest proxy value (VIX has never closed below ~9).")

    @model_validator(mode="after")
    def _shapes(self) -> "VixProxySpec":
        need = 1 + len(self.windows) + len(self.drawdown_windows)
        if len(self.coefficients) != need:
            raise ValueError(f"vix_proxy: coefficients needs {need} values (intercept, {len(self.windows)} windows, "
                             f"{len(self.drawdown_windows)} drawdown windows), got {len(self.coefficients)}")
        if len(self.drawdown_clip) != len(self.drawdown_windows):
            raise ValueError("vix_proxy: drawdown_clip needs one value per drawdown window")
        if any(w < 2 for w in self.windows) or any(d < 2 for d in self.drawdown_windows):
            raise ValueError("vix_proxy: windows and drawdown windows must be >= 2 days")
        return self


class RegimeSpec(_Strict):
    crash_vix: float = Field(default=35.0, gt=0)
    high_vol_vix: float = Field(default=25.0, gt=0)
    normal_vix: float = Field(default=15.0, gt=0)
    drop_pct: float = Field(default=0.15, gt=0, lt=1, description="Drop from the rolling max that forces crash.")
    drop_window: int = Field(default=10, ge=2, description="Trading days over which the drop is measured.")
    recovery_pct: float = Field(default=0.10, gt=0, lt=5, description="Rise from the crash low that marks recovery.")
    recovery_max_days: int = Field(default=63, ge=1, description="Days after the last crash day a recovery may start.")

    @model_validator(mode="after")
    def _order(self) -> "RegimeSpec":
        if not (self.normal_vix < self.high_vol_vix < self.crash_vix):
            raise ValueError("regimes: need normal_vix < high_vol_vix < crash_vix")
        return self


class FeatureSpec(_Strict):
    return_windows: list[int] = [1, 2, 3, 5, 10, 21, 42, 63, 126, 252]
    vol_windows: list[int] = [5, 10, 21, 63, 126]
    ma_windows: list[int] = [5, 10, 20, 50, 100, 200]
    drawdown_windows: list[int] = [21, 63, 252]
    rsi_windows: list[int] = [7, 14, 28]
    bollinger_windows: list[int] = [20, 50]
    beta_windows: list[int] = [63, 252]
    vix_change_windows: list[int] = [1, 5, 21]
    vix_percentile_window: int = 252
    macd_fast: int = Field(default=12, ge=2)
    macd_slow: int = Field(default=26, ge=3)
    macd_signal: int = Field(default=9, ge=2)
    # storage type of the f_* columns: computed in float64, rounded once at the end. float32 halves the
    # features/labeled_samples memory and warehouse size; tree models work in float32 anyway.
    dtype: Literal["float32", "float64"] = "float32"
    # symbol-days computed per batch of whole symbols (memory only: the values do not depend on it)
    batch_rows: int = Field(default=500_000, ge=1)

    @model_validator(mode="after")
    def _macd(self) -> "FeatureSpec":
        if self.macd_fast >= self.macd_slow:
            raise ValueError("features: macd_fast must be below macd_slow")
        return self


class LabelSpec(_Strict):
    horizon: int = Field(default=5, ge=1, le=126)
    buy_threshold: float = Field(default=0.02, gt=0, lt=1)
    sell_threshold: float = Field(default=0.02, gt=0, lt=1)
    vol_scaled: bool = False
    vol_window: int = Field(default=21, ge=2)
    vol_multiplier: float = Field(default=0.5, gt=0)


class EventSpec(_Strict):
    id: str
    start: dt.date
    end: dt.date
    regime: Literal["low_vol", "normal", "high_vol", "crash", "recovery"]
    weight: float = Field(gt=0, le=1)
    description: str = ""

    @model_validator(mode="after")
    def _dates(self) -> "EventSpec":
        if self.start > self.end:
            raise ValueError(f"event {self.id}: start after end")
        return self


DEFAULT_EVENTS = [
    EventSpec(id="2008_crash", start=dt.date(2008, 9, 1), end=dt.date(2009, 3, 31), regime="crash", weight=0.20,
              description="Global financial crisis"),
    EventSpec(id="2011_debt", start=dt.date(2011, 7, 1), end=dt.date(2011, 8, 31), regime="high_vol", weight=0.15,
              description="US debt ceiling and downgrade"),
    EventSpec(id="2015_china", start=dt.date(2015, 8, 1), end=dt.date(2015, 9, 30), regime="high_vol", weight=0.15,
              description="China devaluation selloff"),
    EventSpec(id="2018_volmageddon", start=dt.date(2018, 2, 1), end=dt.date(2018, 2, 28), regime="crash", weight=0.20,
              description="Short-volatility unwind"),
    EventSpec(id="2020_covid_crash", start=dt.date(2020, 2, 20), end=dt.date(2020, 3, 23), regime="crash",
              weight=0.10, description="COVID-19 crash"),
    EventSpec(id="2020_covid_recovery", start=dt.date(2020, 3, 24), end=dt.date(2020, 6, 30), regime="recovery",
              weight=0.10, description="COVID-19 recovery"),
    EventSpec(id="2022_bear", start=dt.date(2022, 1, 1), end=dt.date(2022, 12, 31), regime="high_vol", weight=0.05,
              description="2022 rate-hike bear market"),
    EventSpec(id="2023_banks", start=dt.date(2023, 3, 1), end=dt.date(2023, 4, 30), regime="high_vol", weight=0.05,
              description="Regional bank failures"),
]


class TrainingSetSpec(_Strict):
    as_of: dt.date | None = Field(default=None, description="None = the last labelled date.")
    window_years: float = Field(default=3.0, gt=0, le=50)
    validation_months: int = Field(default=6, ge=1, le=60)
    embargo_days: int = Field(default=5, ge=0, description="Trading days dropped after a test block.")
    use_archive: bool = True
    use_replay: bool = True
    min_regime_rows: int = Field(default=50, ge=1, description="Below this a validation regime set is flagged.")


class BalanceSpec(_Strict):
    ratios: dict[str, float] = {"low_vol": 0.20, "normal": 0.40, "high_vol": 0.20, "crash": 0.10, "recovery": 0.10}
    target_size: int = Field(default=40_000, ge=100)
    max_replacement_factor: float = Field(default=3.0, ge=1.0, description="A regime is up-sampled at most this much.")
    seed: int = 42

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != set(REGIMES):
            raise ValueError(f"ratios must name exactly the regimes {list(REGIMES)}")
        if any(x < 0 or x > 1 for x in v.values()):
            raise ValueError("every ratio must be within [0, 1]")
        if abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"ratios must sum to 1 (got {sum(v.values()):.4f})")
        return v


class WeightSpec(_Strict):
    regime_weights: dict[str, float] = {"crash": 2.0, "recovery": 1.5, "high_vol": 1.3, "normal": 1.0, "low_vol": 0.8}
    archive_event_multiplier: bool = True

    @field_validator("regime_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != set(REGIMES):
            raise ValueError(f"regime_weights must name exactly the regimes {list(REGIMES)}")
        if any(x <= 0 for x in v.values()):
            raise ValueError("regime weights must be > 0")
        return v


class ModelSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    estimator: str = Field(description="Import path of a scikit-learn compatible classifier.")
    params: dict[str, Any] = {}
    scale: bool = False
    calibrate: bool = Field(default=False, description=(
        "Wrap the estimator in CalibratedClassifierCV(sigmoid, cv=3) on its own (balanced, weighted) rows: only "
        "a probability wrapper for estimators without predict_proba (hinge-loss SVMs). The prior correction of "
        "every model is the `calibration` section (natural rows of the training window)."))
    calibration: Literal["default", "none", "temperature", "vector", "matrix"] = Field(
        default="default", description="Per-model override of calibration.method ('default' = the section's).")
    shap: Literal["tree", "linear", "kernel", "none"] = "tree"
    enabled: bool = True


DEFAULT_MODELS = [
    ModelSpec(name="rf", estimator="sklearn.ensemble.RandomForestClassifier",
              params={"n_estimators": 150, "max_depth": 8, "min_samples_leaf": 20, "max_samples": 0.5, "n_jobs": -1,
                      "random_state": 42}),
    ModelSpec(name="extra_trees", estimator="sklearn.ensemble.ExtraTreesClassifier",
              params={"n_estimators": 150, "max_depth": 10, "min_samples_leaf": 20, "n_jobs": -1, "random_state": 42}),
    ModelSpec(name="gradient_boosting", estimator="sklearn.ensemble.HistGradientBoostingClassifier",
              params={"max_iter": 150, "learning_rate": 0.08, "max_leaf_nodes": 15, "max_bins": 63, "l2_regularization": 1.0,
                      "random_state": 42}),
    ModelSpec(name="xgboost", estimator="xgboost.XGBClassifier",
              params={"n_estimators": 200, "max_depth": 4, "learning_rate": 0.08, "subsample": 0.8,
                      "colsample_bytree": 0.8, "tree_method": "hist", "n_jobs": 2, "random_state": 42}),
    ModelSpec(name="lightgbm", estimator="lightgbm.LGBMClassifier",
              params={"n_estimators": 200, "num_leaves": 15, "learning_rate": 0.08, "subsample": 0.8,
                      "subsample_freq": 1, "colsample_bytree": 0.8, "n_jobs": 2, "random_state": 42, "verbose": -1}),
    ModelSpec(name="logreg", estimator="sklearn.linear_model.LogisticRegression",
              params={"C": 0.1, "max_iter": 2000, "tol": 0.001}, scale=True, shap="linear"),
    # a linear SVM (hinge loss) fitted by averaged SGD: linear in rows, unlike kernel SVC; calibrated for probabilities
    ModelSpec(name="svm", estimator="sklearn.linear_model.SGDClassifier",
              params={"loss": "hinge", "alpha": 0.01, "average": True, "max_iter": 50, "tol": 0.001,
                      "random_state": 42}, scale=True, calibrate=True, shap="kernel"),
    ModelSpec(name="mlp", estimator="sklearn.neural_network.MLPClassifier",
              params={"hidden_layer_sizes": [64, 32], "alpha": 0.001, "max_iter": 40, "early_stopping": False,
                      "random_state": 42}, scale=True, shap="kernel"),
]


class MetaSpec(_Strict):
    method: Literal["weighted", "stacking"] = "weighted"
    weight_metric: Literal["accuracy", "balanced_accuracy", "log_loss"] = "accuracy"
    inner_holdout_fraction: float = Field(default=0.2, gt=0.05, lt=0.5,
                                          description="Latest share of training dates held out for OOF predictions.")
    use_sample_weights: bool = Field(default=True, description="Fit the ensemble weights / stacker with the "
                                                               "regime x event weights of the out-of-fold rows.")
    regime_shrinkage: bool = Field(
        default=True, description="Mix the meta-learner's probabilities with the regime prior, per regime, by a "
                                  "weight chosen on its own past walk-forward (out-of-sample) predictions "
                                  "(core/shrinkage.py); off: the calibrated mix as it is.")
    shrinkage_step: float = Field(default=0.05, gt=0, le=0.5, description="Grid step of the mixing weight on [0, 1].")
    shrinkage_default: float = Field(default=1.0, ge=0, le=1, description="The mixing weight without past "
                                                                         "out-of-sample rows (1: the regime prior).")
    shrinkage_prior_rows: int = Field(default=200, ge=1, description="How many past rows the default counts as: "
                                                                     "lambda = (n fitted + k default) / (n + k).")


class CalibrationSpec(_Strict):
    enabled: bool = True
    method: Literal["none", "temperature", "vector", "matrix"] = Field(
        default="vector", description="Map of log-probabilities fitted on natural rows (core/calibration.py): "
                                      "temperature + class bias, per-class scale + bias (vector) or full matrix.")
    holdout_fraction: float | None = Field(
        default=None, gt=0.05, lt=0.5,
        description="Latest share of the training window's dates whose natural rows calibrate (and give the "
                    "out-of-fold predictions); None = meta.inner_holdout_fraction. One inner fit serves both.")
    max_rows: int = Field(default=50_000, ge=100, description="Calibration rows at most (seeded draw).")
    min_rows: int = Field(default=200, ge=10, description="Fewer calibration rows: the identity is kept.")
    l2: float = Field(default=1e-3, ge=0, description="Penalty towards the identity map.")
    anchor: Literal["window", "none"] = Field(
        default="window", description="window: re-centre the class bias so the calibrated probabilities average "
                                      "the class frequencies of the whole training window's natural rows (the "
                                      "holdout months' own mix wanders); none: keep the holdout's fit.")
    ensemble: bool = Field(
        default=False, description="Fit a second map on the meta-learner's output (same out-of-fold rows). Off: "
                                   "its inputs are calibrated and their weighted mix stays so; a second map on "
                                   "the rows the base maps were fitted on over-sharpened it (bundled data: "
                                   "validation log-loss 1.068 without, 1.087 with).")
    reliability_bins: int = Field(default=10, ge=2, le=50)
    seed: int = 5


class EvaluationSpec(_Strict):
    bootstrap_reps: int = Field(default=200, ge=20)
    block_length_days: float = Field(default=10.0, gt=0, description="Mean block length of the stationary bootstrap.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    seed: int = 123
    min_rows: int = Field(default=50, ge=1)


class WalkForwardSpec(_Strict):
    enabled: bool = True
    start_year: int = 2005
    test_years: int = Field(default=2, ge=1)
    train_years: float = Field(default=6.0, gt=0)
    models: list[str] = ["lightgbm"]
    arms: list[str] = ["unweighted", "regime_weights", "balanced", "regime_feature", "no_archive", "full"]
    max_train_rows: int = Field(default=20_000, ge=1000)
    n_estimators: int = Field(default=100, ge=10, description="Boosting rounds for backtest fits (kept small).")
    leave_one_crisis_out: bool = True
    meta_models: list[str] = Field(default=["lightgbm", "logreg"],
                                   description="Kept for older specs: the walk-forward meta-learner is the "
                                               "production one (every enabled model).")
    model_params: dict[str, dict[str, Any]] = Field(
        default={"lightgbm": {"num_leaves": 7, "max_bin": 15, "min_child_samples": 300, "colsample_bytree": 0.2,
                              "subsample": 0.3, "force_col_wise": True, "bin_construct_sample_cnt": 5000},
                 "logreg": {"tol": 0.001, "max_iter": 100}},
        description="Per-model parameter overrides for backtest fits (applied after n_estimators): small, strongly "
                    "regularised trees and a capped logistic regression, so the backtest fits in about a minute on 2 cores.")
    min_train_rows: int = Field(default=1000, ge=1, description="A fold with fewer labelled training rows is skipped.")
    n_jobs: int = Field(default=2, ge=1, description="Kept for older specs; folds run one after another (each "
                                                     "fold's replay buffer comes from the previous fold).")
    seed: int = Field(default=42, description="Seed of the per-fold draw of at most max_train_rows rows.")
    candidate_params: dict[str, dict[str, Any]] = Field(
        default={"rf": {"n_estimators": 60}, "extra_trees": {"n_estimators": 60}, "xgboost": {"n_estimators": 60},
                 "lightgbm": {"n_estimators": 60}, "gradient_boosting": {"max_iter": 40},
                 "logreg": {"max_iter": 200}, "mlp": {"max_iter": 15}, "svm": {"max_iter": 20}},
        description="Per-model size overrides for the walk-forward fits of the candidates (the production recipe; "
                    "applied after n_estimators): fewer trees and iterations, the same model otherwise.")
    candidate_train_rows: int = Field(default=6000, ge=500, description="Balanced training rows per fold for the "
                                                                        "candidates (production: balance.target_size).")
    production_arms: list[str] = Field(
        default=["no_archive"],
        description="The production recipe with one part removed, compared with the meta-learner: no_archive, "
                    "no_replay, no_balance, no_weights.")
    loco_production: bool = Field(default=False, description="Leave-one-crisis-out also fits the production "
                                                             "candidates (else only the arms and the baselines).")
    fit_threads: int = Field(default=1, ge=1, description="Threads per walk-forward fit (model n_jobs and the "
                                                          "BLAS/OpenMP pools): 1 measured fastest on a shared "
                                                          "2-core machine.")
    fold_store: bool = Field(default=True, description="Keep fold results under the home (folds/) keyed by fold "
                                                       "window, rows hash and recipe hash; unchanged folds are "
                                                       "never fitted again.")
    test_symbols: int | None = Field(
        default=None, ge=10, description="At most this many symbols in each walk-forward test block (those with "
                                         "the smallest seeded hash of their name, the same in every fold); None: "
                                         "all. A size for large universes: every candidate, baseline and arm is "
                                         "tested on the same rows, so comparisons stay paired.")


class GateSpec(_Strict):
    challenger: Literal["meta_learner", "best_model"] = "meta_learner"
    primary_metric: Literal["accuracy", "balanced_accuracy", "macro_f1", "log_loss"] = "balanced_accuracy"
    regime_margin: float = Field(default=0.02, ge=0, le=1, description="Largest allowed loss in any regime.")
    min_regime_rows: int = Field(default=200, ge=1)
    min_samples: int = Field(default=1000, ge=1)
    bootstrap_reps: int = Field(default=1000, ge=20)
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Level of the gate's paired intervals "
                                                                      "(Bonferroni-adjusted for a best-of-K choice).")
    max_log_loss_excess: float = Field(default=0.0, ge=0, description="Rule (b): the challenger's walk-forward "
                                                                      "log-loss may exceed the regime prior's by "
                                                                      "at most this much overall.")
    regime_log_loss_margin: float = Field(default=0.0, ge=0, description="Rule (e): in every regime with "
                                                                          "min_regime_rows rows the walk-forward "
                                                                          "log-loss may exceed the regime prior's by "
                                                                          "at most this much.")


class ShapSpec(_Strict):
    rows_per_regime: int = Field(default=100, ge=10)
    kernel_rows: int = Field(default=25, ge=5, description="Rows for the model-agnostic explainer.")
    kernel_background: int = Field(default=30, ge=5)
    top_k: int = Field(default=15, ge=1)
    seed: int = 11


class DriftSpec(_Strict):
    current_weeks: int = Field(default=4, ge=1)
    psi_bins: int = Field(default=10, ge=2)
    psi_moderate: float = 0.1
    psi_major: float = 0.25
    reference_years: float = Field(default=3.0, gt=0, le=50, description=(
        "Reference = the last reference_years of the rolling window's rows before the current weeks (archive and "
        "replay rows excluded)."))
    score_weights: dict[str, float] = {"feature": 0.45, "regime": 0.25, "prediction": 0.15, "domain": 0.15}
    retrain_threshold: float = Field(default=0.15, ge=0, le=1)
    top_features: int = Field(default=10, ge=1)
    calibration: Literal["reference_windows", "none"] = Field(
        default="reference_windows",
        description="reference_windows: each component is the excess over what the reference's own windows of "
                    "current_weeks show (see core/drift.py); none: raw PSI/TVD components.")
    null_quantile: float = Field(default=0.95, gt=0, lt=1, description="Quantile of the reference windows' statistic.")
    min_null_windows: int = Field(default=4, ge=2, description="Fewer reference windows: the raw component is used.")
    ks_floor: float = Field(default=0.1, gt=0, le=1, description="Floor of the null quantile for the KS statistic.")
    wasserstein_floor: float = Field(default=0.25, gt=0, description="Floor of the null quantile for the "
                                                                     "Wasserstein distance (in reference sd).")
    domain_classifier: bool = Field(default=True, description="Score the domain classifier (current vs reference).")
    domain_max_window: int = Field(default=10, ge=1, description="Domain classifier: features whose windows are "
                                                                 "all at most this many days.")
    domain_null_windows: int = Field(default=6, ge=2, description="Reference windows the classifier's null uses.")
    domain_folds: int = Field(default=2, ge=2, description="Cross-validation folds (by date).")
    domain_trees: int = Field(default=20, ge=5, description="LightGBM trees of the domain classifier.")
    domain_max_rows: int = Field(default=2000, ge=100, description="Reference rows the classifier sees (sampled).")
    domain_floor: float = Field(default=0.05, gt=0, le=0.5, description="Floor of the null quantile of AUROC - 0.5.")
    tvd_floor: float = Field(default=0.05, gt=0, le=1, description="Floor of the null quantile for regime/prediction TVD.")

    @field_validator("score_weights")
    @classmethod
    def _sw(cls, v: dict[str, float]) -> dict[str, float]:
        extra = set(v) - {"feature", "regime", "prediction", "domain"}
        if extra or not v:
            raise ValueError("score_weights may name only feature, regime, prediction, domain (a missing one "
                             f"weighs 0); got {sorted(extra)}")
        if abs(sum(v.values()) - 1) > 1e-6 or any(x < 0 for x in v.values()):
            raise ValueError("score_weights must be >= 0 and sum to 1")
        return v


class CaptureSpec(_Strict):
    vix_level: float = 40.0
    vix_days: int = Field(default=3, ge=1)
    drift_score: float = Field(default=0.25, ge=0, le=1)
    crash_share: float = Field(default=0.5, gt=0, le=1)
    default_weight: float = Field(default=0.10, gt=0, le=1)
    lookback_days: int = Field(default=63, ge=1, description="Trading days scanned before the as-of date.")
    regrow_days: int = Field(default=10, ge=1, description=(
        "A captured event that keeps growing starts another retraining run each time its extent has grown by "
        "this many trading days since its last run."))


class ReplayBufferSpec(_Strict):
    worst_fraction: float = Field(default=0.05, gt=0, le=1)
    max_rows: int = Field(default=5000, ge=0)


class RewindSpec(_Strict):
    model: str = Field(default="lightgbm", description="Model (by name in `models`) the history rewind retrains.")
    n_estimators: int = Field(default=150, ge=10)
    max_train_rows: int = Field(default=20_000, ge=500)


class AutomationSpec(_Strict):
    schedule_cron: str = "0 21 * * 6"
    timezone: str = "America/New_York"
    monitoring_cron: str = "30 18 * * 1-5"
    schedule_enabled: bool = True
    sensors_enabled: bool = True
    sensor_interval_seconds: int = Field(default=60, ge=5)
    min_samples: int = Field(default=1000, ge=1)
    max_runtime_seconds: int = Field(default=4 * 3600, ge=60)


class SignalSpec(_Strict):
    n_dates: int = Field(default=5, ge=1, description="Latest dates with features that get signals (the last one "
                                                      "is the as-of date).")
    action: Literal["argmax", "threshold"] = Field(
        default="argmax", description="argmax: the most probable class; threshold: buy when score >= "
                                      "buy_threshold, sell when score <= -sell_threshold, else hold.")
    buy_threshold: float = Field(default=0.10, ge=0, le=1, description="Score P(buy) - P(sell) at which to buy.")
    sell_threshold: float = Field(default=0.10, ge=0, le=1, description="Score at or below minus this: sell.")
    top: int = Field(default=5, ge=1, description="Top and bottom symbols the summary and the CLI show.")
    without_model: Literal["fail", "skip"] = Field(
        default="skip", description="No promoted model: fail the asset with the reason, or skip it (no table, the "
                                    "run goes on; for a gate that may promote nothing).")


class BacktestSpec(_Strict):
    top_k: int = Field(default=5, ge=1, description="Symbols per leg: long the top k, short the bottom k by score "
                                                    "(fewer on a date with under 2k symbols).")
    holding_days: int | None = Field(default=None, ge=1, description="Days each book is held; None = labels.horizon.")
    open_cost_bps: float = Field(default=5.0, ge=0, le=1000, description="Cost per unit of position opened, bps.")
    close_cost_bps: float = Field(default=15.0, ge=0, le=1000, description="Cost per unit of position closed, bps.")
    candidate: str = Field(default="meta_learner", description="The production candidate among the predictions' "
                                                                "models (shown first, in the summary and the plots).")
    market_regime: Literal["most_common", "vix_band"] = Field(
        default="most_common", description="Market regime of a date: the most common symbol regime of the date "
                                           "(ties to the more severe), or the VIX band of the date.")
    periods_per_year: int = Field(default=252, ge=1)
    bootstrap_reps: int = Field(default=200, ge=20)
    block_length_days: float = Field(default=20.0, gt=0, description="Mean block length of the stationary "
                                                                     "bootstrap over dates (>= the horizon).")
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    seed: int = 123
    min_days: int = Field(default=20, ge=2, description="Fewer days in a group: no interval.")


class MemoSpec(_Strict):
    enabled: bool = Field(default=True, description="Keep content-keyed results under the home (memo/): model fits, "
                                                    "the meta-learner, validation predictions, SHAP tables and the "
                                                    "evaluation tables are reused when everything they depend on "
                                                    "is unchanged (off: every run recomputes them).")


class Spec(_Strict):
    name: str = "default"
    data: DataSpec = DataSpec()
    vix_proxy: VixProxySpec = VixProxySpec()
    regimes: RegimeSpec = RegimeSpec()
    features: FeatureSpec = FeatureSpec()
    labels: LabelSpec = LabelSpec()
    events: list[EventSpec] = DEFAULT_EVENTS
    training_set: TrainingSetSpec = TrainingSetSpec()
    balance: BalanceSpec = BalanceSpec()
    weights: WeightSpec = WeightSpec()
    models: list[ModelSpec] = DEFAULT_MODELS
    meta: MetaSpec = MetaSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    walk_forward: WalkForwardSpec = WalkForwardSpec()
    gate: GateSpec = GateSpec()
    shap: ShapSpec = ShapSpec()
    drift: DriftSpec = DriftSpec()
    capture: CaptureSpec = CaptureSpec()
    replay_buffer: ReplayBufferSpec = ReplayBufferSpec()
    automation: AutomationSpec = AutomationSpec()
    rewind: RewindSpec = RewindSpec()
    signals: SignalSpec = SignalSpec()
    backtest: BacktestSpec = BacktestSpec()
    memo: MemoSpec = MemoSpec()

    @model_validator(mode="after")
    def _unique(self) -> "Spec":
        ids = [e.id for e in self.events]
        if len(ids) != len(set(ids)):
            raise ValueError("events: ids must be unique")
        names = [m.name for m in self.models]
        if len(names) != len(set(names)):
            raise ValueError("models: names must be unique")
        return self

    @property
    def enabled_models(self) -> list[ModelSpec]:
        return [m for m in self.models if m.enabled]

    def resolved(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    @property
    def spec_hash(self) -> str:
        payload = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _format_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return f"invalid spec {source}: " + "; ".join(parts)


def spec_from_dict(data: dict[str, Any] | None, source: str = "<dict>") -> Spec:
    try:
        return Spec.model_validate(data or {})
    except ValidationError as err:
        raise SpecError(_format_error(err, source)) from None


def load_spec(path: str | os.PathLike[str] | None = None) -> Spec:
    """Load a spec from YAML; ``None`` reads $REGIME_ASSETS_SPEC or the packaged default."""
    p = Path(path or os.environ.get(SPEC_ENV) or DEFAULT_SPEC_PATH)
    if not p.exists():
        raise SpecError(f"spec file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpecError(f"invalid spec {p}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise SpecError(f"invalid spec {p}: top level must be a mapping")
    return spec_from_dict(data, str(p))


def dump_spec(spec: Spec) -> str:
    return yaml.safe_dump(spec.resolved(), sort_keys=False)


def write_default_spec(path: Path = DEFAULT_SPEC_PATH) -> None:
    """Regenerate the shipped spec.yaml from the pydantic defaults (`python -m regime_assets.spec`)."""
    header = ("# regime_assets default spec: every tunable number, seeded with the original values.\n"
              "# Copy it, change what you need, and pass --spec PATH (or set REGIME_ASSETS_SPEC).\n"
              "# Generated from regime_assets/spec.py by `python -m regime_assets.spec`.\n")
    path.write_text(header + dump_spec(Spec()))


if __name__ == "__main__":
    write_default_spec()
    print(f"wrote {DEFAULT_SPEC_PATH} ({Spec().spec_hash})")
