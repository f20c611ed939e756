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
import random
from collections.abc import Callable, Sequence

import torch

from ..negatives import make_hard_negatives
from .flags import UsageError

__all__ = ["MISSING_TOKEN", "NegativeCaptions", "read_negatives_column", "read_negatives_rows"]

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
            Every one is used, first; captions with fewer than the most any caption has are
            padded with missing slots.
        rows: each row's (caption, negatives) (``read_negatives_rows``), or None: one negative
            per call, drawn from the list of row ``self.row`` (set by the dataset before it
            tokenizes that row), the same for a (seed, epoch, row) in every worker and run; a row
            without negatives gives a missing slot. Not with ``precomputed``.
        epoch: an object whose ``get_value()`` is the current epoch, shared with the data
            workers (open_clip_train's ``SharedEpoch``); None means epoch 0.

    Calling it with one caption (a str or a one-element list, as open_clip's datasets do) returns
    ``(1, G, T)`` token ids, ``G = 1 + K``, ``K = (most precomputed negatives, or 1 drawn from
    rows) + len(kinds)``.
    """

    def __init__(
        self,
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        kinds: Sequence[str] = (),
        seed: int = 0,
        precomputed: dict[str, tuple[str, ...]] | None = None,
        rows: Sequence[tuple[str, tuple[str, ...]]] | None = None,
        epoch=None,
    ):
        if not kinds and precomputed is None and rows is None:
            raise ValueError("NegativeCaptions needs kinds to generate, or precomputed negatives or rows")
        if precomputed is not None and rows is not None:
            raise ValueError(
                "NegativeCaptions takes every precomputed negative or one drawn per row, not both"
            )
        self.tokenizer = tokenizer
        self.kinds = tuple(kinds)
        self.seed = int(seed)
        self.precomputed = precomputed
        self.rows = rows
        if precomputed:
            self.num_precomputed = max(map(len, precomputed.values()), default=0)
        else:
            self.num_precomputed = 0 if rows is None else 1
        self.epoch = epoch
        self.row: int | None = None

    @property
    def num_negatives(self) -> int:
        """``K``, the negatives per caption."""
        return self.num_precomputed + len(self.kinds)

    def negatives(self, caption: str) -> tuple[list[str], list[bool]]:
        """The ``K`` negatives of ``caption`` (``""`` where missing) and which exist."""
        negatives: list[str] = []
        valid: list[bool] = []
        epoch = 0 if self.epoch is None else self.epoch.get_value()
        if self.rows is not None:
            drawn = self._draw(caption, epoch)
            negatives.append("" if drawn is None else drawn)
            valid.append(drawn is not None)
        if self.precomputed is not None:
            if caption not in self.precomputed:
                raise KeyError(f"caption {caption!r} is not a caption of the --hard-negatives-key table")
            given = list(self.precomputed[caption])
            padding = self.num_precomputed - len(given)
            negatives += given + [""] * padding
            valid += [True] * len(given) + [False] * padding
        if self.kinds:
            # One integer per (seed, epoch): fresh negatives every epoch, reproducible ones.
            made, made_valid = make_hard_negatives([caption], self.kinds, seed=self.seed * 2**32 + epoch)
            negatives += made
            valid += made_valid[0].tolist()
        return negatives, valid

    def _draw(self, caption: str, epoch: int) -> str | None:
        """One negative of row ``self.row``, or None where the row has none."""
        if self.row is None:
            raise RuntimeError(
                "NegativeCaptions draws from a row's negatives: the dataset must set .row before it "
                "tokenizes that row (fsc_losses.train wraps open_clip's CsvDataset to do so)"
            )
        row_caption, choices = self.rows[self.row]
        if row_caption != caption:
            raise RuntimeError(
                f"row {self.row} holds the caption {row_caption!r}, the dataset gave {caption!r}"
            )
        if not choices:
            return None
        # str seeds are hashed with SHA-512 by `random`: the same draw in every process.
        return random.Random(f"{self.seed}\x1f{epoch}\x1f{self.row}").choice(choices)

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


def read_negatives_rows(
    path: str, column: str, *, caption_column: str, sep: str, flag: str | None = None
) -> list[tuple[str, tuple[str, ...]]]:
    """Each row's (caption, negatives) from ``column`` of the CSV/TSV at ``path``, in file order.

    Each cell holds one caption, or a list of captions as JSON or as a Python literal (NegCLIP's
    ``neg_caption`` column: ``"['a dog on a man', ...]"``); ``[]`` means none. The file is read as
    open_clip's ``CsvDataset`` reads it (pandas, ``sep``), so row ``i`` here is the dataset's item
    ``i``, and the caption is the text the dataset hands to its tokenizer.

    Raises:
        UsageError: the column (or ``caption_column``) is missing, or a cell is empty or cannot
            be read as a caption or a list of captions; the message names the flag that named the
            column (``flag``, by default ``--hard-negatives-key COLUMN``) and the row (data rows
            count from 1 after the header).
    """
    import pandas as pd

    flag = flag or f"--hard-negatives-key {column}"
    frame = pd.read_csv(path, sep=sep)
    for name_flag, name in ((flag, column), (f"--csv-caption-key {caption_column}", caption_column)):
        if name not in frame.columns:
            raise UsageError(
                f"{name_flag}: {path} has no such column {name}; its columns are {list(frame.columns)}"
            )
    rows = []
    for row, (caption, cell) in enumerate(zip(frame[caption_column], frame[column], strict=True), start=1):
        try:
            negatives = _read_cell(cell)
        except ValueError as e:
            raise UsageError(f"{flag}: row {row} of {path}: {e}") from None
        rows.append((str(caption), tuple(negatives)))
    return rows


def read_negatives_column(
    path: str, column: str, *, caption_column: str, sep: str
) -> dict[str, tuple[str, ...]]:
    """Precomputed hard negatives from ``column`` of the CSV/TSV at ``path``, keyed by caption:
    ``read_negatives_rows``, where rows with the same caption pool their negatives.

    Raises:
        UsageError: as ``read_negatives_rows``.
    """
    table: dict[str, list[str]] = {}
    for caption, negatives in read_negatives_rows(path, column, caption_column=caption_column, sep=sep):
        pooled = table.setdefault(caption, [])
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
