"""Winoground (Thrush et al., CVPR 2022; the facebook/winoground dataset on the Hugging Face hub).

``examples.jsonl`` has one JSON object per line: ``id``, ``caption_0``, ``caption_1`` and
``image_0``, ``image_1``, the names (``ex_<id>_img_<k>``) of the PNG files in ``images/``.
``caption_k`` describes ``image_k``. Three scores per example, Winoground's own: *text* (each
image scores its own caption above the other), *image* (each caption scores its own image above
the other) and *group* (both).
"""

from __future__ import annotations

from pathlib import Path

from .items import ImageRef, Item, Part, field, load_jsonl


def read(path: Path, image_dir: Path, subset: str) -> Part:
    items = []
    for line, record in load_jsonl(path):
        name = (
            f"{record['id']} (line {line})"
            if isinstance(record, dict) and "id" in record
            else f"on line {line}"
        )
        images = tuple(ImageRef(image_dir / f"{field(path, name, record, f'image_{k}')}.png") for k in (0, 1))
        texts = tuple(field(path, name, record, f"caption_{k}") for k in (0, 1))
        items.append(Item(images, texts, name))
    return Part(items)
