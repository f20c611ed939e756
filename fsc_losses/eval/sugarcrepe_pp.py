"""SugarCrepe++ (Dumpala et al., NeurIPS 2024 Datasets and Benchmarks; github Sri-Harsha/scpp).

SugarCrepe's replace and swap items with a second true caption, lexically different from the first
and validated by people: ``<subset>.json`` for the subsets ``replace_obj``, ``replace_att``,
``replace_rel``, ``swap_obj`` and ``swap_att`` (SugarCrepe's add subsets have none) is a JSON list
of ``{"id", "filename", "caption", "caption2", "negative_caption"}``, the image a COCO 2017
validation file. ``caption`` and ``negative_caption`` are SugarCrepe's own.

Scores, as SugarCrepe++'s evaluation scripts compute them (``VLMs/test_*.py``), every comparison
strict, on cosine similarities:

* ``itt`` (image-to-text, the paper's ITT): both true captions score above the negative for the
  image;
* ``tot`` (text-only, the paper's TOT): the two true captions are closer to each other than either
  is to the negative (text embeddings only);
* ``itt_p1``, ``itt_p2``: the first, or the second, true caption scores above the negative for the
  image (the scripts' "Image-P1-Neg" and "Image-P2-Neg"; ``itt_p1`` is SugarCrepe's test).

Keys: ``sugarcrepe_pp::<subset>::<score>``, this package's names (vl_compo has no SugarCrepe++).
"""

from __future__ import annotations

from pathlib import Path

from .items import ImageRef, Item, Part, field, load_json, records

SUBSETS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")


def read(path: Path, image_dir: Path, subset: str) -> Part:
    items = []
    for name, record in records(path, load_json(path), list):
        image = ImageRef(image_dir / field(path, name, record, "filename"))
        texts = tuple(field(path, name, record, key) for key in ("caption", "caption2", "negative_caption"))
        items.append(Item((image,), texts, name))
    return Part(items)
