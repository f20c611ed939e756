"""The table of benchmarks: for each, its files, where its images are, how it is scored, and the
layout ``--data-root`` must have. A benchmark is a reader module plus one row here.

``load`` reads a benchmark's files under ``<data_root>/<name>/``: the subsets whose file is there
are read, the others are reported missing; a benchmark with none of its files is a
``FileNotFoundError`` that shows the expected layout, a directory where a file belongs a
``ValueError`` naming it. ``check_images`` then makes sure that every image the items name is there
and decodes, before anything is encoded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import (
    aro,
    crepe,
    imagecode,
    images,
    mmvp_vlm,
    retrieval,
    spec,
    sugarcrepe,
    sugarcrepe_pp,
    valse,
    whatsup,
    winoground,
    zeroshot,
)
from .items import Item, Part

# How an item's scores decide it (see scoring.py): "choice" (the first caption, or image, must win),
# "pairs" (Winoground's text, image and group scores), "triplet" (SugarCrepe++'s two true captions
# and a negative), "retrieval", "classification".
TASKS = ("choice", "pairs", "triplet", "retrieval", "classification")


@dataclass(frozen=True)
class Benchmark:
    """One row of the table.

    Attributes:
        name: the folder under the data root and the prefix of the result keys.
        task: one of ``TASKS``.
        read: ``read(file, image_dir, subset) -> Part``.
        files: subset -> the file names it may have (the first one present is read), relative to
            the benchmark's folder. Subset ``""``: the keys have no subset part
            (``winoground::text``).
        images: subset -> the image folder, relative to the benchmark's folder.
        layout: the expected layout, shown when files are missing.
        aggregate: ``aggregate(subset, items, correct) -> accuracy`` for a choice benchmark
            whose score is not the plain share of right items (ARO's macro average).
        discover: for benchmarks whose subsets are whatever folders are there (zero-shot):
            ``discover(folder) -> {subset: path}``.
    """

    name: str
    task: str
    read: Callable[[Path, Path, str], Part]
    files: Mapping[str, tuple[str, ...]]
    images: Mapping[str, str]
    layout: str
    aggregate: Callable[[str, list[Item], torch.Tensor], float] | None = None
    discover: Callable[[Path], dict[str, Path]] | None = None


def _same(subsets, value):
    return {subset: value for subset in subsets}


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "sugarcrepe",
            "choice",
            sugarcrepe.read,
            {s: (f"{s}.json",) for s in sugarcrepe.SUBSETS},
            _same(sugarcrepe.SUBSETS, "val2017"),
            "sugarcrepe/{replace_obj,replace_att,replace_rel,swap_obj,swap_att,add_obj,add_att}.json\n"
            "sugarcrepe/val2017/<filename>  (COCO 2017 validation images)",
        ),
        Benchmark(
            "aro",
            "choice",
            aro.read,
            {s: (aro.FILES[s],) for s in aro.SUBSETS},
            _same(aro.SUBSETS, "images"),
            "aro/visual_genome_relation.json\naro/visual_genome_attribution.json\n"
            "aro/images/<image_path>  (ARO's Visual Genome images, cropped to each item's box)",
            aggregate=aro.macro_accuracy,
        ),
        Benchmark(
            "winoground",
            "pairs",
            winoground.read,
            {"": ("examples.jsonl",)},
            {"": "images"},
            "winoground/examples.jsonl\n"
            "winoground/images/<image_0>.png, <image_1>.png  (ex_<id>_img_<k>.png)",
        ),
        Benchmark(
            "whatsup",
            "choice",
            whatsup.read,
            {s: (whatsup.FILES[s],) for s in whatsup.SUBSETS},
            whatsup.IMAGE_DIRS,
            "whatsup/controlled_images_dataset.json, whatsup/controlled_images/<file name of image_path>\n"
            "whatsup/controlled_clevr_dataset.json, whatsup/controlled_clevr/<file name of image_path>\n"
            "whatsup/coco_qa_one_obj.json, coco_qa_two_obj.json, whatsup/val2017/<id as 12 digits>.jpg\n"
            "whatsup/vg_qa_one_obj.json, vg_qa_two_obj.json, whatsup/vg_images/<id>.jpg",
        ),
        Benchmark(
            "valse",
            "choice",
            valse.read,
            {s: (f"{s}.json",) for s in valse.SUBSETS},
            _same(valse.SUBSETS, "images"),
            "valse/{" + ",".join(valse.SUBSETS) + "}.json\n"
            "valse/images/<image_file>  (every piece's images in one folder)",
        ),
        Benchmark(
            "crepe",
            "choice",
            crepe.read,
            {s: (f,) for s, f in crepe.FILES.items()},
            _same(crepe.FILES, "."),
            "crepe/prod_hard_negatives/{atom,swap,negate}/prod_vg_hard_negs_<type>_complexity_<4..12>.csv\n"
            "crepe/VG_100K/<image_id>.jpg or crepe/VG_100K_2/<image_id>.jpg  (Visual Genome)",
        ),
        Benchmark(
            "spec",
            "choice",
            spec.read,
            {s: (f,) for s, f in spec.FILES.items()},
            {s: s.split("::")[0] for s in spec.FILES},
            "spec/<subset>/image2text.json, spec/<subset>/text2image.json  (subsets: "
            + ", ".join(spec.SUBSETS)
            + ")\nspec/<subset>/<the image paths they name>",
        ),
        Benchmark(
            "imagecode",
            "choice",
            imagecode.read,
            _same(imagecode.SUBSETS, ("valid_data.json",)),
            _same(imagecode.SUBSETS, "image-sets"),
            "imagecode/valid_data.json\nimagecode/image-sets/<image set>/img<k>.jpg  (10 images a set)",
        ),
        Benchmark(
            "mmvp_vlm",
            "pairs",
            mmvp_vlm.read,
            _same(mmvp_vlm.CATEGORIES, ("Questions.csv",)),
            _same(mmvp_vlm.CATEGORIES, "MMVP_VLM_Images"),
            "mmvp_vlm/Questions.csv\nmmvp_vlm/MMVP_VLM_Images/<pattern folder>/<question id>.jpg",
        ),
        Benchmark(
            "sugarcrepe_pp",
            "triplet",
            sugarcrepe_pp.read,
            {s: (f"{s}.json",) for s in sugarcrepe_pp.SUBSETS},
            _same(sugarcrepe_pp.SUBSETS, "val2017"),
            "sugarcrepe_pp/{replace_obj,replace_att,replace_rel,swap_obj,swap_att}.json  "
            "(SugarCrepe++'s data/ folder)\n"
            "sugarcrepe_pp/val2017/<filename>  (COCO 2017 validation images)",
        ),
        Benchmark(
            "coco_karpathy",
            "retrieval",
            retrieval.read,
            {"": ("coco_karpathy_test.json", "dataset_coco.json")},
            {"": "."},
            "coco_karpathy/coco_karpathy_test.json  (or Karpathy's dataset_coco.json)\n"
            "coco_karpathy/<image>  (e.g. coco_karpathy/val2014/COCO_val2014_000000391895.jpg)",
        ),
        Benchmark(
            "flickr30k",
            "retrieval",
            retrieval.read,
            {"": ("flickr30k_test.json", "dataset_flickr30k.json")},
            {"": "."},
            "flickr30k/flickr30k_test.json  (or Karpathy's dataset_flickr30k.json)\n"
            "flickr30k/flickr30k-images/<file name>",
        ),
        Benchmark(
            "zeroshot",
            "classification",
            zeroshot.read,
            {},
            {},
            "zeroshot/<dataset>/<class>/<image>  (one folder per class, torchvision ImageFolder)\n"
            "zeroshot/<dataset>/classnames.txt, templates.txt  (optional)",
            discover=zeroshot.datasets,
        ),
    )
}


@dataclass
class Loaded:
    """A benchmark's subsets as read, the files of the layout that were not there, and the file
    each subset was read from."""

    benchmark: Benchmark
    parts: dict[str, Part]
    missing: list[str]
    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # subset -> items left out (check_images)


def get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def load(bench: Benchmark, data_root: Path, image_roots: Mapping[str, str | Path] | None = None) -> Loaded:
    """Read ``bench``'s files under ``data_root / bench.name``.

    Args:
        image_roots: image folders that replace the default layout's: under the key
            ``bench.name`` for every subset, under ``"<name>::<subset>"`` for one.

    Raises:
        FileNotFoundError: the benchmark's folder or all of its files are missing, or an item's
            image is not on disk; the message shows the expected layout.
        ValueError: a malformed file or item (named), or a subset without items.
    """
    folder = Path(data_root) / bench.name
    if not folder.is_dir():
        what = "a file where its folder belongs" if folder.exists() else "no folder"
        raise FileNotFoundError(
            f"{bench.name}: {what} {folder}; expected layout under the data root:\n{_indent(bench.layout)}"
        )
    if bench.discover is not None:
        found = bench.discover(folder)
    else:
        found = {}
        for subset, names in bench.files.items():
            for name in names:
                if (folder / name).is_file():
                    found[subset] = folder / name
                    break
                if (folder / name).exists():  # a folder named like the file, e.g. by an unzip
                    raise ValueError(
                        f"{folder / name}: a directory where {bench.name} expects its file {name}"
                    )
    missing = list(
        dict.fromkeys(f"{bench.name}/{n[0]}" for subset, n in bench.files.items() if subset not in found)
    )
    if not found:
        raise FileNotFoundError(
            f"{bench.name}: none of its files in {folder}; expected layout under the "
            f"data root:\n{_indent(bench.layout)}"
        )
    parts = {}
    for subset, path in found.items():
        try:
            part = bench.read(path, _image_dir(bench, folder, subset, path, image_roots or {}), subset)
        except FileNotFoundError as error:  # a reader that lists image folders (ImageCoDe)
            raise FileNotFoundError(
                f"{bench.name}: {error}; expected layout under the data root:\n{_indent(bench.layout)}"
            ) from error
        if not part.items:
            raise ValueError(f"{path}: no items to score")
        parts[subset] = part
    return Loaded(bench, parts, missing, dict(found))


def _image_dir(bench: Benchmark, folder: Path, subset: str, path: Path, image_roots: Mapping) -> Path:
    for key in (f"{bench.name}::{subset}", bench.name):
        if key in image_roots:
            return Path(image_roots[key])
    if bench.discover is not None:  # the subset's folder holds its images
        return path
    return folder / bench.images[subset]


def check_images(
    loaded: list[Loaded], data_root: Path, num_workers: int = 0, skip_bad_images: bool = False
) -> None:
    """Make sure that every image of ``loaded`` is there and decodes, before anything is encoded.

    The files are decoded in ``num_workers`` processes (``images.unreadable``).

    Args:
        skip_bad_images: leave out the items whose image is absent or unreadable instead of raising:
            their images are added to each ``Loaded.missing`` (relative to ``data_root`` where they
            are under it), the number of items left out to ``Loaded.skipped``, and a subset left
            without items is dropped from ``Loaded.parts``.

    Raises:
        FileNotFoundError: an image is not there (the first one named, with the expected layout).
        ImageError: an image cannot be read: a directory, an empty, truncated or corrupt file (a
            one-line message naming the first one and counting the others).
    """
    users: dict[Path, tuple[Loaded, str, str]] = {}  # each image: the first benchmark, subset, item
    for bench in loaded:
        for subset, part in bench.parts.items():
            for item in part.items:
                for image in item.images:
                    users.setdefault(image.path, (bench, subset, item.name))
    if not skip_bad_images:
        absent = [path for path in users if not path.exists()]
        if absent:
            bench, subset, item = users[absent[0]]
            raise FileNotFoundError(
                f"{bench.benchmark.name}: {len(absent)} image(s) not found, the first {absent[0]} "
                f"(item {item}) of {bench.files[subset]}; expected layout under the data root (or pass "
                f"image_roots / --image-root):\n{_indent(bench.benchmark.layout)}"
            )
    bad = images.unreadable(list(users), num_workers)
    if not bad:
        return
    if not skip_bad_images:
        path, reason = next(iter(bad.items()))
        bench, subset, item = users[path]
        raise images.ImageError(
            f"{bench.benchmark.name}: cannot read the image {path} (item {item}) of "
            f"{bench.files[subset]}: {reason}; {len(bad)} unreadable image(s) in all; to score "
            "without their items, pass skip_bad_images=True (--skip-bad-images)"
        )
    for bench in loaded:
        named = set()
        for subset, part in list(bench.parts.items()):
            kept = [item for item in part.items if not any(image.path in bad for image in item.images)]
            if len(kept) == len(part.items):
                continue
            named |= {image.path for item in part.items for image in item.images if image.path in bad}
            bench.skipped[subset] = len(part.items) - len(kept)
            if kept:
                part.items = kept
            else:
                del bench.parts[subset]
        bench.missing += sorted(_relative(path, data_root) for path in named)  # named holds bad ones only


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
