"""Loss curves as inline SVG, drawn on the server (the dashboard needs no JavaScript and no CDN).

`loss_chart(rows)` takes a run's `metrics.jsonl` rows and returns the geometry the dashboard's
template draws: one polyline per series (training loss, prompt NLL, completion NLL, validation
completion NLL) over the step axis, axis ticks and a legend.
"""

from __future__ import annotations

import dataclasses
import math

# (series, metrics.jsonl key, legend label, colour)
SERIES = [
    ("train_loss", "step_loss", "training loss (PLW-weighted)", "#444444"),
    ("prompt_nll", "prompt_nll", "prompt NLL", "#d95f02"),
    ("completion_nll", "completion_nll", "completion NLL", "#1b9e77"),
    ("valid_loss", "eval_completion_nll", "validation completion NLL", "#7570b3"),
]
WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40


@dataclasses.dataclass
class Line:
    name: str
    label: str
    colour: str
    points: str  # "x,y x,y …" for <polyline points>
    last: float


@dataclasses.dataclass
class Chart:
    width: int
    height: int
    lines: list[Line]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    plot: tuple[int, int, int, int]  # left, top, right, bottom


def loss_chart(rows: list[dict]) -> Chart | None:
    """The chart of `rows`, or None when no row has a loss yet."""
    data = {name: [(r["step"], float(r[key])) for r in rows if key in r and "step" in r
                   and _finite(r[key])] for name, key, _, _ in SERIES}
    points = [p for series in data.values() for p in series]
    if not points:
        return None
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    y_lo, y_hi = (y_lo - 0.5, y_hi + 0.5) if y_hi == y_lo else (y_lo, y_hi)
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM

    def x(v):
        return LEFT + (v - x_lo) / (x_hi - x_lo) * (right - LEFT)

    def y(v):
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - TOP)

    lines = [Line(name, label, colour, " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in data[name]), data[name][-1][1])
             for name, _, label, colour in SERIES if data[name]]
    return Chart(WIDTH, HEIGHT, lines,
                 [(x(v), f"{v:g}") for v in _ticks(x_lo, x_hi, integer=True)],
                 [(y(v), f"{v:.3g}") for v in _ticks(y_lo, y_hi)], (LEFT, TOP, right, bottom))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About `n` round values in [lo, hi]."""
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1, round(step))
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out
