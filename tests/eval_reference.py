"""An independent computation of what ``fsc_losses.eval`` reports: a plain loop over each
benchmark's files, as each benchmark's own evaluation does it, one item at a time.

It shares nothing with the package (only the subset names, with the fixtures): it reads the JSON
files itself, embeds every image and caption one at a time through the functions it is given, and
decides each item with explicit comparisons. Switches turn off what the package must get right
(the crop, ties counting as wrong, ARO's macro rules), so that a test can show its fixtures would
catch each mistake.
"""

from __future__ import annotations

import ast
import csv
import functools
import json
from collections import defaultdict
from pathlib import Path

from PIL import Image

from .eval_fixtures import SUGARCREPE_PP_SUBSETS as SUGARCREPE_PP
from .eval_fixtures import SUGARCREPE_SUBSETS as SUGARCREPE
from .eval_fixtures import VALSE_PIECES as VALSE

# Of the relations the fixtures use (on, under, next to, riding), the one in ARO's notebook list.
ARO_EXCLUDED_IN_FIXTURES = {"next to"}


class Reference:
    """``image(path, box) -> vector`` and ``text(str) -> vector`` give L2-normalised 1-D float64
    tensors; ``dot`` of two is their score."""

    def __init__(
        self, image, text, crop=True, ties_win=False, aro_excluded=ARO_EXCLUDED_IN_FIXTURES, aro_min_pair=25
    ):
        # each input is still embedded on its own; the caches only skip repeating that
        self.image, self.text = functools.cache(image), functools.cache(text)
        self.crop, self.ties_win, self.aro_excluded, self.aro_min_pair = (
            crop,
            ties_win,
            aro_excluded,
            aro_min_pair,
        )
        self.ties = 0  # decisions where the right answer tied with the best wrong one

    def beats(self, right: float, wrong: float) -> bool:
        self.ties += right == wrong
        return right >= wrong if self.ties_win else right > wrong

    def score(self, image_vector, text: str) -> float:
        return float(image_vector @ self.text(text))

    def results(self, root: Path, names) -> dict[str, float]:
        out = {}
        for name in names:
            out.update(getattr(self, name)(Path(root) / name))
        return out

    def sugarcrepe(self, folder: Path) -> dict[str, float]:
        out = {}
        for subset in SUGARCREPE:
            path = folder / f"{subset}.json"
            if not path.exists():
                continue
            right = []
            for item in json.loads(path.read_text()).values():
                image = self.image(folder / "val2017" / item["filename"], None)
                right.append(
                    self.beats(
                        self.score(image, item["caption"]), self.score(image, item["negative_caption"])
                    )
                )
            out[f"sugarcrepe::{subset}"] = sum(right) / len(right)
        return out

    def sugarcrepe_pp(self, folder: Path, image_folder: str = "val2017") -> dict[str, float]:
        """As SugarCrepe++'s scripts (``VLMs/test_*.py``): per item, the image's cosine with each
        caption and the captions' cosines with each other."""
        out = {}
        for subset in SUGARCREPE_PP:
            path = folder / f"{subset}.json"
            if not path.exists():
                continue
            right = {"itt": [], "tot": [], "itt_p1": [], "itt_p2": []}
            for item in json.loads(path.read_text()):
                image = self.image(folder / image_folder / item["filename"], None)
                p1, p2, neg = (self.text(item[k]) for k in ("caption", "caption2", "negative_caption"))
                cos_p1, cos_p2, cos_neg = (float(image @ t) for t in (p1, p2, neg))
                cos_p1p2, cos_p1_neg, cos_p2_neg = float(p1 @ p2), float(p1 @ neg), float(p2 @ neg)
                p1_wins, p2_wins = self.beats(cos_p1, cos_neg), self.beats(cos_p2, cos_neg)
                right["itt"].append(p1_wins and p2_wins)
                right["itt_p1"].append(p1_wins)
                right["itt_p2"].append(p2_wins)
                first, second = self.beats(cos_p1p2, cos_p1_neg), self.beats(cos_p1p2, cos_p2_neg)
                right["tot"].append(first and second)
            out.update({f"sugarcrepe_pp::{subset}::{k}": sum(v) / len(v) for k, v in right.items()})
        return out

    def aro(self, folder: Path) -> dict[str, float]:
        out = {}
        for subset, file in (
            ("VG_Relation", "visual_genome_relation.json"),
            ("VG_Attribute", "visual_genome_attribution.json"),
        ):
            groups = defaultdict(list)
            for item in json.loads((folder / file).read_text()):
                box = (
                    item["bbox_x"],
                    item["bbox_y"],
                    item["bbox_x"] + item["bbox_w"],
                    item["bbox_y"] + item["bbox_h"],
                )
                image = self.image(folder / "images" / item["image_path"], box if self.crop else None)
                right = self.beats(
                    self.score(image, item["true_caption"]), self.score(image, item["false_caption"])
                )
                group = item["relation_name"] if subset == "VG_Relation" else "_".join(item["attributes"])
                groups[group].append(right)
            if subset == "VG_Relation":
                kept = [v for g, v in groups.items() if g not in self.aro_excluded]
            else:
                kept = [v for v in groups.values() if len(v) >= self.aro_min_pair]
            out[f"aro::{subset}"] = sum(sum(v) / len(v) for v in kept) / len(kept)
        return out

    def winoground(self, folder: Path) -> dict[str, float]:
        text, image, group = [], [], []
        for line in (folder / "examples.jsonl").read_text().splitlines():
            ex = json.loads(line)
            i0, i1 = (self.image(folder / "images" / f"{ex[f'image_{k}']}.png", None) for k in (0, 1))
            s = {(i, c): self.score(img, ex[f"caption_{c}"]) for i, img in ((0, i0), (1, i1)) for c in (0, 1)}
            t = self.beats(s[0, 0], s[0, 1]) & self.beats(s[1, 1], s[1, 0])
            im = self.beats(s[0, 0], s[1, 0]) & self.beats(s[1, 1], s[0, 1])
            text.append(t)
            image.append(im)
            group.append(t and im)
        return {
            f"winoground::{k}": sum(v) / len(v)
            for k, v in (("text", text), ("image", image), ("group", group))
        }

    def whatsup(self, folder: Path) -> dict[str, float]:
        out = {}
        files = {
            "WhatsUp_A": "controlled_images_dataset.json",
            "WhatsUp_B": "controlled_clevr_dataset.json",
            "COCO_QA_ONE": "coco_qa_one_obj.json",
            "COCO_QA_TWO": "coco_qa_two_obj.json",
            "VG_QA_ONE": "vg_qa_one_obj.json",
            "VG_QA_TWO": "vg_qa_two_obj.json",
        }
        for subset, file in files.items():
            right = []
            for item in json.loads((folder / file).read_text()):
                if subset.startswith("WhatsUp"):
                    # What'sUp's paths start with its repository's data/ folder
                    path = folder / item["image_path"].removeprefix("data/")
                    captions = item["caption_options"]
                elif subset.startswith("COCO"):
                    path, captions = folder / "val2017" / f"{str(item[0]).zfill(12)}.jpg", item[1:]
                else:
                    path, captions = folder / "vg_images" / f"{item[0]}.jpg", item[1:]
                image = self.image(path, None)
                scores = [self.score(image, c) for c in captions]
                right.append(self.beats(scores[0], max(scores[1:])))
            out[f"whatsup::{subset}"] = sum(right) / len(right)
        return out

    def valse(self, folder: Path) -> dict[str, float]:
        out = {}
        for piece in VALSE:
            if not (folder / f"{piece}.json").exists():
                continue
            right = []
            for item in json.loads((folder / f"{piece}.json").read_text()).values():
                if item["mturk"]["caption"] < 2:
                    continue
                image = self.image(folder / "images" / item["image_file"], None)
                right.append(self.beats(self.score(image, item["caption"]), self.score(image, item["foil"])))
            out[f"valse::{piece}"] = sum(right) / len(right)
        return out

    def crepe(self, folder: Path) -> dict[str, float]:
        out = {}
        for kind in ("atom", "swap", "negate"):
            for complexity in range(4, 13):
                path = (
                    folder
                    / "prod_hard_negatives"
                    / kind
                    / f"prod_vg_hard_negs_{kind}_complexity_{complexity}.csv"
                )
                if not path.exists():
                    continue
                right = []
                with open(path, newline="") as f:
                    for row in csv.DictReader(f):
                        image_path = folder / "VG_100K" / f"{row['image_id']}.jpg"
                        if not image_path.exists():
                            image_path = folder / "VG_100K_2" / f"{row['image_id']}.jpg"
                        x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
                        image = self.image(image_path, (x, y, x + w, y + h) if self.crop else None)
                        negatives = ast.literal_eval(row["hard_negs"])
                        best_negative = max(self.score(image, n) for n in negatives)
                        right.append(self.beats(self.score(image, row["caption"]), best_negative))
                out[f"crepe::{kind}::complexity_{complexity}"] = sum(right) / len(right)
        return out

    def spec(self, folder: Path) -> dict[str, float]:
        out = {}
        for subset in sorted(p.name for p in folder.iterdir() if p.is_dir()):
            i2t = json.loads((folder / subset / "image2text.json").read_text())
            right = []
            for item in i2t:
                image = self.image(folder / subset / item["query"], None)
                scores = [self.score(image, c) for c in item["keys"]]
                others = [s for i, s in enumerate(scores) if i != item["label"]]
                right.append(self.beats(scores[item["label"]], max(others)))
            out[f"spec::{subset}::i2t"] = sum(right) / len(right)
            t2i = json.loads((folder / subset / "text2image.json").read_text())
            right = []
            for item in t2i:
                scores = [
                    self.score(self.image(folder / subset / k, None), item["query"]) for k in item["keys"]
                ]
                others = [s for i, s in enumerate(scores) if i != item["label"]]
                right.append(self.beats(scores[item["label"]], max(others)))
            out[f"spec::{subset}::t2i"] = sum(right) / len(right)
        return out

    def imagecode(self, folder: Path) -> dict[str, float]:
        right = {"videos": [], "static": []}
        for name, descriptions in json.loads((folder / "valid_data.json").read_text()).items():
            files = sorted((folder / "image-sets" / name).glob("*.jpg"), key=lambda p: int(p.stem[3:]))
            images = [self.image(f, None) for f in files]
            for index, description in descriptions.items():
                scores = [self.score(image, description.strip()) for image in images]
                others = [s for i, s in enumerate(scores) if i != int(index)]
                right["static" if name.startswith("open-images") else "videos"].append(
                    self.beats(scores[int(index)], max(others))
                )
        return {f"imagecode::{k}": sum(v) / len(v) for k, v in right.items()}

    def mmvp_vlm(self, folder: Path) -> dict[str, float]:
        categories = [
            "Orientation and Direction",
            "Presence of Specific Features",
            "State and Condition",
            "Quantity and Count",
            "Positional and Relational Context",
            "Color and Appearance",
            "Structural Characteristics",
            "Texts",
            "Viewpoint and Perspective",
        ]
        with open(folder / "Questions.csv", newline="") as f:
            rows = list(csv.reader(f))[1:]
        out = {}
        for pair in range(len(rows) // 2):
            (q0, kind, s0), (q1, _, s1) = rows[2 * pair], rows[2 * pair + 1]
            i0, i1 = (self.image(folder / "MMVP_VLM_Images" / kind / f"{q}.jpg", None) for q in (q0, q1))
            s = {
                (i, c): self.score(img, f"a photo of {text}")
                for i, img in ((0, i0), (1, i1))
                for c, text in ((0, s0), (1, s1))
            }
            text = self.beats(s[0, 0], s[0, 1]) & self.beats(s[1, 1], s[1, 0])
            image = self.beats(s[0, 0], s[1, 0]) & self.beats(s[1, 1], s[0, 1])
            category = categories[pair // 15]
            for metric, right in (("text", text), ("image", image), ("group", text and image)):
                out.setdefault(f"mmvp_vlm::{category}::{metric}", []).append(right)
        return {k: sum(v) / len(v) for k, v in out.items()}

    def _retrieval(self, name: str, pairs: list[tuple[Path, list[str]]]) -> dict[str, float]:
        images = [self.image(path, None) for path, _ in pairs]
        captions = [(c, owner) for owner, (_, caps) in enumerate(pairs) for c in caps]
        scores = [[self.score(img, c) for c, _ in captions] for img in images]  # [image][caption]
        out = {}
        for k in (1, 5, 10):
            hits = 0
            for i in range(len(images)):
                best = max(scores[i][t] for t, (_, owner) in enumerate(captions) if owner == i)
                wrong = [scores[i][t] for t, (_, owner) in enumerate(captions) if owner != i]
                hits += sum(not self.beats(best, s) for s in wrong) < k
            out[f"{name}::i2t/R@{k}"] = hits / len(images)
        for k in (1, 5, 10):
            hits = 0
            for t, (_, owner) in enumerate(captions):
                others = [scores[i][t] for i in range(len(images)) if i != owner]
                hits += sum(not self.beats(scores[owner][t], s) for s in others) < k
            out[f"{name}::t2i/R@{k}"] = hits / len(captions)
        return out

    def coco_karpathy(self, folder: Path) -> dict[str, float]:
        data = json.loads((folder / "coco_karpathy_test.json").read_text())
        return self._retrieval("coco_karpathy", [(folder / d["image"], d["caption"]) for d in data])

    def flickr30k(self, folder: Path) -> dict[str, float]:
        data = json.loads((folder / "dataset_flickr30k.json").read_text())["images"]
        pairs = [
            (folder / "flickr30k-images" / d["filename"], [s["raw"] for s in d["sentences"]])
            for d in data
            if d["split"] == "test"
        ]
        return self._retrieval("flickr30k", pairs)

    def zeroshot(self, folder: Path, templates=None) -> dict[str, float]:
        from fsc_losses.eval.templates import CLIP_TEMPLATES  # the list itself is data, not logic

        out = {}
        for dataset in sorted(p for p in folder.iterdir() if p.is_dir()):
            classes = sorted(p.name for p in dataset.iterdir() if p.is_dir())
            names_file, templates_file = dataset / "classnames.txt", dataset / "templates.txt"
            names = names_file.read_text().split("\n")[: len(classes)] if names_file.exists() else classes
            names = [n.replace("_", " ") for n in names]
            temps = (
                templates_file.read_text().strip().split("\n") if templates_file.exists() else CLIP_TEMPLATES
            )
            embeddings = []
            for n in names:
                mean = sum(self.text(t.format(n)) for t in temps) / len(temps)
                embeddings.append(mean / mean.norm())
            right = []
            for label, cls in enumerate(classes):
                for file in sorted((dataset / cls).iterdir()):
                    image = self.image(file, None)
                    scores = [float(image @ e) for e in embeddings]
                    right.append(
                        self.beats(scores[label], max(s for j, s in enumerate(scores) if j != label))
                    )
            out[f"zeroshot::{dataset.name}"] = sum(right) / len(right)
        return out


def open_image(path: Path, box) -> Image.Image:
    """The RGB image, cropped to ``box`` as ARO's loader crops."""
    image = Image.open(path).convert("RGB")
    return image if box is None else image.crop(box)
