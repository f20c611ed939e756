"""Pure-PyTorch reference of every loss of the package (FSC-CLIP: docs/losses.md, SPEC sections 2-4;
the LVLM losses: docs/lvlm.md).

This is the only place the math is written in PyTorch. It runs on any device and dtype, is
differentiable end to end, and is what the Triton kernels are tested and benchmarked against.
Functions here assume validated inputs (see ``fsc_losses.checks``); the public entry points in
``fsc_losses.functional`` validate and then call them.

Shapes: ``B`` images, ``G = 1 + K`` captions per image (column 0 the true caption), ``T`` text
positions, ``P`` patches, ``D`` embedding width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum

_NORM_EPS = 1e-12  # F.normalize's clamp on the norm


def patch_weights(sim: torch.Tensor, normalizer: str, sparsify: bool) -> torch.Tensor:
    """Pooling weights over patches for each caption position.

    Args:
        sim: ``(..., P)`` raw token-patch dot products (treated as a constant).
        normalizer: ``"minmax"`` or ``"softmax"``.
        sparsify: with ``minmax``, zero the weights whose min-max score is below ``1/P``.

    Returns:
        ``(..., P)`` weights that sum to one over the last dimension.
    """
    num_patches = sim.shape[-1]
    if normalizer == "softmax":
        return sim.softmax(dim=-1)
    shifted = sim - sim.amin(dim=-1, keepdim=True)
    spread = shifted.amax(dim=-1, keepdim=True)
    degenerate = spread == 0
    if sparsify:
        keep = shifted >= spread / num_patches  # A >= 1/P without dividing by a zero spread
        shifted = torch.where(keep, shifted, torch.zeros_like(shifted))
    # A row whose scores are all equal has no preferred patch: uniform weights instead of 0/0.
    shifted = torch.where(degenerate, torch.ones_like(shifted), shifted)
    return shifted / shifted.sum(dim=-1, keepdim=True)


def position_scores(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    logit_scale: torch.Tensor,
    normalizer: str = "minmax",
    sparsify: bool = False,
) -> torch.Tensor:
    """Per-position scores ``a_t = logit_scale * cos(Z_t, X_t)`` (SPEC section 2, steps 1-4).

    Args:
        image_tokens: ``(B, P, D)`` patch tokens ``V``.
        text_tokens: ``(B, G, T, D)`` caption tokens ``X``.
        logit_scale: scalar tensor, already exponentiated.

    Returns:
        ``(B, G, T)`` scores for every position, counted or not.
    """
    sim = einsum(text_tokens.detach(), image_tokens.detach(), "b g t d, b p d -> b g t p")
    weights = patch_weights(sim, normalizer, sparsify)
    pooled = einsum(weights, image_tokens, "b g t p, b p d -> b g t d")
    cos = (F.normalize(pooled, dim=-1, eps=_NORM_EPS) * F.normalize(text_tokens, dim=-1, eps=_NORM_EPS)).sum(
        dim=-1
    )
    return logit_scale * cos


def masked_logsumexp(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log sum_{t: mask_t} exp(scores_t)`` over the last dimension; ``-inf`` for an empty mask.

    Positions outside the mask neither contribute nor receive gradient, and an empty row gives a
    clean ``-inf`` whose gradient is zero instead of NaN.
    """
    mask = mask.bool()
    empty = ~mask.any(dim=-1)
    neg_inf = torch.full_like(scores, float("-inf"))
    shift = torch.where(mask, scores, neg_inf).amax(dim=-1, keepdim=True).detach()
    shift = torch.where(empty.unsqueeze(-1), torch.zeros_like(shift), shift)
    # Mask before exp: an uncounted position's exp could overflow and turn its zero gradient NaN.
    total = torch.where(mask, scores - shift, neg_inf).exp().sum(dim=-1)
    safe = torch.where(empty, torch.ones_like(total), total)
    lse = safe.log() + shift.squeeze(-1)
    return torch.where(empty, torch.full_like(lse, float("-inf")), lse)


