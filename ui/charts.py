"""Plotly figures for the pages. Plain functions: frames in, figures out."""

from __future__ import annotations

import datetime as dt

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from health.features import AS_OF
from health.model import Tiers
from health.timeline import SOURCE_LABELS
from ui.fmt import TIER_COLORS, TIER_LABELS, money

TONE_COLORS = {"bad": "#d64545", "good": "#3a9d5d", "info": "#5b7fa6"}
TONE_WORDS = {"bad": "bad news", "good": "good news", "info": "for the record"}
BAND_ALPHA = 0.10
METRIC_LABELS = {
    "active_users": "Active users",
    "feature_automations": "Users of automations",
    "feature_dashboards": "Users of dashboards",
    "events": "Events",
}


def _hex_rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _layout(fig: go.Figure, height: int, top: int = 30, **kw) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=top, b=10), hovermode="closest", **kw)
    return fig


def score_history(
    history: pl.DataFrame,
    tiers: Tiers,
    x_range: tuple[dt.date, dt.date],
    model_changes: list[tuple[dt.date, str]] = (),  # type: ignore[assignment]
    stored: pl.DataFrame | None = None,
) -> go.Figure:
    """The weekly score with the segment's tier bands shaded behind it, and a dotted line
    where the published model changed (so a model change is not read as the customer's)."""
    fig = go.Figure()
    for day, label in model_changes:
        if x_range[0] <= day <= x_range[1]:
            fig.add_vline(
                x=dt.datetime.combine(day, dt.time()).timestamp() * 1000,
                line=dict(color="#5f6b7a", width=1, dash="dot"),
                annotation_text=label,
                annotation_position="bottom right",
                annotation_font=dict(size=10, color="#5f6b7a"),
            )
    bands = [(0, tiers.at_risk, "at_risk"), (tiers.at_risk, tiers.watch, "watch"), (tiers.watch, 100, "healthy")]
    for lo, hi, tier in bands:
        fig.add_hrect(
            y0=lo,
            y1=hi,
            fillcolor=_hex_rgba(TIER_COLORS[tier], BAND_ALPHA * (1.6 if tier == "at_risk" else 1)),
            line_width=0,
            layer="below",
            annotation_text=f"{TIER_LABELS[tier]} ({'<' + format(hi, 'g') if tier != 'healthy' else '≥' + format(lo, 'g')})",
            annotation_position="top left",
            annotation_font=dict(size=11, color=TIER_COLORS[tier]),
        )
    if not history.is_empty():
        h = history.sort(AS_OF)
        tiers_col = h["tier"].to_list()
        fig.add_trace(
            go.Scatter(
                x=h[AS_OF].to_list(),
                y=h["score"].to_list(),
                mode="lines+markers",
                line=dict(color="#33415c", width=2),
                marker=dict(size=6, color=[TIER_COLORS.get(t, "#9aa0a6") for t in tiers_col]),
                customdata=[[TIER_LABELS.get(t, t), r or ""] for t, r in zip(tiers_col, h["rule"].to_list() if "rule" in h.columns else [None] * h.height)],
                hovertemplate="Week of %{x|%d %b %Y}<br>Score %{y:.0f} — %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
                name="Health score",
            )
        )
    if stored is not None and not stored.is_empty():
        # What the daily run stored on the day, with the model then in force: where it
        # differs from the line, the model changed, not the customer.
        s = stored.sort(AS_OF)
        fig.add_trace(
            go.Scatter(
                x=s[AS_OF].to_list(),
                y=s["score"].to_list(),
                mode="markers",
                marker=dict(symbol="diamond-open", size=9, color="#5f6b7a"),
                customdata=[[TIER_LABELS.get(t, t), h] for t, h in zip(s["tier"].to_list(), s["model_hash"].to_list())],
                hovertemplate="Stored on %{x|%d %b %Y}: %{y:.0f} — %{customdata[0]}<br>model %{customdata[1]}<extra></extra>",
                name="As scored on the day",
            )
        )
    fig.update_yaxes(range=[0, 100], title="Health score", fixedrange=True)
    fig.update_xaxes(range=list(x_range))
    return _layout(fig, 300, showlegend=False)


