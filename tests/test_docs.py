"""The docs stay true: every asset of the default graph is named in docs/ARCHITECTURE.md, and the README gives
the two set-up commands."""

from __future__ import annotations

from pathlib import Path

from regime_assets.definitions import build_definitions

ROOT = Path(__file__).resolve().parents[1]


def test_architecture_lists_every_asset():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    defs = build_definitions()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"docs/ARCHITECTURE.md does not list {missing}"


def test_readme_has_the_commands():
    text = (ROOT / "README.md").read_text()
    for cmd in ("pip install uv", "uv run regime-assets materialize", "uv run pytest", "dagster dev", "127.0.0.1"):
        assert cmd in text, cmd
