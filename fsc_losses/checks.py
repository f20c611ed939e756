"""Argument checks shared by every public entry point.

Shape, dtype and device checks read no tensor values, so they always run. The checks of values
(``check_masks_not_empty``, ``check_targets_in_range``, ``check_rows_not_empty``) need a host
synchronisation on the GPU: each runs once per call, and is skipped under ``torch.compile``, during
CUDA-graph capture and when the caller passes ``check_inputs=False``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

NORMALIZERS = ("minmax", "softmax")
CONTRASTIVE = ("softmax", "sigmoid")  # kinds of the in-batch contrastive term (CLIP, SigLIP)
LINEAR_CE_BACKENDS = ("auto", "chunked", "reference")
REDUCTIONS = ("mean", "sum", "none")


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def require_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def require_float(name: str, t: torch.Tensor) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def require_rank(name: str, t: torch.Tensor, ranks: Sequence[int], layout: str) -> None:
    if t.dim() not in ranks:
        raise ValueError(f"{name} must have shape {layout}, got {_shape(t)} ({t.dim()} dims)")


def require_size(name: str, t: torch.Tensor, dim: int, expected: int, what: str) -> None:
    if t.shape[dim] != expected:
        raise ValueError(
            f"{name} has {what} = {t.shape[dim]} (dim {dim} of shape {_shape(t)}), expected "
            f"{expected} to match the other arguments"
        )


def require_rows(name: str, t: torch.Tensor, what: str) -> None:
    """``t`` has at least one row (dim 0): an empty batch is an error, not a NaN loss."""
    if t.shape[0] == 0:
        raise ValueError(f"{name} has shape {_shape(t)}: the batch is empty, no {what} to score")


def require_same_dtype(hint: str, **tensors: torch.Tensor | None) -> None:
    """The tensors (None ones aside) share a dtype; ``hint`` says how to get there."""
    dtypes = {name: t.dtype for name, t in tensors.items() if t is not None}
    if len(set(dtypes.values())) > 1:
        *first, last = dtypes
        listing = ", ".join(f"{name} {dtype}" for name, dtype in dtypes.items())
        raise TypeError(f"{', '.join(first)} and {last} must share a dtype, got {listing} ({hint})")


def require_mask(name: str, t: torch.Tensor) -> None:
    if t.dtype == torch.bool:
        return
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must be a bool or integer tensor, got dtype {t.dtype}")


def require_same_device(**tensors: torch.Tensor | None) -> None:
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {v.device for v in present.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{k} on {v.device}" for k, v in present.items())
        raise ValueError(f"all tensors must be on one device, got {listing}")


def as_scale(name: str, value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A 0-dim tensor from a scalar tensor (any shape with one element) or a Python number.

    A number becomes a float32 tensor on ``like``'s device, made once per value and device and
    then reused: making it is a copy from pageable host memory, which synchronises with the device
    and cannot run during CUDA-graph capture (a first call outside the capture makes it). Under
    ``torch.compile`` it is a constant of the graph instead.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if torch.compiler.is_compiling():
            return torch.tensor(float(value), device=like.device, dtype=torch.float32)
        return _constant_scale(float(value), like.device, torch.is_inference_mode_enabled())
    value = require_tensor(name, value)
    if value.numel() != 1:
        raise ValueError(f"{name} must be a scalar tensor, got shape {_shape(value)}")
    require_float(name, value)
    return value.reshape(())


@functools.lru_cache(maxsize=64)
def _constant_scale(value: float, device: torch.device, inference: bool) -> torch.Tensor:
    # One per inference mode too: a tensor made under torch.inference_mode cannot be saved for a
    # backward outside it.
    return torch.tensor(value, device=device, dtype=torch.float32)


def check_normalizer(normalizer: str, sparsify: bool) -> None:
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    if sparsify and normalizer != "minmax":
        raise ValueError(f"sparsify=True needs normalizer='minmax', got normalizer={normalizer!r}")


def check_criterion_params(focal_gamma: float, label_smoothing: float | None) -> None:
    if not focal_gamma >= 0:
        raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
    if label_smoothing is not None and not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")


def check_contrastive(contrastive: str) -> None:
    if contrastive not in CONTRASTIVE:
        raise ValueError(f"contrastive must be one of {CONTRASTIVE}, got {contrastive!r}")


def resolve_gather_with_grad(contrastive: str, gather_with_grad: bool | None) -> bool:
    """``gather_with_grad`` for a contrastive term of kind ``contrastive``: unset (None) means
    open_clip's default for that kind, False for ``"softmax"`` (``ClipLoss``) and True for
    ``"sigmoid"`` (``SigLipLoss``, whose exchange of the captions always carries gradient). An
    explicit False with ``"sigmoid"`` is refused: it would train on a truncated gradient."""
    check_contrastive(contrastive)
    if contrastive != "sigmoid":
        return bool(gather_with_grad)
    if gather_with_grad is not None and not gather_with_grad:
        raise ValueError(
            "gather_with_grad=False cannot be used with contrastive='sigmoid': each process scores "
            "its own images against every process's captions, so a caption's gradient from the "
            "other processes' images has to flow back through the gather (as open_clip's "
            "SigLipLoss exchange does); without it the captions train on a truncated gradient. "
            "Leave gather_with_grad unset (None) or pass True"
        )
    return True


def check_distributed(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def check_linear_ce_options(
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    backend: str,
    chunk_size: int | None,
    softcap: float | None,
) -> None:
    """The non-tensor arguments of the linear cross-entropy."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if not 0 <= z_loss < float("inf"):
        raise ValueError(f"z_loss must be a finite number >= 0, got {z_loss}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if backend not in LINEAR_CE_BACKENDS:
        raise ValueError(f"backend must be one of {LINEAR_CE_BACKENDS}, got {backend!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if softcap is not None and (isinstance(softcap, bool) or not 0 < softcap < float("inf")):
        raise ValueError(f"softcap must be a finite number > 0, or None for no cap; got {softcap!r}")


def require_integer(name: str, t: torch.Tensor) -> None:
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (class indices), got dtype {t.dtype}")


def check_targets_in_range(
    targets: torch.Tensor, vocab_size: int, ignore_index: int, check_inputs: bool
) -> None:
    """Value check: every target is a class index in ``[0, vocab_size)`` or ``ignore_index``. One
    host synchronisation, when ``value_checks_enabled``."""
    if not value_checks_enabled(check_inputs):
        return
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= vocab_size))
    if bad.any():
        position = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"targets{list(position)} = {int(targets[position])} is not a class index in [0, {vocab_size}) "
            f"(V = weight.shape[0]) nor ignore_index = {ignore_index}"
        )


