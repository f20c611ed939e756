"""Glue for discriminative fine-tuning of Hugging Face LVLMs (docs/lvlm.md): soft prompts, and the
hidden states the embeddings and the NTP term are read from.

Works with any transformers model whose base model accepts ``inputs_embeds`` (LLaVA, Qwen2-VL,
plain causal LMs); it imports only torch, so ``import fsc_losses.integrations.lvlm`` does not need
transformers. LoRA comes from peft, applied to the model before these functions see it.

Why not peft's prompt tuning for the soft prompts: peft prepends its virtual tokens to the whole
sequence, where VladVA places them inside the prompt next to the instruction, and peft refuses to
combine a prompt-tuning adapter with a LoRA adapter on one model (``PeftModel`` and
``PeftMixedModel`` both reject it, peft 0.21). :class:`SoftPrompt` writes its vectors wherever the
prompt holds a placeholder token, so the prompt template decides the position, the sequence length,
attention mask and labels are unchanged, and it stacks with any peft adapter.
"""

from __future__ import annotations

import math

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
) -> torch.Tensor:
    """The last layer's hidden states ``(B, L, H)`` of a transformers causal LM or LVLM, after its
    final norm: what its LM head reads (for the NTP term) and what the embeddings are taken from
    (:func:`fsc_losses.last_token_embedding`). The LM head itself is not run.

    Args:
        model: a transformers ``*ForCausalLM`` / ``*ForConditionalGeneration`` (with peft's LoRA
            layers injected, e.g. ``peft_model.get_base_model()``).
        input_ids, attention_mask: ``(B, L)``; image placeholders as the model's processor lays
            them out.
        pixel_values: the images, or None for text-only sequences.
        soft_prompt: written into the input embeddings first.

    Needs transformers >= 5: in 4.x an LVLM such as LLaVA neither exposes its language model as
    ``base_model`` nor takes ``inputs_embeds`` together with ``pixel_values``.
    """
    import transformers  # the model's own library; this module imports only torch at import time

    if int(transformers.__version__.split(".")[0]) < 5:
        raise RuntimeError(
            f"hidden_states needs transformers >= 5, found {transformers.__version__}: in 4.x an LVLM "
            "such as LLaVA neither exposes its language model as base_model nor takes inputs_embeds "
            "with pixel_values"
        )
    inputs_embeds = model.get_input_embeddings()(input_ids)
    if soft_prompt is not None:
        inputs_embeds = soft_prompt(input_ids, inputs_embeds)
    images = {} if pixel_values is None else {"pixel_values": pixel_values}
    out = model.base_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **images)
    return out.last_hidden_state


def sequence_embeddings(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    soft_prompt: SoftPrompt | None = None,
) -> torch.Tensor:
    """The dual encoder's embeddings ``(B, H)`` of ``B`` sequences (an image, or a caption, then a
    summarising prompt): the last layer's hidden state at each row's last real position
    (:func:`hidden_states`, then :func:`fsc_losses.last_token_embedding`); arguments as
    :func:`hidden_states`."""
    states = hidden_states(model, input_ids, attention_mask, pixel_values, soft_prompt)
    return last_token_embedding(states, attention_mask)
