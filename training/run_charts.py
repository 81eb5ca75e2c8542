"""Server-rendered line charts of a run's metrics (inline SVG, no JavaScript, no CDN).

Pure functions: metric series in, drawing coordinates out; the templates
(`templates/training/run_charts.html`) turn them into `<svg>` elements. Metric
names follow DESIGN.md's vocabulary ("train/loss", "eval/accuracy",
"eval/length_flip_gap", "objective/kl", ...) and are sorted into four panels:
loss, accuracy, length diagnostics and KL. No Django, no torch.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Series = Mapping[str, Sequence[tuple[int, float]]]  # name -> [(step, value)] sorted by step

WIDTH, HEIGHT = 420, 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 52, 12, 10, 28
COLORS = ("#2f5bd3", "#b2461f", "#1f7a4a", "#8a3ffc", "#a86b00", "#0f8199", "#c4307a", "#5b6474")
ACCURACY = {"accuracy", "rewards/accuracies", "acc_chosen_longer", "acc_chosen_shorter", "length_rule_best"}


def _leaf(name: str) -> str:
    """The metric without its split prefix: "eval/acc_chosen_longer" -> "acc_chosen_longer"."""
    head, _, rest = name.partition("/")
    return rest if head in ("train", "eval") and rest else name


def _is_loss(name: str) -> bool:
    return "loss" in name.split("/")


def _is_kl(name: str) -> bool:
    return any(part == "kl" or part.startswith("kl_") or part.endswith("kl") for part in _leaf(name).split("/"))


def _is_accuracy(name: str) -> bool:
    leaf = _leaf(name)
    return leaf in ACCURACY or "accurac" in leaf


def _is_length(name: str) -> bool:
    leaf = _leaf(name)
    if leaf.startswith("n_"):  # counts (n_equal_length, ...) are not diagnostics on a shared axis
        return False
    return "len" in leaf or "nrg_ratio" in leaf


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    member: Callable[[str], bool]


# First matching panel wins; metrics matching none (lr, grad_norm, ...) are not plotted.
PANELS = (
    Panel("loss", "Loss", _is_loss),
    Panel("kl", "KL", _is_kl),
    Panel("accuracy", "Accuracy", _is_accuracy),
    Panel("length", "Length diagnostics", _is_length),
)


def panel_of(name: str) -> str | None:
    for panel in PANELS:
        if panel.member(name):
            return panel.key
    return None


@dataclass
class Line:
    name: str
    color: str
    points: str  # SVG polyline "x,y x,y ..."
    dots: list[tuple[float, float]]  # drawn as circles when a series has one point (final evals)
    last: float
    n: int


@dataclass
class Chart:
    key: str
    title: str
    lines: list[Line] = field(default_factory=list)
    y_min: float = 0.0
    y_max: float = 1.0
    x_min: int = 0
    x_max: int = 1
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        return not self.lines

    @property
    def plot_left(self) -> int:
        return PAD_LEFT

    @property
    def plot_right(self) -> int:
        return self.width - PAD_RIGHT

    @property
    def plot_bottom(self) -> int:
        return self.height - PAD_BOTTOM

    @property
    def plot_top(self) -> int:
        return PAD_TOP

    @property
    def y_ticks(self) -> list[tuple[float, str]]:
        """(y pixel, label) of the top, middle and bottom gridlines."""
        mid = (self.y_min + self.y_max) / 2
        return [(self.plot_top, _fmt(self.y_max)), ((self.plot_top + self.plot_bottom) / 2, _fmt(mid)),
                (self.plot_bottom, _fmt(self.y_min))]


def thin(points: Sequence[tuple[int, float]], limit: int = 300) -> list[tuple[int, float]]:
    """At most `limit` points, evenly strided, always keeping the last one."""
    if len(points) <= limit:
        return list(points)
    stride = math.ceil(len(points) / limit)
    kept = list(points[::stride])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def build_charts(series: Series, *, x_range: tuple[int, int] | None = None) -> list[Chart]:
    """One chart per panel (empty panels included, so the layout does not jump while a run fills).

    `x_range` fixes the step axis (e.g. 0..total_steps, or shared by two runs
    being compared); by default it spans the data.
    """
    charts = []
    for panel in PANELS:
        names = sorted(n for n in series if series[n] and panel.member(n) and panel_of(n) == panel.key)
        chart = Chart(panel.key, panel.title)
        values = [v for n in names for _, v in series[n] if math.isfinite(v)]
        steps = [s for n in names for s, _ in series[n]]
        if not values:
            charts.append(chart)
            continue
        lo, hi = min(values), max(values)
        if hi - lo < 1e-12:  # a flat line sits in the middle of the panel
            spread = abs(hi) * 0.1 or 0.5
            lo, hi = lo - spread, hi + spread
        x_lo, x_hi = x_range if x_range else (min(steps), max(steps))
        x_hi = max(x_hi, x_lo + 1)
        chart.y_min, chart.y_max, chart.x_min, chart.x_max = lo, hi, x_lo, x_hi

        def xy(step: int, value: float, chart: Chart = chart, lo: float = lo, hi: float = hi,
               x_lo: int = x_lo, x_hi: int = x_hi) -> tuple[float, float]:
            x = chart.plot_left + (step - x_lo) / (x_hi - x_lo) * (chart.plot_right - chart.plot_left)
            y = chart.plot_bottom - (value - lo) / (hi - lo) * (chart.plot_bottom - chart.plot_top)
            return round(x, 1), round(y, 1)

        for i, name in enumerate(names):
            pts = [xy(s, v) for s, v in thin(series[name]) if math.isfinite(v)]
            chart.lines.append(Line(
                name=name, color=COLORS[i % len(COLORS)], points=" ".join(f"{x},{y}" for x, y in pts),
                dots=pts if len(pts) <= 3 else [], last=series[name][-1][1], n=len(series[name]),
            ))
        charts.append(chart)
    return charts


def series_from_rows(rows: Iterable[tuple[str, int, float]]) -> dict[str, list[tuple[int, float]]]:
    """Group (name, step, value) rows (sorted by name, step) into series."""
    out: dict[str, list[tuple[int, float]]] = {}
    for name, step, value in rows:
        out.setdefault(name, []).append((step, value))
    return out
