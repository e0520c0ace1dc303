"""Print the asset graph as a markdown table (asset, group, upstream, description) for docs/ARCHITECTURE.md.

    uv run python scripts/asset_graph.py > /tmp/graph.md
"""

from __future__ import annotations

from regime_assets.definitions import build_definitions


def graph_markdown() -> str:
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    order = ["ingest", "regimes", "samples", "training", "evaluation", "monitoring", "automation", "signals"]
    rows = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        ups = ", ".join(sorted(k.to_user_string() for k in node.parent_keys)) or "-"
        desc = (node.description or "").split(". ")[0].replace("\n", " ").replace("|", "/")
        rows.append((order.index(node.group_name) if node.group_name in order else 99, node.group_name,
                     key.to_user_string(), ups, desc))
    rows.sort(key=lambda r: r[0])
    out = ["| group | asset | upstream | what |", "|---|---|---|---|"]
    out += [f"| {g} | `{a}` | {u} | {d} |" for _, g, a, u, d in rows]
    return "\n".join(out)


if __name__ == "__main__":
    print(graph_markdown())
