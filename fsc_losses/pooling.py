"""Sequence pooling for embeddings read off a language model's hidden states."""

from __future__ import annotations

import torch

from . import checks


def last_token_embedding(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, *, check_inputs: bool = True
) -> torch.Tensor:
    """The hidden state at each row's last real position: the embedding of a decoder-only
    (causal) model, whose last position is the only one that has seen the whole sequence.

    Works for left- and right-padded batches alike (any mask: the last position whose mask is 1).

    Args:
        hidden_states: ``(B, L, H)``.
        attention_mask: ``(B, L)`` bool or integer, 1 at real tokens (a Hugging Face
            ``attention_mask``).
        check_inputs: raise ``ValueError`` for a row with no real position (one host
            synchronisation, skipped under ``torch.compile`` and CUDA-graph capture). Unchecked,
            such a row's embedding is NaN.

    Returns:
        ``(B, H)``, differentiable with respect to ``hidden_states``.
    """
    checks.require_tensor("hidden_states", hidden_states)
    checks.require_tensor("attention_mask", attention_mask)
    checks.require_float("hidden_states", hidden_states)
    checks.require_mask("attention_mask", attention_mask)
    checks.require_rank("hidden_states", hidden_states, (3,), "(B, L, H)")
    checks.require_rank("attention_mask", attention_mask, (2,), "(B, L)")
    checks.require_size("attention_mask", attention_mask, 0, hidden_states.shape[0], "B")
    checks.require_size("attention_mask", attention_mask, 1, hidden_states.shape[1], "L")
    checks.require_same_device(hidden_states=hidden_states, attention_mask=attention_mask)
    if hidden_states.shape[1] == 0:
        raise ValueError(f"hidden_states has no position (L = 0), got shape {tuple(hidden_states.shape)}")
    checks.check_rows_not_empty("attention_mask", attention_mask, check_inputs)

    real = attention_mask.bool()
    positions = torch.arange(1, real.shape[1] + 1, device=real.device)
    last = (real * positions).amax(dim=1) - 1  # -1 for a row without a real position
    rows = torch.arange(real.shape[0], device=real.device)
    embeddings = hidden_states[rows, last.clamp(min=0)]
    return torch.where((last >= 0).unsqueeze(1), embeddings, float("nan"))
