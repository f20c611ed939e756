"""SPEC (Peng et al., CVPR 2024; github wjpoom/SPEC, files on the Hugging Face hub as wjpoom/SPEC).

Six subsets, each a folder with two JSON lists, the image paths relative to the folder:

* ``image2text.json``: ``{"query": <image>, "keys": [captions], "label": <index of the right one>}``;
* ``text2image.json``: ``{"query": <caption>, "keys": [images], "label": ...}``.

Scores: SPEC's image-to-text and text-to-image accuracy per subset (the right candidate must score
strictly above the others), keyed ``spec::<subset>::i2t`` and ``spec::<subset>::t2i``. vl_compo's
table has no SPEC column; these names are this package's.
"""

from __future__ import annotations

from pathlib import Path

from .items import ImageRef, Item, Part, bad_item, field, load_json, records

SUBSETS = ("absolute_size", "relative_size", "absolute_spatial", "relative_spatial", "existence", "count")
DIRECTIONS = {"i2t": "image2text.json", "t2i": "text2image.json"}
FILES = {f"{s}::{d}": f"{s}/{file}" for s in SUBSETS for d, file in DIRECTIONS.items()}


def read(path: Path, image_dir: Path, subset: str) -> Part:
    image_to_text = subset.endswith("::i2t")
    items = []
    for name, record in records(path, load_json(path), list):
        query = field(path, name, record, "query")
        keys = field(path, name, record, "keys", list)
        label = field(path, name, record, "label", int)
        if len(keys) < 2 or not all(isinstance(k, str) and k.strip() for k in keys):
            raise bad_item(
                path, name, f"'keys' must be 2+ {'captions' if image_to_text else 'images'}, got {keys!r}"
            )
        if not 0 <= label < len(keys):
            raise bad_item(path, name, f"'label' {label} is not an index of its {len(keys)} keys")
        candidates = [keys[label]] + [k for i, k in enumerate(keys) if i != label]  # the right one first
        if image_to_text:
            items.append(Item((ImageRef(image_dir / query),), tuple(candidates), name))
        else:
            items.append(Item(tuple(ImageRef(image_dir / k) for k in candidates), (query,), name))
    return Part(items)
