"""Zero-shot classification on image folders.

Every folder ``zeroshot/<dataset>/`` is one dataset in torchvision's ``ImageFolder`` layout: one
subfolder per class, holding that class's images, classes in the sorted order of the subfolder
names. Two optional files beside the class folders replace the defaults:

* ``classnames.txt``: one class name per line, in that order (default: each folder's name, with
  ``_`` read as a space);
* ``templates.txt``: one prompt template per line, ``{}`` standing for the class name (default:
  CLIP's 80 ImageNet templates, ``templates.CLIP_TEMPLATES``).

A class's text embedding is the normalised mean of its prompts' normalised embeddings, as in
CLIP's zero-shot evaluation. Score: top-1 accuracy, an image counting as right only when its own
class scores strictly above every other class.
"""

from __future__ import annotations

from pathlib import Path

from .items import ImageRef, Item, Part
from .templates import CLIP_TEMPLATES

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "templates.txt"


def datasets(folder: Path) -> dict[str, Path]:
    """``{dataset name: its folder}`` for the dataset folders under ``folder``."""
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir()} if folder.is_dir() else {}


def read(path: Path, image_dir: Path, subset: str) -> Part:
    """The images and class prompts of the dataset folder ``path`` (``image_dir`` is the same
    folder unless the caller overrides where the class folders are)."""
    classes = sorted(p.name for p in image_dir.iterdir() if p.is_dir()) if image_dir.is_dir() else []
    if len(classes) < 2:
        raise ValueError(f"{image_dir}: a zero-shot dataset needs 2+ class folders, found {classes}")
    names = _lines(path / CLASSNAMES_FILE) or [c.replace("_", " ") for c in classes]
    if len(names) != len(classes):
        raise ValueError(
            f"{path / CLASSNAMES_FILE}: {len(names)} class names for {len(classes)} class folders"
        )
    templates = _lines(path / TEMPLATES_FILE) or list(CLIP_TEMPLATES)
    for number, template in enumerate(templates, start=1):
        if "{}" not in template:
            raise ValueError(f"{path / TEMPLATES_FILE}, line {number}: the template {template!r} has no {{}}")
    items = []
    for label, cls in enumerate(classes):
        for file in sorted((image_dir / cls).iterdir()):
            if file.suffix.lower() in IMAGE_EXTENSIONS:
                items.append(Item((ImageRef(file),), (), f"{cls}/{file.name}", label=label))
    if not items:
        raise FileNotFoundError(
            f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders"
        )
    prompts = [tuple(t.replace("{}", name) for t in templates) for name in names]
    return Part(items, class_prompts=prompts)


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
