"""Small helpers that turn frames and figures into Dagster metadata."""


import math
from typing import Any

import polars as pl
from dagster import MetadataValue


def md_table(df: pl.DataFrame, max_rows: int = 20, floats: int = 4) -> str:
    """A markdown table of the first rows (floats rounded), for MetadataValue.md."""
    if df.height == 0:
        return "_(no rows)_"
    view = df.head(max_rows)
    cols = view.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in view.iter_rows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if math.isnan(v) else f"{v:.{floats}f}")
            elif v is None:
                cells.append("")
            else:
                cells.append(str(v).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    if df.height > max_rows:
        lines.append(f"\n_{df.height - max_rows} more rows_")
    return "\n".join(lines)


def md(df: pl.DataFrame, max_rows: int = 20) -> MetadataValue:
    return MetadataValue.md(md_table(df, max_rows))


def plot_md(markdown_img: str) -> MetadataValue:
    return MetadataValue.md(markdown_img)


def base_meta(df: pl.DataFrame, spec_hash: str, preview_rows: int = 10) -> dict[str, Any]:
    return {
        "rows": MetadataValue.int(int(df.height)),
        "columns": MetadataValue.int(len(df.columns)),
        "spec_hash": MetadataValue.text(spec_hash),
        "preview": md(df, preview_rows),
    }


def num(v: Any) -> MetadataValue:
    """A float/int metadata value (None/NaN become text 'n/a' so the UI shows why there is no number)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MetadataValue.text("n/a")
    if isinstance(v, bool):
        return MetadataValue.bool(v)
    if isinstance(v, int):
        return MetadataValue.int(v)
    return MetadataValue.float(float(v))