def local_hn_scores(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor,
    normalizer: str = "minmax",
    sparsify: bool = False,
) -> torch.Tensor:
    """Local score ``l`` of every (image, own caption) pair (SPEC section 2).

    Args:
        image_tokens: ``(B, P, D)``.
        text_tokens: ``(B, G, T, D)``.
        text_mask: ``(B, G, T)`` bool or integer, positions that count.
        logit_scale: scalar tensor.

    Returns:
        ``(B, G)`` logsumexp of the counted per-position scores (``-inf`` for an empty mask).
    """
    scores = position_scores(image_tokens, text_tokens, logit_scale, normalizer, sparsify)
    return masked_logsumexp(scores, text_mask)


def contrasted_negatives(text_mask: torch.Tensor, neg_valid: torch.Tensor | None) -> torch.Tensor:
    """``(B, G-1)`` bool: the negatives the local HN contrast takes, those present (``neg_valid``,
    default all) whose caption counts a position, and none for an image whose true caption counts
    none. A present caption with no counted position (which the value check refuses, but which
    reaches the loss when the check is off) thus acts as a missing negative, and such an image drops
    out of the mean instead of making the whole batch's loss infinite.

    Args:
        text_mask: ``(B, G, T)`` bool, positions that count.
        neg_valid: ``(B, G-1)`` bool or None.
    """
    has_rows = text_mask.bool().any(dim=-1)
    contrasted = has_rows[:, 1:] & has_rows[:, :1]
    return contrasted if neg_valid is None else contrasted & neg_valid.bool()


def local_hn_loss(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor,
    neg_valid: torch.Tensor | None = None,
    normalizer: str = "minmax",
    sparsify: bool = False,
    focal_gamma: float = 2.0,
    label_smoothing: float = 0.02,
) -> torch.Tensor:
    """The local HN loss: :func:`local_hn_scores` contrasted by :func:`hn_contrast_loss` over the
    :func:`contrasted_negatives` (SPEC sections 2-3). Shapes as :func:`local_hn_scores`."""
    scores = local_hn_scores(image_tokens, text_tokens, text_mask, logit_scale, normalizer, sparsify)
    negatives = contrasted_negatives(text_mask, neg_valid)
    return hn_contrast_loss(scores, negatives, focal_gamma, label_smoothing)


def hn_contrast_loss(
    logits: torch.Tensor,
    neg_valid: torch.Tensor | None = None,
    focal_gamma: float = 2.0,
    label_smoothing: float = 0.02,
) -> torch.Tensor:
    """The ``(1+K)``-way HN contrast with focal weighting and label smoothing (SPEC section 3).

    Args:
        logits: ``(B, G)``, column 0 the true caption.
        neg_valid: ``(B, G-1)`` bool, which negatives exist; ``None`` means all.
        focal_gamma: ``gamma >= 0``; 0 is plain cross-entropy.
        label_smoothing: ``epsilon`` in ``[0, 1)``, shared over the row's present captions.

    Returns:
        Scalar: mean row loss over rows with at least one valid negative; an exact zero that is
        still part of the autograd graph when there is no such row.
    """
    batch, groups = logits.shape
    if neg_valid is None:
        present = torch.ones_like(logits, dtype=torch.bool)
    else:
        # The true caption's column, also when there are no negatives (neg_valid (B, 0)).
        present = torch.cat([torch.ones_like(logits[:, :1], dtype=torch.bool), neg_valid.bool()], dim=1)
    counted = present[:, 1:].any(dim=1)
    # Rows without a negative are computed on harmless stand-in values, then dropped: keeps the
    # gradient finite for any gamma instead of evaluating (1 - p)^gamma at p = 1.
    stand_in = counted.unsqueeze(1)
    logits = torch.where(stand_in, logits, torch.zeros_like(logits))
    present = torch.where(stand_in, present, torch.ones_like(present))

    neg_inf = torch.full_like(logits, float("-inf"))
    log_p = torch.where(present, torch.where(present, logits, neg_inf).log_softmax(dim=1), 0.0)
    num_present = present.sum(dim=1, keepdim=True).to(logits.dtype)
    eps = float(label_smoothing or 0.0)
    target = torch.where(present, eps / num_present, 0.0)
    target[:, 0] += 1.0 - eps

    entry_loss = -log_p
    if focal_gamma != 0:
        prob = torch.where(present, log_p.exp(), 0.0)
        entry_loss = entry_loss * (1.0 - prob).pow(focal_gamma)
    row_loss = (target * entry_loss).sum(dim=1)
    row_loss = torch.where(counted, row_loss, torch.zeros_like(row_loss))
    return row_loss.sum() / counted.sum().clamp(min=1).to(logits.dtype)


