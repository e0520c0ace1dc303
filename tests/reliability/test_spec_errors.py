"""Spec errors tests/test_spec.py does not cover: unknown fields deeper in the tree, out-of-range or non-finite
numbers (YAML .nan/.inf), through spec_from_dict, load_spec, build_definitions and the CLI — each a SpecError
naming the field."""

from __future__ import annotations

import pytest
import yaml

from regime_assets.spec import SpecError, load_spec, spec_from_dict

NAN, INF = float("nan"), float("inf")
RATIOS = {"low_vol": 0.2, "normal": 0.4, "high_vol": 0.2, "crash": 0.1, "recovery": 0.1}
WEIGHTS = {"crash": 2.0, "recovery": 1.5, "high_vol": 1.3, "normal": 1.0, "low_vol": 0.8}
EVENT = {"id": "e1", "start": "2020-01-01", "end": "2020-02-01", "regime": "crash", "weight": 0.1}
RF = {"name": "rf", "estimator": "sklearn.ensemble.RandomForestClassifier"}

CASES = [
    # unknown fields below the top level
    ({"balance": {"ratio": RATIOS}}, "balance.ratio", "Extra inputs"),
    ({"events": [{**EVENT, "wieght": 0.2}]}, "events.0.wieght", "Extra inputs"),
    ({"models": [{**RF, "parms": {}}]}, "models.0.parms", "Extra inputs"),
    ({"drift": {"score_weight": {}}}, "drift.score_weight", "Extra inputs"),
    # out-of-range ratios and weights
    ({"balance": {"ratios": {**RATIOS, "low_vol": -0.1, "normal": 0.7}}}, "balance.ratios", "within [0, 1]"),
    ({"balance": {"ratios": {k: v for k, v in RATIOS.items() if k != "crash"}}}, "balance.ratios", "exactly"),
    ({"balance": {"ratios": {**RATIOS, "crash": 0.1000001, "recovery": 0.0999999, "normal": 0.41}}},
     "balance.ratios", "sum to 1"),
    ({"weights": {"regime_weights": {**WEIGHTS, "crash": 0.0}}}, "weights.regime_weights", "> 0"),
    ({"events": [{**EVENT, "weight": -0.1}]}, "events.0.weight", "greater than 0"),
    ({"events": [{**EVENT, "weight": 1.5}]}, "events.0.weight", "less than or equal to 1"),
    ({"drift": {"score_weights": {"feature": 1.2, "regime": -0.2, "prediction": 0.0}}}, "drift.score_weights",
     "sum to 1"),
    ({"gate": {"regime_margin": 2}}, "gate.regime_margin", "less than or equal to 1"),
    ({"capture": {"crash_share": 0}}, "capture.crash_share", "greater than 0"),
    ({"vix_proxy": {"coefficients": [1.0, 1.0]}}, "vix_proxy.coefficients", "at least 4"),
    # non-finite numbers (YAML .nan / .inf) are never silently accepted
    ({"balance": {"ratios": {**RATIOS, "low_vol": NAN}}}, "balance.ratios.low_vol", "finite"),
    ({"weights": {"regime_weights": {**WEIGHTS, "crash": NAN}}}, "weights.regime_weights.crash", "finite"),
    ({"weights": {"regime_weights": {**WEIGHTS, "crash": INF}}}, "weights.regime_weights.crash", "finite"),
    ({"drift": {"score_weights": {"feature": NAN, "regime": 0.5, "prediction": 0.5}}},
     "drift.score_weights.feature", "finite"),
    ({"vix_proxy": {"coefficients": [NAN, 1.0, 1.0, 1.0]}}, "vix_proxy.coefficients.0", "finite"),
    ({"capture": {"vix_level": NAN}}, "capture.vix_level", "finite"),
    ({"balance": {"max_replacement_factor": INF}}, "balance.max_replacement_factor", "finite"),
    ({"labels": {"vol_multiplier": INF}}, "labels.vol_multiplier", "finite"),
    ({"evaluation": {"block_length_days": INF}}, "evaluation.block_length_days", "finite"),
    ({"walk_forward": {"train_years": INF}}, "walk_forward.train_years", "finite"),
]


@pytest.mark.parametrize("data,field,why", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_bad_spec_names_the_field(data, field, why):
    with pytest.raises(SpecError) as err:
        spec_from_dict(data, "bad.yaml")
    msg = str(err.value)
    assert f"{field}:" in msg and why in msg and "bad.yaml" in msg, msg


def test_yaml_nan_and_inf_are_rejected_when_loading(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("balance:\n  max_replacement_factor: .inf\nlabels:\n  buy_threshold: .nan\n")
    with pytest.raises(SpecError) as err:
        load_spec(p)
    msg = str(err.value)
    assert "balance.max_replacement_factor" in msg and "labels.buy_threshold" in msg and str(p) in msg


def _bad_spec(tmp_path, tiny_spec_path):
    data = yaml.safe_load(open(tiny_spec_path))
    data["balance"]["ratios"] = {**RATIOS, "crash": -0.1, "normal": 0.6}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_bad_spec_stops_build_definitions(tmp_path, home, tiny_spec_path):
    from regime_assets.definitions import build_definitions

    with pytest.raises(SpecError, match=r"balance\.ratios"):
        build_definitions(spec_path=str(_bad_spec(tmp_path, tiny_spec_path)), home=str(home))
    assert not (home / "warehouse.duckdb").exists()


def test_bad_spec_through_the_cli(tmp_path, tiny_spec_path, capsys):
    from regime_assets.cli import main

    home = tmp_path / "cli_home"
    rc = main(["materialize", "--spec", str(_bad_spec(tmp_path, tiny_spec_path)), "--home", str(home)])
    err = capsys.readouterr().err
    assert rc == 2 and "balance.ratios" in err and "Traceback" not in err
    assert not home.exists()  # rejected before anything is created
