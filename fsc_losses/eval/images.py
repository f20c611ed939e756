"""Which image files of a run cannot be read, found before the first forward pass.

Partial downloads and interrupted unzips leave 0-byte and truncated JPEGs behind, which PIL opens
(it reads only the header) and fails on when decoding. ``unreadable`` opens and decodes every
distinct file once, in the data loader's worker processes, so that such a file is named before any
image is encoded instead of ending the run midway. JPEGs are decoded at 1/8 scale (PIL's draft
mode: the decoder still reads every byte of the file, but skips much of the work; about a quarter
of the time of loading and preprocessing the image for a ViT-B/32, docs/evaluation.md); other
formats are decoded whole. A file that decoded once is not decoded again in the same process while
its size and modification time stay the same, so a trainer validating every epoch pays for the
check once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import DataLoader, Dataset

CHECK_BATCH = 32  # files per worker task: fewer round trips between the workers and the main process

# (path, size, modification time) of the files that decoded in this process
_decoded: set[tuple[str, int, int]] = set()


class ImageError(ValueError):
    """An image file that cannot be read (absent, a directory, empty, truncated or corrupt); the
    message names the file."""


def unreadable(paths: Sequence[Path], num_workers: int = 0) -> dict[Path, str]:
    """The files of ``paths`` that cannot be opened and decoded, each with the reason.

    Args:
        paths: image files (duplicates are checked once).
        num_workers: processes that decode the files (the data loader's), 0 for this one.

    Returns:
        ``{path: reason}`` in the order of ``paths``, empty when all of them decode.
    """
    problems, to_decode, stamps = {}, [], {}
    unique = list(dict.fromkeys(paths))
    for path in unique:
        try:
            info = os.stat(path)
        except OSError as error:
            problems[path] = "not found" if isinstance(error, FileNotFoundError) else str(error)
            continue
        if not stat.S_ISREG(info.st_mode):
            problems[path] = (
                "a directory, not an image file" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            )
            continue
        stamp = (str(path), info.st_size, info.st_mtime_ns)
        if stamp not in _decoded:
            to_decode.append(path)
            stamps[path] = stamp
    if to_decode:
        loader = DataLoader(
            _Decode(to_decode), batch_size=CHECK_BATCH, num_workers=num_workers, collate_fn=_as_list
        )
        reasons = [reason for batch in loader for reason in batch]
        for path, reason in zip(to_decode, reasons, strict=True):
            if reason is None:
                _decoded.add(stamps[path])
            else:
                problems[path] = reason
    return {path: problems[path] for path in unique if path in problems}


class _Decode(Dataset):
    def __init__(self, paths: Sequence[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> str | None:
        """None when the file decodes, else why not (returned, not raised, so that one bad file
        does not stop the workers and every bad file of the run is known)."""
        try:
            with Image.open(self.paths[index]) as image:
                image.draft(None, (1, 1))  # JPEG: the smallest scale; other formats ignore it
                image.load()
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... by format
            return " ".join(f"{type(error).__name__}: {error}".split())  # one line
        return None


def _as_list(batch: list) -> list:
    return batch
