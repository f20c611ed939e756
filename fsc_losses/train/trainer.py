"""The run: open_clip_train's own ``main``, with five of the names it looks up replaced.

``open_clip_train.main.main(argv)`` looks up ``parse_args``, ``create_model_and_transforms``,
``get_data``, ``create_loss`` and ``evaluate`` in its own module. For the length of one run those
names are bound to the methods of a ``_Run`` (and put back afterwards):

* ``parse_args``: the fork's flags, then open_clip's own parser on the rest (``flags``);
* ``create_model_and_transforms``: open_clip's (a ``local-dir:`` model also taking a ``--pretrained``
  checkpoint file; ``--force-context-length`` keeping the first positions, as the fork does), then
  WiSE-FT, the grouped-caption forward, LoRA;
* ``get_data``: open_clip's, with the training set tokenized by ``NegativeCaptions`` (and a CSV
  dataset telling it the row, for ``csv_negclip``);
* ``create_loss``: ``TrainerLoss`` for ``fsc-clip``, open_clip's own for ``clip``;
* ``evaluate``: open_clip's, then the compositional validation.

Everything else (optimiser, schedule, precision, accumulation, checkpoints, resuming, logging,
zero-shot and validation) is the installed trainer's own code. Two fixes of open_clip_train 3.3
bugs are bound for the run as well: DDP on the CPU (``_DDPWithoutCPUDeviceIds``) and its zero-shot
accuracy under NumPy 2.4 (``_topk_hits``).
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import open_clip
import open_clip.factory
import torch
from open_clip_train.data import CsvDataset
from torch.nn.parallel import DistributedDataParallel

from ..integrations.open_clip import create_model_and_transforms
from . import flags
from .captions import NegativeCaptions, read_negatives_column, read_negatives_rows
from .compat import REPLACED
from .loss import TrainerLoss
from .models import add_lora, dense_token_ids, enable_grouped_captions
from .validation import compositional_validation, is_due
from .wise_ft import wise_ft

__all__ = ["run"]


class _Run:
    """The replacements for one run of ``trainer.main``, and the state they share."""

    def __init__(self, trainer: ModuleType):
        self.original = {name: getattr(trainer, name) for name in REPLACED}
        self.args: argparse.Namespace | None = None
        self.model: torch.nn.Module | None = None  # unwrapped: main wraps it in DDP / compile later
        self.preprocess_val = None

    def replacements(self) -> dict:
        return {name: getattr(self, name) for name in REPLACED}

    def parse_args(self, argv: list[str]) -> argparse.Namespace:
        self.args = flags.parse_args(argv, self.original["parse_args"])
        return self.args

    def create_model_and_transforms(self, model_name: str, pretrained: str | None = None, **kwargs):
        # open_clip's, except that a local-dir: model also takes a --pretrained checkpoint file and
        # that a shorter --force-context-length keeps the first positions (open_clip interpolates)
        args = self.args
        with _first_text_positions(args.force_context_length):
            model, preprocess_train, preprocess_val = create_model_and_transforms(
                model_name, pretrained, **kwargs
            )
        if args.wise_ft_alpha is not None:
            with _first_text_positions(args.force_context_length):
                zero_shot = _zero_shot_model(args)
            model.load_state_dict(wise_ft(zero_shot.state_dict(), model.state_dict(), args.wise_ft_alpha))
        if args.loss_name == "fsc-clip" and flags.is_training(args):
            enable_grouped_captions(model, dense=args.return_dense_tokens)
        if args.lora_rank > 0:
            add_lora(model, args.lora_rank)
        self.model, self.preprocess_val = model, preprocess_val
        return model, preprocess_train, preprocess_val

    def get_data(self, args: argparse.Namespace, preprocess_fns, epoch: int = 0, tokenizer=None) -> dict:
        get_data = self.original["get_data"]
        if args.loss_name != "fsc-clip" or not flags.is_training(args):
            return get_data(args, preprocess_fns, epoch=epoch, tokenizer=tokenizer)
        from open_clip_train.data import SharedEpoch

        precomputed = rows = None
        column = flags.negatives_column(args)
        if flags.draws_one_negative(args):
            rows = read_negatives_rows(
                args.train_data,
                column,
                caption_column=args.csv_caption_key,
                sep=args.csv_separator,
                flag=f"--add-random-text-hard-negatives {flags.CSV_NEGCLIP} (column {column})",
            )
        elif column is not None:
            precomputed = read_negatives_column(
                args.train_data, column, caption_column=args.csv_caption_key, sep=args.csv_separator
            )
        captions = NegativeCaptions(
            tokenizer,
            kinds=flags.negative_kinds(args.add_random_text_hard_negatives),
            seed=args.seed,
            precomputed=precomputed,
            rows=rows,
        )
        if args.return_dense_tokens:
            self.model.fsc_token_ids = dense_token_ids(tokenizer)
        # The training set alone gets the negatives; validation keeps open_clip's own captions.
        data = get_data(
            _with(args, val_data=None, imagenet_val=None, imagenet_v2=None),
            preprocess_fns,
            epoch=epoch,
            tokenizer=captions,
        )
        train = data["train"]
        if rows is not None:
            dataset = train.dataloader.dataset
            if type(dataset) is not CsvDataset or len(dataset) != len(rows):
                raise flags.UsageError(
                    f"--add-random-text-hard-negatives {flags.CSV_NEGCLIP} draws from the rows of "
                    f"open_clip's CsvDataset; got a {type(dataset).__name__} of {len(dataset)} items "
                    f"for {len(rows)} rows"
                )
            dataset.__class__ = _RowTellingCsvDataset
        # DataInfo.set_epoch sets this shared value, which the data workers read: webdataset
        # makes one for its shuffling, the other dataset types get one here.
        if train.shared_epoch is None:
            train.shared_epoch = SharedEpoch(epoch)
        captions.epoch = train.shared_epoch
        others = get_data(_with(args, train_data=None), preprocess_fns, epoch=epoch, tokenizer=tokenizer)
        others.pop("train", None)  # --dataset-type synthetic builds one regardless of --train-data
        return {**data, **others}

    def create_loss(self, args: argparse.Namespace):
        if args.loss_name == "clip":
            return self.original["create_loss"](args)
        return TrainerLoss.from_args(args)

    def evaluate(self, model, data, epoch, args, tb_writer=None, tokenizer=None):
        metrics = self.original["evaluate"](
            model, data, epoch, args, tb_writer=tb_writer, tokenizer=tokenizer
        )
        if args.comp_validation_datasets and args.rank == 0 and is_due(epoch, args):
            metrics.update(
                compositional_validation(
                    model,
                    data,
                    epoch,
                    args,
                    tb_writer=tb_writer,
                    tokenizer=tokenizer,
                    preprocess=self.preprocess_val,
                )
            )
        return metrics


def _with(args: argparse.Namespace, **changes) -> argparse.Namespace:
    copied = copy.copy(args)
    for name, value in changes.items():
        setattr(copied, name, value)
    return copied


def _zero_shot_model(args: argparse.Namespace) -> torch.nn.Module:
    """WiSE-FT's zero-shot end, from ``--zeroshot-model PRETRAINED:MODEL`` (as the fork's)."""
    spec = args.zeroshot_model
    if spec.startswith(("local-dir:", "hf-hub:")):
        name, pretrained = spec, None  # these model names carry their weights
    else:
        pretrained, colon, name = spec.rpartition(":")
        if not colon or not pretrained or not name:
            raise flags.UsageError(
                f"--zeroshot-model {spec!r}: expected PRETRAINED:MODEL, e.g. openai:ViT-B-32"
            )
    # the same context length as the fine-tuned model's (the fork keeps the first positions too)
    return open_clip.create_model(
        name, pretrained, cache_dir=args.cache_dir, force_context_length=args.force_context_length
    )


class _RowTellingCsvDataset(CsvDataset):
    """open_clip's ``CsvDataset`` that tells its tokenizer (``NegativeCaptions``) which row it
    tokenizes, so that ``csv_negclip`` draws from that row's negatives."""

    def __getitem__(self, idx):
        self.tokenize.row = idx
        return super().__getitem__(idx)


