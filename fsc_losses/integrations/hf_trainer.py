"""The package's losses on Hugging Face transformers' ``Trainer``, with no hand-written loop.

* FSC-CLIP for ``CLIPModel`` and ``SiglipModel``: :class:`FSCCollator` turns dataset rows (an
  image and a caption, and optionally precomputed hard negatives) into a batch of images and the
  ``B * (1 + K)`` tokenized captions; :class:`FSCTrainer` computes ``FSCLoss`` on it through
  ``encode_dense``.
* Discriminative fine-tuning of an LVLM (docs/lvlm.md): :class:`ContrastiveNTPCollator` turns
  rows (an image, a short caption, a long caption) into the image, text and long-caption
  sequences; :class:`ContrastiveNTPTrainer` computes ``ContrastiveNTPLoss`` from the model's
  hidden states (last-token embeddings, and the NTP term through ``linear_cross_entropy``, never
  the ``(N, V)`` logits), with the soft prompt and temperature of
  ``fsc_losses.integrations.lvlm.add_dual_encoder_modules``.

Why a ``Trainer`` subclass rather than ``Trainer(compute_loss_func=...)``: that hook receives only
the model's outputs and the labels, and neither ``CLIPModel``'s nor an LVLM's forward returns what
the losses need (projected patch and caption tokens; the LM head's input instead of its logits).
The subclasses override ``compute_loss``, the method transformers documents for custom losses.
While it runs, the model's ``forward`` is the objective (encoding and loss): the Trainer calls the
model through its DDP / FSDP / DeepSpeed wrapper, which synchronises gradients and gathers sharded
parameters only for what runs inside the wrapped module's forward (docs/integration.md).

Importing this module imports ``transformers``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import SiglipModel, Trainer, TrainerCallback

from .. import ContrastiveNTPLoss, FSCLoss
from ..negatives import HN_KINDS, make_hard_negatives
from .lvlm import hidden_states, lm_head_softcap, sequence_embeddings, without_peft
from .transformers import _check_supported, encode_dense, token_ids

__all__ = ["ContrastiveNTPCollator", "ContrastiveNTPTrainer", "FSCCollator", "FSCTrainer"]


# ---- collators --------------------------------------------------------------------------------


def _column(features: Sequence[dict], column: str) -> list:
    """Every row's value of ``column``; a row without it is an error naming both."""
    values = []
    for row, feature in enumerate(features):
        if column not in feature:
            raise ValueError(
                f"row {row} of the batch has no column {column!r} (its columns: {sorted(feature)}); "
                "name the right column in the collator, and keep it with remove_unused_columns (the "
                "fsc_losses trainers keep the collator's columns)"
            )
        values.append(feature[column])
    return values


def _captions(features: Sequence[dict], column: str) -> list[str]:
    captions = _column(features, column)
    for row, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise ValueError(
                f"column {column!r}, row {row} of the batch: a caption must be a str, got {caption!r}"
            )
    return captions


def _images(features: Sequence[dict], column: str) -> list:
    """The rows' images: PIL images, arrays or tensors as the image processor takes them, or paths
    to image files, opened here (as RGB)."""
    images = _column(features, column)
    for row, image in enumerate(images):
        if isinstance(image, (str, os.PathLike)):
            from PIL import Image

            try:
                with Image.open(image) as opened:
                    images[row] = opened.convert("RGB")
            except OSError as err:
                raise ValueError(
                    f"column {column!r}, row {row} of the batch: cannot read image {image}"
                ) from err
    return images


