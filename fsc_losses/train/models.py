"""What the trainer changes in an open_clip model: a forward for grouped captions, and LoRA.

None of it adds a module, a buffer or a state-dict key: open_clip_train saves
``model.state_dict()``, and those checkpoints load into plain open_clip
(``open_clip.create_model_and_transforms(name, pretrained=checkpoint)``).

* ``enable_grouped_captions`` makes the model's class a subclass of its own (``GroupedCLIP`` or
  ``GroupedCustomTextCLIP``) whose ``forward`` also takes grouped ``(B, G, T)`` captions, as
  ``NegativeCaptions`` makes them, and returns everything ``FSCLoss`` takes; 2-D captions (the
  validation and zero-shot calls) go to open_clip's own forward.
* ``add_lora`` puts peft LoRA adapters on the towers' attention in-projections, MLPs and patch
  embedding, and makes ``state_dict()`` return the merged weights under open_clip's own keys.
"""

from __future__ import annotations

import torch
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from ..integrations.open_clip import check_supported, encode_dense
from .captions import MISSING_TOKEN
from .flags import UsageError

__all__ = [
    "GroupedCLIP",
    "GroupedCustomTextCLIP",
    "add_lora",
    "dense_token_ids",
    "enable_grouped_captions",
]


class _GroupedCaptionsForward:
    """``forward(image, text)`` that also takes the captions grouped with their negatives.

    With ``text`` of shape ``(B, G, T)`` (column 0 the true caption, rows of ``MISSING_TOKEN``
    for missing negatives) it returns a dict of ``FSCLoss``'s keyword arguments in the grouped
    layout: ``image_features (B, D)``, ``text_features (B, G, D)``, ``logit_scale``, the model's
    ``logit_bias`` if it has one, ``neg_valid (B, G-1)`` and, with dense tokens on,
    ``image_tokens (B, P, D)``, ``text_tokens (B, G, T, D)`` and ``text_mask (B, G, T)``. Every
    tensor keyed here has the batch first, so open_clip's ``--accum-freq`` concatenation of cached
    micro-batches along dim 0 keeps each image with its own captions.
    """

    # Plain attributes, not buffers: they stay out of the state dict.
    fsc_dense = False
    fsc_token_ids: dict | None = None

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        if text is None or text.ndim != 3:
            return super().forward(image, text)
        if image is None:
            raise ValueError("grouped captions (B, G, T) need their images")
        batch, groups, length = text.shape
        present = text[:, :, 0] != MISSING_TOKEN  # (B, G); column 0 is always present
        pad_id = self.fsc_token_ids["pad_id"] if self.fsc_dense else 0
        flat = text.masked_fill(~present[:, :, None], pad_id).reshape(batch * groups, length)
        if self.fsc_dense:
            out = encode_dense(self, image, flat, **self.fsc_token_ids)
            out["text_tokens"] = out["text_tokens"].view(batch, groups, length, -1)
            out["text_mask"] = out["text_mask"].view(batch, groups, length)
        else:
            out = {
                "image_features": self.encode_image(image, normalize=True),
                "text_features": self.encode_text(flat, normalize=True),
                "logit_scale": self.logit_scale.exp(),
            }
            if self.logit_bias is not None:
                out["logit_bias"] = self.logit_bias
        out["text_features"] = out["text_features"].view(batch, groups, -1)
        out["neg_valid"] = present[:, 1:]
        return out


class GroupedCLIP(_GroupedCaptionsForward, CLIP):
    """open_clip's ``CLIP`` with the grouped-caption forward (same parameters and state dict)."""


class GroupedCustomTextCLIP(_GroupedCaptionsForward, CustomTextCLIP):
    """open_clip's ``CustomTextCLIP`` with the grouped-caption forward."""


_GROUPED = {CLIP: GroupedCLIP, CustomTextCLIP: GroupedCustomTextCLIP}