def global_hn_logits(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """``logit_scale * <image_features_b, text_features_bg>``: ``(B, D), (B, G, D) -> (B, G)``."""
    return logit_scale * einsum(image_features, text_features, "b d, b g d -> b g")


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
    *,
    all_image_features: torch.Tensor | None = None,
    all_text_features: torch.Tensor | None = None,
    label_offset: int = 0,
) -> torch.Tensor:
    """Symmetric InfoNCE between images and their true captions (open_clip's ``ClipLoss``).

    Args:
        image_features: ``(n, D)`` this process's images.
        text_features: ``(n, D)`` their true captions.
        logit_scale, logit_bias: scalars; the bias (SigLIP-style models) is added to every logit.
        all_image_features, all_text_features: ``(N, D)`` the features every image and caption is
            contrasted with (gathered across processes); default: the local ones.
        label_offset: index of this process's first pair in the ``all_*`` rows.

    Returns:
        Scalar ``(CE(image -> texts) + CE(text -> images)) / 2``.
    """
    if all_image_features is None:
        all_image_features = image_features
    if all_text_features is None:
        all_text_features = text_features
    logits_per_image = logit_scale * image_features @ all_text_features.T
    logits_per_text = logit_scale * text_features @ all_image_features.T
    if logit_bias is not None:
        logits_per_image = logits_per_image + logit_bias
        logits_per_text = logits_per_text + logit_bias
    labels = torch.arange(image_features.shape[0], device=image_features.device) + label_offset
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def sigmoid_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
    *,
    label_offset: int = 0,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (open_clip's ``SigLipLoss``, transformers'
    ``SiglipModel(return_loss=True)``).

    Every (image, caption) pair is an independent binary problem on the logit
    ``logit_scale * <image_i, text_j> + logit_bias``: positive for an image and its own caption,
    negative for every other pair.

    Args:
        image_features: ``(n, D)`` this process's images.
        text_features: ``(N, D)`` every caption they are scored against (all processes' true
            captions, gathered; ``N = n`` on one process).
        logit_scale, logit_bias: scalars; the bias may be None.
        label_offset: row of ``text_features`` holding image 0's caption; image ``i``'s is row
            ``label_offset + i``.

    Returns:
        Scalar ``-sum_ij log sigmoid(z_ij * logit_ij) / n`` with ``z_ij = +1`` for an image's own
        caption and ``-1`` otherwise: the sum over pairs divided by the number of images, so the
        processes' losses average to the loss of one process on the whole batch.
    """
    logits = logit_scale * image_features @ text_features.T
    if logit_bias is not None:
        logits = logits + logit_bias
    rows = torch.arange(image_features.shape[0], device=logits.device)
    own = torch.arange(text_features.shape[0], device=logits.device) == (rows + label_offset).unsqueeze(1)
    signs = torch.where(own, 1.0, -1.0).to(logits.dtype)
    return -F.logsigmoid(signs * logits).sum() / image_features.shape[0]


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    softcap: float | None = None,
    class_weight: torch.Tensor | None = None,
    with_lse: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-position cross-entropy and log-sum-exp of the logits ``hidden @ weight.T + bias``,
    materialised, soft-capped to ``softcap * tanh(logits / softcap)`` when ``softcap`` is given
    (Gemma 2, PaliGemma 2).

    The logits come out of the matmul in the inputs' dtype (fp32 accumulation inside it), as a
    model's own LM head computes them, and everything after is float32 (float64 for float64
    inputs).

    Args:
        hidden: ``(N, H)``.
        weight: ``(V, H)``.
        targets: ``(N,)`` int64 class indices or ``ignore_index``.
        bias: ``(V,)`` or None.
        label_smoothing: ``F.cross_entropy``'s: that mass spread uniformly over the ``V`` classes.
        softcap: a positive float, or None for no cap. Every term reads the capped logits.
        class_weight: ``(V,)`` or None, ``F.cross_entropy``'s ``weight``: a position's loss is
            ``(1 - eps) * w[t] * (lse - logit_t) + eps / V * sum_j w_j * (lse - logit_j)``.
        with_lse: compute the logsumexp too (it costs ``(N, V)`` temporaries here, nothing in the
            chunked backend).

    Returns:
        ``(N,)`` float32 (float64) losses, ``F.cross_entropy``'s with ``reduction="none"``, and
        ``(N,)`` the logsumexp of each position's logits (None without ``with_lse``); both 0 at
        ignored positions.
    """
    accumulate = torch.promote_types(hidden.dtype, torch.float32)
    logits = (hidden @ weight.T).to(accumulate)
    if bias is not None:
        logits = logits + bias.to(accumulate)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    losses = F.cross_entropy(
        logits,
        targets,
        weight=None if class_weight is None else class_weight.to(accumulate),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction="none",
    )
    if not with_lse:
        return losses, None
    return losses, torch.where(targets != ignore_index, torch.logsumexp(logits, dim=-1), 0.0)


