"""Small inline SVG plots for the Accuracy page, written by hand: no JavaScript, no plotting
library in the server. Presentation attributes only (no ``style``), so the page's strict
Content-Security-Policy holds. Every plot takes statistics, never templates or photos."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from markupsafe import Markup

W, H = 560, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40
INK, GRID, ACCENT, WARN, MUTED = "#1f2933", "#d9e2ec", "#2563eb", "#c2410c", "#9aa5b1"


@dataclass(frozen=True)
class Scale:
    """Data to pixels along one axis, linear or log10."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def __call__(self, v: float) -> float:
        f = (self._t(v) - self._t(self.lo)) / ((self._t(self.hi) - self._t(self.lo)) or 1.0)
        return self.start + max(0.0, min(1.0, f)) * (self.end - self.start)

    def _t(self, v: float) -> float:
        return math.log10(max(v, 1e-300)) if self.log else v

    def ticks(self) -> list[float]:
        if self.log:
            return [10.0 ** e for e in range(math.ceil(math.log10(self.lo)), math.floor(math.log10(self.hi)) + 1)]
        step = _nice((self.hi - self.lo) / 5)
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step + 1e-9) + 1)]


def _nice(x: float) -> float:
    if x <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(x))
    return next(m * e for m in (1, 2, 2.5, 5, 10) if m * e >= x)


def _label(v: float, log: bool) -> str:
    if log:
        e = round(math.log10(v))
        return f"1e{e}" if abs(e) > 2 else f"{v:g}"
    return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:,.0f}"


def _text(x: float, y: float, s: str, anchor: str = "middle", size: int = 11, fill: str = INK) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" '
            f'font-family="sans-serif">{escape(s)}</text>')


def _frame(title: str, x: Scale | None, y: Scale, x_label: str, y_label: str) -> list[str]:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>']
    if x is not None:
        for t in x.ticks():
            px = x(t)
            parts.append(f'<line x1="{px:.1f}" y1="{TOP}" x2="{px:.1f}" y2="{H - BOTTOM}" stroke="{GRID}"/>')
            parts.append(_text(px, H - BOTTOM + 14, _label(t, x.log), size=10))
    for t in y.ticks():
        py = y(t)
        parts.append(f'<line x1="{LEFT}" y1="{py:.1f}" x2="{W - RIGHT}" y2="{py:.1f}" stroke="{GRID}"/>')
        parts.append(_text(LEFT - 6, py + 3, _label(t, y.log), anchor="end", size=10))
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="none" stroke="{INK}"/>')
    parts.append(_text((LEFT + W - RIGHT) / 2, H - 6, x_label))
    parts.append(f'<text x="14" y="{(TOP + H - BOTTOM) / 2:.1f}" text-anchor="middle" font-size="11" fill="{INK}" '
                 f'font-family="sans-serif" transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2:.1f})">{escape(y_label)}</text>')
    return parts


def _close(parts: list[str]) -> Markup:
    return Markup("".join(parts) + "</svg>")  # every piece of text above went through escape()


def _polyline(points: Sequence[tuple[float, float]], colour: str, dash: str | None = None, width: float = 1.8) -> str:
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="{width}"{extra}/>'


def _vline(x: float, colour: str, label: str) -> list[str]:
    return [f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="5 3"/>',
            _text(min(x + 4, W - RIGHT - 4), TOP + 12, label, anchor="start" if x < W * 0.7 else "end", fill=colour)]


def empty(title: str, message: str) -> Markup:
    """A plot frame that says why there is nothing to draw."""
    return _close([f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} 80" width="{W}" height="80" role="img" '
                   f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
                   f'<rect x="0" y="0" width="{W}" height="80" fill="#f8fafc" stroke="{GRID}"/>',
                   _text(W / 2, 44, message, fill=MUTED)])


def impostor_tail(survival: list[list[float]], model: list[list[float]] | None, threshold: float) -> Markup:
    """FMR(t) of the sampled impostor pairs (and the tail model beyond u), log scale, with the threshold."""
    title = "Impostor tail: FMR against threshold"
    pts = [(t, f) for t, f in survival if f > 0]
    mod = [(t, f) for t, f in (model or []) if f > 0]
    if not pts:
        return empty(title, "no impostor pairs sampled yet")
    xs = [t for t, _ in pts + mod] + [threshold]
    ys = [f for _, f in pts + mod]
    x = Scale(min(xs) - 0.005, min(1.0, max(xs) + 0.01), LEFT, W - RIGHT)
    y = Scale(10 ** math.floor(math.log10(min(ys))), 1.0, H - BOTTOM, TOP, log=True)
    parts = _frame(title, x, y, "threshold (cosine)", "FMR (pairs at or above)")
    parts.append(_polyline([(x(t), y(f)) for t, f in pts], ACCENT))
    if mod:
        parts.append(_polyline([(x(t), y(f)) for t, f in mod], INK, dash="4 3"))
        parts.append(_text(W - RIGHT - 6, H - BOTTOM - 8, "dashed: tail model (GPD)", anchor="end", size=10, fill=MUTED))
    parts += _vline(x(threshold), WARN, f"threshold {threshold:.4f}")
    return _close(parts)


