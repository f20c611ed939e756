"""CREPE's productivity test (Ma et al., CVPR 2023; github RAIVNLab/CREPE).

``prod_hard_negatives/<type>/prod_vg_hard_negs_<type>_complexity_<k>.csv`` for the hard-negative
types ``atom``, ``swap`` and ``negate`` and the caption complexities 4 to 12: one row per test,
with the Visual Genome ``image_id``, the box ``x``, ``y``, ``width``, ``height`` the image is
cropped to, the ``caption`` and ``hard_negs``, a Python literal of its hard negatives: a list in
most rows, a set in some (3,768 of the 39,715 rows, in 18 of the 27 files). CREPE's loader reads
both (``list(ast.literal_eval(cell))``), and so does this one; a set's captions are taken in sorted
order, which changes nothing in the score: recall at 1 asks whether the caption beats every
negative, whatever their order. The image is ``VG_100K/<image_id>.jpg`` or
``VG_100K_2/<image_id>.jpg``, the two folders of Visual Genome's release, as CREPE's loader looks
in both.

Score: CREPE's image-to-text recall at 1 against the row's own captions, i.e. the caption must
score strictly above every hard negative, for each type and complexity
(``crepe::atom::complexity_4``): the numbers CREPE's paper plots. vl_compo reports one number
per type (``crepe::atom``) without saying how it folds the nine complexities together, so no key
of that name is made here.
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path

from .items import ImageRef, Item, Part, bad_item, field

TYPES = ("atom", "swap", "negate")
COMPLEXITIES = tuple(range(4, 13))
FILES = {
    f"{t}::complexity_{k}": f"prod_hard_negatives/{t}/prod_vg_hard_negs_{t}_complexity_{k}.csv"
    for t in TYPES
    for k in COMPLEXITIES
}
IMAGE_FOLDERS = ("VG_100K", "VG_100K_2")


def read(path: Path, image_dir: Path, subset: str) -> Part:
    items = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, record in enumerate(csv.DictReader(f), start=2):
            name = f"on line {line}"
            numbers = {}
            for key in ("x", "y", "width", "height"):
                try:
                    numbers[key] = float(field(path, name, record, key))
                except ValueError:
                    raise bad_item(path, name, f"{key!r} must be a number, got {record[key]!r}") from None
            image_id = field(path, name, record, "image_id").strip()
            try:
                negatives = ast.literal_eval(field(path, name, record, "hard_negs"))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                negatives = None
            if (
                not isinstance(negatives, (list, tuple, set))
                or not negatives
                or not all(isinstance(n, str) for n in negatives)
            ):
                raise bad_item(
                    path,
                    name,
                    f"'hard_negs' must be a list (or set) of captions, got {record['hard_negs']!r}",
                )
            if isinstance(negatives, set):  # in a fixed order, whatever the interpreter's hash seed
                negatives = sorted(negatives)
            candidates = [image_dir / folder / f"{image_id}.jpg" for folder in IMAGE_FOLDERS]
            image = next((p for p in candidates if p.is_file()), candidates[0])
            if numbers["width"] <= 0 or numbers["height"] <= 0:
                raise bad_item(
                    path, name, f"the box has no area (width={numbers['width']}, height={numbers['height']})"
                )
            x, y = numbers["x"], numbers["y"]
            box = (x, y, x + numbers["width"], y + numbers["height"])
            items.append(
                Item((ImageRef(image, box),), (field(path, name, record, "caption"), *negatives), name)
            )
    return Part(items)
