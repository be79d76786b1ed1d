"""The dashboard page, rendered on the server: plain HTML and an inline SVG chart.

No JavaScript build: the page refreshes itself every few seconds (meta refresh).
The chart plots each (model, source)'s recent-window accuracy (MAE for
regression) against the number of scored predictions, one polyline per series, and
marks every concept drift alert at the index where it was raised.
"""

from __future__ import annotations

from html import escape
from typing import Any

from services.monitoring.monitor import Monitor, Series

__all__ = ["render_chart", "render_dashboard"]

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT, PAD, LEGEND = 960, 320, 44, 180

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.muted{color:#777} svg{border:1px solid #ddd;background:#fff}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return escape(str(value))


def _summary_table(monitor: Monitor) -> str:
    regression = monitor.task == "regression"
    names = ("mae", "rmse") if regression else ("accuracy", "f1", "log_loss")
    head = "".join(f"<th>{n}</th>" for n in names)
    rows = []
    for series in sorted(monitor.series.values(), key=lambda s: (s.model, s.source)):
        metrics = series.cumulative.get()
        window = series.window.get()
        versions = ", ".join(
            f"{escape(v)} (n={q.n}, {_fmt(q.get()[q.primary])})"
            for v, q in sorted(series.versions.items())
        )
        cells = "".join(f"<td>{_fmt(metrics[n])}</td>" for n in names)
        rows.append(
            f'<tr class="series"><td class="l">{escape(series.model)}</td>'
            f'<td class="l">{escape(series.source)}</td><td>{series.cumulative.n}</td>{cells}'
            f"<td>{_fmt(window[series.window.primary])}</td><td>{series.unscored}</td>"
            f'<td>{series.expired}</td><td>{series.alerts}</td><td class="l">{versions}</td></tr>'
        )
    primary = "MAE" if regression else "accuracy"
    return (
        '<table id="summary"><tr><th class="l">model</th><th class="l">source</th><th>n</th>'
        f"{head}<th>window {primary}</th><th>unscored</th><th>expired</th><th>alerts</th>"
        '<th class="l">versions (n, ' + primary + ")</th></tr>" + "".join(rows) + "</table>"
    )


def _alerts_table(monitor: Monitor) -> str:
    rows = []
    for alert in monitor.recent_alerts()[:50]:
        d = alert.details
        rows.append(
            f'<tr class="alert"><td class="l">{escape(alert.raised_at.isoformat())}</td>'
            f'<td class="l">{escape(alert.kind)}</td><td class="l">{escape(alert.subject)}</td>'
            f"<td>{_fmt(d.get('index'))}</td><td>{_fmt(d.get('error_before'))}</td>"
            f"<td>{_fmt(d.get('error_after'))}</td><td>{_fmt(d.get('model_version'))}</td>"
            f'<td class="l">{_fmt(d.get("event_time"))}</td></tr>'
        )
    if not rows:
        return '<p class="muted">No alerts.</p>'
    return (
        '<table id="alerts"><tr><th class="l">raised</th><th class="l">kind</th>'
        '<th class="l">subject</th><th>index</th><th>error before</th><th>error after</th>'
        '<th>version</th><th class="l">event time</th></tr>' + "".join(rows) + "</table>"
    )


def render_chart(monitor: Monitor) -> str:
    """An inline SVG line chart: rolling quality per series, drift alerts marked."""
    series_list = sorted(monitor.series.values(), key=lambda s: (s.model, s.source))
    max_n = max((p.n for s in series_list for p in s.history), default=0) or 1
    if monitor.task == "regression":
        top = max((p.value for s in series_list for p in s.history), default=0.0) or 1.0
    else:
        top = 1.0
    inner_w, inner_h = WIDTH - PAD - LEGEND, HEIGHT - 2 * PAD

    def x(n: float) -> float:
        return PAD + inner_w * n / max_n

    def y(value: float) -> float:
        return PAD + inner_h * (1 - value / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="rolling quality">',
        f'<line x1="{PAD}" y1="{PAD + inner_h}" x2="{PAD + inner_w}" y2="{PAD + inner_h}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{PAD + inner_h}" stroke="#999"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{PAD - 6}" y="{y(top * frac) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{top * frac:.2g}</text>'
        )
    parts.append(
        f'<text x="{PAD + inner_w}" y="{HEIGHT - 10}" font-size="11" text-anchor="end">'
        f"{max_n} scored</text>"
    )
    for i, series in enumerate(series_list):
        colour = COLOURS[i % len(COLOURS)]
        parts.append(_polyline(series, colour, x, y))
        parts.append(
            f'<text x="{PAD + inner_w + 12}" y="{PAD + 14 * i + 4}" font-size="12" fill="{colour}">'
            f"{escape(series.subject)}</text>"
        )
        for alert in monitor.alerts.values():
            index = alert.details.get("index")
            if alert.subject == series.subject and isinstance(index, int):
                parts.append(
                    f'<line class="drift" x1="{x(index):.1f}" y1="{PAD}" x2="{x(index):.1f}" '
                    f'y2="{PAD + inner_h}" stroke="{colour}" stroke-dasharray="4 3">'
                    f"<title>{escape(alert.subject)}: drift at {index}</title></line>"
                )
    parts.append("</svg>")
    return "".join(parts)


def _polyline(series: Series, colour: str, x: Any, y: Any) -> str:
    points = " ".join(f"{x(p.n):.1f},{y(p.value):.1f}" for p in series.history)
    return (
        f'<polyline data-series="{escape(series.subject)}" fill="none" stroke="{colour}" '
        f'stroke-width="1.5" points="{points}"/>'
    )


def render_dashboard(monitor: Monitor, *, replaying: bool = False, refresh_s: int = 5) -> str:
    """The whole page."""
    status = " (rebuilding state from the topics…)" if replaying else ""
    primary = "MAE" if monitor.task == "regression" else "accuracy"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f'<meta http-equiv="refresh" content="{refresh_s}">'
        f"<title>Driftline monitoring</title><style>{_STYLE}</style></head><body>"
        f"<h1>Driftline monitoring</h1><p class='muted'>task {escape(monitor.task)}{status}; "
        f"{len(monitor.alerts)} alerts</p>"
        f"<h2>Quality per model and source</h2>{_summary_table(monitor)}"
        f"<h2>Recent-window {primary} over scored predictions</h2>{render_chart(monitor)}"
        f"<h2>Alerts (newest first)</h2>{_alerts_table(monitor)}"
        "</body></html>"
    )