def check_rows_not_empty(name: str, mask: torch.Tensor, check_inputs: bool) -> None:
    """Value check: every row of the ``(B, L)`` ``mask`` marks at least one position. One host
    synchronisation, when ``value_checks_enabled``."""
    if not value_checks_enabled(check_inputs):
        return
    empty = ~mask.bool().any(dim=-1)
    if empty.any():
        row = int(empty.nonzero()[0, 0])
        raise ValueError(f"{name}[{row}] marks no position (all zeros): the row has no real token")


def check_neg_valid(neg_valid: torch.Tensor | None, batch: int, groups: int) -> None:
    if neg_valid is None:
        return
    require_tensor("neg_valid", neg_valid)
    require_mask("neg_valid", neg_valid)
    if tuple(neg_valid.shape) != (batch, groups - 1):
        raise ValueError(
            f"neg_valid must have shape (B, G-1) = ({batch}, {groups - 1}), got {_shape(neg_valid)}"
        )


def value_checks_enabled(check_inputs: bool) -> bool:
    """Whether value checks may synchronise with the host right now."""
    if not check_inputs or torch.compiler.is_compiling():
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def check_masks_not_empty(
    text_mask: torch.Tensor, neg_valid: torch.Tensor | None, check_inputs: bool
) -> int | None:
    """The one value check: a present caption must count at least one position (a missing
    negative's mask may be empty). One host synchronisation, when ``value_checks_enabled``.

    Returns the most positions any image of the ``(B, G, T)`` mask counts over its present
    captions (read in the same synchronisation: the Triton kernels size their buffers by it), or
    None when the check did not run."""
    if not value_checks_enabled(check_inputs):
        return None
    counted = text_mask.bool().sum(dim=-1)  # (B, G), the one pass over the mask
    if neg_valid is None:
        empty = counted == 0
    else:
        present = torch.cat([torch.ones_like(counted[:, :1], dtype=torch.bool), neg_valid.bool()], dim=1)
        empty = (counted == 0) & present
        counted = counted * present  # a missing negative's positions count for nothing
    rows = counted.sum(dim=1)
    most = rows.amax() if rows.numel() else rows.new_zeros(())
    any_empty, most_rows = torch.stack([empty.any().to(most.dtype), most]).tolist()
    if any_empty:
        b, g = (int(i) for i in empty.nonzero()[0])
        raise ValueError(
            f"text_mask[{b}, {g}] counts no position, but caption {g} of image {b} is present; "
            "mark a missing negative False in neg_valid"
        )
    return most_rows
