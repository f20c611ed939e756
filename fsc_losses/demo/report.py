"""The demo's outputs: text tables, ``results.json`` and a grouped bar chart drawn with PIL.

PIL is already a dependency of open_clip and torchvision, so the chart costs the package no
plotting library.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Colour-blind-safe (Okabe-Ito), one per method in table order; the pre-trained bar is grey.
_PALETTE = ((150, 150, 150), (0, 114, 178), (230, 159, 0), (240, 228, 66), (0, 158, 115), (204, 121, 167))

Results = dict[str, dict[str, float]]  # method -> metric -> value
Summary = dict[str, dict[str, dict[str, float | None]]]  # method -> metric -> {"mean", "std"}


def _mean_std(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (``n - 1``); the spread of one value is ``None``."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return {"mean": mean, "std": None}
    return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))}


def summarize(per_seed: Sequence[Results]) -> Summary:
    """``{method: {metric: {"mean": m, "std": s}}}`` over the seeds' results."""
    if not per_seed:
        raise ValueError("per_seed must hold the results of at least one seed")
    first = per_seed[0]
    return {
        method: {metric: _mean_std([run[method][metric] for run in per_seed]) for metric in first[method]}
        for method in first
    }


def differences(per_seed: Sequence[Results], baseline: str) -> Summary:
    """Each method minus ``baseline`` within a seed, then mean and spread over the seeds.

    Methods of one seed share the pre-trained model and the data, so the differences vary much
    less from seed to seed than the scores themselves do.
    """
    delta = [
        {m: {k: v - run[baseline][k] for k, v in row.items()} for m, row in run.items() if m != baseline}
        for run in per_seed
    ]
    return summarize(delta)


def format_table(results: Results, labels: dict[str, str]) -> str:
    """Methods as rows, metrics as columns, fractions with three decimals."""
    return _table({m: {k: f"{v:.3f}" for k, v in row.items()} for m, row in results.items()}, labels)


def format_summary(summary: Summary, labels: dict[str, str], signed: bool = False) -> str:
    """Like :func:`format_table`, with ``mean ± std`` cells (``signed``: differences, with a sign)."""

    def cell(stats: dict[str, float | None]) -> str:
        mean = f"{stats['mean']:+.3f}" if signed else f"{stats['mean']:.3f}"
        return mean if stats["std"] is None else f"{mean} ± {stats['std']:.3f}"

    return _table({m: {k: cell(s) for k, s in row.items()} for m, row in summary.items()}, labels)


def _table(cells: dict[str, dict[str, str]], labels: dict[str, str]) -> str:
    metrics = list(next(iter(cells.values())))
    first = max(len("method"), *(len(labels[m]) for m in cells))
    widths = [max(len(name), *(len(row[name]) for row in cells.values())) for name in metrics]
    lines = ["  ".join(["method".ljust(first), *(n.rjust(w) for n, w in zip(metrics, widths, strict=True))])]
    lines.append("  ".join(["-" * first, *("-" * w for w in widths)]))
    for method, row in cells.items():
        values = (row[n].rjust(w) for n, w in zip(metrics, widths, strict=True))
        lines.append("  ".join([labels[method].ljust(first), *values]))
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    # allow_nan=False: a NaN would make the file invalid JSON for strict readers.
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")


def draw_chart(
    path: Path,
    summary: Summary,
    labels: dict[str, str],
    title: str,
    size: tuple[int, int] = (1200, 560),
) -> None:
    """A PNG of grouped bars: one group per metric, one bar per method, means on a 0-1 axis.

    Where a standard deviation is known (more than one seed), an error bar spans mean ± std.
    """
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=10)
    methods = list(summary)
    metrics = list(summary[methods[0]])
    left, right, top, bottom = 60, 20, 90, 50
    plot_h = height - top - bottom

    draw.text((left, 12), title, fill="black", font=font)
    # Legend on two lines at most, above the plot.
    x, y = left, 40
    for i, method in enumerate(methods):
        text_w = draw.textlength(labels[method], font=font)
        if x + 24 + text_w > width - right:
            x, y = left, y + 22
        draw.rectangle((x, y + 3, x + 14, y + 15), fill=_PALETTE[i % len(_PALETTE)], outline="black")
        draw.text((x + 20, y), labels[method], fill="black", font=font)
        x += 20 + text_w + 24

    def y_of(value: float) -> float:
        return top + plot_h * (1 - min(max(value, 0.0), 1.0))

    for tick in range(6):
        value = tick / 5
        draw.line((left, y_of(value), width - right, y_of(value)), fill=(225, 225, 225))
        draw.text((left - 8, y_of(value)), f"{value:.1f}", fill="black", font=font, anchor="rm")
    draw.line((left, top, left, top + plot_h), fill="black")
    draw.line((left, top + plot_h, width - right, top + plot_h), fill="black")

    group_w = (width - left - right) / len(metrics)
    bar_w = group_w * 0.8 / len(methods)
    for g, metric in enumerate(metrics):
        x0 = left + g * group_w + group_w * 0.1
        for i, method in enumerate(methods):
            mean, std = summary[method][metric]["mean"], summary[method][metric]["std"]
            bx = x0 + i * bar_w
            draw.rectangle(
                (bx + 1, y_of(mean), bx + bar_w - 1, top + plot_h),
                fill=_PALETTE[i % len(_PALETTE)],
                outline="black",
            )
            label_y = y_of(mean)
            if std is not None:
                centre, cap = bx + bar_w / 2, bar_w / 4
                low, high = y_of(mean - std), y_of(mean + std)
                draw.line((centre, low, centre, high), fill="black", width=1)
                draw.line((centre - cap, low, centre + cap, low), fill="black", width=1)
                draw.line((centre - cap, high, centre + cap, high), fill="black", width=1)
                label_y = high
            label = f"{mean:.2f}".lstrip("0")
            draw.text((bx + bar_w / 2, label_y - 2), label, fill="black", font=small, anchor="mb")
        draw.text(
            (left + (g + 0.5) * group_w, top + plot_h + 8), metric, fill="black", font=font, anchor="ma"
        )
    image.save(path, format="PNG")
