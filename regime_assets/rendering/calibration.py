"""Reliability diagram: predicted vs observed class frequency per probability bin, before and after calibration.

Input: reliability tables of ``core.calibration.reliability_table`` (``class, bin, n, mean_predicted,
observed``), one per curve, e.g. ``{"before": t0, "after": t1}``. Returns PNG bytes (one panel per class, the
diagonal is perfect calibration, marker size ~ rows in the bin); a "no data" placeholder on empty input.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib import rc_context  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from regime_assets.spec import CLASSES  # noqa: E402

DPI = 90
STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False}
CURVE_STYLE = {"before": {"color": "#9e9e9e", "marker": "o", "ls": "--"},
               "after": {"color": "#1f77b4", "marker": "o", "ls": "-"}}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def png_markdown(png: bytes, alt: str = "chart") -> str:
    clean = " ".join(str(alt).replace("[", "(").replace("]", ")").split())
    return f"![{clean}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def reliability_diagram(tables: dict[str, pl.DataFrame], title: str = "Reliability") -> bytes:
    """One panel per class: observed frequency against mean predicted probability for each curve in ``tables``."""
    with rc_context(STYLE):
        fig = Figure(figsize=(8.0, 3.0), dpi=DPI)
        FigureCanvasAgg(fig)
        usable = {k: t for k, t in tables.items() if t is not None and t.height and int(t["n"].sum()) > 0}
        if not usable:
            ax = fig.add_subplot()
            ax.axis("off")
            ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=12, color="#666666",
                    transform=ax.transAxes)
            ax.set_title(title)
            return _png(fig)
        axes = fig.subplots(1, len(CLASSES), sharey=True)
        for ax, cls in zip(np.atleast_1d(axes), CLASSES):
            ax.plot([0, 1], [0, 1], color="#cccccc", lw=0.8)
            for i, (label, t) in enumerate(usable.items()):
                sub = t.filter((pl.col("class") == cls) & (pl.col("n") > 0)).sort("bin")
                if sub.height == 0:
                    continue
                style = CURVE_STYLE.get(label, {"color": f"C{i + 2}", "marker": "o", "ls": "-"})
                n = sub["n"].to_numpy().astype(float)
                ax.plot(sub["mean_predicted"].to_numpy(), sub["observed"].to_numpy(), lw=1.2, label=label,
                        color=style["color"], ls=style["ls"])
                ax.scatter(sub["mean_predicted"].to_numpy(), sub["observed"].to_numpy(),
                           s=8 + 60 * n / max(n.max(), 1.0), color=style["color"], zorder=3)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(f"p({cls})")
            ax.set_xlabel("mean predicted")
        np.atleast_1d(axes)[0].set_ylabel("observed frequency")
        np.atleast_1d(axes)[0].legend(loc="upper left", frameon=False)
        fig.suptitle(title, fontsize=9)
        return _png(fig)
