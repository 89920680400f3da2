"""Small inline-SVG charts for the report site: no plotting library, no scripts, no fonts to load.

Each function returns an ``<svg>`` element as a string, sized by ``viewBox`` so it scales with
the page, with ``<title>`` tooltips on the marks (they work from ``file://``, without JS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

__all__ = ["Bar", "Interval", "Point", "bar_chart", "forest_chart", "history_chart", "line_chart"]

_PALETTE = ("#3366cc", "#dc7633", "#2e8b57", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#b7950b")
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


@dataclass(frozen=True)
class Bar:
    """One bar: a label, a value and an optional symmetric error."""

    label: str
    value: float
    error: float | None = None
    href: str | None = None


@dataclass(frozen=True)
class Interval:
    """One row of a forest plot: an estimate with its interval."""

    label: str
    estimate: float
    low: float
    high: float
    significant: bool


@dataclass(frozen=True)
class Point:
    """One point of a history series."""

    x: datetime
    y: float
    invalid: bool = False
    tip: str = ""
    href: str | None = None


def _nice_range(lo: float, hi: float) -> tuple[float, float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    raw = span / max(1, n)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + 1e-12:
        out.append(round(v, 12))
        v += step
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _wrap(body: list[str], width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" style="max-width:{width}px" role="img" aria-label="{escape(title)}" '
        f"{_FONT}><title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def bar_chart(bars: Sequence[Bar], *, title: str, width: int = 640) -> str:
    """Horizontal bars with error whiskers (e.g. leaderboard means)."""
    if not bars:
        return ""
    label_w, row_h, top = 220, 22, 24
    height = top + row_h * len(bars) + 26
    lo = min(0.0, *(b.value - (b.error or 0) for b in bars))
    hi = max(*(b.value + (b.error or 0) for b in bars), lo + 1e-9)
    lo, hi = _nice_range(lo, hi) if lo < 0 else (0.0, _nice_range(lo, hi)[1])
    plot_w = width - label_w - 20

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    body = [f'<text x="{label_w}" y="14" font-weight="bold">{escape(title)}</text>']
    for t in _ticks(lo, hi):
        body.append(
            f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{height - 22}" stroke="#ddd"/>'
            f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="middle" fill="#555">'
            f"{_fmt(t)}</text>"
        )
    for i, b in enumerate(bars):
        y = top + i * row_h
        colour = _PALETTE[i % len(_PALETTE)]
        tip = f"{b.label}: {b.value:.4f}" + (f" ± {b.error:.4f}" if b.error is not None else "")
        bar = (
            f'<rect x="{x(min(0.0, b.value)):.1f}" y="{y + 4}" '
            f'width="{abs(x(b.value) - x(0.0)):.1f}" height="{row_h - 8}" fill="{colour}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        body.append(
            f'<text x="{label_w - 6}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end">'
            f"{escape(b.label)}</text>"
        )
        body.append(f'<a href="{escape(b.href)}">{bar}</a>' if b.href else bar)
        if b.error:
            x1, x2, cy = x(b.value - b.error), x(b.value + b.error), y + row_h / 2
            body.append(
                f'<line x1="{x1:.1f}" y1="{cy:.1f}" x2="{x2:.1f}" y2="{cy:.1f}" stroke="#222"/>'
                f'<line x1="{x1:.1f}" y1="{cy - 4:.1f}" x2="{x1:.1f}" y2="{cy + 4:.1f}" '
                f'stroke="#222"/><line x1="{x2:.1f}" y1="{cy - 4:.1f}" x2="{x2:.1f}" '
                f'y2="{cy + 4:.1f}" stroke="#222"/>'
            )
    return _wrap(body, width, height, title)


def forest_chart(rows: Sequence[Interval], *, title: str, width: int = 640) -> str:
    """Differences with confidence intervals around a zero line (comparison pages)."""
    if not rows:
        return ""
    label_w, row_h, top = 220, 24, 24
    height = top + row_h * len(rows) + 26
    lo = min(0.0, *(r.low for r in rows))
    hi = max(0.0, *(r.high for r in rows))
    lo, hi = _nice_range(lo, hi)
    plot_w = width - label_w - 20

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    body = [f'<text x="{label_w}" y="14" font-weight="bold">{escape(title)}</text>']
    for t in _ticks(lo, hi):
        body.append(
            f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{height - 22}" stroke="#eee"/>'
            f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="middle" fill="#555">'
            f"{_fmt(t)}</text>"
        )
    body.append(
        f'<line x1="{x(0):.1f}" y1="{top}" x2="{x(0):.1f}" y2="{height - 22}" stroke="#444" '
        'stroke-dasharray="3,3"/>'
    )
    for i, r in enumerate(rows):
        cy = top + i * row_h + row_h / 2
        colour = ("#2e8b57" if r.estimate > 0 else "#c0392b") if r.significant else "#888"
        tip = f"{r.label}: {r.estimate:+.4f} [{r.low:+.4f}, {r.high:+.4f}]"
        body.append(
            f'<text x="{label_w - 6}" y="{cy + 4:.1f}" text-anchor="end">{escape(r.label)}</text>'
            f'<line x1="{x(r.low):.1f}" y1="{cy:.1f}" x2="{x(r.high):.1f}" y2="{cy:.1f}" '
            f'stroke="{colour}" stroke-width="2"/>'
            f'<circle cx="{x(r.estimate):.1f}" cy="{cy:.1f}" r="4.5" fill="{colour}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    return _wrap(body, width, height, title)


def _time_axis(xs: Sequence[datetime]) -> tuple[float, float]:
    ts = [p.timestamp() for p in xs]
    lo, hi = min(ts), max(ts)
    if hi - lo < 1:
        return lo - 3600, hi + 3600
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def history_chart(
    series: dict[str, Sequence[Point]], *, title: str, width: int = 640, height: int = 240
) -> str:
    """Score over time, one line per series; invalid runs drawn as red crosses off the line."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return ""
    left, right, top, bottom = 56, 16, 26, 40
    t0, t1 = _time_axis([p.x for p in points])
    y0, y1 = _nice_range(min(p.y for p in points), max(p.y for p in points))
    pw, ph = width - left - right, height - top - bottom

    def sx(t: datetime) -> float:
        return left + (t.timestamp() - t0) / (t1 - t0) * pw

    def sy(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * ph

    body = [f'<text x="{left}" y="15" font-weight="bold">{escape(title)}</text>']
    for tick in _ticks(y0, y1):
        body.append(
            f'<line x1="{left}" y1="{sy(tick):.1f}" x2="{width - right}" y2="{sy(tick):.1f}" '
            f'stroke="#eee"/><text x="{left - 6}" y="{sy(tick) + 4:.1f}" text-anchor="end" '
            f'fill="#555">{_fmt(tick)}</text>'
        )
    xs = sorted({p.x for p in points})
    ends = [(xs[0], "start"), (xs[-1], "end")] if len(xs) > 1 else [(xs[0], "middle")]
    for t, anchor in ends:
        body.append(
            f'<text x="{sx(t):.1f}" y="{height - 22}" text-anchor="{anchor}" fill="#555">'
            f"{t:%Y-%m-%d %H:%M}</text>"
        )
    legend_x = left
    for i, (name, pts) in enumerate(series.items()):
        colour = _PALETTE[i % len(_PALETTE)]
        valid = sorted((p for p in pts if not p.invalid), key=lambda p: p.x)
        if len(valid) > 1:
            path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in valid)
            body.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        for p in pts:
            tip = escape(p.tip or f"{name}: {p.y:.4f}")
            if p.invalid:
                cx, cy = sx(p.x), sy(p.y)
                a, b, c, d = cx - 5, cy - 5, cx + 5, cy + 5
                mark = (
                    f'<g class="invalid" stroke="#c0392b" stroke-width="2"><title>{tip}</title>'
                    f'<line x1="{a:.1f}" y1="{b:.1f}" x2="{c:.1f}" y2="{d:.1f}"/>'
                    f'<line x1="{a:.1f}" y1="{d:.1f}" x2="{c:.1f}" y2="{b:.1f}"/></g>'
                )
            else:
                mark = (
                    f'<circle cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="3.5" fill="{colour}">'
                    f"<title>{tip}</title></circle>"
                )
            body.append(f'<a href="{escape(p.href)}">{mark}</a>' if p.href else mark)
        body.append(
            f'<rect x="{legend_x}" y="{height - 12}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{height - 3}">{escape(name)}</text>'
        )
        legend_x += 24 + 7 * len(name)
    if any(p.invalid for p in points):
        body.append(
            f'<text x="{width - right}" y="15" text-anchor="end" fill="#c0392b">'
            "✕ invalid run</text>"
        )
    return _wrap(body, width, height, title)


def line_chart(
    xs: Sequence[datetime], ys: Sequence[float], *, title: str, unit: str, width: int = 640
) -> str:
    """A single time series (telemetry)."""
    if not xs:
        return ""
    pts = [Point(x, y, tip=f"{x:%H:%M:%S} {y:.1f} {unit}") for x, y in zip(xs, ys, strict=True)]
    return history_chart({unit: pts}, title=title, width=width, height=180)
