"""``llmops monitor report``: every statistic over time, with thresholds and alert marks (PNG or HTML).

Why this exists:
    An alert says "now"; a report says "since when, how far, and did it come back". Each
    statistic of ``monitor.metrics`` gets a panel: its value per window, its threshold (dashed),
    breaching windows in red, and a vertical line where an alert fired (red) or resolved (green).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPORTED = ("drift.", "quality.", "fairness.", "latency.total.", "responses.error_share", "cost.", "tokens.")
MAX_PANELS = 40


def series(snapshots: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Points per (stream, statistic, slice), in window order."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for snapshot in snapshots:
        for metric in snapshot["metrics"]:
            if metric["name"].startswith(REPORTED):
                key = (snapshot["stream"], metric["name"], metric["slice"] or "")
                out.setdefault(key, []).append({"t": snapshot["end_ms"] / 1000, **metric})
    return out


def render_png(snapshots: Sequence[dict[str, Any]], alerts: Sequence[dict[str, Any]]) -> bytes:
    """One panel per statistic; empty input gives a single panel that says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(series(snapshots).items())[:MAX_PANELS]
    columns = 3
    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(15, 2.6 * rows), squeeze=False)
    start = min((p["t"] for _, points in panels for p in points), default=0.0)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    if not panels:
        axes[0][0].text(0.5, 0.5, "no snapshots on monitor.metrics yet", ha="center")
    for ax, ((stream, name, slice_), points) in zip(axes.flat, panels, strict=False):
        t = [p["t"] - start for p in points]
        ax.plot(t, [p["value"] for p in points], marker=".", lw=1)
        bad = [(x, p["value"]) for x, p in zip(t, points, strict=True) if p["breached"]]
        if bad:
            ax.scatter(*zip(*bad, strict=True), color="red", zorder=3, s=18)
        thresholds = [p["threshold"] for p in points]
        if any(th is not None for th in thresholds):
            ax.plot(t, [th if th is not None else float("nan") for th in thresholds], "k--", lw=0.8)
        for alert in alerts:
            if alert["metric"] == name and (alert["slice"] or "") == slice_:
                colour = "red" if alert["state"] == "FIRING" else "green"
                ax.axvline(alert["window_end_ms"] / 1000 - start, color=colour, alpha=0.6)
        ax.set_title(f"{stream}: {name}{' [' + slice_ + ']' if slice_ else ''}", fontsize=8)
        ax.tick_params(labelsize=7)
    figure.supxlabel(
        "seconds since the first window (red dots: breaching windows; red/green lines: alert fired/resolved)"
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def render_html(snapshots: Sequence[dict[str, Any]], alerts: Sequence[dict[str, Any]]) -> str:
    png = base64.b64encode(render_png(snapshots, alerts)).decode()
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(a[k]))}</td>"
            for k in ("state", "severity", "metric", "slice", "value", "threshold", "window_id", "hint")
        )
        + "</tr>"
        for a in alerts
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>llmops monitor report</title>"
        f"<h1>Monitoring report</h1><p>{len(snapshots)} snapshots, {len(alerts)} alert events.</p>"
        f"<img alt='statistics over time' src='data:image/png;base64,{png}'>"
        "<h2>Alert events</h2><table border=1 cellpadding=3><tr><th>state</th><th>severity</th><th>metric</th>"
        f"<th>slice</th><th>value</th><th>threshold</th><th>window</th><th>hint</th></tr>{rows}</table>"
    )


def write_report(path: Path, snapshots: Sequence[dict[str, Any]], alerts: Sequence[dict[str, Any]]) -> None:
    """A PNG, or an HTML page (with the PNG inlined and the alert events) when ``path`` ends in .html."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".html", ".htm"):
        path.write_text(render_html(snapshots, alerts), encoding="utf-8")
    else:
        path.write_bytes(render_png(snapshots, alerts))
