"""ImageCoDe (Krojer et al., ACL 2022; github McGill-NLP/imagecode).

``valid_data.json`` maps each image set (a folder of 10 images in ``image-sets/``) to its
descriptions, ``{"<set>": {"<index>": "<description>"}}``: the description is of the set's
``index``-th image, the images taken in the order of the number in their names (``img<k>.jpg``;
for video frames ``k`` is the frame number), as ImageCoDe's own CLIP evaluation does. An item is
right when its image scores strictly above the set's nine others. vl_compo's two numbers split the
sets as ImageCoDe does: ``static`` for the Open Images sets (``open-images-...``), ``videos`` for
the video-frame sets; both come from the validation file, the test labels being hidden.
"""

from __future__ import annotations

import re
from pathlib import Path

from .items import ImageRef, Item, Part, bad_item, field, load_json, records

SUBSETS = ("videos", "static")
_NUMBER = re.compile(r"img(\d+)\.jpg$")


def read(path: Path, image_dir: Path, subset: str) -> Part:
    items = []
    for set_name, descriptions in records(path, load_json(path), dict):
        if set_name.startswith("open-images") != (subset == "static"):
            continue
        if not isinstance(descriptions, dict):
            raise bad_item(
                path, set_name, f"expected an object of index -> description, got {descriptions!r}"
            )
        folder = image_dir / set_name
        numbered = (
            [(int(m[1]), p) for p in folder.iterdir() if (m := _NUMBER.search(p.name))]
            if folder.is_dir()
            else []
        )
        if len(numbered) < 2:
            raise FileNotFoundError(
                f"{folder}: the image set of {path.name}'s item {set_name} (img<k>.jpg files) not found"
            )
        images = [p for _, p in sorted(numbered)]
        for index in descriptions:
            name = f"{set_name}/{index}"
            text = field(path, name, descriptions, index)
            if not index.isdigit() or int(index) >= len(images):
                raise bad_item(path, name, f"{index!r} is not an index of the set's {len(images)} images")
            ordered = [images[int(index)]] + [p for i, p in enumerate(images) if i != int(index)]
            items.append(Item(tuple(ImageRef(p) for p in ordered), (text.strip(),), name))
    return Part(items)