def drivers(breakdown: pl.DataFrame) -> go.Figure:
    """Per signal: the points it earns (green) and the points it costs (red). The green
    bars add up to the score; the biggest red bars are the drivers."""
    b = breakdown.filter(pl.col("in_model")).sort("points_lost")
    labels = [f"{lab} · {val}" for lab, val in zip(b["label"], b["value"])]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            y=labels,
            x=b["contribution"].to_list(),
            orientation="h",
            name="Points earned",
            marker_color=TIER_COLORS["healthy"],
            hovertemplate="%{y}<br>earns %{x:.1f} points<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            y=labels,
            x=b["points_lost"].to_list(),
            orientation="h",
            name="Points lost",
            marker_color=TIER_COLORS["at_risk"],
            hovertemplate="%{y}<br>costs %{x:.1f} points<extra></extra>",
        )
    )
    fig.update_layout(barmode="stack", legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0))
    fig.update_xaxes(title="Points out of 100 — a bar's length is the signal's weight; green bars add up to the score")
    return _layout(fig, 90 + 28 * max(b.height, 3), top=40)


def timeline(timeline: pl.DataFrame, usage: pl.DataFrame, x_range: tuple[dt.date, dt.date], metrics: list[str]) -> go.Figure:
    """One lane per source (markers coloured by good / bad news, hover for detail) above
    the daily usage lines, on one shared time axis (zooming one zooms both)."""
    present = [s for s in SOURCE_LABELS if s in set(timeline["source"].to_list())]
    lanes = [SOURCE_LABELS[s] for s in reversed(present)]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.58, 0.42],
        vertical_spacing=0.06,
        subplot_titles=("Events (hover a dot for the detail)", "Product usage, 7-day average"),
    )
    for tone in ("info", "good", "bad"):
        part = timeline.filter(pl.col("tone") == tone)
        if part.is_empty():
            continue
        fig.add_trace(
            go.Scatter(
                x=part["at"].to_list(),
                y=[SOURCE_LABELS.get(s, s) for s in part["source"]],
                mode="markers",
                marker=dict(size=10, color=TONE_COLORS[tone], line=dict(width=1, color="white"), opacity=0.85),
                customdata=list(zip(part["title"].to_list(), part["detail"].to_list())),
                hovertemplate="%{x|%d %b %Y}<br><b>%{customdata[0]}</b><br>%{customdata[1]}<extra></extra>",
                name=TONE_WORDS[tone].capitalize(),
                legendgroup="tone",
            ),
            row=1,
            col=1,
        )
    palette = ["#33415c", "#5b7fa6", "#9ab3cf", "#b98b4e"]
    for i, metric in enumerate(metrics):
        part = usage.filter(pl.col("metric") == metric)
        if part.is_empty():
            continue
        fig.add_trace(
            go.Scatter(
                x=part["date"].to_list(),
                y=part["value"].to_list(),
                mode="lines",
                line=dict(width=1.6, color=palette[i % len(palette)]),
                name=METRIC_LABELS.get(metric, metric),
                hovertemplate="%{x|%d %b %Y}: %{y:,.1f} " + METRIC_LABELS.get(metric, metric).lower() + " a day (7-day average)<extra></extra>",
                legendgroup="usage",
            ),
            row=2,
            col=1,
        )
    fig.update_yaxes(categoryorder="array", categoryarray=lanes, type="category", row=1, col=1, fixedrange=True)
    fig.update_yaxes(title="users per day", row=2, col=1, rangemode="tozero")
    fig.update_xaxes(range=list(x_range))
    fig.update_layout(legend=dict(orientation="h", y=-0.08, x=0))
    return _layout(fig, 170 + 34 * max(len(lanes), 2) + 200)