def _ok(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def fpir_against_n(curve: list[dict[str, Any]], target: float, gallery_size: int) -> Markup:
    """FPIR at the threshold in force against gallery size, with its interval and the target."""
    title = "FPIR against gallery size N"
    if not curve:
        return empty(title, "no tail model yet")
    ns = [c["n"] for c in curve]
    vals = [v for c in curve for v in (c["fpir"], c["lo"], c["hi"]) if _ok(v) and v > 0] + [target]
    x = Scale(min(ns), max(ns), LEFT, W - RIGHT, log=True)
    y = Scale(10 ** math.floor(math.log10(min(vals))), 1.0, H - BOTTOM, TOP, log=True)
    parts = _frame(title, x, y, "gallery size N", "FPIR")
    band = [(c["n"], c["hi"]) for c in curve if _ok(c["hi"])] + [(c["n"], c["lo"]) for c in reversed(curve) if _ok(c["lo"])]
    if len(band) > 2:
        pts = " ".join(f"{x(n):.1f},{y(max(v, y.lo)):.1f}" for n, v in band)
        parts.append(f'<polygon points="{pts}" fill="{ACCENT}" fill-opacity="0.15" stroke="none"/>')
    parts.append(_polyline([(x(c["n"]), y(max(c["fpir"], y.lo))) for c in curve], ACCENT))
    parts.append(f'<line x1="{LEFT}" y1="{y(target):.1f}" x2="{W - RIGHT}" y2="{y(target):.1f}" stroke="{INK}" stroke-dasharray="2 2"/>')
    parts.append(_text(LEFT + 6, y(target) - 4, f"target {target:g}", anchor="start", size=10))
    if gallery_size > 0:
        parts += _vline(x(max(gallery_size, x.lo)), WARN, f"now: {gallery_size:,}")
    return _close(parts)


def group_fmr(rows: list[dict[str, Any]], attribute: str) -> Markup:
    """Per-group FMR with Wilson intervals (log scale); groups with too few pairs drawn hollow and marked."""
    title = f"FMR by {attribute}"
    shown = [r for r in rows if r["pairs"] > 0]
    if not shown:
        return empty(title, "no pairs")
    vals = [v for r in shown for v in ([r["fmr"]] + list(r["fmr_ci"] or [])) if v is not None and v > 0]
    floor = 10 ** math.floor(math.log10(min(vals))) if vals else 1e-6
    x = Scale(-0.5, len(shown) - 0.5, LEFT, W - RIGHT)
    y = Scale(floor, 1.0, H - BOTTOM, TOP, log=True)
    parts = _frame(title, None, y, attribute, "FMR (within group)")
    for i, r in enumerate(shown):
        px = x(i)
        colour = ACCENT if r["enough_pairs"] else MUTED
        lo, hi = r["fmr_ci"] or (None, None)
        if hi is not None:
            parts.append(f'<line x1="{px:.1f}" y1="{y(max(lo or floor, floor)):.1f}" x2="{px:.1f}" y2="{y(max(hi, floor)):.1f}" '
                         f'stroke="{colour}" stroke-width="2"/>')
        v = r["fmr"] if r["fmr"] else floor
        fill = colour if r["enough_pairs"] else "#ffffff"
        parts.append(f'<circle cx="{px:.1f}" cy="{y(v):.1f}" r="4.5" fill="{fill}" stroke="{colour}" stroke-width="2"/>')
        parts.append(_text(px, H - BOTTOM + 14, str(r["group"])[:14], size=10))
        if not r["enough_pairs"]:
            parts.append(_text(px, H - BOTTOM - 6, "too few pairs", size=9, fill=WARN))
        elif r.get("ratio_to_best") is not None:
            parts.append(_text(px + 7, y(v) - 6, f"x{r['ratio_to_best']:.2f}", anchor="start", size=10))
    return _close(parts)


def genuine_scores(histogram: dict[str, Any], threshold: float) -> Markup:
    """Histogram of the live genuine scores (adjudication's duplicates) with the threshold."""
    title = "Live genuine scores (decided duplicates and control pairs)"
    counts = histogram.get("counts") or []
    if not counts:
        return empty(title, "no genuine pairs from adjudication yet")
    lo, width = float(histogram["lo"]), float(histogram["width"])
    x = Scale(min(lo, threshold) - width, max(lo + width * len(counts), threshold) + width, LEFT, W - RIGHT)
    y = Scale(0, max(counts) * 1.1, H - BOTTOM, TOP)
    parts = _frame(title, x, y, "score (cosine)", "pairs")
    for i, c in enumerate(counts):
        if c:
            x0, x1 = x(lo + i * width), x(lo + (i + 1) * width)
            parts.append(f'<rect x="{x0:.1f}" y="{y(c):.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                         f'height="{y(0) - y(c):.1f}" fill="{ACCENT}"/>')
    parts += _vline(x(threshold), WARN, f"threshold {threshold:.4f}")
    return _close(parts)
