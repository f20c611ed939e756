"""The scorer every benchmark shares.

``Features`` encodes each distinct image (file and crop box) and each distinct text once per run
and keeps their L2-normalised float32 embeddings; the score of an image and a text is their
cosine similarity. The task functions turn those scores into results:

* ``choice``: an item is right when its first candidate scores strictly above every other: its
  first caption when it has one image, its first image when it has one caption;
* ``pairs``: Winoground's text, image and group scores, each comparison strict;
* ``triplets``: SugarCrepe++'s image-to-text and text-only scores (two true captions, one
  negative), each comparison strict;
* ``classification``: right when the image's own class scores strictly above every other;
* ``retrieval``: ``retrieval.recalls``.

A tie is always wrong, also where a benchmark's own code takes the first of equal scores (an
``argmax`` over captions with the true one first, as What'sUp's and CLIP_benchmark's do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .items import ImageRef, Item, Part
from .retrieval import recalls

PAIR_METRICS = ("text", "image", "group")


class _Images(Dataset):
    def __init__(self, refs: Sequence[ImageRef], transform: Callable):
        self.refs, self.transform = refs, transform

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> torch.Tensor:
        ref = self.refs[index]
        try:
            with Image.open(ref.path) as image:
                image = image.convert("RGB")
        except OSError as error:
            raise OSError(f"{ref.path}: cannot read the image ({error})") from error
        # PIL's crop, as ARO's loader does: a box reaching past the border is padded with black
        return self.transform(image if ref.box is None else image.crop(ref.box))


class Features:
    """Embeddings of every image and text seen in a run, each computed once.

    Args:
        encoder: see ``encoders.py``.
        batch_size: images and texts per forward pass.
        num_workers: data-loader processes that read and preprocess images.
        progress: a tqdm-like bar (``update``, ``set_description``) that counts the inputs
            encoded, or None.
    """

    def __init__(self, encoder, batch_size: int, num_workers: int = 0, progress=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.encoder, self.batch_size, self.num_workers, self.progress = (
            encoder,
            batch_size,
            num_workers,
            progress,
        )
        self._image_index: dict[ImageRef, int] = {}
        self._text_index: dict[str, int] = {}
        self._image_chunks: list[torch.Tensor] = []
        self._text_chunks: list[torch.Tensor] = []

    def add(self, refs: Sequence[ImageRef], texts: Sequence[str], desc: str) -> None:
        """Encode those of ``refs`` and ``texts`` not seen yet."""
        new_refs = list(dict.fromkeys(r for r in refs if r not in self._image_index))
        new_texts = list(dict.fromkeys(t for t in texts if t not in self._text_index))
        if not new_refs and not new_texts:
            return
        bar = self.progress
        if bar is not None:
            bar.set_description(desc, refresh=False)
        loader = DataLoader(
            _Images(new_refs, self.encoder.transform),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.encoder.device.type == "cuda",
        )
        done = 0
        for pixels in loader:
            self._image_chunks.append(_normalised(self.encoder.encode_images(pixels)))
            for ref in new_refs[done : done + len(pixels)]:
                self._image_index[ref] = len(self._image_index)
            done += len(pixels)
            if bar is not None:
                bar.update(len(pixels))
        for start in range(0, len(new_texts), self.batch_size):
            batch = new_texts[start : start + self.batch_size]
            self._text_chunks.append(_normalised(self.encoder.encode_texts(batch)))
            for text in batch:
                self._text_index[text] = len(self._text_index)
            if bar is not None:
                bar.update(len(batch))
        # one tensor each, so that lookups index a single matrix
        self._image_chunks = [torch.cat(self._image_chunks)] if self._image_chunks else []
        self._text_chunks = [torch.cat(self._text_chunks)] if self._text_chunks else []

    def images(self, refs: Sequence[ImageRef]) -> torch.Tensor:
        """``(len(refs), D)`` embeddings of images already added."""
        index = torch.tensor([self._image_index[r] for r in refs], dtype=torch.long)
        return self._image_chunks[0][index.to(self._image_chunks[0].device)]

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), D)`` embeddings of texts already added."""
        index = torch.tensor([self._text_index[t] for t in texts], dtype=torch.long)
        return self._text_chunks[0][index.to(self._text_chunks[0].device)]

    @property
    def num_images(self) -> int:
        return len(self._image_index)

    @property
    def num_texts(self) -> int:
        return len(self._text_index)


def _normalised(embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings.float(), dim=-1)


def inputs(part: Part) -> tuple[list[ImageRef], list[str]]:
    """Every image and text a part needs encoded."""
    refs = [ref for item in part.items for ref in item.images]
    texts = [text for item in part.items for text in item.texts]
    return refs, texts + [p for prompts in part.class_prompts or () for p in prompts]


