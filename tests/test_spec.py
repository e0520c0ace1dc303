"""The declarative spec: defaults are the seeds' values, the shipped YAML equals them, bad specs name the field."""

from __future__ import annotations

import pytest
import yaml

from regime_assets.spec import DEFAULT_SPEC_PATH, Spec, SpecError, load_spec, spec_from_dict


def test_shipped_yaml_is_the_defaults():
    assert load_spec(DEFAULT_SPEC_PATH).resolved() == Spec().resolved()


def test_seed_values():
    s = Spec()
    assert (s.regimes.crash_vix, s.regimes.high_vol_vix, s.regimes.normal_vix) == (35.0, 25.0, 15.0)
    assert (s.regimes.drop_pct, s.regimes.drop_window, s.regimes.recovery_pct) == (0.15, 10, 0.10)
    assert s.balance.ratios == {"low_vol": 0.2, "normal": 0.4, "high_vol": 0.2, "crash": 0.1, "recovery": 0.1}
    assert s.weights.regime_weights == {"crash": 2.0, "recovery": 1.5, "high_vol": 1.3, "normal": 1.0,
                                        "low_vol": 0.8}
    assert [e.weight for e in s.events] == [0.20, 0.15, 0.15, 0.20, 0.10, 0.10, 0.05, 0.05]
    assert len(s.enabled_models) == 8
    assert (s.labels.horizon, s.labels.buy_threshold) == (5, 0.02)
    assert s.drift.retrain_threshold == 0.15 and s.automation.min_samples == 1000
    assert s.automation.schedule_cron == "0 21 * * 6" and s.automation.timezone == "America/New_York"
    assert s.capture.vix_level == 40.0 and s.capture.vix_days == 3


def test_hash_is_stable_and_sensitive():
    a, b = Spec(), Spec()
    assert a.spec_hash == b.spec_hash
    c = spec_from_dict({"labels": {"horizon": 10}})
    assert c.spec_hash != a.spec_hash


@pytest.mark.parametrize("data,field", [
    ({"regimes": {"crash_vix": 20.0}}, "regimes"),
    ({"balance": {"ratios": {"low_vol": 0.5, "normal": 0.4, "high_vol": 0.2, "crash": 0.1, "recovery": 0.1}}},
     "balance.ratios"),
    ({"labels": {"horizon": 0}}, "labels.horizon"),
    ({"unknown_section": 1}, "unknown_section"),
    ({"data": {"sorce": "bundled"}}, "data.sorce"),
    ({"data": {"source": "ftp"}}, "data.source"),
    ({"models": [{"name": "Bad Name", "estimator": "x.Y"}]}, "models.0.name"),
    ({"weights": {"regime_weights": {"crash": -1, "recovery": 1.5, "high_vol": 1.3, "normal": 1.0,
                                     "low_vol": 0.8}}}, "weights.regime_weights"),
])
def test_invalid_spec_names_the_field(data, field):
    with pytest.raises(SpecError) as err:
        spec_from_dict(data, "test.yaml")
    assert field in str(err.value)
    assert "test.yaml" in str(err.value)


def test_load_spec_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("labels: [1, 2")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(p)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
    p.write_text(yaml.safe_dump({"training_set": {"window_years": -1}}))
    with pytest.raises(SpecError, match="training_set.window_years"):
        load_spec(p)
