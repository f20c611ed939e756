"""Caption layouts: the flat order trainers produce and the released code's packed order.

The losses take grouped inputs ``(B, G, ...)``: image ``b``'s true caption at ``[b, 0]`` and its
``K = G - 1`` hard negatives at ``[b, 1:]``.
"""

from __future__ import annotations

import torch

from .checks import require_mask, require_tensor


def group_captions(flat: torch.Tensor, num_images: int) -> torch.Tensor:
    """Flat ``(B*G, ...)`` captions to grouped ``(B, G, ...)``, as a view (no copy).

    The flat order is the one trainers tokenize: the ``B`` true captions, then ``K`` blocks of ``B``
    negatives, type by type (``flat[k*B + b]`` is caption ``k`` of image ``b``).
    """
    require_tensor("flat", flat)
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive int, got {num_images!r}")
    if flat.dim() < 1 or flat.shape[0] % num_images != 0:
        raise ValueError(
            f"flat must have B*G rows with B = num_images = {num_images}, got shape {tuple(flat.shape)}"
        )
    groups = flat.shape[0] // num_images
    return flat.unflatten(0, (groups, num_images)).transpose(0, 1)


def unpack_negatives(
    x: torch.Tensor, neg_text_masks: torch.Tensor, num_images: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released code's packed captions to grouped ``(B, G, ...)`` plus ``neg_valid``.

    Args:
        x: ``(B + n, ...)``: the ``B`` true captions, then only the ``n`` present negatives, type by
            type (all of type 0 in image order, then type 1, ...).
        neg_text_masks: ``(K*B,)`` bool or 0/1, which type-major slots are present.
        num_images: ``B``.

    Returns:
        ``grouped`` ``(B, 1+K, ...)`` with missing slots zero-filled (``False`` for masks), and
        ``neg_valid`` ``(B, K)`` bool. Differentiable with respect to ``x``. Reads the number of
        present negatives from ``neg_text_masks``, so it synchronises with the device.
    """
    require_tensor("x", x)
    require_tensor("neg_text_masks", neg_text_masks)
    require_mask("neg_text_masks", neg_text_masks)
    if neg_text_masks.dim() != 1 or neg_text_masks.numel() % num_images != 0:
        raise ValueError(
            f"neg_text_masks must have shape (K*B,) with B = {num_images}, got {tuple(neg_text_masks.shape)}"
        )
    present = neg_text_masks.bool().to(x.device)
    num_neg = int(present.sum())
    if x.dim() < 1 or x.shape[0] != num_images + num_neg:
        raise ValueError(
            f"x must have B + n = {num_images} + {num_neg} rows (n = present negatives in "
            f"neg_text_masks), got shape {tuple(x.shape)}"
        )
    num_kinds = present.numel() // num_images
    slots = torch.cat([torch.arange(num_images, device=x.device), num_images + present.nonzero().squeeze(1)])
    flat = x.new_zeros(((1 + num_kinds) * num_images, *x.shape[1:])).index_copy(0, slots, x)
    neg_valid = present.view(num_kinds, num_images).T.contiguous()
    return group_captions(flat, num_images), neg_valid