def item_scores(features: Features, items: Sequence[Item]) -> torch.Tensor:
    """``(n, I, T)`` scores of each item's images against its texts; positions past an item's own
    images or texts hold ``-inf``, which never wins a strict comparison."""
    num_images = max(len(item.images) for item in items)
    num_texts = max(len(item.texts) for item in items)
    images = features.images(
        [item.images[min(k, len(item.images) - 1)] for item in items for k in range(num_images)]
    )
    texts = features.texts(
        [item.texts[min(k, len(item.texts) - 1)] for item in items for k in range(num_texts)]
    )
    scores = images.view(len(items), num_images, -1) @ texts.view(len(items), num_texts, -1).transpose(1, 2)
    image_counts = torch.tensor([len(item.images) for item in items], device=scores.device)
    text_counts = torch.tensor([len(item.texts) for item in items], device=scores.device)
    padding = (
        torch.arange(num_images, device=scores.device)[None, :, None] >= image_counts[:, None, None]
    ) | (torch.arange(num_texts, device=scores.device)[None, None, :] >= text_counts[:, None, None])
    return scores.masked_fill(padding, -torch.inf)


def choice(features: Features, items: Sequence[Item]) -> torch.Tensor:
    """``(n,)`` bool: the first candidate scores strictly above all the others, the candidates
    being an item's captions when it has one image, else its images (it then has one caption)."""
    scores = item_scores(features, items)  # (n, I, T)
    # a -inf candidate keeps the maximum defined when an item has no second image or caption
    floor = torch.full((len(items), 1), -torch.inf, device=scores.device)
    by_text = scores[:, 0, 0] > torch.cat([scores[:, 0, 1:], floor], dim=1).amax(dim=1)
    by_image = scores[:, 0, 0] > torch.cat([scores[:, 1:, 0], floor], dim=1).amax(dim=1)
    one_image = torch.tensor([len(item.images) == 1 for item in items], device=scores.device)
    return torch.where(one_image, by_text, by_image)


def pairs(features: Features, items: Sequence[Item]) -> dict[str, torch.Tensor]:
    """Winoground's scores, ``(n,)`` bool each: ``text`` (each image scores its own caption
    higher), ``image`` (each caption scores its own image higher), ``group`` (both)."""
    s = item_scores(features, items)  # s[:, i, c]: image i against caption c
    text = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    image = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    return {"text": text, "image": image, "group": text & image}


def triplets(features: Features, items: Sequence[Item]) -> dict[str, torch.Tensor]:
    """SugarCrepe++'s scores for items of one image and three captions (two true ones, then the
    negative), ``(n,)`` bool each:

    * ``itt``: both true captions score above the negative for the image;
    * ``tot``: the two true captions are closer to each other than either is to the negative,
      by the cosine similarity of their text embeddings;
    * ``itt_p1``, ``itt_p2``: the first, or the second, true caption scores above the negative.
    """
    images = features.images([item.images[0] for item in items])  # (n, D)
    first, second, negative = (features.texts([item.texts[k] for item in items]) for k in range(3))
    to_first, to_second, to_negative = ((images * t).sum(dim=1) for t in (first, second, negative))
    true_pair = (first * second).sum(dim=1)
    itt_p1, itt_p2 = to_first > to_negative, to_second > to_negative
    tot = (true_pair > (first * negative).sum(dim=1)) & (true_pair > (second * negative).sum(dim=1))
    return {"itt": itt_p1 & itt_p2, "tot": tot, "itt_p1": itt_p1, "itt_p2": itt_p2}


def classification(features: Features, part: Part, chunk: int = 4096) -> torch.Tensor:
    """``(n,)`` bool: the image's own class scores strictly above every other class."""
    classes = torch.stack([F.normalize(features.texts(p).mean(dim=0), dim=-1) for p in part.class_prompts])
    labels = torch.tensor([item.label for item in part.items], device=classes.device)
    correct = []
    for start in range(0, len(part.items), chunk):
        items = part.items[start : start + chunk]
        scores = features.images([item.images[0] for item in items]) @ classes.T  # (n, C)
        own = labels[start : start + len(items), None]
        others = scores.scatter(1, own, -torch.inf).amax(dim=1)
        correct.append(scores.gather(1, own)[:, 0] > others)
    return torch.cat(correct)


def retrieval(features: Features, part: Part) -> dict[str, float]:
    """Recall at 1, 5, 10 both ways over the part's images and all their captions."""
    image_features = features.images([item.images[0] for item in part.items])
    text_features = features.texts([t for item in part.items for t in item.texts])
    owner = torch.tensor(
        [i for i, item in enumerate(part.items) for _ in item.texts], device=image_features.device
    )
    return recalls(image_features, text_features, owner)


def mean(correct: torch.Tensor) -> float:
    return correct.double().mean().item()
