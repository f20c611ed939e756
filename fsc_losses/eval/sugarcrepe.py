"""SugarCrepe (Hsieh et al., NeurIPS 2023 Datasets and Benchmarks; github RAIVNLab/sugar-crepe).

Each ``<subset>.json`` is one JSON object: item id -> ``filename`` (a COCO 2017 validation image),
``caption`` (true) and ``negative_caption``. Accuracy: the share of items whose true caption
scores above the negative.
"""

from __future__ import annotations

from pathlib import Path

from .items import ImageRef, Item, Part, field, load_json, records

SUBSETS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")


def read(path: Path, image_dir: Path, subset: str) -> Part:
    items = []
    for name, record in records(path, load_json(path), dict):
        image = ImageRef(image_dir / field(path, name, record, "filename"))
        texts = (field(path, name, record, "caption"), field(path, name, record, "negative_caption"))
        items.append(Item((image,), texts, name))
    return Part(items)
