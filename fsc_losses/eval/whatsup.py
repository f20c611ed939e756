"""What'sUp (Kamath et al., EMNLP 2023; github amitakamath/whatsup_vlms).

Six JSON lists, the true caption always first:

* ``controlled_images_dataset.json`` (WhatsUp_A) and ``controlled_clevr_dataset.json``
  (WhatsUp_B): items ``{"image_path": ..., "caption_options": [4 captions]}``. The published
  ``image_path`` is relative to What'sUp's own repository (``data/controlled_images/...``), so the
  image is looked up by its file name in ``controlled_images/`` or ``controlled_clevr/``.
* ``coco_qa_one_obj.json``, ``coco_qa_two_obj.json``: items ``[image id, true, false]``, the
  image ``val2017/<id as 12 digits>.jpg``.
* ``vg_qa_one_obj.json``, ``vg_qa_two_obj.json``: the same, the image ``vg_images/<id>.jpg``.

Score: What'sUp's individual accuracy (the share of items whose first caption scores above all
the others), the number vl_compo reports; the pair and set accuracies of its paper are not here.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from .items import ImageRef, Item, Part, bad_item, field, load_json, records

SUBSETS = ("WhatsUp_A", "WhatsUp_B", "COCO_QA_ONE", "COCO_QA_TWO", "VG_QA_ONE", "VG_QA_TWO")
FILES = {
    "WhatsUp_A": "controlled_images_dataset.json",
    "WhatsUp_B": "controlled_clevr_dataset.json",
    "COCO_QA_ONE": "coco_qa_one_obj.json",
    "COCO_QA_TWO": "coco_qa_two_obj.json",
    "VG_QA_ONE": "vg_qa_one_obj.json",
    "VG_QA_TWO": "vg_qa_two_obj.json",
}
IMAGE_DIRS = {
    "WhatsUp_A": "controlled_images",
    "WhatsUp_B": "controlled_clevr",
    "COCO_QA_ONE": "val2017",
    "COCO_QA_TWO": "val2017",
    "VG_QA_ONE": "vg_images",
    "VG_QA_TWO": "vg_images",
}


def read(path: Path, image_dir: Path, subset: str) -> Part:
    items = []
    for name, record in records(path, load_json(path), list):
        if subset.startswith("WhatsUp"):
            # the published paths use "/" whatever the platform
            image = image_dir / PurePosixPath(field(path, name, record, "image_path")).name
            texts = field(path, name, record, "caption_options", list)
            if len(texts) < 2 or not all(isinstance(t, str) and t.strip() for t in texts):
                raise bad_item(path, name, f"'caption_options' must be 2+ captions, got {texts!r}")
        else:
            image_id = field(path, name, record, 0, (int, str))
            if not str(image_id).isdigit():
                raise bad_item(path, name, f"the image id must be a number, got {image_id!r}")
            # COCO's file names pad the id to 12 digits, Visual Genome's do not
            image = image_dir / (
                f"{int(image_id):012d}.jpg" if subset.startswith("COCO") else f"{image_id}.jpg"
            )
            texts = [field(path, name, record, 1), field(path, name, record, 2)]
        items.append(Item((ImageRef(image),), tuple(texts), name))
    return Part(items)
