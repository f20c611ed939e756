"""WiSE-FT weight interpolation, the fork's ``--wise-ft-alpha``, as a function of two state dicts."""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["wise_ft"]


def wise_ft(
    pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """WiSE-FT (Wortsman et al., CVPR 2022): ``(1 - alpha) * pretrained + alpha * finetuned``,
    key by key, as the fork's ``--wise-ft-alpha`` does.

    Args:
        pretrained, finetuned: state dicts with the same keys and shapes (e.g. open_clip
            ``model.state_dict()``); the result takes ``finetuned``'s dtype and device.
        alpha: in ``[0, 1]``; 0 gives ``pretrained``, 1 gives ``finetuned``.

    Non-floating tensors (integer buffers) are not interpolated and must be equal.

    For a checkpoint of a LoRA run (merged weights ``W + delta``) against its own zero-shot model
    this is ``W + alpha * delta``: the fork's interpolation of the LoRA weights alone.

    Raises:
        ValueError: ``alpha`` out of range, different keys (named), or a key whose shapes differ
            or whose integer values differ.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    missing, unexpected = sorted(set(finetuned) - set(pretrained)), sorted(set(pretrained) - set(finetuned))
    if missing or unexpected:
        raise ValueError(
            f"the state dicts differ: only in finetuned {missing}, only in pretrained {unexpected}"
        )
    out = {}
    for key, tuned in finetuned.items():
        base = pretrained[key].to(device=tuned.device, dtype=tuned.dtype)
        if base.shape != tuned.shape:
            raise ValueError(f"{key}: pretrained {tuple(base.shape)} vs finetuned {tuple(tuned.shape)}")
        if tuned.is_floating_point():
            out[key] = (1 - alpha) * base + alpha * tuned
        elif torch.equal(base, tuned):
            out[key] = tuned.clone()
        else:
            raise ValueError(f"{key}: the integer tensors differ, and they cannot be interpolated")
    return out
