"""VALSE (Parcalabescu et al., ACL 2022; github Heidelberg-NLP/VALSE).

Each ``<piece>.json`` is one JSON object: item id -> ``image_file`` (the image's name in its source
dataset, all of them in one ``images/`` folder here), ``caption``, ``foil`` and ``mturk``, the
annotators' votes. As VALSE's README and its evaluation scripts say, only the validated items
count: those where at least two of the three annotators chose the caption but not the foil
(``mturk["caption"] >= 2``). Score: VALSE's pairwise accuracy, the share of those items whose
caption scores above the foil.
"""

from __future__ import annotations

from pathlib import Path

from .items import ImageRef, Item, Part, bad_item, field, load_json, records

SUBSETS = (
    "existence",
    "plurals",
    "counting-hard",
    "counting-small-quant",
    "counting-adversarial",
    "relations",
    "action-replacement",
    "actant-swap",
    "coreference-standard",
    "coreference-hard",
    "foil-it",
)
MIN_CAPTION_VOTES = 2


def read(path: Path, image_dir: Path, subset: str) -> Part:
    items = []
    for name, record in records(path, load_json(path), dict):
        votes = field(path, name, record, "mturk", dict)
        if not isinstance(votes.get("caption"), int):
            raise bad_item(path, name, f"'mturk' needs an integer 'caption' vote count, got {votes!r}")
        image = ImageRef(image_dir / field(path, name, record, "image_file"))
        texts = (field(path, name, record, "caption"), field(path, name, record, "foil"))
        if votes["caption"] >= MIN_CAPTION_VOTES:
            items.append(Item((image,), texts, name))
    return Part(items)