@contextmanager
def _first_text_positions(context_length: int | None) -> Iterator[None]:
    """With ``--force-context-length`` shorter than a loaded checkpoint's, keep the checkpoint's
    first text positions, as the fork does; open_clip 3.3 interpolates them. A longer one is
    interpolated by both."""
    if context_length is None:
        yield
        return
    interpolate = open_clip.factory.resize_text_pos_embed

    def resize(state_dict, model, *args, **kwargs):
        key = "positional_embedding" if "positional_embedding" in state_dict else "text.positional_embedding"
        positions = state_dict.get(key)
        if positions is not None and positions.shape[0] > context_length:
            state_dict[key] = positions[:context_length]
        return interpolate(state_dict, model, *args, **kwargs)

    with _bound(open_clip.factory, {"resize_text_pos_embed": resize}):
        yield


class _DDPWithoutCPUDeviceIds(DistributedDataParallel):
    """DDP that drops ``device_ids`` naming the CPU, which torch refuses for CPU modules.

    open_clip_train 3.3 wraps every model as ``DistributedDataParallel(model, device_ids=[device])``,
    also when ``device`` is the CPU (gloo processes), where torch raises a ValueError.
    """

    def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
        if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
            device_ids = output_device = None
        super().__init__(module, device_ids, output_device, *args, **kwargs)


def _topk_hits(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> list[float]:
    """open_clip_train's zero-shot ``accuracy``: for each ``k``, how many rows of ``output`` rank
    their ``target`` among the top ``k``, as floats.

    open_clip_train 3.3 turns a 1-element array into a float with ``float()``, which NumPy 2.4
    refuses, so its zero-shot evaluation fails there; this computes the same counts in torch.
    """
    hits = output.topk(max(topk), dim=1).indices == target[:, None]  # (n, max k), one hit per row at most
    return [float(hits[:, :k].sum()) for k in topk]


@contextmanager
def _bound(namespace, names: dict) -> Iterator[None]:
    """Bind ``names`` as attributes of ``namespace`` for the block, then restore the old ones."""
    saved = {name: getattr(namespace, name) for name in names}
    for name, value in names.items():
        setattr(namespace, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(namespace, name, value)


def run(trainer: ModuleType, argv: list[str]):
    """Run ``trainer.main(argv)`` with the replacements; returns what it returns.

    Afterwards the logging set-up open_clip's ``setup_logging`` changed is put back: the handlers it
    added to the root logger are removed (their files closed) and the levels it gave every logger
    restored, so that runs in one process neither log into each other's files nor leave torch's
    loggers verbose.
    """
    from open_clip_train import zero_shot

    replaced = _Run(trainer)
    handlers = list(logging.root.handlers)
    loggers = [logging.root, *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    levels = [logger.level for logger in loggers]
    try:
        with (
            _bound(trainer, replaced.replacements()),
            _bound(torch.nn.parallel, {"DistributedDataParallel": _DDPWithoutCPUDeviceIds}),
            _bound(zero_shot, {"accuracy": _topk_hits}),
        ):
            return trainer.main(argv)
    finally:
        for handler in logging.root.handlers[:]:
            if handler not in handlers:
                logging.root.removeHandler(handler)
                handler.close()
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
