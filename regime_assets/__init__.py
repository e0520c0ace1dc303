"""regime_assets: a Dagster code location for regime-aware buy/hold/sell classifiers."""

import os

# OpenMP threads (LightGBM, XGBoost, HistGradientBoosting) spin-wait for a core by default; on a shared 2-core
# machine that made fits several times slower. Passive waiting costs nothing when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# polars' allocator (jemalloc) hands freed pages back to the kernel after 0.5-1.5 s by default, so a step that
# follows a pause (another step, a model fit, pandas work) faults every page in again: measured here, the
# features step after such a pause spent ~200 ms of system time on ~70,000 page faults (bench/features.py).
# Keeping freed pages 5 s lets the next polars step reuse them; polars appends this after its own defaults, so
# it wins, and a value the user sets is kept. It applies only if regime_assets is imported before polars.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:5000,muzzy_decay_ms:5000")