def tier_bars(frame: pl.DataFrame, by: str, value: str = "arr") -> go.Figure:
    """Horizontal stacked bars: per group, ARR (or accounts) by tier."""
    fig = go.Figure()
    order = frame.group_by(by).agg(pl.col(value).filter(pl.col("tier") == "at_risk").sum().alias("_r")).sort("_r")[by].to_list()
    for tier in TIER_LABELS:
        part = frame.filter(pl.col("tier") == tier)
        if part.is_empty():
            continue
        fig.add_trace(
            go.Bar(
                y=part[by].to_list(),
                x=part[value].to_list(),
                orientation="h",
                name=TIER_LABELS[tier],
                marker_color=TIER_COLORS[tier],
                customdata=[money(v) if value == "arr" else f"{v:,}" for v in part[value].to_list()],
                hovertemplate="%{y}: %{customdata} " + TIER_LABELS[tier].lower() + "<extra></extra>",
            )
        )
    fig.update_layout(barmode="stack", legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    fig.update_yaxes(categoryorder="array", categoryarray=order)
    if value == "arr":
        fig.update_xaxes(tickprefix="$", tickformat="~s", title="ARR")
    else:
        fig.update_xaxes(title="Accounts")
    return _layout(fig, 110 + 30 * max(len(order), 3), top=50)


def at_risk_over_time(over_time: pl.DataFrame) -> go.Figure:
    """ARR at risk week by week (ARR on watch one legend click away)."""
    fig = go.Figure()
    for tier in ("at_risk", "watch"):
        part = over_time.filter(pl.col("tier") == tier).sort(AS_OF)
        fig.add_trace(
            go.Scatter(
                x=part[AS_OF].to_list(),
                y=part["arr"].to_list(),
                mode="lines",
                name=f"ARR {TIER_LABELS[tier].lower()}",
                line=dict(color=TIER_COLORS[tier], width=2.5 if tier == "at_risk" else 1.5),
                fill="tozeroy" if tier == "at_risk" else None,
                fillcolor=_hex_rgba(TIER_COLORS["at_risk"], 0.12),
                visible=True if tier == "at_risk" else "legendonly",
                customdata=list(zip([money(v) for v in part["arr"].to_list()], part["accounts"].to_list())),
                hovertemplate="Week of %{x|%d %b %Y}<br>%{customdata[0]} in %{customdata[1]} accounts<extra></extra>",
            )
        )
    fig.update_yaxes(tickprefix="$", tickformat="~s", rangemode="tozero", title="ARR")
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    return _layout(fig, 320, top=50)


def movement_matrix(movement: pl.DataFrame) -> go.Figure:
    """Tier 4 weeks ago (rows) x tier now (columns): accounts, with ARR on hover."""
    rows = [t for t in ("at_risk", "watch", "healthy", "insufficient_data", "new") if t in set(movement["from"].to_list())]
    cols = [t for t in ("at_risk", "watch", "healthy", "insufficient_data") if t in set(movement["to"].to_list())]
    name = lambda t: "Not scored then" if t == "new" else TIER_LABELS.get(t, t)  # noqa: E731
    lookup = {(r["from"], r["to"]): r for r in movement.iter_rows(named=True)}
    z, text, hover = [], [], []
    for r in rows:
        zr, tr, hr = [], [], []
        for c in cols:
            cell = lookup.get((r, c))
            n = cell["accounts"] if cell else 0
            zr.append(n)
            tr.append(f"{n}" + (f"<br>{money(cell['arr'])}" if cell else ""))
            hr.append(f"{name(r)} → {name(c)}: {n} accounts, {money(cell['arr']) if cell else '$0'} ARR")
        z.append(zr)
        text.append(tr)
        hover.append(hr)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"Now: {name(c)}" for c in cols],
            y=[f"4 weeks ago: {name(r)}" for r in rows],
            text=text,
            texttemplate="%{text}",
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            colorscale=[[0, "#f4f6f8"], [1, "#5b7fa6"]],
            showscale=False,
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, 90 + 55 * len(rows))


def renewals(renewals: pl.DataFrame) -> go.Figure:
    """ARR renewing within each horizon, by tier."""
    fig = go.Figure()
    for tier in TIER_LABELS:
        part = renewals.filter(pl.col("tier") == tier).sort("within_days")
        if part.is_empty():
            continue
        fig.add_trace(
            go.Bar(
                x=[f"Next {d} days" for d in part["within_days"].to_list()],
                y=part["arr"].to_list(),
                name=TIER_LABELS[tier],
                marker_color=TIER_COLORS[tier],
                customdata=list(zip([money(v) for v in part["arr"].to_list()], part["accounts"].to_list())),
                hovertemplate="%{x}: %{customdata[0]} in %{customdata[1]} accounts<extra></extra>",
            )
        )
    fig.update_layout(barmode="stack", legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    fig.update_yaxes(tickprefix="$", tickformat="~s", title="ARR renewing")
    return _layout(fig, 320, top=50)
