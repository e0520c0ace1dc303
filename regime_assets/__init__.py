"""regime_assets: a Dagster code location for regime-aware buy/hold/sell classifiers."""

import os

# OpenMP threads (LightGBM, XGBoost, HistGradientBoosting) spin-wait for a core by default; on a shared 2-core
# machine that made fits several times slower. Passive waiting costs nothing when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
