"""Tiny copies of the benchmarks ``fsc_losses.eval`` reads, in each one's published format.

``write_<benchmark>(root)`` writes ``root/<benchmark>/`` with the real file and folder names and
a handful of items, its images made with PIL, and returns the result keys a model scored on it
gets. ``write_all(root)`` writes them all. The images are flat colours, or two colours side by
side for ARO's crops, and every caption names colours from ``PALETTE`` with words from ``WORDS``,
so that ``BagOfColours`` (below) gives scores a test can predict, ties included.

Reusable by other tests (the trainer's compositional validation): they depend only on PIL,
numpy and torch.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

PALETTE = {
    "red": (220, 40, 50),
    "green": (40, 180, 70),
    "blue": (50, 60, 210),
    "yellow": (230, 210, 40),
    "purple": (140, 50, 160),
    "orange": (240, 140, 30),
    "white": (235, 235, 230),
    "brown": (120, 80, 40),
}
COLOURS = tuple(PALETTE)
NOUNS = ("cat", "dog", "mug", "table", "car", "bench")
RELATIONS = ("on", "under", "next to", "riding")  # "next to" is one ARO's macro average leaves out
WORDS = sorted(
    set(COLOURS) | set(NOUNS) | {w for r in RELATIONS for w in r.split()} | {"a", "the", "and", "of"}
)

SUGARCREPE_SUBSETS = (
    "replace_obj",
    "replace_att",
    "replace_rel",
    "swap_obj",
    "swap_att",
    "add_obj",
    "add_att",
)
VALSE_PIECES = (
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
WHATSUP_FILES = {
    "WhatsUp_A": ("controlled_images_dataset.json", "controlled_images"),
    "WhatsUp_B": ("controlled_clevr_dataset.json", "controlled_clevr"),
    "COCO_QA_ONE": ("coco_qa_one_obj.json", "val2017"),
    "COCO_QA_TWO": ("coco_qa_two_obj.json", "val2017"),
    "VG_QA_ONE": ("vg_qa_one_obj.json", "vg_images"),
    "VG_QA_TWO": ("vg_qa_two_obj.json", "vg_images"),
}
ARO_PAIR_SIZES = {"red_blue": 26, "green_white": 25, "yellow_brown": 24}  # 24 < ARO's minimum of 25
RETRIEVAL_METRICS = tuple(f"{d}/R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10))


def solid(path: Path, colour: str, size: tuple[int, int] = (12, 10)) -> None:
    """A flat ``colour`` image at ``path`` (the format follows the extension, as PIL saves it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, PALETTE[colour]).save(path)


