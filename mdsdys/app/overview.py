"""The whole-slide overview as a clickable plotly figure: chosen fields outlined, a marker per field to add or drop.

Plotly, not Streamlit: the Import page shows the figure with `st.plotly_chart(on_select=...)` (issue 18).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from mdsdys.ingest.slide_import import SlidePlan

CHOSEN, OTHER = "#00c853", "#1e88e5"


def _overlaps(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def clickable_fields(plan: SlidePlan) -> list[tuple[tuple[int, int, int, int], bool, float]]:
    """(box, chosen, monolayer share) for every marker: the chosen fields, then grid fields clear of them."""
    chosen = [(tuple(c.box), True, c.monolayer) for c in plan.chosen]
    free = [(tuple(g.box), False, g.monolayer) for g in plan.grid
            if not any(_overlaps(g.box, c.box) for c in plan.chosen)]
    return chosen + free


def overview_figure(plan: SlidePlan, height: int = 640) -> go.Figure:
    """The overview with chosen fields outlined in green and a marker at every field's centre (click to toggle)."""
    s = plan.overview_scale
    figure = go.Figure(go.Image(z=plan.overview, hoverinfo="skip"))
    markers = clickable_fields(plan)
    for box, chosen, _ in markers:
        if chosen:
            x, y, w, h = (v * s for v in box)
            figure.add_shape(type="rect", x0=x, y0=y, x1=x + w, y1=y + h, line={"color": CHOSEN, "width": 2})
    figure.add_trace(go.Scatter(
        x=[(b[0] + b[2] / 2) * s for b, _, _ in markers], y=[(b[1] + b[3] / 2) * s for b, _, _ in markers],
        mode="markers", customdata=[list(b) for b, _, _ in markers],
        marker={"size": [9 if c else 6 for _, c, _ in markers], "color": [CHOSEN if c else OTHER for _, c, _ in markers],
                "opacity": [0.9 if c else 0.25 + 0.6 * m for _, c, m in markers], "line": {"width": 0}},
        hovertext=[("chosen: click to drop" if c else f"click to add; looks {m:.0%} monolayer") for _, c, m in markers],
        hoverinfo="text", name="fields", showlegend=False))
    figure.update_layout(height=height, margin={"l": 0, "r": 0, "t": 0, "b": 0}, dragmode=False,
                         xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"})
    return figure


def clicked_box(event: Mapping[str, Any] | None) -> tuple[int, int, int, int] | None:
    """The field box of the first clicked marker in a plotly selection event, or None."""
    points = ((event or {}).get("selection") or {}).get("points") or []
    for point in points:
        data = point.get("customdata")
        if data is not None and len(data) == 4:
            return tuple(int(v) for v in data)
    return None