class FSCCollator:
    """Dataset rows to an ``FSCTrainer`` batch: images, and each caption followed by its ``K``
    hard negatives, tokenized in ``FSCLoss``'s flat layout.

    Each row is a dict (a ``datasets`` row, or any ``Dataset`` item) with an image under
    ``image_column`` (a PIL image, an array or tensor the image processor takes, or a path to an
    image file) and a caption under ``caption_column``. The hard negatives are either

    * made here with :func:`fsc_losses.negatives.make_hard_negatives` (``negatives_column=None``,
      the default): one per kind in ``kinds``. The negatives of a caption depend only on
      ``(seed, kind, caption)``, so a run is reproducible whatever the batching, the data-loader
      workers, the number of processes or the point a run resumes from; the same caption gets the
      same negatives every epoch, as a precomputed column would (``seed=None``: fresh randomness
      at every call, not reproducible). A step counter would not do: each worker process holds
      its own copy of the collator, and a resumed run would restart it;
    * or read from ``negatives_column``: per row a list of ``K`` strings (a JSON list in a str,
      as a CSV cell holds it, is read too), ``""`` or ``None`` for a missing one. ``K`` is the
      first row's; every row must have as many.

    Args:
        tokenizer: the model's tokenizer.
        image_processor: the model's image processor.
        image_column, caption_column, negatives_column: the row keys read.
        kinds: the negatives made here (ignored with ``negatives_column``).
        seed: int, or None for unreproducible negatives.
        max_length: the tokenized length; default the tokenizer's ``model_max_length``.
        padding: the tokenizer's ``padding``; default ``"max_length"`` (SigLIP was trained on
            captions padded to its full length).

    Returns (``__call__(rows)``): a dict with ``pixel_values (B, 3, H, W)``, ``input_ids (B * G,
    T)`` (the ``B`` captions, then ``K`` blocks of ``B`` negatives, ``G = 1 + K``),
    ``attention_mask (B * G, T)`` when the tokenizer returns one (SigLIP's does not), and
    ``neg_valid (B, K)`` bool.

    Attributes:
        columns: the row keys it reads (the fsc_losses trainers keep these, and only these, under
            ``remove_unused_columns``).
        token_ids: the tokenizer's start and end ids
            (:func:`fsc_losses.integrations.transformers.token_ids`), which ``FSCTrainer`` passes
            to ``encode_dense`` for the text mask.
    """

    def __init__(
        self,
        tokenizer,
        image_processor,
        *,
        image_column: str = "image",
        caption_column: str = "caption",
        negatives_column: str | None = None,
        kinds: Sequence[str] = HN_KINDS,
        seed: int | None = 0,
        max_length: int | None = None,
        padding: str | bool = "max_length",
    ):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_column = image_column
        self.caption_column = caption_column
        self.negatives_column = negatives_column
        self.kinds = tuple(kinds)
        self.seed = seed
        self.max_length = max_length
        self.padding = padding
        make_hard_negatives([], self.kinds, seed)  # checks kinds and seed now, not at the first batch
        self.token_ids = token_ids(tokenizer)
        self.columns = tuple(c for c in (image_column, caption_column, negatives_column) if c is not None)

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        captions = _captions(features, self.caption_column)
        if self.negatives_column is None:
            negatives, neg_valid = make_hard_negatives(captions, self.kinds, self.seed)
        else:
            negatives, neg_valid = self._read_negatives(features)
        texts = self.tokenizer(
            captions + negatives,
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        images = _images(features, self.image_column)
        batch = {
            "pixel_values": self.image_processor(images=images, return_tensors="pt")["pixel_values"],
            "input_ids": texts["input_ids"],
            "neg_valid": neg_valid,
        }
        if "attention_mask" in texts:
            batch["attention_mask"] = texts["attention_mask"]
        return batch

    def _read_negatives(self, features: Sequence[dict]) -> tuple[list[str], torch.Tensor]:
        """The column's ``B`` lists of ``K`` negatives, type-major as ``make_hard_negatives``
        returns them, and the ``(B, K)`` mask of the present ones."""
        column = self.negatives_column
        rows = []
        for row, value in enumerate(_column(features, column)):
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"column {column!r}, row {row} of the batch: a str must hold a JSON list of "
                        f"negatives, got {value!r} ({err})"
                    ) from err
            if not isinstance(value, (list, tuple)) or not all(
                v is None or isinstance(v, str) for v in value
            ):
                raise ValueError(
                    f'column {column!r}, row {row} of the batch: expected a list of str ("" or None '
                    f"for a missing negative), got {value!r}"
                )
            if not rows and not value:
                raise ValueError(f"column {column!r}, row {row} of the batch: no negatives (K = 0)")
            if rows and len(value) != len(rows[0]):
                raise ValueError(
                    f"column {column!r}, row {row} of the batch has {len(value)} negatives; row 0 has "
                    f'{len(rows[0])}, and every row needs as many ("" or None for a missing one)'
                )
            rows.append([v or "" for v in value])
        negatives = [rows[b][k] for k in range(len(rows[0])) for b in range(len(rows))]
        neg_valid = torch.tensor([[bool(v) for v in r] for r in rows], dtype=torch.bool)
        return negatives, neg_valid


