"""Training captions with their hard negatives, made where open_clip makes a sample's tokens.

Every open_clip_train dataset type (``csv``, ``webdataset``, ``synthetic``) tokenizes a sample in
its data workers with ``tokenizer(text)[0]``. ``NegativeCaptions`` is such a tokenizer: for one
caption it returns a ``(1, G, T)`` block, the caption and then its ``K = G - 1`` negatives, so the
negatives are made in the workers of every dataset type and batches collate to ``(B, G, T)``. A
missing negative's row is filled with ``MISSING_TOKEN``; the model's grouped forward turns those
rows into ``neg_valid`` (``fsc_losses.train.models``).
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Sequence

import torch

from ..negatives import make_hard_negatives
from .flags import UsageError

__all__ = ["MISSING_TOKEN", "NegativeCaptions", "read_negatives_column"]

# No tokenizer produces a negative id, so a row of these can only mark a missing negative.
MISSING_TOKEN = -1


class NegativeCaptions:
    """An open_clip tokenizer that appends each caption's hard negatives.

    Args:
        tokenizer: the model's open_clip tokenizer, ``tokenizer(list of str) -> (N, T)`` ids.
        kinds: ``fsc_losses.negatives`` kinds to generate per caption (none: ``()``).
        seed: ``--seed``. The generated negatives of a caption depend only on (seed, epoch,
            caption): the same in every worker, process and run.
        precomputed: caption -> its precomputed negatives (``read_negatives_column``), or None.
            They come first; captions with fewer than the most any caption has are padded with
            missing slots.
        epoch: an object whose ``get_value()`` is the current epoch, shared with the data
            workers (open_clip_train's ``SharedEpoch``); None means epoch 0.

    Calling it with one caption (a str or a one-element list, as open_clip's datasets do) returns
    ``(1, G, T)`` token ids, ``G = 1 + K``, ``K = (most precomputed negatives) + len(kinds)``.
    """

    def __init__(
        self,
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        kinds: Sequence[str] = (),
        seed: int = 0,
        precomputed: dict[str, tuple[str, ...]] | None = None,
        epoch=None,
    ):
        if not kinds and precomputed is None:
            raise ValueError("NegativeCaptions needs kinds to generate or precomputed negatives")
        self.tokenizer = tokenizer
        self.kinds = tuple(kinds)
        self.seed = int(seed)
        self.precomputed = precomputed
        self.num_precomputed = max(map(len, precomputed.values()), default=0) if precomputed else 0
        self.epoch = epoch

    @property
    def num_negatives(self) -> int:
        """``K``, the negatives per caption."""
        return self.num_precomputed + len(self.kinds)

    def negatives(self, caption: str) -> tuple[list[str], list[bool]]:
        """The ``K`` negatives of ``caption`` (``""`` where missing) and which exist."""
        negatives: list[str] = []
        valid: list[bool] = []
        if self.precomputed is not None:
            if caption not in self.precomputed:
                raise KeyError(f"caption {caption!r} is not a caption of the --hard-negatives-key table")
            given = list(self.precomputed[caption])
            padding = self.num_precomputed - len(given)
            negatives += given + [""] * padding
            valid += [True] * len(given) + [False] * padding
        if self.kinds:
            epoch = 0 if self.epoch is None else self.epoch.get_value()
            # One integer per (seed, epoch): fresh negatives every epoch, reproducible ones.
            made, made_valid = make_hard_negatives([caption], self.kinds, seed=self.seed * 2**32 + epoch)
            negatives += made
            valid += made_valid[0].tolist()
        return negatives, valid

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) != 1:
            raise ValueError(
                "NegativeCaptions tokenizes one caption per call, as open_clip's datasets do; "
                f"got {len(texts)}"
            )
        caption = texts[0]
        negatives, valid = self.negatives(caption)
        kwargs = {} if context_length is None else {"context_length": context_length}
        tokens = self.tokenizer([caption, *negatives], **kwargs)
        tokens[1:][~torch.tensor(valid, dtype=torch.bool)] = MISSING_TOKEN
        return tokens.unsqueeze(0)


def read_negatives_column(
    path: str, column: str, *, caption_column: str, sep: str
) -> dict[str, tuple[str, ...]]:
    """Read precomputed hard negatives from ``column`` of the CSV/TSV at ``path``.

    Each cell holds one caption, or a list of captions as JSON or as a Python literal (NegCLIP's
    ``neg_caption`` column: ``"['a dog on a man', ...]"``); ``[]`` means none. The file is read as
    open_clip's ``CsvDataset`` reads it (pandas, ``sep``), and the table is keyed by the caption
    text the dataset hands to its tokenizer. Rows with the same caption pool their negatives.

    Raises:
        UsageError: the column (or ``caption_column``) is missing, or a cell is empty or cannot
            be read as a caption or a list of captions; the message names the column and the row
            (data rows count from 1 after the header).
    """
    import pandas as pd

    frame = pd.read_csv(path, sep=sep)
    for flag, name in (("--hard-negatives-key", column), ("--csv-caption-key", caption_column)):
        if name not in frame.columns:
            raise UsageError(
                f"{flag} {name}: {path} has no such column; its columns are {list(frame.columns)}"
            )
    table: dict[str, list[str]] = {}
    for row, (caption, cell) in enumerate(zip(frame[caption_column], frame[column], strict=True), start=1):
        try:
            negatives = _read_cell(cell)
        except ValueError as e:
            raise UsageError(f"--hard-negatives-key {column}: row {row} of {path}: {e}") from None
        pooled = table.setdefault(str(caption), [])
        pooled += [n for n in negatives if n not in pooled]
    return {caption: tuple(negatives) for caption, negatives in table.items()}


def _read_cell(cell) -> list[str]:
    if not isinstance(cell, str):
        if isinstance(cell, float) and math.isnan(cell):
            raise ValueError("the cell is empty (write [] for no negatives)")
        raise ValueError(f"{cell!r} is not a caption or a list of captions")
    text = cell.strip()
    if not text.startswith("["):
        negatives = [text]
    else:
        negatives = _read_list(text)
    for negative in negatives:
        if not isinstance(negative, str) or not negative.strip():
            raise ValueError(f"{cell!r} holds {negative!r}, which is not a caption")
    return negatives


def _read_list(text: str) -> list:
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"{text!r} is neither a JSON nor a Python list of captions") from None
    if not isinstance(value, list):
        raise ValueError(f"{text!r} is not a list of captions")
    return value