def halves(path: Path, left: str, right: str, size: tuple[int, int] = (16, 8)) -> None:
    """An image whose left half is ``left`` and right half ``right``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 2] = PALETTE[left]
    pixels[:, size[0] // 2 :] = PALETTE[right]
    Image.fromarray(pixels).save(path)


def caption(rng: random.Random, *colours: str) -> str:
    """A caption naming ``colours`` in order, e.g. "a red cat on a blue table"."""
    parts = [f"a {c} {rng.choice(NOUNS)}" for c in colours]
    return f" {rng.choice(RELATIONS)} ".join(parts)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def _negative(rng: random.Random, true: list[str]) -> list[str]:
    """Colours for a negative: a swap of the true ones (a tie for a bag of colours) or others."""
    if len(true) > 1 and rng.random() < 0.3:
        return true[::-1]
    return [rng.choice(COLOURS) for _ in true]


def write_sugarcrepe(root: Path, seed: int = 0) -> list[str]:
    """``sugarcrepe/<subset>.json`` (7 subsets, 6 items each) over 5 images in ``val2017/``, which
    the subsets share as SugarCrepe's share COCO's."""
    rng = random.Random(seed)
    folder = Path(root) / "sugarcrepe"
    images = {f"{i:012d}.jpg": rng.choice(COLOURS) for i in (139, 285, 632, 724, 776)}
    for name, colour in images.items():
        solid(folder / "val2017" / name, colour)
    for subset in SUGARCREPE_SUBSETS:
        data = {}
        for i in range(6):
            name = rng.choice(sorted(images))
            true = [images[name], rng.choice(COLOURS)]
            data[str(i)] = {
                "filename": name,
                "caption": caption(rng, *true),
                "negative_caption": caption(rng, *_negative(rng, true)),
            }
        _write_json(folder / f"{subset}.json", data)
    return [f"sugarcrepe::{s}" for s in SUGARCREPE_SUBSETS]


SUGARCREPE_PP_SUBSETS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att")
SUGARCREPE_PP_SCORES = ("itt", "tot", "itt_p1", "itt_p2")


def write_sugarcrepe_pp(root: Path, seed: int = 0) -> list[str]:
    """``sugarcrepe_pp/<subset>.json`` (5 subsets, 6 items each, as SugarCrepe++ publishes them: a
    list of ``{"id", "filename", "caption", "caption2", "negative_caption"}``) over 5 images in
    ``val2017/``.

    For ``BagOfColours`` two captions tie exactly when they name the same colours in the same order,
    and are clearly apart otherwise; swapped colours, which would tie only up to rounding, are
    never used. The second true caption names the first one's colours (a paraphrase) or, in some
    items, another second colour; the negative names the first caption's colours (an exact tie,
    for the image and for the text-only test) or other ones."""
    rng = random.Random(seed)
    folder = Path(root) / "sugarcrepe_pp"
    images = {f"{i:012d}.jpg": rng.choice(COLOURS) for i in (222235, 480021, 287347, 177934, 579635)}
    for name, colour in images.items():
        solid(folder / "val2017" / name, colour)

    def other_than(*taken: list[str]) -> list[str]:
        while True:
            colours = [rng.choice(COLOURS), rng.choice(COLOURS)]
            if sorted(colours) not in [sorted(t) for t in taken]:
                return colours

    for subset in SUGARCREPE_PP_SUBSETS:
        data = []
        for i in range(6):
            name = rng.choice(sorted(images))
            true = [images[name], rng.choice(COLOURS)]
            if rng.random() < 0.7:
                second = true
            else:
                second = [true[0], rng.choice([c for c in COLOURS if sorted([true[0], c]) != sorted(true)])]
            negative = true if rng.random() < 0.25 else other_than(true, second)
            data.append(
                {
                    "id": i,
                    "filename": name,
                    "caption": caption(rng, *true),
                    "caption2": caption(rng, *second).replace("a ", "the "),  # other words
                    "negative_caption": caption(rng, *negative),
                }
            )
        _write_json(folder / f"{subset}.json", data)
    return [f"sugarcrepe_pp::{s}::{m}" for s in SUGARCREPE_PP_SUBSETS for m in SUGARCREPE_PP_SCORES]


def write_aro(root: Path, seed: int = 0) -> list[str]:
    """``aro/visual_genome_{relation,attribution}.json`` over three two-colour images in
    ``images/``, each item's box one half (or the whole) of its image."""
    rng = random.Random(seed)
    folder = Path(root) / "aro"
    files = {
        "2315375.jpg": ("red", "blue"),
        "2331201.jpg": ("green", "yellow"),
        "2360741.jpg": ("white", "brown"),
    }
    for name, (left, right) in files.items():
        halves(folder / "images" / name, left, right)
    boxes = {"left": (0, 0, 8, 8), "right": (8, 0, 8, 8), "whole": (0, 0, 16, 8)}

    def item(**extra) -> dict:
        name = rng.choice(sorted(files))
        side = rng.choice(sorted(boxes))
        x, y, w, h = boxes[side]
        left, right = files[name]
        seen = {"left": left, "right": right}.get(side, rng.choice((left, right)))
        other = right if seen == left else left
        true, false = (seen, other) if rng.random() < 0.7 else (other, seen)
        return {
            "image_id": name.split(".")[0],
            "image_path": name,
            "bbox_x": x,
            "bbox_y": y,
            "bbox_w": w,
            "bbox_h": h,
            "true_caption": f"the {true} {rng.choice(NOUNS)}",
            "false_caption": f"the {false} {rng.choice(NOUNS)}",
            **extra,
        }

    sizes = {"on": 5, "under": 3, "next to": 4, "riding": 2}
    relation = [item(relation_name=r) for r, n in sizes.items() for _ in range(n)]
    attribution = [item(attributes=pair.split("_")) for pair, n in ARO_PAIR_SIZES.items() for _ in range(n)]
    rng.shuffle(relation)
    rng.shuffle(attribution)
    _write_json(folder / "visual_genome_relation.json", relation)
    _write_json(folder / "visual_genome_attribution.json", attribution)
    return ["aro::VG_Relation", "aro::VG_Attribute"]


