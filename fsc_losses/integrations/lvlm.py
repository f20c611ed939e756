"""Glue for discriminative fine-tuning of Hugging Face LVLMs (docs/lvlm.md): soft prompts, the
learned temperature, the hidden states the embeddings and the NTP term are read from, the LM
head's soft-capping and LoRA targets on the language model.

Works with transformers' LVLMs and causal LMs through the model's own forward, with every input its
processor makes (docs/lvlm.md lists the architectures tested); it imports only torch, so ``import
fsc_losses.integrations.lvlm`` does not need transformers. LoRA comes from peft, applied to the
model before these functions see it.

Why not peft's prompt tuning for the soft prompts: peft prepends its virtual tokens to the whole
sequence, where VladVA places them inside the prompt next to the instruction, and peft refuses to
combine a prompt-tuning adapter with a LoRA adapter on one model (``PeftModel`` and
``PeftMixedModel`` both reject it, peft 0.21). :class:`SoftPrompt` writes its vectors wherever the
prompt holds a placeholder token, so the prompt template decides the position, the sequence length,
attention mask and labels are unchanged, and it stacks with any peft adapter.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from .. import checks
from ..pooling import last_token_embedding


class SoftPrompt(nn.Module):
    """``num_tokens`` learned input embeddings, written into a sequence wherever its ``input_ids``
    hold ``placeholder_id`` (the first placeholder of a row gets vector 0, the next vector 1, ...).

    Put ``num_tokens`` placeholders in the prompt where the soft prompt belongs (for example just
    before the instruction); rows without placeholders are left unchanged. The placeholder should
    be a token the text never contains, e.g. a special token added to the tokenizer (its own
    embedding is never read).

    Args:
        num_tokens: number of learned vectors.
        hidden_size: the language model's embedding width.
        placeholder_id: the token id marking their positions.
        init: ``(num_tokens, hidden_size)`` initial vectors (e.g. the embeddings of a few words of
            the instruction); default normal with standard deviation ``std``.
        check_inputs: check that every row holds 0 or ``num_tokens`` placeholders (one host
            synchronisation per call; skipped under ``torch.compile``).
    """

    def __init__(
        self,
        num_tokens: int,
        hidden_size: int,
        placeholder_id: int,
        init: torch.Tensor | None = None,
        std: float = 0.02,
        check_inputs: bool = True,
    ):
        super().__init__()
        if num_tokens < 1 or hidden_size < 1:
            raise ValueError(f"need num_tokens >= 1 and hidden_size >= 1, got {num_tokens} and {hidden_size}")
        if init is None:
            init = torch.randn(num_tokens, hidden_size) * std
        elif tuple(init.shape) != (num_tokens, hidden_size):
            raise ValueError(f"init must have shape ({num_tokens}, {hidden_size}), got {tuple(init.shape)}")
        self.embeddings = nn.Parameter(init.detach().clone())
        self.placeholder_id = placeholder_id
        self.check_inputs = check_inputs

    def forward(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """``input_ids (B, L)``, ``inputs_embeds (B, L, H)`` -> ``(B, L, H)`` with the learned
        vectors at the placeholders (in ``inputs_embeds``' dtype)."""
        checks.require_rank("input_ids", input_ids, (2,), "(B, L)")
        checks.require_rank("inputs_embeds", inputs_embeds, (3,), "(B, L, H)")
        if inputs_embeds.shape[:2] != input_ids.shape or inputs_embeds.shape[2] != self.embeddings.shape[1]:
            raise ValueError(
                f"inputs_embeds must have shape (B, L, H) = ({input_ids.shape[0]}, {input_ids.shape[1]}, "
                f"{self.embeddings.shape[1]}), got {tuple(inputs_embeds.shape)}"
            )
        placeholders = input_ids == self.placeholder_id
        if checks.value_checks_enabled(self.check_inputs):
            counts = placeholders.sum(dim=1)
            wrong = (counts != 0) & (counts != len(self.embeddings))
            if wrong.any():
                row = int(wrong.nonzero()[0, 0])
                raise ValueError(
                    f"input_ids[{row}] holds {int(counts[row])} soft-prompt placeholders "
                    f"(id {self.placeholder_id}); expected 0 or num_tokens = {len(self.embeddings)}"
                )
        ordinal = (placeholders.cumsum(dim=1) - 1).clamp(0, len(self.embeddings) - 1)
        vectors = self.embeddings.to(inputs_embeds.dtype)[ordinal]
        return torch.where(placeholders.unsqueeze(-1), vectors, inputs_embeds)

    def extra_repr(self) -> str:
        num_tokens, hidden_size = self.embeddings.shape
        return f"num_tokens={num_tokens}, hidden_size={hidden_size}, placeholder_id={self.placeholder_id}"


class LogitScale(nn.Module):
    """A learned contrastive temperature: ``forward()`` returns the logit scale
    ``min(exp(log_scale), max_scale)`` as a scalar tensor (``ContrastiveNTPLoss``'s
    ``logit_scale``).

    Args:
        temperature: the initial temperature; the scale starts at ``1 / temperature``.
        max_scale: the cap CLIP's recipe puts on the scale (100); above it the scale gets no
            gradient.
    """

    def __init__(self, temperature: float = 0.05, max_scale: float = 100.0):
        super().__init__()
        if not (temperature > 0 and max_scale > 0):
            raise ValueError(f"need temperature > 0 and max_scale > 0, got {temperature} and {max_scale}")
        # shape (1,), not (): FSDP2's fully_shard refuses scalar parameters
        self.log_scale = nn.Parameter(torch.full((1,), math.log(1 / temperature)))
        self.max_scale = float(max_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_scale).reshape(())

    def extra_repr(self) -> str:
        return f"max_scale={self.max_scale}"


def add_dual_encoder_modules(
    model: nn.Module,
    soft_prompt: SoftPrompt | None = None,
    temperature: float = 0.05,
    max_scale: float = 100.0,
) -> list[str]:
    """Register what turns an LVLM into a dual encoder as submodules of ``model``: ``logit_scale``
    (a :class:`LogitScale`) and, when given, ``soft_prompt``. Returns their names, for peft's
    ``modules_to_save``: peft then trains them and saves them in the adapter checkpoint beside the
    LoRA weights.

    Call it on the transformers model before peft wraps it, and again, with the same shapes, on the
    model a checkpoint is loaded into (``PeftModel.from_pretrained`` fills in the trained values).
    Being submodules, they are parameters of the model the ``Trainer`` optimises, synchronises
    across processes and shards.
    """
    for name in ("logit_scale", "soft_prompt"):
        if hasattr(model, name):
            raise ValueError(f"{type(model).__name__} already has an attribute {name!r}")
    model.logit_scale = LogitScale(temperature, max_scale)
    if soft_prompt is None:
        return ["logit_scale"]
    model.soft_prompt = soft_prompt
    return ["logit_scale", "soft_prompt"]


def hidden_states(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    soft_prompt: SoftPrompt | None = None,
    **inputs,
) -> torch.Tensor:
    """The last layer's hidden states ``(B, L, H)`` of a transformers causal LM or LVLM, after its
    final norm: what its LM head reads (for the NTP term) and what the embeddings are taken from
    (:func:`fsc_losses.last_token_embedding`). The LM head itself is not run.

    The model's own forward (its base model's, ``model.base_model``) runs on ``input_ids`` and
    everything its processor returned for them, so the model embeds the tokens, places the image
    features, and builds its own position ids (Qwen2-VL's multimodal RoPE), attention masks
    (PaliGemma's and Gemma 3's bidirectional image and prefix blocks) and image layout
    (LLaVA-NeXT's ``image_sizes``, Idefics3's ``pixel_attention_mask``).

    Args:
        model: a transformers ``*ForConditionalGeneration`` / ``*ForCausalLM``, with peft's LoRA
            layers injected or not (a peft model stands for its base model).
        input_ids, attention_mask: ``(B, L)``; image placeholders as the model's processor lays
            them out.
        pixel_values: the images, or None for text-only sequences.
        soft_prompt: written into the token embeddings the model makes (a forward hook on
            ``model.get_input_embeddings()`` while this call runs), before the image features are
            placed.
        inputs: every other processor output the base model's forward takes, by its name:
            ``image_sizes``, ``image_grid_thw``, ``mm_token_type_ids``, ``token_type_ids``,
            ``pixel_attention_mask``, ``batch_num_images``, ... A name the forward does not take is
            an error; ``labels`` (which PaliGemma's processor returns) are the loss's and ignored.

    A model that caches state between calls (Qwen2-VL's ``rope_deltas``, kept for generation) has
    it cleared for this call and put back after, so that no call sees another's.

    Needs transformers >= 5: in 4.x an LVLM such as LLaVA does not expose its language model as
    ``base_model``.
    """
    import transformers  # the model's own library; this module imports only torch at import time

    if int(transformers.__version__.split(".")[0]) < 5:
        raise RuntimeError(
            f"hidden_states needs transformers >= 5, found {transformers.__version__}: in 4.x an LVLM "
            "such as LLaVA does not expose its language model as base_model"
        )
    base = without_peft(model).base_model  # a peft model's own base_model is its LoRA wrapper
    inputs.pop("labels", None)
    if pixel_values is not None:
        inputs["pixel_values"] = pixel_values
    _check_forward_inputs(base, inputs)
    hook = None
    if soft_prompt is not None:
        hook = base.get_input_embeddings().register_forward_hook(_soft_prompt_hook(soft_prompt))
    try:
        with _cleared(base, "rope_deltas"):
            out = base(input_ids=input_ids, attention_mask=attention_mask, **inputs)
    finally:
        if hook is not None:
            hook.remove()
    return out.last_hidden_state


def without_peft(model: nn.Module) -> nn.Module:
    """The transformers model itself: under a peft model, its base model with the adapters in;
    any other model as it is."""
    get_base_model = getattr(model, "get_base_model", None)
    return model if get_base_model is None else get_base_model()


def _check_forward_inputs(base: nn.Module, inputs: dict) -> None:
    """Every input must be a parameter of the base model's forward by name: its ``**kwargs`` go
    to the attention and the vision tower, where a misspelt processor output would vanish."""
    named = {
        name
        for name, p in inspect.signature(base.forward).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    unknown = sorted(set(inputs) - named)
    if unknown:
        raise ValueError(
            f"{type(base).__name__}.forward takes no {unknown}; it takes {sorted(named)} (pass the "
            "processor outputs the model's forward names, and no others)"
        )


def _soft_prompt_hook(soft_prompt: SoftPrompt):
    """A forward hook for the input embedding layer: the soft prompt written into the embeddings
    of a ``(B, L)`` batch of ids (other lookups, e.g. of a single special token, are left alone)."""

    def hook(module, args, output):
        ids = args[0] if args else None
        if isinstance(ids, torch.Tensor) and ids.dim() == 2 and output.shape[:2] == ids.shape:
            return soft_prompt(ids, output)
        return None

    return hook


@contextlib.contextmanager
def _cleared(module: nn.Module, name: str):
    """``module.<name>`` (when it has one) is None inside the block and its old value after."""
    if not hasattr(module, name):
        yield
        return
    saved = getattr(module, name)
    setattr(module, name, None)
    try:
        yield
    finally:
        setattr(module, name, saved)


def sequence_embeddings(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    soft_prompt: SoftPrompt | None = None,
    **inputs,
) -> torch.Tensor:
    """The dual encoder's embeddings ``(B, H)`` of ``B`` sequences (an image, or a caption, then a
    summarising prompt): the last layer's hidden state at each row's last real position
    (:func:`hidden_states`, then :func:`fsc_losses.last_token_embedding`); arguments as
    :func:`hidden_states`."""
    states = hidden_states(model, input_ids, attention_mask, pixel_values, soft_prompt, **inputs)
    return last_token_embedding(states, attention_mask)


def lm_head_softcap(model: nn.Module) -> float | None:
    """The logit soft-capping of the model's LM head (``final_logit_softcapping`` of its text
    config: Gemma 2, PaliGemma 2), or None: what ``ContrastiveNTPLoss(softcap=...)`` and
    ``linear_cross_entropy(softcap=...)`` need for the NTP term to equal the model's own loss.

    (transformers 5.25's ``Gemma3ForConditionalGeneration`` does not cap its logits even when its
    text config sets a cap; the released Gemma 3 configs set none.)"""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text_config, "final_logit_softcapping", None)
    return None if cap is None else float(cap)


ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def lora_target_modules(model: nn.Module, projections: Sequence[str] = ATTENTION_PROJECTIONS) -> str:
    """peft's ``target_modules`` for LoRA on the language model's ``projections`` and nowhere
    else: a regular expression that peft matches against the full module names.

    The plain list ``["q_proj", "v_proj"]`` would match by name suffix, and the vision towers of
    LLaVA, PaliGemma, Gemma 3, Idefics3 and InternVL name their layers the same; a regex over
    ``language_model`` matches nothing on Idefics3 and SmolVLM, whose LLM is ``text_model``. This
    finds the language model (``model.get_decoder()``) wherever the architecture keeps it.

    Args:
        model: the transformers model, before peft wraps it (or a peft model: its base model).
        projections: the linear layers' names inside the language model's decoder layers, e.g.
            the attention's (the default) plus the MLP's ``("gate_proj", "up_proj",
            "down_proj")``. Each must exist there.

    Returns:
        e.g. ``model\\.language_model\\..*\\.(q_proj|k_proj|v_proj|o_proj)`` for LLaVA.
    """
    model = without_peft(model)
    decoder = model.get_decoder()
    prefix = next((name for name, module in model.named_modules() if module is decoder), None)
    if prefix is None:
        raise ValueError(f"{type(model).__name__}.get_decoder() is not one of its submodules")
    linear = {  # a layer peft has wrapped keeps its name, its own linear layer inside as base_layer
        name.rsplit(".", 1)[-1]
        for name, module in decoder.named_modules()
        if isinstance(getattr(module, "base_layer", module), nn.Linear)
        and not any(part == "base_layer" or part.startswith("lora_") for part in name.split("."))
    }
    missing = [p for p in projections if p not in linear]
    if missing or not projections:
        raise ValueError(
            f"the language model of {type(model).__name__} ({prefix or 'the model itself'}) has no linear "
            f"layers named {missing or list(projections)}; its linear layers: {sorted(linear)}"
        )
    names = "|".join(re.escape(p) for p in projections)
    return rf"{re.escape(prefix)}\..*\.({names})" if prefix else rf".*\.({names})"
