"""The Dagster UI as a person uses it: the asset graph with every group, "Materialize all" from the UI to a
successful run, an evaluation asset's metadata and plot, the schedule and both sensors running, and a run started
through the UI's GraphQL API. Runs a real `dagster dev` (see conftest.py) on the tiny synthetic spec."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.ui, pytest.mark.slow]

GROUPS = ["ingest", "regimes", "samples", "training", "evaluation", "monitoring", "automation"]
RUNS_QUERY = """
query Runs { runsOrError(limit: 20) { __typename ... on Runs { results { runId status jobName tags { key value } } } } }
"""
INSTIGATORS = """
query Repos { repositoriesOrError { ... on RepositoryConnection { nodes { name
  schedules { name scheduleState { status } }
  sensors { name sensorState { status } } } } } }
"""


def dismiss_onboarding(page) -> None:
    """A fresh instance greets with a "Join the Dagster community" dialog after a while: skip it as a person would."""
    skip = page.locator("[role=dialog]", has_text="Join the Dagster community").get_by_role("button", name="Skip")
    if skip.count() and skip.first.is_visible():
        skip.first.click()
        page.wait_for_timeout(300)


def _click(page, locator) -> None:
    """Click like a person: skip the onboarding dialog, close a stray overlay with Escape if one is in the way."""
    for _ in range(3):
        dismiss_onboarding(page)
        try:
            locator.click(timeout=10_000)
            return
        except Exception:
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
    locator.click(force=True)


def _runs(server) -> list[dict]:
    return server.graphql(RUNS_QUERY)["runsOrError"]["results"]


def _wait_run(server, run_id: str, timeout: float) -> str:
    q = 'query R($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }'
    deadline = time.time() + timeout
    status = None
    while time.time() < deadline:
        status = server.graphql(q, {"id": run_id})["runOrError"].get("status")
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(2)
    return f"timeout ({status})"


def test_asset_graph_shows_every_group(dagster_server, page):
    page.goto(f"{dagster_server.url}/asset-groups")
    for g in GROUPS:
        page.get_by_text(g, exact=True).first.wait_for(timeout=90_000)
    page.screenshot(path=str(dagster_server.shots / "graph_groups.png"))
    page.locator("button", has_text="Materialize all").first.wait_for()
    page.screenshot(path=str(dagster_server.shots / "graph.png"))


def test_schedule_and_both_sensors_are_running(dagster_server, page):
    nodes = dagster_server.graphql(INSTIGATORS)["repositoriesOrError"]["nodes"]
    schedules = {s["name"]: s["scheduleState"]["status"] for n in nodes for s in n["schedules"]}
    sensors = {s["name"]: s["sensorState"]["status"] for n in nodes for s in n["sensors"]}
    assert schedules.get("weekly_retrain_schedule") == "RUNNING", schedules
    assert sensors.get("drift_sensor") == "RUNNING" and sensors.get("new_event_sensor") == "RUNNING", sensors
    page.goto(f"{dagster_server.url}/automation")
    for name in ("weekly_retrain_schedule", "drift_sensor", "new_event_sensor"):
        page.get_by_text(name, exact=True).first.wait_for(timeout=90_000)
    page.screenshot(path=str(dagster_server.shots / "automation.png"))


@pytest.fixture(scope="module")
def ui_run(dagster_server, browser):
    """Click "Materialize all" on the asset graph; the run it starts must succeed."""
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(90_000)
    try:
        before = {r["runId"] for r in _runs(dagster_server)}
        page.goto(f"{dagster_server.url}/asset-groups")
        button = page.locator("button", has_text="Materialize all")
        button.first.wait_for()
        page.screenshot(path=str(dagster_server.shots / "before_click.png"))
        _click(page, button.first)
        # a launch dialog appears only when something needs confirming; click its launch button if it does
        deadline = time.time() + 60
        new: list[dict] = []
        while time.time() < deadline and not new:
            launch = page.locator("[role=dialog] button", has_text=re.compile(r"^(Launch|Materialize)"))
            if launch.count() and launch.last.is_visible() and launch.last.is_enabled():
                try:
                    launch.last.click(timeout=2_000)
                except Exception:  # the dialog may close on its own
                    pass
            new = [r for r in _runs(dagster_server) if r["runId"] not in before]
            time.sleep(1)
        assert new, "clicking Materialize all started no run"
        run_id = new[0]["runId"]
        status = _wait_run(dagster_server, run_id, 900)
        page.goto(f"{dagster_server.url}/runs/{run_id}")
        page.get_by_text(re.compile("Success", re.I)).first.wait_for()
        page.screenshot(path=str(dagster_server.shots / "run.png"))
        yield run_id, status
    finally:
        ctx.close()


def test_materialize_all_from_the_ui_succeeds(ui_run):
    run_id, status = ui_run
    assert status == "SUCCESS", f"run {run_id}: {status}"


def test_evaluation_asset_page_shows_metadata_and_plot(dagster_server, page, ui_run):
    assert ui_run[1] == "SUCCESS"
    page.goto(f"{dagster_server.url}/assets/regime_evaluation")
    page.get_by_text("meta_balanced_accuracy_overall").first.wait_for(timeout=90_000)
    page.get_by_text("metric_bars").first.wait_for()
    page.screenshot(path=str(dagster_server.shots / "evaluation_page.png"))
    # markdown metadata opens in a dialog: the per-regime bars with intervals are a PNG inside it
    _click(page, page.locator("tr", has_text="metric_bars").get_by_text("Show Markdown").first)
    plots = page.locator("img[src^='data:image/png']")
    plots.first.wait_for(timeout=60_000)
    assert plots.count() >= 1
    box = plots.first.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 50
    page.screenshot(path=str(dagster_server.shots / "evaluation.png"), full_page=False)


def test_graphql_launch_of_the_monitoring_job_runs(dagster_server, ui_run):
    assert ui_run[1] == "SUCCESS"
    nodes = dagster_server.graphql(
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
    )["repositoriesOrError"]["nodes"]
    repo = nodes[0]
    mutation = """
    mutation Launch($p: ExecutionParams!) { launchRun(executionParams: $p) {
      __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
      ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }
    """
    params = {"selector": {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"],
                           "jobName": "monitoring"},
              "executionMetadata": {"tags": [{"key": "regime_assets/trigger", "value": "manual"}]}}
    out = dagster_server.graphql(mutation, {"p": params})["launchRun"]
    assert out["__typename"] == "LaunchRunSuccess", out
    status = _wait_run(dagster_server, out["run"]["runId"], 600)
    assert status == "SUCCESS", status