def write_winoground(root: Path, seed: int = 0) -> list[str]:
    """``winoground/examples.jsonl`` (6 examples) and ``images/ex_<id>_img_<k>.png``."""
    rng = random.Random(seed)
    folder = Path(root) / "winoground"
    lines = []
    for i in range(6):
        colours = rng.sample(COLOURS, 3)
        pair = (colours[:2], [colours[1], colours[0]] if i % 3 == 0 else [colours[2], colours[0]])
        for k in (0, 1):
            solid(folder / "images" / f"ex_{i}_img_{k}.png", pair[k][0])
        record = {"id": i, "caption_0": caption(rng, *pair[0]), "caption_1": caption(rng, *pair[1])}
        record.update(
            {"image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1", "tag": "Object", "num_main_preds": 1}
        )
        lines.append(json.dumps(record))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "examples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ["winoground::text", "winoground::image", "winoground::group"]


def write_whatsup(root: Path, seed: int = 0) -> list[str]:
    """The six What'sUp files, 4 to 5 items each, with the image paths they publish."""
    rng = random.Random(seed)
    folder = Path(root) / "whatsup"
    for number, (subset, (file, images)) in enumerate(WHATSUP_FILES.items()):
        data = []
        for i in range(4 + len(subset) % 2):
            colour = rng.choice(COLOURS)
            options = 4 if subset.startswith("WhatsUp") else 2
            captions = [caption(rng, colour, "white")] + [
                caption(rng, rng.choice(COLOURS), "white") for _ in range(options - 1)
            ]
            if subset.startswith("WhatsUp"):
                name = (
                    f"{rng.choice(NOUNS)}_{rng.choice(('on', 'under', 'left_of', 'right_of'))}_table{i}.jpeg"
                )
                solid(folder / images / name, colour)
                data.append({"image_path": f"data/{images}/{name}", "caption_options": captions})
            else:
                image_id = 2000 + 100 * number + i
                name = f"{image_id:012d}.jpg" if subset.startswith("COCO") else f"{image_id}.jpg"
                solid(folder / images / name, colour)
                data.append([image_id, *captions])
        _write_json(folder / file, data)
    return [f"whatsup::{s}" for s in WHATSUP_FILES]


def write_valse(root: Path, seed: int = 0) -> list[str]:
    """``valse/<piece>.json`` (11 pieces, 4 items each, one of them not validated by the
    annotators) and their images in ``images/``."""
    rng = random.Random(seed)
    folder = Path(root) / "valse"
    for piece in VALSE_PIECES:
        data = {}
        for i in range(4):
            colour = rng.choice(COLOURS)
            image = f"v7w_{rng.randrange(10**6)}.jpg"
            solid(folder / "images" / image, colour)
            true = [colour, rng.choice(COLOURS)]
            data[f"{piece}_{i}"] = {
                "dataset": "visual7w",
                "image_file": image,
                "caption": caption(rng, *true),
                "foil": caption(rng, *_negative(rng, true)),
                "mturk": {"foil": 0, "caption": 1 if i == 3 else 2 + i % 2, "other": 0},
            }
        _write_json(folder / f"{piece}.json", data)
    return [f"valse::{p}" for p in VALSE_PIECES]


