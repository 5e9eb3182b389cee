"""Geometry for the server-rendered SVG of the trace pages: the trace timeline's bars and the Usage page's line
charts. Only numbers here; the templates draw them (SVG attributes, no inline style: the CSP forbids it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

WIDTH = 1000  # the timeline's viewBox width; bars stretch with the cell
PALETTE = ["#2459c6", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#be185d"]


def timeline(trace: dict[str, Any], rows: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Each observation's bar as (x, width) on the trace's time axis, in viewBox units, and the axis' ticks."""
    starts = [o["start_time"] for _, o in rows] + [trace["timestamp"]]
    ends = [o["end_time"] or o["start_time"] for _, o in rows] + [trace["timestamp"]]
    t0: datetime = min(starts)
    span = max((max(ends) - t0).total_seconds(), 1e-3)
    bars = {}
    for _, o in rows:
        x = (o["start_time"] - t0).total_seconds() / span * WIDTH
        w = ((o["end_time"] or o["start_time"]) - o["start_time"]).total_seconds() / span * WIDTH
        bars[o["id"]] = {"x": round(x, 2), "w": round(max(w, 2.0), 2), "offset_ms": (x / WIDTH) * span * 1000}
    ticks = [{"x": round(i * WIDTH / 4, 1), "label": _ms(span * 1000 * i / 4)} for i in range(5)]
    return {"bars": bars, "ticks": ticks, "span_ms": span * 1000, "start": t0, "width": WIDTH}


def _ms(ms: float) -> str:
    if ms < 10:
        return f"{ms:.2g} ms"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def short(value: float, key: str = "") -> str:
    """An axis label: 12k, 3.4M, 0.0012, 35%."""
    if key == "error_rate":
        return f"{value * 100:.0f}%"
    if value == 0:
        return "0"
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.2g}"


def line_chart(days: list, series: dict[str, list[float | None]], key: str = "", width: int = 460,
               height: int = 150, pad: int = 48) -> dict[str, Any]:
    """One polyline per model over the days, with y-axis ticks (0, half, max)."""
    top = max([v for values in series.values() for v in values if v is not None] + [0.0])
    top = top or 1.0
    step = (width - pad - 8) / max(len(days) - 1, 1)

    def y(v: float) -> float:
        return round(height - 20 - (v / top) * (height - 30), 1)

    lines = []
    for i, (model, values) in enumerate(series.items()):
        points = [(round(pad + j * step, 1), y(v)) for j, v in enumerate(values) if v is not None]
        lines.append({"model": model, "colour": PALETTE[i % len(PALETTE)],
                      "points": " ".join(f"{x},{yy}" for x, yy in points), "dots": points})
    labels = [{"x": round(pad + j * step, 1), "label": d.strftime("%m-%d")} for j, d in enumerate(days)]
    every = max(1, len(labels) // 7)
    return {"width": width, "height": height, "pad": pad, "lines": lines, "labels": labels[::every],
            "yticks": [{"y": y(v), "label": short(v, key)} for v in (0.0, top / 2, top)], "bottom": height - 20}


def colours(models: list[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
