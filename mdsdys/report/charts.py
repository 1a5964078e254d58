"""Plotly figures for the dashboard, the model view and the HTML report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from mdsdys.report.numbers import SlideSummary
from mdsdys.schemes import LabelScheme
from mdsdys.stats import MIN_CELLS_TO_ESTIMATE
from mdsdys.who import DYSPLASIA_LINE


def differential_bar(summaries: Sequence[SlideSummary], scheme: LabelScheme) -> go.Figure:
    """A stacked bar per slide: the share of each class among the cells counted under the label source."""
    figure = go.Figure()
    for label_class in scheme.classes:
        shares = [100 * s.counts.get(label_class.code, 0) / s.labelled if s.labelled else 0 for s in summaries]
        figure.add_bar(name=label_class.code, x=[s.case_id for s in summaries], y=shares,
                       marker_color=label_class.color, hovertemplate=f"{label_class.name}: %{{y:.1f}}%",
                       text=[f"{v:.0f}%" if v >= 4 else "" for v in shares], textposition="inside")
    figure.update_layout(barmode="stack", yaxis_title="% of counted cells", height=320,
                         margin=dict(l=40, r=10, t=30, b=30), legend_orientation="h")
    return figure


def dysplasia_chart(summary: SlideSummary) -> go.Figure:
    """Dysplasia % per lineage with Wilson 95% intervals and the WHO 10% line."""
    lineages = [d for d in summary.dysplasia if d.share.n >= MIN_CELLS_TO_ESTIMATE]  # fewer: "too few cells"
    values = [100 * d.share.value for d in lineages]
    # The WHO call sits under each bar (in the axis label), never inside it over the error bar.
    figure = go.Figure(go.Bar(
        x=[f"{d.lineage}<br><b>{d.flag}</b><br>n = {d.share.n}" for d in lineages], y=values, marker_color="#7b3f9e",
        error_y=dict(type="data", symmetric=False,
                     array=[100 * d.share.high - v for d, v in zip(lineages, values, strict=True)],
                     arrayminus=[v - 100 * d.share.low for d, v in zip(lineages, values, strict=True)]),
        hovertemplate="%{x}: %{y:.1f}%<extra></extra>",
    ))
    figure.add_hline(y=100 * DYSPLASIA_LINE, line_dash="dash", line_color="red", annotation_text="WHO 10%")
    figure.update_layout(yaxis_title="dysplastic cells, % of lineage", yaxis_range=[0, 100], height=340,
                         margin=dict(l=40, r=10, t=30, b=70))
    return figure


def confusion_heatmap(matrix: Sequence[Sequence[int]], codes: Sequence[str], title: str = "") -> go.Figure:
    """A confusion matrix: rows are the true class, columns the predicted one."""
    figure = go.Figure(go.Heatmap(z=matrix, x=list(codes), y=list(codes), colorscale="Purples",
                                  text=matrix, texttemplate="%{text}", showscale=False))
    figure.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                         height=420, margin=dict(l=40, r=10, t=40, b=40))
    return figure


def roc_figure(points: Mapping[str, Mapping[str, Sequence[float]]], aucs: Mapping[str, str],
               colors: Mapping[str, str]) -> go.Figure:
    """ROC curves per class, one against the rest (the paper's Fig. 1); `aucs` are texts with n and interval."""
    figure = go.Figure()
    for code, curve in points.items():
        figure.add_scatter(x=curve["fpr"], y=curve["tpr"], mode="lines", line_color=colors.get(code),
                           name=f"{code}: AUC {aucs.get(code, 'n/a')}")
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line_dash="dot", line_color="grey", showlegend=False)
    figure.update_layout(xaxis_title="1 - specificity", yaxis_title="sensitivity", height=420,
                         margin=dict(l=40, r=10, t=30, b=40))
    return figure


def reliability_figure(bins: Sequence[Mapping[str, float]]) -> go.Figure:
    """Mean confidence against accuracy per bin; the diagonal is perfect calibration."""
    used = [b for b in bins if b.get("count")]
    figure = go.Figure()
    figure.add_bar(x=[b["confidence"] for b in used], y=[b["accuracy"] for b in used], width=0.08, name="accuracy")
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line_dash="dot", line_color="grey", name="calibrated")
    figure.update_layout(xaxis_title="confidence", yaxis_title="accuracy", height=320,
                         margin=dict(l=40, r=10, t=30, b=40))
    return figure


def training_curves(history: Sequence[Mapping[str, float]], metric: str) -> go.Figure:
    """Loss and validation curves of a training run, live on the Train page."""
    epochs = [h.get("epoch") for h in history]
    figure = go.Figure()
    for key in ("train_loss", "val_loss"):
        if any(key in h for h in history):
            figure.add_scatter(x=epochs, y=[h.get(key) for h in history], name=key.replace("_", " "))
    if any(metric in h for h in history):
        figure.add_scatter(x=epochs, y=[h.get(metric) for h in history], name=metric.replace("_", " "), yaxis="y2")
    figure.update_layout(xaxis_title="epoch", yaxis_title="loss", height=320, margin=dict(l=40, r=40, t=30, b=40),
                         yaxis2=dict(title=metric, overlaying="y", side="right", range=[0, 1]))
    return figure


def bland_altman_figure(points: Sequence[tuple[str, Sequence[float]]], result: Mapping[str, float] | None,
                        names: Sequence[str], lineage: str) -> go.Figure:
    """Bland-Altman plot: per slide, the difference of two readers' dysplasia % against their mean."""
    means = [(a + b) / 2 for _, (a, b) in points]
    diffs = [a - b for _, (a, b) in points]
    figure = go.Figure(go.Scatter(x=means, y=diffs, mode="markers", text=[case for case, _ in points],
                                  hovertemplate="%{text}: mean %{x:.1f}%, difference %{y:.1f} pts"))
    if result is not None:
        for y, dash, label in ((result["bias"], "solid", "bias"), (result["low"], "dash", "lower 95% limit"),
                               (result["high"], "dash", "upper 95% limit")):
            figure.add_hline(y=y, line_dash=dash, line_color="grey", annotation_text=f"{label} {y:.1f}")
    figure.update_layout(title=f"{lineage}: {names[0]} minus {names[1]}", xaxis_title="mean dysplasia % of the two",
                         yaxis_title="difference, % points", height=360, margin=dict(l=40, r=10, t=40, b=40))
    return figure


def drift_figure(drift: Mapping[str, Sequence[Mapping[str, Any]]], window: int) -> go.Figure:
    """Each reader's accuracy on gold cells, one point per `window` answers in the order read."""
    figure = go.Figure()
    for reader, points in drift.items():
        figure.add_scatter(x=list(range(1, len(points) + 1)), y=[100 * (p["accuracy"] or 0) for p in points],
                           mode="lines+markers", name=reader, text=[p["from"] for p in points],
                           hovertemplate="from %{text}: %{y:.0f}%")
    figure.update_layout(xaxis_title=f"block of {window} gold cells, in the order read", yaxis_title="accuracy, %",
                         yaxis_range=[0, 100], height=320, margin=dict(l=40, r=10, t=30, b=40))
    return figure
