"""What a benchmark reader returns, and the checks every reader shares.

A reader turns one of a benchmark's published files into ``Item``s: which images (each an image
file and, for ARO, a crop box), which captions, and the group an item is averaged in. Which
caption or image is the right one is fixed by position (see ``Item``), so the scorer never needs
to know the benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImageRef:
    """An image file, cropped to ``box`` when one is given.

    ``box`` is PIL's ``(left, upper, right, lower)`` in pixels. The scorer encodes each distinct
    ``ImageRef`` once per run, so one file cropped to two boxes is two images and the same file and
    box named by two benchmarks is one.
    """

    path: Path
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Item:
    """One test case.

    The right answer sits at position 0:

    * choice by caption (SugarCrepe, ARO, WhatsUp, VALSE): one image, ``texts[0]`` the true
      caption and the rest its negatives; choice by image: one caption, ``images[0]`` the right
      image and the rest the wrong ones;
    * pairs (Winoground): ``images[k]`` goes with ``texts[k]``;
    * retrieval: one image and all of its captions;
    * classification: one image, ``label`` its class, no texts (the class prompts are the part's).

    ``group`` names what a macro average averages over (ARO's relation or attribute pair); ``name``
    is how error messages and reports call the item (its key or line in the file).
    """

    images: tuple[ImageRef, ...]
    texts: tuple[str, ...]
    name: str
    group: str | None = None
    label: int | None = None


@dataclass
class Part:
    """The items of one subset (one file), plus, for classification, each class's prompts."""

    items: list[Item]
    class_prompts: list[tuple[str, ...]] | None = None


def load_json(path: Path) -> Any:
    """A JSON file's content; a file that is not JSON is a ``ValueError`` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def load_jsonl(path: Path) -> list[tuple[int, Any]]:
    """``(line number, record)`` for every non-empty line of a JSON-lines file."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error})") from None
    return records


def bad_item(path: Path, name: str, problem: str) -> ValueError:
    """The error for a malformed item: the file, the item and what is wrong with it."""
    return ValueError(f"{path}, item {name}: {problem}")


def records(path: Path, data: Any, container: type) -> list[tuple[str, Any]]:
    """``(name, record)`` pairs of a file holding a JSON list (names: the indices) or object
    (names: the keys), checking that ``data`` is the ``container`` the format publishes."""
    if not isinstance(data, container):
        raise ValueError(
            f"{path}: expected a JSON {'list' if container is list else 'object'}, got {type(data).__name__}"
        )
    if isinstance(data, Mapping):
        return [(str(key), value) for key, value in data.items()]
    return [(str(index), value) for index, value in enumerate(data)]


def field(path: Path, name: str, record: Any, key: str | int, kind: type | tuple[type, ...] = str) -> Any:
    """``record[key]``, which must exist and be a ``kind``; otherwise a ``ValueError`` naming the file,
    the item and the field."""
    if isinstance(key, int):
        if not isinstance(record, Sequence) or isinstance(record, str) or len(record) <= key:
            raise bad_item(path, name, f"expected a list with an entry {key}, got {record!r}")
    elif not isinstance(record, Mapping) or key not in record:
        raise bad_item(path, name, f"missing field {key!r}")
    value = record[key]
    # bool is an int in Python, never a valid number or text here
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        expected = " or ".join(t.__name__ for t in _as_tuple(kind))
        raise bad_item(path, name, f"field {key!r} must be {expected}, got {value!r}")
    if isinstance(value, str) and not value.strip() and kind is str:
        raise bad_item(path, name, f"field {key!r} is empty")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