def _retrieval_captions(rng: random.Random, i: int, colours: list[str], previous: str | None) -> list[str]:
    """An image's captions: one naming its colour alone (its best), one or two naming a second
    colour, and for every third image one naming the previous image's colour alone, which ties
    with that image's best caption for a bag of colours."""
    captions = [caption(rng, colours[0])] + [caption(rng, *colours) for _ in range(1 + i % 2)]
    return captions + [caption(rng, previous)] if i % 3 == 2 else captions


def write_coco_karpathy(root: Path, seed: int = 0) -> list[str]:
    """``coco_karpathy/coco_karpathy_test.json`` (BLIP's per-split list form): 7 images with 2 or
    3 captions each under ``val2014/``."""
    rng = random.Random(seed)
    folder = Path(root) / "coco_karpathy"
    data, previous = [], None
    # distinct images: identical ones would tie exactly when encoded one by one, but not always in
    # a batch, where rows can round differently
    for i, colour in enumerate(rng.sample(COLOURS, 7)):
        colours = [colour, rng.choice(COLOURS)]
        path = f"val2014/COCO_val2014_{100 + i:012d}.jpg"
        solid(folder / path, colours[0])
        data.append(
            {"image": path, "caption": _retrieval_captions(rng, i, colours, previous), "image_id": 100 + i}
        )
        previous = colour
    _write_json(folder / "coco_karpathy_test.json", data)
    return [f"coco_karpathy::{m}" for m in RETRIEVAL_METRICS]


def write_flickr30k(root: Path, seed: int = 0) -> list[str]:
    """``flickr30k/dataset_flickr30k.json`` (Karpathy's form, all splits in one file): 6 test and
    2 train images in ``flickr30k-images/``."""
    rng = random.Random(seed)
    folder = Path(root) / "flickr30k"
    images, previous = [], None
    for i, colour in enumerate(rng.sample(COLOURS, 8)):  # distinct, as in write_coco_karpathy
        colours = [colour, rng.choice(COLOURS)]
        name = f"{1000092795 + i}.jpg"
        solid(folder / "flickr30k-images" / name, colours[0])
        sentences = [{"raw": c, "tokens": []} for c in _retrieval_captions(rng, i, colours, previous)]
        previous = colour
        images.append(
            {"filename": name, "imgid": i, "split": "test" if i < 6 else "train", "sentences": sentences}
        )
    _write_json(folder / "dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"})
    return [f"flickr30k::{m}" for m in RETRIEVAL_METRICS]


def write_zeroshot(root: Path, seed: int = 0) -> list[str]:
    """Two ImageFolder datasets under ``zeroshot/``: ``colours`` with its own ``classnames.txt``
    and ``templates.txt``, ``swatches`` with the defaults (folder names, CLIP's templates)."""
    rng = random.Random(seed)
    folder = Path(root) / "zeroshot"
    for dataset, classes in (("colours", ("c_red", "c_green", "c_blue")), ("swatches", ("yellow", "purple"))):
        for cls in classes:
            for i in range(3):
                solid(
                    folder / dataset / cls / f"{i}.png",
                    rng.choice((cls.removeprefix("c_"), rng.choice(COLOURS))),
                )
    (folder / "colours" / "classnames.txt").write_text(
        "blue\ngreen\nred\n", encoding="utf-8"
    )  # sorted: c_blue...
    # the third template names a colour, so the classes' mean prompt embeddings differ in norm
    (folder / "colours" / "templates.txt").write_text("a photo of a {}.\n{} paint\na {} and white swatch\n")
    return ["zeroshot::colours", "zeroshot::swatches"]


SPEC_SUBSETS = (
    "absolute_size",
    "relative_size",
    "absolute_spatial",
    "relative_spatial",
    "existence",
    "count",
)
MMVP_CATEGORIES = (
    ("Orientation", "Orientation and Direction"),
    ("Presence", "Presence of Specific Features"),
    ("State", "State and Condition"),
    ("Quantity", "Quantity and Count"),
    ("Spatial", "Positional and Relational Context"),
    ("Color", "Color and Appearance"),
    ("Structural_Character", "Structural Characteristics"),
    ("Text", "Texts"),
    ("Camera_Perspective", "Viewpoint and Perspective"),
)