# Per-token fields a processor returns beside input_ids (the same (B, L) shape), and their value on
# the tokens the collator appends (a long caption after the NTP prompt) or lays out itself: text.
# Qwen2/2.5/3-VL's mm_token_type_ids (0 text, 1 image, 2 video), Gemma 3's token_type_ids (1 image),
# PaliGemma's token_type_ids (0 the bidirectional prefix; its captions are laid out by its processor).
_PER_TOKEN_TEXT_VALUE = {"attention_mask": 1, "token_type_ids": 0, "mm_token_type_ids": 0}
# Processor outputs that are not model inputs: PaliGemma's labels (kept by its processor for
# backward compatibility; the NTP labels are the collator's).
_NOT_MODEL_INPUTS = ("labels",)


class ContrastiveNTPCollator:
    """Dataset rows to a ``ContrastiveNTPTrainer`` batch: per row an image, its short caption and
    its long caption become three sequences.

    * the image sequence: ``image_prompt`` with the image (it holds the processor's image
      placeholder, e.g. ``"<image>\\n<soft><soft><soft><soft>Summary above image in one word:"``;
      docs/lvlm.md lists each architecture's);
    * the text sequence: ``text_prompt.format(caption=caption)`` (e.g.
      ``"{caption}\\n<soft><soft><soft><soft>Summary above sentence in one word:"``);
    * the NTP sequence: ``ntp_prompt`` with the image (e.g. ``"<image>\\nDescribe the image in
      detail:"``), then the long caption's tokens and the end token; the labels are those tokens
      (unshifted, as transformers' ``labels``) and ``ignore_index`` on the prompt and the padding.

    The processor makes each sequence with everything the model's forward needs beside the
    tokens, and the collator keeps all of it: the image inputs (``pixel_values`` and, per
    architecture, ``image_sizes``, ``image_grid_thw``, ``pixel_attention_mask``,
    ``batch_num_images``) and the per-token fields (``mm_token_type_ids``, ``token_type_ids``).
    Each row's image goes to the processor as a one-image list (the form Gemma 3's and SmolVLM's
    processors require, and every other accepts). The text sequences are the processor's too,
    without images; where the processor refuses text without an image (PaliGemma's), the collator
    lays them out as it lays out a prompt (the start token, the text, a newline; ``token_type_ids``
    0, the bidirectional prefix). The long caption is tokenized on its own and appended to the
    processor's NTP prompt, so that the labelled positions are exactly the caption's tokens
    whatever the tokenizer would merge across the boundary; its per-token fields are those of text
    (``token_type_ids`` and ``mm_token_type_ids`` 0). A processor with a prefix/suffix layout
    (PaliGemma's ``suffix``: a bidirectional prefix, a causal suffix marked ``token_type_ids`` 1)
    makes the NTP sequences itself, with the long caption as the suffix.

    The image and text sequences are padded on the processor's side (``last_token_embedding``
    reads each row's last real position either way), the NTP sequences on the right (PaliGemma's:
    the processor's side). The prompts' soft-prompt placeholders must be tokens of the tokenizer
    (see ``SoftPrompt``). The tokenizer is used as the processor left it (PaliGemma's processor
    turns its start token off, and writes it itself); the collator changes none of its settings.

    Args:
        processor: the model's multimodal processor (e.g. ``LlavaProcessor``,
            ``Qwen2VLProcessor``): called with text and images, it expands the image placeholder
            into the model's image positions; its ``tokenizer`` tokenizes the long captions.
        image_prompt, text_prompt, ntp_prompt: the templates above.
        image_column, caption_column, long_caption_column: the row keys read (the image as for
            :class:`FSCCollator`).
        ignore_index: the labels' value at positions the NTP term skips.

    Returns (``__call__(rows)``): a dict of

    * ``image_sequences``, ``text_sequences``: ``input_ids``, ``attention_mask`` ``(B, L)`` and
      the processor's per-token fields;
    * ``ntp_sequences``: the same, and ``labels (B, L)``;
    * ``images``: the processor's image inputs, shared by the image and NTP sequences (their
      images are the same).

    Each of the three sequence dicts, with ``images`` for the image-bearing ones, is what
    ``fsc_losses.integrations.lvlm.hidden_states`` takes as keyword arguments (``labels`` aside).

    Attributes:
        columns: the row keys it reads.
    """

    def __init__(
        self,
        processor,
        *,
        image_prompt: str,
        text_prompt: str,
        ntp_prompt: str,
        image_column: str = "image",
        caption_column: str = "caption",
        long_caption_column: str = "long_caption",
        ignore_index: int = -100,
    ):
        image_token = getattr(processor, "image_token", None)
        for name, prompt in (("image_prompt", image_prompt), ("ntp_prompt", ntp_prompt)):
            if image_token is not None and prompt.count(image_token) != 1:
                raise ValueError(
                    f"{name} must hold the processor's image placeholder {image_token!r} once (one image "
                    f"per row; docs/lvlm.md lists each architecture's), got {prompt!r}"
                )
        if "{caption}" not in text_prompt:
            raise ValueError(
                f"text_prompt must hold '{{caption}}' where the caption goes, got {text_prompt!r}"
            )
        if image_token is not None and image_token in text_prompt:
            raise ValueError(
                f"text_prompt must not hold the image placeholder {image_token!r} (its sequences have no "
                f"image), got {text_prompt!r}"
            )
        tokenizer = processor.tokenizer
        for name in ("pad_token_id", "eos_token_id"):
            if getattr(tokenizer, name) is None:
                raise ValueError(f"the processor's tokenizer needs a {name[:-3]} (its {name} is None)")
        self.processor = processor
        self.tokenizer = tokenizer
        self.image_prompt = image_prompt
        self.text_prompt = text_prompt
        self.ntp_prompt = ntp_prompt
        self.image_column = image_column
        self.caption_column = caption_column
        self.long_caption_column = long_caption_column
        self.ignore_index = ignore_index
        self.columns = (image_column, caption_column, long_caption_column)
        # A processor that takes a suffix lays out a prefix (bidirectional) and a suffix (causal, the
        # answer): PaliGemma's. It refuses text without an image.
        self.prefix_lm = "suffix" in inspect.signature(processor.__call__).parameters

    def __call__(self, features: Sequence[dict]) -> dict[str, dict[str, torch.Tensor]]:
        captions = _captions(features, self.caption_column)
        long_captions = _captions(features, self.long_caption_column)
        images = [[image] for image in _images(features, self.image_column)]
        image_sequences, image_inputs = self._split(
            self.processor(
                text=[self.image_prompt] * len(images), images=images, padding=True, return_tensors="pt"
            ),
            "image_prompt",
        )
        return {
            "image_sequences": image_sequences,
            "text_sequences": self._text_sequences(captions),
            "ntp_sequences": self._ntp_sequences(images, long_captions),
            "images": image_inputs,
        }

    @staticmethod
    def _split(out, prompt: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """A processor output as its per-token fields (with ``input_ids``) and its image inputs."""
        ids = out["input_ids"]
        tokens, images = {"input_ids": ids}, {}
        for name, value in out.items():
            if name == "input_ids" or name in _NOT_MODEL_INPUTS:
                continue
            if name in _PER_TOKEN_TEXT_VALUE:
                tokens[name] = value
            elif isinstance(value, torch.Tensor) and value.shape == ids.shape:
                raise ValueError(
                    f"the processor's output for {prompt} has a per-token field {name!r} the collator does "
                    f"not know how to extend (it knows {sorted(_PER_TOKEN_TEXT_VALUE)})"
                )
            else:
                images[name] = value
        return tokens, images

    def _text_sequences(self, captions: list[str]) -> dict[str, torch.Tensor]:
        texts = [self.text_prompt.format(caption=c) for c in captions]
        if not self.prefix_lm:
            sequences, _ = self._split(
                self.processor(text=texts, padding=True, return_tensors="pt"), "text_prompt"
            )
            return sequences
        # PaliGemma's processor lays out a prompt as <bos> prompt \n (all prefix) and needs an image
        bos = self.tokenizer.bos_token or ""
        out = self.tokenizer(
            [f"{bos}{text}\n" for text in texts],
            add_special_tokens=False,
            padding=True,
            return_token_type_ids=True,
            return_tensors="pt",
        )
        return {name: out[name] for name in ("input_ids", "attention_mask", "token_type_ids")}

    def _ntp_sequences(self, images: list[list], long_captions: list[str]) -> dict[str, torch.Tensor]:
        """Prompt (with the image positions the processor lays out) + long caption + end token;
        labels on the caption and end token only."""
        prompts = [self.ntp_prompt] * len(images)
        if self.prefix_lm:  # the processor appends the end token to the suffix
            out = self.processor(
                text=prompts, images=images, suffix=long_captions, padding=True, return_tensors="pt"
            )
            sequences, _ = self._split(out, "ntp_prompt")
            answer = (sequences["token_type_ids"] == 1) & sequences["attention_mask"].bool()
            sequences["labels"] = torch.where(answer, sequences["input_ids"], self.ignore_index)
            return sequences
        prompt_fields, _ = self._split(
            self.processor(text=prompts, images=images, padding=True, return_tensors="pt"), "ntp_prompt"
        )
        answers = self.tokenizer(long_captions, add_special_tokens=False)["input_ids"]
        real = prompt_fields["attention_mask"].bool()
        lengths = [int(r.sum()) + len(a) + 1 for r, a in zip(real, answers, strict=True)]
        shape = (len(answers), max(lengths))
        sequences = {name: torch.zeros(shape, dtype=value.dtype) for name, value in prompt_fields.items()}
        sequences["input_ids"].fill_(self.tokenizer.pad_token_id)
        sequences["labels"] = torch.full(shape, self.ignore_index, dtype=torch.long)
        for row, (answer, end) in enumerate(zip(answers, lengths, strict=True)):
            answer = torch.tensor([*answer, self.tokenizer.eos_token_id], dtype=torch.long)
            start = end - len(answer)
            for name, value in prompt_fields.items():
                sequences[name][row, :start] = value[row][real[row]]
                sequences[name][row, start:end] = (
                    answer if name == "input_ids" else _PER_TOKEN_TEXT_VALUE[name]
                )
            sequences["labels"][row, start:end] = answer
        return sequences


# ---- trainers ---------------------------------------------------------------------------------


def _at_least_float32(term: torch.Tensor) -> torch.Tensor:
    """A loss term in float32 if it is 16-bit (a sum of 16-bit terms rounds), else as it is."""
    return term.to(torch.promote_types(term.dtype, torch.float32))


@contextlib.contextmanager
def _forward_is(module: nn.Module, forward: Callable):
    """``module(...)`` runs ``forward`` inside the block: what a DDP / FSDP / DeepSpeed wrapper
    around ``module`` calls. The instance attribute it replaces (accelerate's mixed-precision
    wrapper of the forward, if any) is put back after."""
    saved = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if saved is None:
            del module.forward
        else:
            module.forward = saved


class _LossTrainer(Trainer):
    """What both trainers share: the loss as the model's forward, its terms in the logs, and the
    collator's columns kept.

    Subclasses define ``objective(model, **batch) -> dict`` of weighted loss terms (the loss
    modules' ``output_dict``); the loss is their sum.
    """

    # compute_loss returns each micro-batch's mean: the Trainer divides it by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.remove_unused_columns and not hasattr(self.data_collator, "columns"):
            raise ValueError(
                f"{type(self).__name__} keeps the dataset columns its collator reads, from the collator's "
                f"`columns`, and {type(self.data_collator).__name__} has none: use the fsc_losses collator, "
                "give yours a `columns` attribute, or pass remove_unused_columns=False"
            )
        # No label tensors: the loss needs none apart from the batch (evaluation still reports eval_loss).
        if self.args.label_names is None:
            self.label_names = []
        self.can_return_loss = True
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_steps = 0.0  # optimizer steps in the sums

    def objective(self, model: nn.Module, **batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The objective's terms on ``inputs``, run as the (unwrapped) model's forward under the
        Trainer's mixed precision; returns their sum in float32, or float64 for float64 terms (and
        ``{"loss": sum}`` with ``return_outputs``)."""
        inner = self.accelerator.unwrap_model(model, keep_torch_compile=False)

        def forward(**batch):
            return self.objective(inner, **batch)

        # accelerate applies autocast by wrapping the model's forward, which this one replaces
        with self.accelerator.autocast(), _forward_is(inner, forward):
            terms = model(**inputs)
        loss = sum(_at_least_float32(term) for term in terms.values())  # 16-bit terms would round the sum
        if self.is_in_train and model.training:  # a training step (not evaluation, not a direct call)
            self._record(terms)
        return (loss, {"loss": loss}) if return_outputs else loss

    def _record(self, terms: dict[str, torch.Tensor]) -> None:
        """Add a micro-batch's terms, weighted as the Trainer weights its loss: divided by the
        number of micro-batches of this optimizer step (so a step's shares sum to one step)."""
        share = 1 / self.current_gradient_accumulation_steps
        for name, value in terms.items():  # on the device: no host synchronisation per step
            self._term_sums[name] = self._term_sums.get(name, 0.0) + _at_least_float32(value.detach()) * share
        self._term_steps += share

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs gain each term's mean since the last log, over the optimizer steps and
        the processes, as the Trainer's ``loss`` is (so the terms sum to it)."""
        if "loss" in logs and self._term_sums:
            for name, total in self._term_sums.items():  # the same order on every process
                logs[name] = self.accelerator.gather(total).mean().item() / self._term_steps
            self._term_sums, self._term_steps = {}, 0.0
        super().log(logs, start_time)

    def _set_signature_columns_if_needed(self) -> None:
        # remove_unused_columns keeps the columns the model's forward takes, but the model never sees
        # the rows: the collator does, so keep what it reads (and drop the rest).
        if self._signature_columns is None:
            self._signature_columns = list(self.data_collator.columns)

    def _check_loss_processes(self, loss_fn: nn.Module) -> None:
        if (loss_fn.rank, loss_fn.world_size) != (self.args.process_index, self.args.world_size):
            raise ValueError(
                f"loss_fn has rank={loss_fn.rank}, world_size={loss_fn.world_size}, but this process is "
                f"{self.args.process_index} of {self.args.world_size}: build it with "
                "rank=args.process_index, world_size=args.world_size (and gather_with_grad=True), or "
                "leave loss_fn out for that default"
            )


class _ClampLogitScale(TrainerCallback):
    """After each optimizer step, ``model.logit_scale`` at most ``log(max_scale)`` (CLIP's recipe)."""

    def __init__(self, max_scale: float):
        self.max_log_scale = math.log(max_scale)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            model.logit_scale.clamp_(max=self.max_log_scale)


class FSCTrainer(_LossTrainer):
    """A ``Trainer`` that fine-tunes a ``CLIPModel`` or ``SiglipModel`` with ``FSCLoss``, on the
    batches of :class:`FSCCollator`::

        trainer = FSCTrainer(
            model=model,  # CLIPModel or SiglipModel
            args=TrainingArguments(output_dir="out", remove_unused_columns=True, ...),
            train_dataset=rows,  # dicts with "image" and "caption"
            data_collator=FSCCollator(processor.tokenizer, processor.image_processor),
            processing_class=processor,
        )
        trainer.train()  # logs loss, contrastive_loss, global_hn_loss, local_hn_loss

    Each micro-batch runs ``encode_dense`` and ``FSCLoss(output_dict=True)`` inside the model's
    forward; the loss is the sum of the weighted terms, and each term is logged beside ``loss``.
    Checkpoints are the model's own (``save_pretrained``), so ``from_pretrained`` reloads them.

    Args:
        loss_fn: the loss. Default ``FSCLoss(contrastive="sigmoid")`` for SigLIP and
            ``"softmax"`` for CLIP, with ``gather_with_grad=True, local_loss=True`` and this
            process's ``rank`` / ``world_size`` (the contrastive term gathered across processes,
            gradients equal to one process on the whole batch; docs/integration.md). One given
            must have this process's ``rank`` and ``world_size``.
        max_logit_scale: ``CLIPModel``'s ``logit_scale`` is clamped at ``log(max_logit_scale)``
            after every optimizer step, as CLIP's recipe does (None: not clamped). SigLIP's is
            never clamped.
        Everything else: ``Trainer``'s.
    """

    def __init__(
        self, *args, loss_fn: FSCLoss | None = None, max_logit_scale: float | None = 100.0, **kwargs
    ):
        super().__init__(*args, **kwargs)
        _check_supported(self.model)
        siglip = isinstance(self.model, SiglipModel)
        if loss_fn is None:
            loss_fn = FSCLoss(
                contrastive="sigmoid" if siglip else "softmax",
                gather_with_grad=True,
                local_loss=True,
                rank=self.args.process_index,
                world_size=self.args.world_size,
            )
        self._check_loss_processes(loss_fn)
        self.loss_fn = loss_fn
        if max_logit_scale is not None and not siglip:
            self.add_callback(_ClampLogitScale(max_logit_scale))

    def objective(self, model, pixel_values, input_ids, neg_valid, attention_mask=None):
        """``FSCLoss``'s weighted terms for a batch of :class:`FSCCollator`."""
        ids = getattr(self.data_collator, "token_ids", {})
        out = encode_dense(model, pixel_values, input_ids, attention_mask, **ids)
        return self.loss_fn(**out, neg_valid=neg_valid, output_dict=True)


class ContrastiveNTPTrainer(_LossTrainer):
    """A ``Trainer`` that fine-tunes a transformers LVLM (with peft's LoRA, or fully) with
    ``ContrastiveNTPLoss``, on the batches of :class:`ContrastiveNTPCollator`.

    The model must carry the modules of ``fsc_losses.integrations.lvlm.add_dual_encoder_modules``:
    a ``logit_scale`` (the learned temperature) and, optionally, a ``soft_prompt``, written into
    the image and text sequences. Pass the names that function returns to peft's
    ``modules_to_save``: the adapter checkpoint then holds them beside the LoRA weights
    (docs/lvlm.md)::

        names = add_dual_encoder_modules(lvlm, SoftPrompt(4, width, soft_id))
        model = get_peft_model(lvlm, LoraConfig(..., modules_to_save=names))
        trainer = ContrastiveNTPTrainer(model=model, args=args, train_dataset=rows,
                                        data_collator=ContrastiveNTPCollator(processor, ...))

    Each micro-batch runs, inside the model's forward (where FSDP has gathered the LM head's
    weight): the image and text sequences' last-token embeddings, the long-caption sequences'
    last hidden states (``fsc_losses.integrations.lvlm.hidden_states``: the model's own forward
    with every processor output the collator kept), and ``ContrastiveNTPLoss`` on them with the LM
    head's weight and bias; the LM head never runs.

    Args:
        loss_fn: default ``ContrastiveNTPLoss(gather_with_grad=True)`` with this process's
            ``rank`` and ``world_size`` and the LM head's soft-capping
            (``fsc_losses.integrations.lvlm.lm_head_softcap``: PaliGemma 2's
            ``final_logit_softcapping``); one given must have all three.
        Everything else: ``Trainer``'s.
    """

    def __init__(self, *args, loss_fn: ContrastiveNTPLoss | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        base = without_peft(self.model)
        if not isinstance(getattr(base, "logit_scale", None), nn.Module):
            raise ValueError(
                f"{type(base).__name__} has no logit_scale module: add the temperature (and the soft "
                "prompt) with fsc_losses.integrations.lvlm.add_dual_encoder_modules before peft wraps it"
            )
        softcap = lm_head_softcap(base)
        if loss_fn is None:
            loss_fn = ContrastiveNTPLoss(
                gather_with_grad=True,
                rank=self.args.process_index,
                world_size=self.args.world_size,
                softcap=softcap,
            )
        self._check_loss_processes(loss_fn)
        if loss_fn.softcap != softcap:
            raise ValueError(
                f"loss_fn has softcap={loss_fn.softcap}, but the model's LM head soft-caps its logits at "
                f"{softcap} (final_logit_softcapping of its text config): build it with softcap={softcap}, "
                "or leave loss_fn out for that default"
            )
        self.loss_fn = loss_fn
        soft_prompt = getattr(base, "soft_prompt", None)
        if soft_prompt is not None and isinstance(self.data_collator, ContrastiveNTPCollator):
            self._check_prompts(self.data_collator, soft_prompt)

    @staticmethod
    def _check_prompts(collator: ContrastiveNTPCollator, soft_prompt: nn.Module) -> None:
        """The image and text prompts must hold the soft prompt's placeholders: ``SoftPrompt``
        leaves rows without any unchanged, so a placeholder the tokenizer splits into other tokens
        would silently train no soft prompt."""
        expected = soft_prompt.embeddings.shape[0]
        prompts = {
            "image_prompt": collator.image_prompt,
            "text_prompt": collator.text_prompt.format(caption=""),
        }
        for name, prompt in prompts.items():
            found = collator.tokenizer(prompt)["input_ids"].count(soft_prompt.placeholder_id)
            if found != expected:
                raise ValueError(
                    f"the collator's {name} {prompt!r} tokenizes to {found} soft-prompt placeholders "
                    f"(id {soft_prompt.placeholder_id}), the soft prompt has {expected}: put {expected} "
                    "placeholders in it, as a token the tokenizer keeps whole (a special token)"
                )

    def objective(self, model, image_sequences, text_sequences, ntp_sequences, images):
        """``ContrastiveNTPLoss``'s weighted terms for a batch of :class:`ContrastiveNTPCollator`."""
        base = without_peft(model)
        soft_prompt = getattr(base, "soft_prompt", None)
        head = base.get_output_embeddings()
        return self.loss_fn(
            sequence_embeddings(base, soft_prompt=soft_prompt, **image_sequences, **images),
            sequence_embeddings(base, soft_prompt=soft_prompt, **text_sequences),
            base.logit_scale(),
            hidden_states=hidden_states(base, **ntp_sequences, **images),  # it leaves labels aside
            lm_head_weight=head.weight,
            labels=ntp_sequences["labels"],
            lm_head_bias=head.bias,
            output_dict=True,
        )