def reduce_linear_cross_entropy(
    losses: torch.Tensor,
    lse: torch.Tensor | None,
    targets: torch.Tensor,
    ignore_index: int,
    z_loss: float,
    class_weight: torch.Tensor | None,
    reduction: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear cross-entropy and its z-loss term from :func:`linear_cross_entropy`'s
    per-position ``losses`` and ``lse`` (any shape, 0 at ignored positions; ``lse`` may be None
    when ``z_loss`` is 0).

    The z-loss term (PaLM's) is ``z_loss * lse**2`` per counted position, whatever the class
    weights. ``"mean"`` divides the cross-entropy by the summed class weights of the counted
    targets (their number without class weights), as ``F.cross_entropy`` does, and the z-loss term
    by the number of counted positions, as Liger-Kernel does; a zero divisor (nothing counts) is
    taken as 1, so that the loss is then an exact, differentiable 0. ``"sum"`` sums; ``"none"``
    keeps the per-position values.

    Returns:
        The loss (the z-loss term included) and the z-loss term, reduced alike.
    """
    z_term = torch.zeros_like(losses) if lse is None else z_loss * lse.square()
    if reduction == "none":
        return losses + z_term, z_term
    if reduction == "sum":
        return losses.sum() + z_term.sum(), z_term.sum()
    counted = targets != ignore_index
    count = counted.sum().to(losses.dtype)
    if class_weight is None:
        total_weight = count
    else:
        # clamped: an unchecked target outside [0, V) makes its loss NaN, not this gather fail
        classes = targets.clamp(0, class_weight.shape[0] - 1)
        total_weight = torch.where(counted, class_weight.to(losses.dtype)[classes], 0.0).sum()
    mean_z = z_term.sum() / count.clamp(min=1)
    mean_ce = losses.sum() / torch.where(total_weight == 0, 1.0, total_weight)
    return mean_ce + mean_z, mean_z
