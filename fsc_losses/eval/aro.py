"""ARO's Visual Genome sets (Yuksekgonul et al., ICLR 2023; github
mertyg/vision-language-models-are-bows).

``visual_genome_relation.json`` and ``visual_genome_attribution.json`` are JSON lists; each item
names an image (``image_path``, under ARO's ``images/`` folder), the box the test is about
(``bbox_x``, ``bbox_y``, ``bbox_w``, ``bbox_h``: the image is cropped to it, as ARO's loader does),
``true_caption`` and ``false_caption``, and its ``relation_name`` (VG-Relation) or its two
``attributes`` (VG-Attribution).

The score is ARO's macro accuracy: per relation, or per attribute pair ``"<first>_<second>"``,
the share of items whose true caption scores above the false one, then the mean over relations or
pairs. As ARO's ``evaluate_scores``, VG-Attribution keeps only the pairs with at least 25 items.
VG-Relation leaves out the relations ARO's notebook excludes (``EXCLUDED_RELATIONS``): that
notebook is what the paper's VG-Relation numbers come from (the ARO authors, github issue
mertyg/vision-language-models-are-bows#37), and CLIP ViT-B/32's 59.9 in vl_compo's table is the
paper's 0.59.

The COCO and Flickr30k order sets are not here: ARO makes their negatives at run time with spaCy's
``en_core_web_sm`` tagger, a model this package cannot ship (docs/evaluation.md).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from .items import ImageRef, Item, Part, bad_item, field, load_json, records

SUBSETS = ("VG_Relation", "VG_Attribute")
FILES = {"VG_Relation": "visual_genome_relation.json", "VG_Attribute": "visual_genome_attribution.json"}
MIN_PAIR_ITEMS = 25  # VG-Attribution: pairs with fewer items are left out of the macro average

# The relations of visual_genome_relation.json that ARO's notebook ("Replicate ARO! VG-Relation,
# VG-Attribution.ipynb") leaves out of the macro accuracy: symmetric ones ("next to") and those
# whose swapped caption can still be true.
_EXCLUDED = """
    adjusting|around|attached to|beside|between|bigger than|biting|boarding|brushing|by|chewing|
    cleaning|climbing|close to|coming from|coming out of|contain|crossing|dragging|draped over|
    drinking|drinking from|driving|driving down|driving on|eating from|eating in|enclosing|exiting|
    facing|filled with|floating in|floating on|flying|flying above|flying in|flying over|
    flying through|full of|going down|going into|going through|grazing in|growing in|growing on|
    guiding|hanging from|hanging in|hanging off|hanging over|higher than|holding onto|hugging|
    in between|jumping off|jumping on|jumping over|kept in|larger than|leading|leaning over|leaving|
    licking|longer than|looking in|looking into|looking out|looking over|looking through|
    lying next to|lying on top of|making|mixed with|mounted on|moving|near|next to|of|
    on the back of|on the edge of|on the front of|on the other side of|on the side of|opening|
    painted on|parked at|parked beside|parked by|parked in|parked in front of|parked near|
    parked next to|perched on|petting|piled on|playing|playing in|playing on|playing with|pouring|
    reaching for|reading|reflected on|riding on|running in|running on|running through|seen through|
    sitting behind|sitting beside|sitting by|sitting in front of|sitting near|sitting next to|
    sitting under|skiing down|skiing on|sleeping in|sleeping on|smiling at|sniffing|splashing|
    sprinkled on|stacked on|standing against|standing around|standing behind|standing beside|
    standing in front of|standing near|standing next to|staring at|stuck in|surrounding|swimming in|
    swinging|talking to|topped with|touching|traveling down|traveling on|tying|typing on|underneath|
    wading in|waiting for|walking across|walking by|walking down|walking next to|walking through|
    with|working in|working on|worn on|wrapped around|wrapped in
"""
EXCLUDED_RELATIONS = frozenset(name.strip() for name in _EXCLUDED.split("|"))


def read(path: Path, image_dir: Path, subset: str) -> Part:
    items = []
    for name, record in records(path, load_json(path), list):
        x, y, w, h = (field(path, name, record, f"bbox_{k}", (int, float)) for k in "xywh")
        if w <= 0 or h <= 0:
            raise bad_item(path, name, f"the box has no area (bbox_w={w}, bbox_h={h})")
        image = ImageRef(image_dir / field(path, name, record, "image_path"), (x, y, x + w, y + h))
        texts = (field(path, name, record, "true_caption"), field(path, name, record, "false_caption"))
        if subset == "VG_Relation":
            group = field(path, name, record, "relation_name")
        else:
            attributes = field(path, name, record, "attributes", list)
            if len(attributes) != 2 or not all(isinstance(a, str) for a in attributes):
                raise bad_item(path, name, f"'attributes' must be two strings, got {attributes!r}")
            group = f"{attributes[0]}_{attributes[1]}"
        items.append(Item((image,), texts, name, group=group))
    return Part(items)


def macro_accuracy(subset: str, items: list[Item], correct: torch.Tensor) -> float:
    """The mean over relations (VG-Relation, less ``EXCLUDED_RELATIONS``) or over attribute pairs
    with at least ``MIN_PAIR_ITEMS`` items (VG-Attribution) of each one's accuracy.

    Args:
        correct: ``(len(items),)`` bool, whether each item's true caption won.

    Raises:
        ValueError: no relation or pair is left to average.
    """
    by_group = defaultdict(list)
    for item, right in zip(items, correct.tolist(), strict=True):
        by_group[item.group].append(right)
    if subset == "VG_Relation":
        kept = {g: v for g, v in by_group.items() if g not in EXCLUDED_RELATIONS}
    else:
        kept = {g: v for g, v in by_group.items() if len(v) >= MIN_PAIR_ITEMS}
    if not kept:
        rule = "outside ARO's excluded list" if subset == "VG_Relation" else f"with {MIN_PAIR_ITEMS}+ items"
        raise ValueError(
            f"aro::{subset}: no {'relation' if subset == 'VG_Relation' else 'attribute pair'} "
            f"{rule} to average over ({len(items)} items in {len(by_group)} groups)"
        )
    return sum(sum(v) / len(v) for v in kept.values()) / len(kept)
