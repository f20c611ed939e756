"""MMVP-VLM (Tong et al., CVPR 2024; github tsb0601/MMVP, files on the Hugging Face hub as
MMVP/MMVP_VLM).

``Questions.csv`` has a header and one row per image: question id, visual pattern, statement. Rows
come in pairs (ids ``2k - 1`` and ``2k``), each statement describing the image of its own id,
``<id>.jpg`` in a folder per pattern under ``MMVP_VLM_Images/`` (looked up by file name, whatever
the folder). As MMVP's own ``evaluate_vlm.py``, the pairs are taken in order, 15 per pattern in the
order of ``CATEGORIES``, and each statement is prompted as ``"a photo of " + statement``. Each pair
is scored as a Winoground example (text, image, group), the keys vl_compo uses
(``mmvp_vlm::<pattern>::text``); MMVP's own pair accuracy is the ``image`` score.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .items import ImageRef, Item, Part, bad_item

CATEGORIES = (
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural Characteristics",
    "Texts",
    "Viewpoint and Perspective",
)
PAIRS_PER_CATEGORY = 15
PROMPT = "a photo of {}"


def read(path: Path, image_dir: Path, subset: str) -> Part:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    rows = [(number, row) for number, row in enumerate(rows, start=2) if row]  # file line numbers
    if len(rows) != 2 * PAIRS_PER_CATEGORY * len(CATEGORIES):
        raise ValueError(
            f"{path}: {len(rows)} statements; MMVP-VLM has {PAIRS_PER_CATEGORY} pairs for each of its "
            f"{len(CATEGORIES)} patterns, {2 * PAIRS_PER_CATEGORY * len(CATEGORIES)} rows after the header"
        )
    images = {p.name: p for p in image_dir.rglob("*.jpg")} if image_dir.is_dir() else {}
    first = CATEGORIES.index(subset) * PAIRS_PER_CATEGORY * 2
    items = []
    for (line_0, row_0), (line_1, row_1) in zip(
        *[iter(rows[first : first + 2 * PAIRS_PER_CATEGORY])] * 2, strict=True
    ):
        name = f"on lines {line_0}-{line_1}"
        for row in (row_0, row_1):
            if len(row) != 3 or not row[0].strip().isdigit() or not row[2].strip():
                raise bad_item(path, name, f"expected a row 'question id,type,statement', got {row!r}")
        refs = tuple(
            ImageRef(images.get(f"{row[0].strip()}.jpg", image_dir / f"{row[0].strip()}.jpg"))
            for row in (row_0, row_1)
        )
        items.append(Item(refs, tuple(PROMPT.format(row[2].strip()) for row in (row_0, row_1)), name))
    return Part(items)
