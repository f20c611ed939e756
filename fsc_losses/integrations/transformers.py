"""Global features and per-token outputs of Hugging Face transformers CLIP and SigLIP models, in the
form ``FSCLoss`` takes.

``encode_dense(model, pixel_values, input_ids, attention_mask)`` runs each tower of a
``transformers.CLIPModel`` or ``transformers.SiglipModel`` once and returns both the L2-normalised
global embeddings (the model's own pooled, projected embeddings) and the projected token outputs
the local hard-negative loss pools over::

    # input_ids: the B true captions, then K blocks of B negatives
    out = encode_dense(model, pixel_values, input_ids, attention_mask)
    loss = FSCLoss()(**out, neg_valid=neg_valid)              # CLIP
    loss = FSCLoss(contrastive="sigmoid")(**out, neg_valid=neg_valid)  # SigLIP

It calls the towers (``model.vision_model``, ``model.text_model``) and reads their pooled output
and last hidden states, then applies the model's projections itself, rather than calling
``get_image_features`` / ``get_text_features``, whose return type changed in transformers 5.
Works with transformers 4.4x and 5.x. The model is neither modified nor hooked.

Importing this module imports ``transformers``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import CLIPModel, SiglipModel

__all__ = [
    "CLIP_TOKEN_IDS",
    "SIGLIP_TOKEN_IDS",
    "DenseEncoder",
    "encode_dense",
    "image_embeddings",
    "text_embeddings",
    "text_token_mask",
    "token_ids",
]

# The special ids of the tokenizers the released checkpoints ship. CLIP (``CLIPTokenizer``, the
# byte-pair vocabulary of OpenAI's CLIP): ``<|startoftext|>`` 49406 first, ``<|endoftext|>`` 49407
# last. SigLIP (``SiglipTokenizer``, a T5-style sentencepiece vocabulary): no start token, ``</s>``
# (id 1) last, and it pads with ``</s>`` too. Other tokenizers: see ``token_ids``.
CLIP_TOKEN_IDS = {"sot_id": 49406, "eot_id": 49407}
SIGLIP_TOKEN_IDS = {"sot_id": None, "eot_id": 1}

_FROM_MODEL = object()  # default of sot_id / eot_id: the model family's ids above


def encode_dense(
    model: nn.Module,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    sot_id: int | None = _FROM_MODEL,
    eot_id: int | None = _FROM_MODEL,
) -> dict[str, torch.Tensor]:
    """Encode a batch with a transformers CLIP or SigLIP model into the keyword arguments of
    ``FSCLoss``.

    Supported: ``transformers.CLIPModel`` and ``transformers.SiglipModel`` (with its attention
    pooling head, ``vision_use_head=True``, as every released SigLIP has).

    Args:
        model: the model itself, not a DDP wrapper (under DDP use ``DenseEncoder``).
        pixel_values: ``(B, 3, H, W)`` preprocessed images at the model's image size.
        input_ids: ``(N, T)`` token ids, ``N = B * G``: the ``B`` true captions, then ``K`` blocks
            of ``B`` hard negatives (block ``k`` row ``b`` is image ``b``'s ``k``-th negative).
        attention_mask: ``(N, T)``, 1 for real tokens and 0 for padding, as the tokenizer returns
            it, or None. Passed to the text tower as the model's own forward does, and used for
            ``text_mask``.
        sot_id, eot_id: the tokenizer's start-of-text and end-of-text ids (None: it has none),
            used only for ``text_mask``. Default: the ids of the model family's released
            tokenizer (``CLIP_TOKEN_IDS``, ``SIGLIP_TOKEN_IDS``); ``token_ids(tokenizer)`` reads
            them from any tokenizer.

    Returns:
        A dict with

        * ``image_features`` ``(B, D)``: the model's pooled, projected image embedding,
          L2-normalised (the ``image_embeds`` of the model's forward).
        * ``text_features`` ``(N, D)``: the pooled, projected text embedding, L2-normalised.
        * ``image_tokens`` ``(B, P, D)``: one token per patch, not normalised. CLIP: the vision
          tower's outputs after ``post_layernorm``, class token excluded, through
          ``visual_projection``. SigLIP: each patch output put through the attention pooling
          head alone (the image embedding the head gives when it attends to that patch only; see
          docs/integration.md).
        * ``text_tokens`` ``(N, T, D)``: every position after the text tower's final layer norm,
          through its projection (CLIP ``text_projection``, SigLIP ``text_model.head``).
        * ``text_mask`` ``(N, T)`` bool: ``text_token_mask(input_ids, attention_mask, ...)``.
        * ``logit_scale``: scalar, ``model.logit_scale.exp()``.
        * ``logit_bias``: scalar, SigLIP only (``model.logit_bias``).

        Under ``torch.autocast`` the tensors come out in the autocast dtype; gradients reach the
        model through all of them.

    Raises:
        TypeError: the model is not a ``CLIPModel`` or ``SiglipModel`` (``Siglip2Model``
            included).
        ValueError: a ``SiglipModel`` without its pooling head, ``input_ids`` that is not a 2-D
            int64/int32 tensor, or an ``attention_mask`` whose shape differs from it.
    """
    _check_supported(model)
    if input_ids.ndim != 2 or input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"input_ids must be a (N, T) tensor of token ids, got {tuple(input_ids.shape)} {input_ids.dtype}"
        )
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
            f"got {tuple(attention_mask.shape)}"
        )
    family = CLIP_TOKEN_IDS if isinstance(model, CLIPModel) else SIGLIP_TOKEN_IDS
    sot_id = family["sot_id"] if sot_id is _FROM_MODEL else sot_id
    eot_id = family["eot_id"] if eot_id is _FROM_MODEL else eot_id

    vision = model.vision_model(pixel_values=pixel_values, return_dict=True)
    text = model.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
    if isinstance(model, CLIPModel):
        image_tokens = _clip_image_tokens(model, vision)
        text_tokens = model.text_projection(text.last_hidden_state)
    else:
        image_tokens = _siglip_image_tokens(model, vision)
        text_tokens = model.text_model.head(text.last_hidden_state)
    out = {
        "image_features": F.normalize(_pooled_image(model, vision), dim=-1),
        "text_features": F.normalize(_pooled_text(model, text), dim=-1),
        "image_tokens": image_tokens,
        "text_tokens": text_tokens,
        "text_mask": text_token_mask(input_ids, attention_mask, sot_id=sot_id, eot_id=eot_id),
        "logit_scale": model.logit_scale.exp().reshape(()),  # SigLIP keeps it as shape (1,)
    }
    if isinstance(model, SiglipModel):
        out["logit_bias"] = model.logit_bias.reshape(())
    return out


class DenseEncoder(nn.Module):
    """``encode_dense`` as a module, for ``DistributedDataParallel``, which reduces the gradients
    of what runs through its own ``forward`` only (docs/integration.md)::

        encoder = DistributedDataParallel(DenseEncoder(model), device_ids=[local_rank])
        out = encoder(pixel_values, input_ids, attention_mask)  # encode_dense's dict

    The model is the submodule ``model``: save it with ``model.save_pretrained`` to keep
    transformers' layout. The keyword arguments are ``encode_dense``'s token ids; an unsupported
    model raises here already.
    """

    def __init__(
        self, model: nn.Module, *, sot_id: int | None = _FROM_MODEL, eot_id: int | None = _FROM_MODEL
    ):
        super().__init__()
        _check_supported(model)
        self.model = model
        self.token_ids = {"sot_id": sot_id, "eot_id": eot_id}

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` images, ``(N, T)`` token ids and mask to ``encode_dense``'s dict."""
        return encode_dense(self.model, pixel_values, input_ids, attention_mask, **self.token_ids)


def image_embeddings(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` preprocessed images to the model's ``(B, D)`` pooled, projected image
    embeddings, not normalised: ``encode_dense``'s ``image_features`` before the normalisation,
    from the image tower alone.

    Raises:
        TypeError, ValueError: as ``encode_dense``, for a model it does not support.
    """
    _check_supported(model)
    return _pooled_image(model, model.vision_model(pixel_values=pixel_values, return_dict=True))


def text_embeddings(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(N, T)`` token ids (and the tokenizer's attention mask) to the model's ``(N, D)`` pooled,
    projected text embeddings, not normalised: ``encode_dense``'s ``text_features`` before the
    normalisation, from the text tower alone.

    Raises:
        TypeError, ValueError: as ``encode_dense``, for a model it does not support.
    """
    _check_supported(model)
    text = model.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
    return _pooled_text(model, text)


def text_token_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    sot_id: int | None,
    eot_id: int | None,
) -> torch.Tensor:
    """Which text positions the local loss counts: the word tokens and the end-of-text token.

    A position counts when the attention mask marks it real (every position without a mask), it
    does not come after the row's first ``eot_id``, and it is not position 0 holding ``sot_id``.
    Cutting after the first end token finds the padding of tokenizers that return no attention
    mask and pad with their end token (SigLIP's pads with ``</s>``, its end token); a row without
    an end token keeps every real position.

    Args:
        input_ids: ``(N, T)`` token ids.
        attention_mask: ``(N, T)`` 1/0 or bool, or None.
        sot_id, eot_id: the tokenizer's start-of-text and end-of-text ids; None for one it does
            not add.

    Returns:
        ``(N, T)`` bool on ``input_ids``' device.
    """
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if sot_id is not None:
        mask[:, 0] &= input_ids[:, 0] != sot_id
    if eot_id is not None:
        is_eot = (input_ids == eot_id).int()
        mask &= is_eot.cumsum(dim=1) - is_eot == 0  # no end token before this position
    return mask


def token_ids(tokenizer) -> dict[str, int | None]:
    """``encode_dense``'s ``sot_id`` and ``eot_id`` for a Hugging Face tokenizer.

    Reads which special tokens the tokenizer really adds, by tokenizing a one-word text: its
    ``bos_token_id`` when the ids start with it, its ``eos_token_id`` when they end with it,
    None otherwise.
    """
    ids = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return {
        "sot_id": bos if bos is not None and ids[0] == bos else None,
        "eot_id": eos if eos is not None and ids[-1] == eos else None,
    }


def _check_supported(model: nn.Module) -> None:
    if not isinstance(model, (CLIPModel, SiglipModel)):
        siglip2 = getattr(transformers, "Siglip2Model", None)  # 4.49 has none
        if siglip2 is not None and isinstance(model, siglip2):
            raise TypeError(
                "encode_dense does not support Siglip2Model: its image tower takes patch sequences "
                "padded to a patch budget (pixel_attention_mask, spatial_shapes), and the local loss "
                "has no patch mask; use SiglipModel or CLIPModel"
            )
        raise TypeError(
            "encode_dense supports transformers CLIPModel and SiglipModel (unwrap DDP / "
            f"torch.compile wrappers first; for DDP see DenseEncoder), got {type(model).__name__}"
        )
    if isinstance(model, SiglipModel) and getattr(model.vision_model, "head", None) is None:
        raise ValueError(
            "encode_dense needs SiglipModel's attention pooling head (vision_use_head=True): "
            "without it the model has no image embedding"
        )


def _pooled_image(model: CLIPModel | SiglipModel, vision) -> torch.Tensor:
    """The ``(B, D)`` image embedding from the vision tower's output: CLIP projects the pooled
    class token, SigLIP's tower pools and projects with its own head."""
    return (
        model.visual_projection(vision.pooler_output)
        if isinstance(model, CLIPModel)
        else vision.pooler_output
    )


def _pooled_text(model: CLIPModel | SiglipModel, text) -> torch.Tensor:
    """The ``(N, D)`` text embedding from the text tower's output (SigLIP's tower applies its head
    itself)."""
    return model.text_projection(text.pooler_output) if isinstance(model, CLIPModel) else text.pooler_output


def _clip_image_tokens(model: CLIPModel, vision) -> torch.Tensor:
    """CLIP: the ``(B, P, D)`` patch tokens of a tower pass.

    The tower layer-norms only the class token (its pooled output); the patches get the same
    ``post_layernorm`` so that they live in the space ``visual_projection`` was trained on.
    Projected apart from the pooled embedding so that that one is exactly the model's.
    """
    return model.visual_projection(model.vision_model.post_layernorm(vision.last_hidden_state[:, 1:]))


def _siglip_image_tokens(model: SiglipModel, vision) -> torch.Tensor:
    """SigLIP: the ``(B, P, D)`` patch tokens of a tower pass.

    The head pools the patches (already through ``post_layernorm``) with a learned attention
    query, then a residual MLP. Run on a one-patch sequence, its attention weight is exactly 1,
    so each token is the image embedding the head would give for that patch alone: the head's
    map into the text embedding space, without its mixing across patches.
    """
    patches = vision.last_hidden_state  # (B, P, width)
    batch, num_patches, width = patches.shape
    tokens = model.vision_model.head(patches.reshape(batch * num_patches, 1, width))
    return tokens.view(batch, num_patches, -1)