def _colour_pairs(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """``count`` different pairs of different colours (as unordered pairs, so that no two images
    made of them are mirror images)."""
    pairs = [(a, b) for i, a in enumerate(COLOURS) for b in COLOURS[i + 1 :]]
    return [p if rng.random() < 0.5 else p[::-1] for p in rng.sample(pairs, count)]


def write_crepe(root: Path, seed: int = 0) -> list[str]:
    """CREPE's 27 productivity CSVs (3 types, complexities 4 to 12), 3 rows each, over two-colour
    images in Visual Genome's two folders, each row's box one half of its image."""
    rng = random.Random(seed)
    folder = Path(root) / "crepe"
    images = {}
    for i, (left, right) in enumerate(_colour_pairs(rng, 4)):
        image_id = 2350000 + i
        halves(folder / ("VG_100K" if i % 2 else "VG_100K_2") / f"{image_id}.jpg", left, right)
        images[image_id] = (left, right)
    keys = []
    for kind in ("atom", "swap", "negate"):
        for complexity in range(4, 13):
            lines = ["image_id,x,y,width,height,caption,hard_negs"]
            for _ in range(3):
                image_id = rng.choice(sorted(images))
                side = rng.randrange(2)
                seen, other = images[image_id][side], images[image_id][1 - side]
                negatives = [
                    caption(rng, other),
                    caption(rng, rng.choice(COLOURS)),
                    caption(rng, seen, other),
                ]
                fields = [str(image_id), str(8 * side), "0", "8", "8", caption(rng, seen), repr(negatives)]
                lines.append(",".join(f'"{v}"' for v in fields))
            path = (
                folder
                / "prod_hard_negatives"
                / kind
                / f"prod_vg_hard_negs_{kind}_complexity_{complexity}.csv"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            keys.append(f"crepe::{kind}::complexity_{complexity}")
    return keys


def write_spec(root: Path, seed: int = 0) -> list[str]:
    """``spec/<subset>/image2text.json`` and ``text2image.json`` for SPEC's six subsets, 3 items
    each, the image paths relative to the subset's folder."""
    rng = random.Random(seed)
    keys = []
    for subset in SPEC_SUBSETS:
        folder = Path(root) / "spec" / subset
        i2t, t2i = [], []
        for i in range(3):
            pairs = _colour_pairs(rng, 4)
            for k, (left, right) in enumerate(pairs):
                halves(folder / "images" / f"{i}_{k}.jpg", left, right)
            label = rng.randrange(4)
            i2t.append(
                {
                    "query": f"images/{i}_{label}.jpg",
                    "keys": [caption(rng, *p) for p in pairs],
                    "label": label,
                }
            )
            t2i.append(
                {
                    "query": caption(rng, *pairs[label]),
                    "keys": [f"images/{i}_{k}.jpg" for k in range(4)],
                    "label": label,
                }
            )
        _write_json(folder / "image2text.json", i2t)
        _write_json(folder / "text2image.json", t2i)
        keys += [f"spec::{subset}::i2t", f"spec::{subset}::t2i"]
    return keys


def write_imagecode(root: Path, seed: int = 0) -> list[str]:
    """``imagecode/valid_data.json`` over 4 image sets of 10 images in ``image-sets/``: two
    Open Images sets (img0 ... img9) and two video sets whose frame numbers sort differently as
    text (img0, img7, img12, ...)."""
    rng = random.Random(seed)
    folder = Path(root) / "imagecode"
    data = {}
    for name, numbers in (
        ("open-images-1815_f91d6f546e63f20d", range(10)),
        ("open-images-2207_0a8a5d94c0f3f4c8", range(10)),
        ("MSR-VTT-videoTrainValVideo_video2044-shot1_0", range(0, 50, 5)),
        ("video-storytelling-videochristmas_56Nm66j-i5Q-shot14_2", (0, 7, 12, 19, 23, 31, 38, 44, 52, 60)),
    ):
        pairs = _colour_pairs(rng, 10)
        for number, (left, right) in zip(numbers, pairs, strict=True):
            halves(folder / "image-sets" / name / f"img{number}.jpg", left, right)
        targets = rng.sample(range(10), 2)
        data[name] = {str(t): f"the {pairs[t][0]} part next to the {pairs[t][1]} one " for t in targets}
    _write_json(folder / "valid_data.json", data)
    return ["imagecode::videos", "imagecode::static"]


def write_mmvp_vlm(root: Path, seed: int = 0) -> list[str]:
    """``mmvp_vlm/Questions.csv`` with MMVP-VLM's 9 patterns of 15 pairs, and the 270 images in
    ``MMVP_VLM_Images/<pattern folder>/<question id>.jpg``."""
    rng = random.Random(seed)
    folder = Path(root) / "mmvp_vlm"
    rows = ["Question ID,Type,Statement"]
    qid = 1
    for short, _ in MMVP_CATEGORIES:
        for _ in range(15):
            colours = rng.sample(COLOURS, 2)
            for colour in colours:
                solid(folder / "MMVP_VLM_Images" / short / f"{qid}.jpg", colour, size=(6, 6))
                rows.append(f'{qid},{short},"the {colour} {rng.choice(NOUNS)}, seen from the side"')
                qid += 1
    (folder / "Questions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return [f"mmvp_vlm::{long}::{m}" for _, long in MMVP_CATEGORIES for m in ("text", "image", "group")]


WRITERS = {
    "sugarcrepe": write_sugarcrepe,
    "aro": write_aro,
    "winoground": write_winoground,
    "whatsup": write_whatsup,
    "valse": write_valse,
    "crepe": write_crepe,
    "spec": write_spec,
    "imagecode": write_imagecode,
    "mmvp_vlm": write_mmvp_vlm,
    "sugarcrepe_pp": write_sugarcrepe_pp,
    "coco_karpathy": write_coco_karpathy,
    "flickr30k": write_flickr30k,
    "zeroshot": write_zeroshot,
}


def write_all(root: Path, names=tuple(WRITERS)) -> list[str]:
    """Every benchmark in ``names`` under ``root``; the result keys they give."""
    return [key for name in names for key in WRITERS[name](root)]


class BagOfColours(nn.Module):
    """A model with ``encode_image`` / ``encode_text`` whose scores a test can predict.

    An image's embedding is its mean colour; a caption's is the sum of the colours it names
    (plus a small constant), so a caption that names the same colours as another, in any order,
    ties with it. It records what it was asked to encode and in which mode.
    """

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))  # a parameter to have a device and a mode
        self.vocabulary: list[str] = []
        self.images_encoded = 0
        self.text_batches: list[int] = []
        self.modes_seen: set[bool] = set()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        ids = []
        for text in texts:
            if text not in self.vocabulary:
                self.vocabulary.append(text)
            ids.append(self.vocabulary.index(text))
        return torch.tensor(ids)

    @staticmethod
    def preprocess(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image.resize((4, 4)), dtype=np.float32) / 255).permute(2, 0, 1)

    @staticmethod
    def text_vector(text: str) -> torch.Tensor:
        vector = torch.full((3,), 0.02)
        for word in text.split():
            if word in PALETTE:
                vector = vector + torch.tensor(PALETTE[word], dtype=torch.float32) / 255
        return vector

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        self.images_encoded += len(pixels)
        self.modes_seen.add(self.training)
        return pixels.mean(dim=(2, 3))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        self.text_batches.append(len(ids))
        self.modes_seen.add(self.training)
        return torch.stack([self.text_vector(self.vocabulary[i]) for i in ids.tolist()])


class HashedWords(BagOfColours):
    """``BagOfColours`` for real captions, which name no colours of ``PALETTE``: a caption's
    embedding is the sum of a fixed pseudo-random vector per word (seeded by the word's CRC-32), so
    different captions score differently and identical ones tie."""

    @staticmethod
    def text_vector(text: str) -> torch.Tensor:
        vector = torch.full((3,), 0.02)
        for word in re.findall(r"[a-z0-9']+", text.lower()):
            generator = torch.Generator().manual_seed(zlib.crc32(word.encode()))
            vector = vector + torch.randn(3, generator=generator)
        return vector
