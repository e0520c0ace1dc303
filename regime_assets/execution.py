"""Run a job of the code location with Dagster's multiprocess executor (one process per step).

The step processes rebuild the definitions from the environment (``REGIME_ASSETS_SPEC``, ``REGIME_ASSETS_HOME``,
``REGIME_ASSETS_EXECUTOR``), so ``execute_multiprocess`` sets them for itself and its children and points Dagster
at ``env_definitions`` below (built on each load, never a copy made at import with another environment). The
instance must be persistent (a DAGSTER_HOME's, SQLite or PostgreSQL): the step processes report to it.

    from regime_assets.execution import execute_multiprocess
    result = execute_multiprocess(instance, spec_path, home, selection="group:training", max_concurrent=2)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dagster import AssetSelection, Definitions, definitions

from regime_assets.home.paths import HOME_ENV
from regime_assets.home.runs import process_tags
from regime_assets.spec import SPEC_ENV

MODULE = "regime_assets.execution"
ATTRIBUTE = "env_definitions"
# imported once by the forkserver; each step process is forked from it instead of importing them again (about
# 8 s of imports per step on a 2-core machine)
PRELOAD = ["regime_assets.definitions", "sklearn.ensemble", "sklearn.linear_model", "sklearn.svm",
           "sklearn.neural_network", "xgboost", "lightgbm"]


@definitions
def env_definitions() -> Definitions:
    """The definitions of the spec, home and executor named by the environment."""
    from regime_assets.definitions import build_definitions

    return build_definitions()


def execute_multiprocess(instance, spec_path: str | Path | None, home: str | Path, selection: str | None = None,
                         max_concurrent: int | None = None, job_name: str = "materialize_all",
                         tags: Mapping[str, str] | None = None, raise_on_error: bool = False,
                         start_method: str = "forkserver"):
    """Execute ``job_name`` (or the assets of ``selection``, with the multi-assets they need) with the
    multiprocess executor, at most ``max_concurrent`` steps at once (default: the CPU count), step processes
    forked from a forkserver that preloads ``PRELOAD`` (``start_method="spawn"``: each imports everything itself).
    Returns Dagster's
    ``JobExecutionResult``; the environment variables it set stay set (the step processes and any later run of
    this process read them)."""
    from dagster import execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from regime_assets.definitions import EXECUTOR_ENV

    if spec_path is not None:
        os.environ[SPEC_ENV] = str(Path(spec_path).resolve())
    os.environ[HOME_ENV] = str(Path(home).resolve())
    os.environ[EXECUTOR_ENV] = "multiprocess"
    recon = ReconstructableRepository.for_module(MODULE, ATTRIBUTE, working_directory=os.getcwd())
    job = recon.get_reconstructable_job(job_name)
    keys = None
    if selection:
        defs = env_definitions()
        sel = AssetSelection.from_string(selection).required_multi_asset_neighbors()
        keys = sorted(sel.resolve(defs.resolve_asset_graph()))
        if not keys:
            raise ValueError(f"selection {selection!r} matches no asset")
    start = {"forkserver": {"preload_modules": PRELOAD}} if start_method == "forkserver" else {"spawn": {}}
    run_config = {"execution": {"config": {"max_concurrent": int(max_concurrent or 0), "start_method": start}}}
    return execute_job(job, instance=instance, run_config=run_config, asset_selection=keys,
                       tags={"regime_assets/trigger": "manual", **process_tags(), **(tags or {})},
                       raise_on_error=raise_on_error)