def enable_grouped_captions(model: nn.Module, *, dense: bool) -> None:
    """Give ``model`` the grouped-caption forward, in place (its class becomes ``Grouped*``).

    Raises:
        UsageError: ``model`` is not exactly an open_clip ``CLIP`` / ``CustomTextCLIP`` (a CoCa or
            a scripted model, say), or ``dense`` and ``encode_dense`` cannot reproduce it.
    """
    grouped = _GROUPED.get(type(model))
    if grouped is None:
        raise UsageError(
            f"the FSC-CLIP loss trains open_clip CLIP and CustomTextCLIP models; got {type(model).__name__}"
        )
    if dense:
        try:
            check_supported(model)
        except (TypeError, ValueError) as e:
            raise UsageError(f"--return-dense-tokens: {e}") from None
    model.__class__ = grouped
    model.fsc_dense = dense


def dense_token_ids(tokenizer) -> dict[str, int]:
    """``encode_dense``'s special ids (for the local loss's text mask) of an open_clip tokenizer."""
    if not isinstance(tokenizer, SimpleTokenizer):
        raise UsageError(
            "--return-dense-tokens: the local loss's text mask needs the tokenizer's special ids, "
            "known here for open_clip's SimpleTokenizer (the OpenAI and LAION ViTs); got "
            f"{type(tokenizer).__name__}"
        )
    return {"pad_id": 0, "sot_id": tokenizer.sot_token_id, "eot_id": tokenizer.eot_token_id}


def add_lora(model: nn.Module, rank: int) -> None:
    """LoRA adapters of rank ``rank`` (peft) on the towers, in place: the ``in_proj_weight`` (the
    query, key and value projections) of every ``nn.MultiheadAttention``, every ``nn.Linear``
    outside the attention (the MLPs) and the ``nn.Conv2d`` patch embedding. Scaling
    ``lora_alpha / rank`` with ``lora_alpha = 1``, no dropout, the adapters the only trainable
    parameters: the fork's settings.

    The attention's out-projection keeps its pre-trained weights (the fork adapts it too): torch's
    attention never calls its ``forward``, so peft cannot adapt it alone, and peft's LoRA layer for
    the whole ``nn.MultiheadAttention`` (0.21) applies the out-projection's update twice and rounds
    the frozen weights at every forward. The in-projection goes through peft's
    ``target_parameters`` instead, which adds ``W + delta`` for the forward without touching ``W``.

    ``model.state_dict()`` then returns the merged weights (``W + delta``) under open_clip's own
    keys, without the adapters: what open_clip_train saves, and what plain open_clip loads.

    Raises:
        UsageError: a tower ``encode_dense`` does not support, or an attention that is not
            ``nn.MultiheadAttention`` (open_clip's ``CustomResidualAttentionBlock``).
    """
    from peft import LoraConfig, inject_adapter_in_model

    try:
        check_supported(model)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--lora-rank: {e}") from None
    for name, block in model.named_modules():
        attn = getattr(block, "attn", None)
        if attn is not None and not isinstance(attn, nn.MultiheadAttention):
            raise UsageError(
                f"--lora-rank: {name}.attn is a {type(attn).__name__}; LoRA here adapts "
                "nn.MultiheadAttention (open_clip's CustomResidualAttentionBlock configs are not supported)"
            )
    attention = [name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    layers = [
        name
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not any(name.startswith(a + ".") for a in attention)
    ]
    config = LoraConfig(
        r=rank,
        lora_alpha=1,
        lora_dropout=0.0,
        bias="none",
        target_modules=layers,
        target_parameters=[f"{name}.in_proj_weight" for name in attention],
    )
    inject_adapter_in_model(config, model)
    model.register_state_dict_post_hook(_merged_lora_state_dict)


@torch.no_grad()
def _merged_lora_state_dict(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """State-dict post-hook: merge each adapter into its base weight, drop the adapters and
    peft's ``base_layer`` key level, in place, keeping the keys' order."""
    from peft.tuners.lora.layer import LoraLayer, ParamWrapper

    merged = {}
    for name, layer in module.named_modules():
        if isinstance(layer, LoraLayer):
            weight = layer.parameter_name if isinstance(layer, ParamWrapper) else "weight"
            key = f"{prefix}{name}.base_layer.{weight}"
            base = state_dict[key]
            delta = sum(layer.get_delta_weight(adapter) for adapter in layer.lora_A)
            merged[key] = base.detach() + delta.to(base.dtype)
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        if key.startswith(prefix) and ".lora_" in key:
            continue
        value = merged.get(key, value)
        if key.startswith(prefix):
            key = prefix + key[len(prefix) :].replace(".base_layer", "")
        state_dict[key] = value
