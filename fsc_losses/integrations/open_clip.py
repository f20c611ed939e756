"""Global features and per-token outputs of open_clip models, in the form ``FSCLoss`` takes.

``encode_dense(model, images, texts)`` runs each tower of an open_clip ``CLIP`` or
``CustomTextCLIP`` model once and returns both the L2-normalised global embeddings (equal to
``model.encode_image(images, normalize=True)`` / ``model.encode_text(texts, normalize=True)``)
and the projected token outputs the local hard-negative loss pools over::

    # texts: the B true captions, then K blocks of B negatives
    out = encode_dense(model, images, texts)
    loss = FSCLoss()(**out, neg_valid=neg_valid)

It reads the model's submodules and calls them in the order the towers' own ``forward`` does
(open_clip 3.x ``VisionTransformer`` / ``TextTransformer`` / ``CLIP.encode_text``); the model is
neither modified nor hooked. Anything it cannot reproduce exactly is refused with an error rather
than approximated.

``create_model_and_transforms`` is open_clip's, except that a ``local-dir:`` model also takes a
checkpoint file (``fsc_losses.train`` and ``fsc_losses.eval`` load models through it).

Importing this module imports ``open_clip``.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import TextTransformer, VisionTransformer, text_global_pool
from torch import nn

__all__ = [
    "DEFAULT_EOT_ID",
    "DEFAULT_PAD_ID",
    "DEFAULT_SOT_ID",
    "DenseEncoder",
    "check_supported",
    "create_model_and_transforms",
    "encode_dense",
    "text_token_mask",
]

# Special ids of open_clip's default tokenizer (``SimpleTokenizer``, what ``get_tokenizer`` returns
# for every config without an ``hf_tokenizer_name``, e.g. the OpenAI and LAION ViTs):
# ``<start_of_text>`` and ``<end_of_text>`` are the last two ids of its 49408-entry vocabulary, and
# it pads with zeros.
DEFAULT_SOT_ID = 49406
DEFAULT_EOT_ID = 49407
DEFAULT_PAD_ID = 0

_VISION_POOL_TYPES = ("tok", "avg")
_TEXT_POOL_TYPES = ("first", "last", "argmax", "eos")


class _TextParts(NamedTuple):
    """The pieces of a text tower, wherever the model class keeps them."""

    token_embedding: nn.Embedding
    positional_embedding: torch.Tensor
    transformer: nn.Module
    attn_mask: torch.Tensor | None
    ln_final: nn.Module
    projection: nn.Linear | torch.Tensor | None
    pool_type: str
    eos_id: int | None


def encode_dense(
    model: nn.Module,
    images: torch.Tensor,
    texts: torch.Tensor,
    *,
    pad_id: int = DEFAULT_PAD_ID,
    sot_id: int | None = DEFAULT_SOT_ID,
    eot_id: int | None = DEFAULT_EOT_ID,
) -> dict[str, torch.Tensor]:
    """Encode a batch with an open_clip model into the keyword arguments of ``FSCLoss``.

    Supported: ``open_clip.CLIP`` and ``open_clip.CustomTextCLIP`` whose image tower is open_clip's
    ``VisionTransformer`` (class-token or average pooling, ``final_ln_after_pool`` either way) and
    whose text tower is open_clip's own transformer (``argmax``, ``eos``, ``first`` or ``last``
    pooling; ``text_projection`` a matrix, an ``nn.Linear`` or absent).

    Args:
        model: the open_clip model itself, not a DDP wrapper (under DDP use ``DenseEncoder``).
        images: ``(B, 3, H, W)`` preprocessed images at the tower's image size.
        texts: ``(N, T)`` token ids, ``N = B * G``: the ``B`` true captions, then ``K`` blocks of
            ``B`` hard negatives (block ``k`` row ``b`` is image ``b``'s ``k``-th negative).
        pad_id, sot_id, eot_id: the tokenizer's padding, start-of-text and end-of-text ids, used
            only for ``text_mask`` (see ``text_token_mask``). The defaults are those of open_clip's
            default tokenizer; models tokenized otherwise must pass their tokenizer's ids.

    Returns:
        A dict with

        * ``image_features`` ``(B, D)``: ``model.encode_image(images, normalize=True)``.
        * ``text_features`` ``(N, D)``: ``model.encode_text(texts, normalize=True)``.
        * ``image_tokens`` ``(B, P, D)``: patch outputs after ``ln_post``, times ``visual.proj``,
          class token excluded, not normalised. ``P`` is the patch grid (49 for ViT-B/32 at
          224 px), or the number of patches kept while the tower's patch dropout is active.
        * ``text_tokens`` ``(N, T, D)``: every position after ``ln_final``, through the text
          projection, not normalised.
        * ``text_mask`` ``(N, T)`` bool: ``text_token_mask(texts, ...)``.
        * ``logit_scale``: scalar, ``model.logit_scale.exp()``.
        * ``logit_bias``: scalar, only when the model has one (SigLIP-style).

        Under ``torch.autocast`` the tensors come out in the autocast dtype, exactly as the
        model's own ``encode_*`` methods return them; gradients reach the model through all of
        them.

    Raises:
        TypeError: the model is not a ``CLIP``/``CustomTextCLIP``, its image tower has no patch
            tokens (``ModifiedResNet``, ``TimmModel``), or its text tower is not open_clip's own
            transformer (``HFTextEncoder``).
        ValueError: a tower configuration whose tokens or global feature this function cannot
            reproduce (attentional pooler, pool type ``none``, appended text class token, padding
            attention mask), or ``texts`` that is not a 2-D int64/int32 tensor.
    """
    text_parts = _check_supported(model)
    if texts.ndim != 2 or texts.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"texts must be a (N, T) tensor of token ids, got {tuple(texts.shape)} {texts.dtype}"
        )

    image_pooled, image_tokens = _encode_image_dense(model.visual, images)
    text_pooled, text_tokens = _encode_text_dense(text_parts, texts)
    out = {
        "image_features": F.normalize(image_pooled, dim=-1),
        "text_features": F.normalize(text_pooled, dim=-1),
        "image_tokens": image_tokens,
        "text_tokens": text_tokens,
        "text_mask": text_token_mask(texts, pad_id=pad_id, sot_id=sot_id, eot_id=eot_id),
        "logit_scale": model.logit_scale.exp(),
    }
    if model.logit_bias is not None:
        out["logit_bias"] = model.logit_bias
    return out


class DenseEncoder(nn.Module):
    """``encode_dense`` as a module, for ``DistributedDataParallel``.

    DDP synchronises gradients only for computations that run through its own ``forward``, so
    ``encode_dense(ddp_model.module, ...)`` would train each process on its own gradients. Wrap
    this module instead::

        encoder = DistributedDataParallel(DenseEncoder(model), device_ids=[local_rank])
        out = encoder(images, texts)  # the dict encode_dense returns

    ``model`` is registered as the submodule ``model`` (state-dict keys gain a ``model.`` prefix;
    save ``model.state_dict()`` itself to keep open_clip's keys). The keyword arguments are
    ``encode_dense``'s token ids. An unsupported model raises here already, as in
    ``encode_dense``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        pad_id: int = DEFAULT_PAD_ID,
        sot_id: int | None = DEFAULT_SOT_ID,
        eot_id: int | None = DEFAULT_EOT_ID,
    ):
        super().__init__()
        _check_supported(model)
        self.model = model
        self.token_ids = {"pad_id": pad_id, "sot_id": sot_id, "eot_id": eot_id}

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` images and ``(N, T)`` token ids to ``encode_dense``'s dict."""
        return encode_dense(self.model, images, texts, **self.token_ids)


def create_model_and_transforms(model_name: str, pretrained: str | None = None, **kwargs):
    """``open_clip.create_model_and_transforms``, where a ``local-dir:`` model also takes a checkpoint.

    open_clip 3.3 ignores ``pretrained`` for a ``local-dir:FOLDER`` name (it logs a warning and
    keeps the folder's own weights), so fine-tuning or scoring a checkpoint of such a model would
    silently use the wrong weights. Here the folder gives the architecture and the preprocessing,
    and ``pretrained``, a checkpoint file (a trainer's ``epoch_N.pt``, a state dict), replaces its
    weights through ``open_clip.load_checkpoint``. Every other name goes to open_clip unchanged.

    Returns:
        ``(model, preprocess_train, preprocess_val)``, as open_clip's.

    Raises:
        ValueError: ``pretrained`` with a ``local-dir:`` name is not a file (a pretrained tag such
            as ``openai`` names weights of open_clip's registry, not of the folder's model).
    """
    if not (model_name.startswith("local-dir:") and pretrained):
        return open_clip.create_model_and_transforms(model_name, pretrained, **kwargs)
    if not os.path.isfile(pretrained):
        raise ValueError(
            f"pretrained={pretrained!r} with {model_name}: a local-dir: model takes a checkpoint file, "
            "not a pretrained tag"
        )
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
        model_name, None, **kwargs
    )
    open_clip.load_checkpoint(model, pretrained)
    return model, preprocess_train, preprocess_val


def text_token_mask(
    texts: torch.Tensor,
    *,
    pad_id: int = DEFAULT_PAD_ID,
    sot_id: int | None = DEFAULT_SOT_ID,
    eot_id: int | None = DEFAULT_EOT_ID,
) -> torch.Tensor:
    """Which text positions the local loss counts: word tokens and end-of-text.

    A position counts unless it holds ``pad_id``, or it is position 0 and holds ``sot_id``. The
    first ``eot_id`` of each row always counts, so tokenizers that pad with their end-of-text id
    (SigLIP's T5 tokenizer: ``pad_id = eot_id = 1``) keep their end-of-text position.

    For open_clip's default tokenizer (the defaults here) this is: position 0 (``<start_of_text>``)
    excluded, the word tokens and ``<end_of_text>`` (the row's largest id) included, the zero
    padding after it excluded. Tokenizers without a start token: pass ``sot_id=None``.

    The padding id is taken from the tokenizer, not from the model: open_clip's text towers store
    a ``pad_id`` but only use it for an optional attention mask, and configs whose tokenizer pads
    with a non-zero id (SigLIP) leave the model's at its default 0.

    Args:
        texts: ``(N, T)`` token ids.
        pad_id, sot_id, eot_id: the tokenizer's special ids; ``None`` for one it does not use.

    Returns:
        ``(N, T)`` bool mask on ``texts``' device.
    """
    mask = texts != pad_id
    if sot_id is not None:
        mask[:, 0] &= texts[:, 0] != sot_id
    if eot_id is not None:
        is_eot = texts == eot_id
        mask |= is_eot & (is_eot.cumsum(dim=1) == 1)
    return mask


def check_supported(model: nn.Module) -> None:
    """Raise the ``TypeError`` / ``ValueError`` that ``encode_dense(model, ...)`` would raise for an
    unsupported model, before any data is encoded; return quietly for a supported one."""
    _check_supported(model)


def _check_supported(model: nn.Module) -> _TextParts:
    """Raise unless ``encode_dense`` reproduces ``model`` exactly; return its text tower's parts."""
    if not isinstance(model, (CLIP, CustomTextCLIP)):
        raise TypeError(
            "encode_dense expects an open_clip CLIP or CustomTextCLIP model (unwrap DDP / "
            f"torch.compile wrappers first; for DDP see DenseEncoder), got {type(model).__name__}"
        )
    _check_vision_tower(model.visual)
    return _text_parts(model)


def _check_vision_tower(visual: nn.Module) -> None:
    if not isinstance(visual, VisionTransformer):
        raise TypeError(
            "encode_dense needs open_clip's VisionTransformer image tower, whose patch tokens the "
            f"local loss pools; got {type(visual).__name__} (ResNet and timm towers are not "
            "supported)"
        )
    if visual.attn_pool is not None:
        raise ValueError(
            "encode_dense does not support VisionTransformer with an attentional pooler "
            "(attentional_pool): its outputs are pooler queries, not patch tokens"
        )
    if visual.pool_type not in _VISION_POOL_TYPES:
        raise ValueError(
            f"encode_dense supports VisionTransformer pool_type {_VISION_POOL_TYPES}, "
            f"got {visual.pool_type!r}"
        )


def _text_parts(model: CLIP | CustomTextCLIP) -> _TextParts:
    """Locate the text tower's pieces and refuse towers whose output cannot be reproduced."""
    if isinstance(model, CLIP):
        # CLIP keeps the text tower's modules as its own attributes.
        parts = _TextParts(
            model.token_embedding,
            model.positional_embedding,
            model.transformer,
            model.attn_mask,
            model.ln_final,
            model.text_projection,
            model.text_pool_type,
            getattr(model, "text_eos_id", None),
        )
    else:
        text = model.text
        if not isinstance(text, TextTransformer):
            raise TypeError(
                "encode_dense supports open_clip's own TextTransformer text tower, got "
                f"{type(text).__name__} (Hugging Face text towers are not supported)"
            )
        if text.cls_emb is not None:
            raise ValueError(
                "encode_dense does not support a text tower with an appended class token "
                "(embed_cls): its global feature bypasses the per-position outputs"
            )
        if getattr(text, "use_pad_mask", False):
            raise ValueError("encode_dense does not support a text tower with a padding attention mask")
        parts = _TextParts(
            text.token_embedding,
            text.positional_embedding,
            text.transformer,
            text.attn_mask,
            text.ln_final,
            text.text_projection,
            text.pool_type,
            getattr(text, "eos_id", None),
        )
    if parts.pool_type not in _TEXT_POOL_TYPES:
        raise ValueError(f"encode_dense supports text pool types {_TEXT_POOL_TYPES}, got {parts.pool_type!r}")
    return parts


def _encode_image_dense(visual: VisionTransformer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of the ViT: ``(B, 3, H, W) -> (B, D)`` global feature and ``(B, P, D)`` patches."""
    x = visual.conv1(images).flatten(2).transpose(1, 2)  # (B, P, width)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(visual.patch_dropout(x))
    x = visual.transformer(x)  # (B, 1 + P, width)

    def pool(seq: torch.Tensor) -> torch.Tensor:
        return seq[:, 0] if visual.pool_type == "tok" else seq[:, 1:].mean(dim=1)

    if visual.final_ln_after_pool:
        # The tower normalises only the pooled vector; the patches get the same ln_post so that
        # they live in the space the projection was trained on.
        pooled = visual.ln_post(pool(x))
        tokens = visual.ln_post(x[:, 1:])
    else:
        x = visual.ln_post(x)
        pooled, tokens = pool(x), x[:, 1:]

    # Projected separately (not sliced out of one product) so the global feature is bit-for-bit
    # what encode_image returns.
    return _project(pooled, visual.proj), _project(tokens, visual.proj)


def _encode_text_dense(parts: _TextParts, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of the text tower: ``(N, T)`` ids to ``(N, D)`` pooled and ``(N, T, D)`` tokens."""
    cast_dtype = parts.transformer.get_cast_dtype()
    x = parts.token_embedding(texts).to(cast_dtype)
    x = x + parts.positional_embedding[: texts.shape[1]].to(cast_dtype)
    x = parts.transformer(x, attn_mask=parts.attn_mask)
    x = parts.ln_final(x)  # (N, T, width)
    pooled = text_global_pool(x, texts, parts.pool_type, eos_token_id=parts.eos_id)
    return _project(pooled, parts.projection), _project(x, parts.projection)


def _project(x: torch.Tensor, projection: nn.Linear | torch.Tensor | None) -> torch.Tensor:
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x @ projection
