"""The demo's outputs: a text table, ``results.json`` and a grouped bar chart drawn with PIL.

PIL is already a dependency of open_clip and torchvision, so the chart costs the package no
plotting library.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Colour-blind-safe (Okabe-Ito), one per method in table order; the pre-trained bar is grey.
_PALETTE = ((150, 150, 150), (0, 114, 178), (230, 159, 0), (240, 228, 66), (0, 158, 115), (204, 121, 167))


def format_table(results: dict[str, dict[str, float]], labels: dict[str, str]) -> str:
    """Methods as rows, metrics as columns, fractions with three decimals."""
    metrics = list(next(iter(results.values())))
    first = max(len("method"), *(len(labels[m]) for m in results))
    widths = [max(len(name), 5) for name in metrics]
    lines = ["  ".join(["method".ljust(first), *(n.rjust(w) for n, w in zip(metrics, widths, strict=True))])]
    lines.append("  ".join(["-" * first, *("-" * w for w in widths)]))
    for method, row in results.items():
        cells = (f"{row[n]:.3f}".rjust(w) for n, w in zip(metrics, widths, strict=True))
        lines.append("  ".join([labels[method].ljust(first), *cells]))
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def draw_chart(
    path: Path,
    results: dict[str, dict[str, float]],
    labels: dict[str, str],
    title: str,
    size: tuple[int, int] = (1200, 560),
) -> None:
    """A PNG of grouped bars: one group per metric, one bar per method, values on a 0-1 axis."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=10)
    methods = list(results)
    metrics = list(results[methods[0]])
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
        return top + plot_h * (1 - value)

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
            value = min(max(results[method][metric], 0.0), 1.0)
            bx = x0 + i * bar_w
            draw.rectangle(
                (bx + 1, y_of(value), bx + bar_w - 1, top + plot_h),
                fill=_PALETTE[i % len(_PALETTE)],
                outline="black",
            )
            label = f"{value:.2f}".lstrip("0")
            draw.text((bx + bar_w / 2, y_of(value) - 2), label, fill="black", font=small, anchor="mb")
        draw.text(
            (left + (g + 0.5) * group_w, top + plot_h + 8), metric, fill="black", font=font, anchor="ma"
        )
    image.save(path, format="PNG")
