"""Image-text retrieval on the Karpathy test splits of COCO (5,000 images) and Flickr30k (1,000).

Two published forms of the same split are read:

* the per-split lists BLIP and ALBEF publish, and ARO's retrieval code reads
  (``coco_karpathy_test.json``, ``flickr30k_test.json``): a JSON list of
  ``{"image": <path>, "caption": [captions]}``, the path relative to the image root
  (``val2014/COCO_val2014_....jpg``, ``flickr30k-images/....jpg``);
* Karpathy's own ``dataset_coco.json`` / ``dataset_flickr30k.json``: ``{"images": [...]}`` with
  ``split``, ``filename``, ``sentences`` (each with its ``raw`` text) and, for COCO, ``filepath``;
  only the ``"test"`` entries count. Flickr30k's entries have no ``filepath``: their files are
  looked up in ``flickr30k-images/``, where the Flickr30k archive and BLIP's paths put them.

Scores: recall at 1, 5 and 10 in both directions, as vl_compo names them (``i2t/R@1``, ...).
Image to text: an image is a hit at K when fewer than K of the other images' captions score at
least as high as its best own caption. Text to image: a caption is a hit when fewer than K other
images score at least as high as its own. A tie with a wrong candidate thus counts against.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .items import ImageRef, Item, Part, bad_item, field, load_json, records

RECALL_AT = (1, 5, 10)
FLICKR_IMAGE_FOLDER = "flickr30k-images"
METRICS = tuple(f"{direction}/R@{k}" for direction in ("i2t", "t2i") for k in RECALL_AT)


def read(path: Path, image_dir: Path, subset: str) -> Part:
    data = load_json(path)
    items = []
    if isinstance(data, dict):  # Karpathy's file: every split, each image with its sentences
        for name, record in records(path, field(path, "(file)", data, "images", list), list):
            if field(path, name, record, "split") != "test":
                continue
            folder = record.get("filepath", FLICKR_IMAGE_FOLDER)
            image = ImageRef(image_dir / folder / field(path, name, record, "filename"))
            sentences = field(path, name, record, "sentences", list)
            texts = tuple(field(path, f"{name}, sentence {i}", s, "raw") for i, s in enumerate(sentences))
            items.append(_checked(path, Item((image,), texts, name)))
    else:
        for name, record in records(path, data, list):
            captions = field(path, name, record, "caption", (list, str))
            texts = (captions,) if isinstance(captions, str) else tuple(captions)
            if not all(isinstance(t, str) for t in texts):
                raise bad_item(
                    path, name, f"'caption' must be a caption or a list of captions, got {captions!r}"
                )
            items.append(
                _checked(path, Item((ImageRef(image_dir / field(path, name, record, "image")),), texts, name))
            )
    return Part(items)


def _checked(path: Path, item: Item) -> Item:
    if not item.texts:
        raise bad_item(path, item.name, "the image has no captions")
    return item


def recalls(
    image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor, chunk: int = 1024
) -> dict[str, float]:
    """Recall at 1, 5 and 10 in both directions.

    Args:
        image_features: ``(I, D)`` L2-normalised.
        text_features: ``(T, D)`` L2-normalised.
        text_image: ``(T,)`` int64, the image each caption belongs to.
        chunk: captions scored at a time, which bounds memory at ``chunk * I`` scores.

    Returns:
        ``{"i2t/R@1": ..., "t2i/R@10": ...}`` as fractions.
    """
    num_images = image_features.shape[0]
    best_own = torch.full((num_images,), -torch.inf, device=image_features.device)
    t2i_wrong = []
    for start in range(0, text_features.shape[0], chunk):
        scores = text_features[start : start + chunk] @ image_features.T  # (t, I)
        own = text_image[start : start + chunk]
        own_score = scores.gather(1, own[:, None])  # (t, 1)
        # other images scoring at least the caption's own one; the own image always counts itself
        t2i_wrong.append((scores >= own_score).sum(dim=1) - 1)
        best_own = best_own.scatter_reduce(0, own, own_score[:, 0], reduce="amax")
    t2i_wrong = torch.cat(t2i_wrong)

    i2t_wrong = torch.zeros(num_images, dtype=torch.long, device=image_features.device)
    for start in range(0, text_features.shape[0], chunk):
        scores = text_features[start : start + chunk] @ image_features.T  # (t, I)
        own = text_image[start : start + chunk]
        reaches = scores >= best_own[None, :]  # caption t scores at least image i's best own caption
        reaches[torch.arange(own.shape[0], device=own.device), own] = False  # own captions are no miss
        i2t_wrong += reaches.sum(dim=0)

    out = {f"i2t/R@{k}": (i2t_wrong < k).double().mean().item() for k in RECALL_AT}
    out.update({f"t2i/R@{k}": (t2i_wrong < k).double().mean().item() for k in RECALL_AT})
    return out
