"""Functional API: argument checks, then dispatch to the reference, the Triton kernels or (for
the linear cross-entropy) the chunked implementation.

Every function validates its arguments before computing (``fsc_losses.checks``) and accepts text
inputs grouped ``(B, G, ...)`` or flat ``(B*G, ...)`` (true captions first, then ``K`` blocks of
``B`` negatives). Shapes: ``B`` images, ``G = 1 + K`` captions per image, ``T`` text positions,
``P`` patches, ``D`` embedding width.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import checks, chunked, reference
from .distributed import gather_features, sum_across_ranks
from .layout import group_captions

BACKENDS = ("auto", "triton", "reference")

_warned: set[str] = set()


class LocalInputs(NamedTuple):
    image_tokens: torch.Tensor  # (B, P, D)
    text_tokens: torch.Tensor  # (B, G, T, D)
    text_mask: torch.Tensor  # (B, G, T) bool
    logit_scale: torch.Tensor  # ()
    neg_valid: torch.Tensor | None  # (B, G-1) bool
    max_rows: int | None = None  # the most positions an image counts, when the value check read it


def _grouped(name: str, t: torch.Tensor, grouped_rank: int, batch: int, layout: str) -> torch.Tensor:
    checks.require_rank(name, t, (grouped_rank - 1, grouped_rank), layout)
    if t.dim() == grouped_rank:
        checks.require_size(name, t, 0, batch, "B")
        return t
    if t.shape[0] % batch != 0:
        raise ValueError(f"{name} is flat with {t.shape[0]} rows, which is not a multiple of B = {batch}")
    return group_captions(t, batch)


def prepare_local_inputs(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor | float,
    neg_valid: torch.Tensor | None,
) -> LocalInputs:
    """Shape, dtype and device checks of the local HN inputs; groups flat text inputs."""
    checks.require_tensor("image_tokens", image_tokens)
    checks.require_tensor("text_tokens", text_tokens)
    checks.require_tensor("text_mask", text_mask)
    checks.require_float("image_tokens", image_tokens)
    checks.require_float("text_tokens", text_tokens)
    checks.require_mask("text_mask", text_mask)
    checks.require_rank("image_tokens", image_tokens, (3,), "(B, P, D)")
    batch, _, dim = image_tokens.shape
    text_tokens = _grouped("text_tokens", text_tokens, 4, batch, "(B, G, T, D) or (B*G, T, D)")
    text_mask = _grouped("text_mask", text_mask, 3, batch, "(B, G, T) or (B*G, T)")
    groups, length = text_tokens.shape[1], text_tokens.shape[2]
    checks.require_size("text_tokens", text_tokens, 3, dim, "D")
    checks.require_size("text_mask", text_mask, 1, groups, "G")
    checks.require_size("text_mask", text_mask, 2, length, "T")
    checks.require_same_dtype(
        "run the model under one autocast, or cast one of them",
        image_tokens=image_tokens,
        text_tokens=text_tokens,
    )
    checks.check_neg_valid(neg_valid, batch, groups)
    scale = checks.as_scale("logit_scale", logit_scale, image_tokens)
    checks.require_same_device(
        image_tokens=image_tokens,
        text_tokens=text_tokens,
        text_mask=text_mask,
        logit_scale=scale,
        neg_valid=neg_valid,
    )
    return LocalInputs(
        image_tokens,
        text_tokens,
        text_mask.bool(),
        scale,
        None if neg_valid is None else neg_valid.bool(),
    )


def _load_kernels() -> ModuleType | None:
    """The kernel module, or None where Triton is not installed (a broken kernel module raises)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return None
    from .kernels import local_hn

    return local_hn


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=4)


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def select_kernels(backend: str, inputs: LocalInputs) -> ModuleType | None:
    """The kernel module to run ``inputs`` on, or None for the reference.

    ``auto`` takes the kernels for CUDA tensors when Triton imports; ``triton`` insists (on the
    CPU only under ``TRITON_INTERPRET=1``). Inputs the kernels do not support fall back to the
    reference with one warning; under ``triton``, a device the kernels cannot run on (a compute
    capability below 8.0, or no tile size that fits its shared memory) raises a ValueError naming
    it instead.
    """
    check_backend(backend)
    if backend == "reference":
        return None
    on_cuda = inputs.image_tokens.is_cuda
    if not on_cuda:
        if backend == "auto":
            return None
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"backend='triton' needs CUDA tensors, got tensors on {inputs.image_tokens.device}; "
                "set TRITON_INTERPRET=1 before importing fsc_losses to run the kernels on the CPU"
            )
    kernels = _load_kernels()
    if kernels is None:
        if backend == "triton":
            raise ImportError("backend='triton' needs the triton package, which does not import")
        return None
    reason = kernels.unsupported_reason(inputs.image_tokens, inputs.text_tokens)
    if reason is None:
        return kernels
    if backend == "triton" and reason == kernels.device_reason(inputs.image_tokens, inputs.text_tokens):
        # The only obstacle is the device (too old, or too little shared memory), and launching
        # would fail or crawl: say why instead. Other reasons fall back like under auto.
        raise ValueError(f"backend='triton' cannot run on {inputs.image_tokens.device}: {reason}")
    _warn_once(f"fsc_losses: the Triton kernels do not support {reason}; using the reference")
    return None


def local_hn_scores(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor | float,
    normalizer: str = "minmax",
    sparsify: bool = False,
    *,
    neg_valid: torch.Tensor | None = None,
    backend: str = "auto",
    check_inputs: bool = True,
) -> torch.Tensor:
    """Local score of every (image, own caption) pair (SPEC section 2).

    Each caption position pools the image's patches it is most similar to (``minmax`` or
    ``softmax`` weights over the token-patch dot products, which get no gradient), is scored by
    ``logit_scale`` times its cosine with the pooled patch, and the counted positions are
    aggregated by logsumexp.

    Args:
        image_tokens: ``(B, P, D)`` projected patch tokens, not normalised.
        text_tokens: ``(B, G, T, D)`` or flat ``(B*G, T, D)`` projected text tokens.
        text_mask: ``(B, G, T)`` or ``(B*G, T)`` bool/int, positions that count.
        logit_scale: scalar tensor, already exponentiated.
        normalizer: ``"minmax"`` (default) or ``"softmax"``.
        sparsify: with ``minmax``, drop patches whose min-max score is below ``1/P``.
        neg_valid: ``(B, G-1)`` bool, optional: a missing negative's mask may be empty (its score
            is then ``-inf``); every other caption must count a position (the value check).
        backend: ``"auto"``, ``"triton"`` or ``"reference"``.
        check_inputs: run the value check (empty masks), which synchronises with the device.
            Without it, a present caption that counts no position scores ``-inf`` too.

    Returns:
        ``(B, G)`` local scores in the tokens' dtype.
    """
    inputs = prepare_local_inputs(image_tokens, text_tokens, text_mask, logit_scale, neg_valid)
    checks.check_normalizer(normalizer, sparsify)
    max_rows = checks.check_masks_not_empty(inputs.text_mask, inputs.neg_valid, check_inputs)
    kernels = select_kernels(backend, inputs)
    if kernels is None:
        return reference.local_hn_scores(*inputs[:4], normalizer, sparsify)
    return kernels.local_hn_scores(*inputs[:4], normalizer, sparsify, max_rows=max_rows)


def local_hn_loss(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor | float,
    neg_valid: torch.Tensor | None = None,
    *,
    normalizer: str = "minmax",
    sparsify: bool = False,
    focal_gamma: float = 2.0,
    label_smoothing: float | None = 0.02,
    backend: str = "auto",
    check_inputs: bool = True,
) -> torch.Tensor:
    """Local HN loss: the local scores (:func:`local_hn_scores`) contrasted by
    :func:`hn_contrast` (focal weighting and label smoothing; SCR by default).

    Arguments as :func:`local_hn_scores` and :func:`hn_contrast`. Returns a scalar. With the value
    check off (``check_inputs=False``, ``torch.compile``, CUDA-graph capture), a present negative
    that counts no position acts as a missing one, and an image whose true caption counts none
    drops out of the mean (:func:`contrasted_negatives`), with either backend.
    """
    inputs = prepare_local_inputs(image_tokens, text_tokens, text_mask, logit_scale, neg_valid)
    checks.check_normalizer(normalizer, sparsify)
    checks.check_criterion_params(focal_gamma, label_smoothing)
    max_rows = checks.check_masks_not_empty(inputs.text_mask, inputs.neg_valid, check_inputs)
    inputs = inputs._replace(max_rows=max_rows)
    return local_hn_loss_unchecked(inputs, normalizer, sparsify, focal_gamma, label_smoothing, backend)


def local_hn_loss_unchecked(
    inputs: LocalInputs,
    normalizer: str,
    sparsify: bool,
    focal_gamma: float,
    label_smoothing: float | None,
    backend: str,
) -> torch.Tensor:
    """:func:`local_hn_loss` on inputs that already passed every check."""
    eps = float(label_smoothing or 0.0)
    kernels = select_kernels(backend, inputs)
    if kernels is not None:
        return kernels.local_hn_loss(
            *inputs[:4], inputs.neg_valid, normalizer, sparsify, float(focal_gamma), eps, inputs.max_rows
        )
    return reference.local_hn_loss(
        *inputs[:4], inputs.neg_valid, normalizer, sparsify, float(focal_gamma), eps
    )


def contrasted_negatives(text_mask: torch.Tensor, neg_valid: torch.Tensor | None, batch: int) -> torch.Tensor:
    """``(B, G-1)`` bool, the negatives the local HN contrast takes
    (``reference.contrasted_negatives``), from a grouped ``(B, G, T)`` or flat ``(B*G, T)`` mask of
    ``batch`` images."""
    mask = text_mask if text_mask.dim() == 3 else group_captions(text_mask, batch)
    return reference.contrasted_negatives(mask, neg_valid)


def prepare_contrast_inputs(
    logits: torch.Tensor, neg_valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    checks.require_tensor("logits", logits)
    checks.require_float("logits", logits)
    checks.require_rank("logits", logits, (2,), "(B, G)")
    if logits.shape[1] < 1:
        raise ValueError(f"logits must have at least the true caption's column, got {tuple(logits.shape)}")
    checks.check_neg_valid(neg_valid, logits.shape[0], logits.shape[1])
    checks.require_same_device(logits=logits, neg_valid=neg_valid)
    return logits, None if neg_valid is None else neg_valid.bool()


def hn_contrast(
    logits: torch.Tensor,
    neg_valid: torch.Tensor | None = None,
    focal_gamma: float = 2.0,
    label_smoothing: float | None = 0.02,
) -> torch.Tensor:
    """The ``(1+K)``-way HN contrast with focal weighting and label smoothing (SPEC section 3).

    Args:
        logits: ``(B, G)``, column 0 the true caption.
        neg_valid: ``(B, G-1)`` bool, which negatives exist; ``None`` means all. Missing ones are
            left out of the softmax; rows without any negative are skipped.
        focal_gamma: ``>= 0``; 0 is plain cross-entropy.
        label_smoothing: in ``[0, 1)`` (``None`` = 0), shared over the row's present captions.

    Returns:
        Scalar mean over the rows with a negative (an exact, differentiable 0 if there is none).
    """
    logits, neg_valid = prepare_contrast_inputs(logits, neg_valid)
    checks.check_criterion_params(focal_gamma, label_smoothing)
    return reference.hn_contrast_loss(logits, neg_valid, float(focal_gamma), float(label_smoothing or 0.0))


_FEATURES_DTYPE_HINT = "encode both under one autocast, or cast one of them"


def prepare_global_inputs(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    neg_valid: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Checks of the global inputs; groups flat ``(B*G, D)`` text features."""
    checks.require_tensor("image_features", image_features)
    checks.require_tensor("text_features", text_features)
    checks.require_float("image_features", image_features)
    checks.require_float("text_features", text_features)
    checks.require_rank("image_features", image_features, (2,), "(B, D)")
    checks.require_rows("image_features", image_features, "image")
    batch, dim = image_features.shape
    text_features = _grouped("text_features", text_features, 3, batch, "(B, G, D) or (B*G, D)")
    checks.require_size("text_features", text_features, 2, dim, "D")
    checks.require_same_dtype(
        _FEATURES_DTYPE_HINT, image_features=image_features, text_features=text_features
    )
    checks.check_neg_valid(neg_valid, batch, text_features.shape[1])
    scale = checks.as_scale("logit_scale", logit_scale, image_features)
    checks.require_same_device(
        image_features=image_features,
        text_features=text_features,
        logit_scale=scale,
        neg_valid=neg_valid,
    )
    return image_features, text_features, scale, None if neg_valid is None else neg_valid.bool()


def global_hn_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    neg_valid: torch.Tensor | None = None,
    *,
    focal_gamma: float = 2.0,
    label_smoothing: float | None = 0.02,
) -> torch.Tensor:
    """Global HN loss: ``logit_scale * <image_features_b, text_features_bg>`` contrasted by
    :func:`hn_contrast`.

    Args:
        image_features: ``(B, D)`` L2-normalised.
        text_features: ``(B, G, D)`` or flat ``(B*G, D)``, L2-normalised.
        logit_scale: scalar tensor, already exponentiated.
        neg_valid: ``(B, G-1)`` bool, optional.

    Returns:
        Scalar.
    """
    image_features, text_features, scale, neg_valid = prepare_global_inputs(
        image_features, text_features, logit_scale, neg_valid
    )
    checks.check_criterion_params(focal_gamma, label_smoothing)
    logits = reference.global_hn_logits(image_features, text_features, scale)
    return reference.hn_contrast_loss(logits, neg_valid, float(focal_gamma), float(label_smoothing or 0.0))


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    *,
    contrastive: str = "softmax",
    local_loss: bool = False,
    gather_with_grad: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """The in-batch contrastive term between images and their true captions, gathered across
    processes. The one place this term is written: ``FSCLoss`` and every other loss with a CLIP
    term call it.

    Args:
        image_features: ``(n, D)`` this process's images, L2-normalised.
        text_features: ``(n, D)`` their true captions, L2-normalised.
        logit_scale: scalar, already exponentiated.
        logit_bias: scalar or None, added to every logit.
        contrastive: the kind of term, one of ``checks.CONTRASTIVE``:

            * ``"softmax"``: CLIP's symmetric InfoNCE, gathered as open_clip's ``ClipLoss``
              (``local_loss``, ``gather_with_grad``; unset, ``gather_with_grad`` is False, as
              there).
            * ``"sigmoid"``: SigLIP's pairwise sigmoid loss over this process's images and every
              process's captions, summed over the pairs and divided by ``n`` (open_clip's
              ``SigLipLoss``). Only the captions are gathered, always with gradient, as
              open_clip's exchange: a caption is a negative for every process's images, and
              those processes' gradients must reach it, so that the processes' gradients,
              averaged by DDP, are those of one process on the whole batch
              (docs/integration.md). An explicit ``gather_with_grad=False`` is refused;
              ``local_loss`` has no effect (the term is always computed for the local images).
        local_loss, gather_with_grad, rank, world_size: open_clip's distributed options.

    Returns:
        Scalar: ``(CE(image -> texts) + CE(text -> images)) / 2`` for ``"softmax"``,
        ``-sum_ij log sigmoid(+-logit_ij) / n`` for ``"sigmoid"``.
    """
    checks.require_tensor("image_features", image_features)
    checks.require_tensor("text_features", text_features)
    checks.require_float("image_features", image_features)
    checks.require_float("text_features", text_features)
    checks.require_rank("image_features", image_features, (2,), "(n, D)")
    checks.require_rank("text_features", text_features, (2,), "(n, D)")
    checks.require_rows("image_features", image_features, "image")
    checks.require_size("text_features", text_features, 0, image_features.shape[0], "n")
    checks.require_size("text_features", text_features, 1, image_features.shape[1], "D")
    checks.require_same_dtype(
        _FEATURES_DTYPE_HINT, image_features=image_features, text_features=text_features
    )
    scale = checks.as_scale("logit_scale", logit_scale, image_features)
    if logit_bias is not None:
        logit_bias = checks.as_scale("logit_bias", logit_bias, image_features)
    gather_with_grad = checks.resolve_gather_with_grad(contrastive, gather_with_grad)
    checks.check_distributed(rank, world_size)
    checks.require_same_device(
        image_features=image_features, text_features=text_features, logit_scale=scale, logit_bias=logit_bias
    )
    if contrastive == "sigmoid":
        # Each pair's term stands alone, so every process scores its own images against all
        # captions and the per-process sums add up to the whole batch's: no image gather. The
        # captions' gather carries gradient (gather_with_grad is True here): a caption's other
        # terms are on the other processes.
        all_texts = gather_features(
            text_features, local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size
        )
        return reference.sigmoid_loss(
            image_features, all_texts, scale, logit_bias, label_offset=rank * image_features.shape[0]
        )
    gather = dict(local_loss=local_loss, gather_with_grad=gather_with_grad, rank=rank, world_size=world_size)
    all_images = gather_features(image_features, **gather)
    all_texts = gather_features(text_features, **gather)
    if local_loss:
        return reference.clip_loss(
            image_features,
            text_features,
            scale,
            logit_bias,
            all_image_features=all_images,
            all_text_features=all_texts,
            label_offset=rank * image_features.shape[0],
        )
    return reference.clip_loss(all_images, all_texts, scale, logit_bias)


def _shift_targets(targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``targets (..., L)`` moved one position left, ``ignore_index`` last: position ``t`` then
    holds the target ``t`` predicts, so ``hidden`` is used as it is, without a shifted copy."""
    following = targets[..., 1:]
    last = torch.full_like(targets[..., :1], ignore_index)
    return torch.cat([following, last], dim=-1)


def _autocast_inputs(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Under autocast, the tensors in the dtype the LM head's matmul would run in."""
    device_type = tensors[0].device.type
    if not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(None if t is None else t.to(dtype) for t in tensors)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    class_weight: torch.Tensor | None = None,
    reduction: str = "mean",
    shift: bool = False,
    return_z_loss: bool = False,
    return_lse: bool = False,
    backend: str = "auto",
    chunk_size: int | None = None,
    check_inputs: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Cross-entropy of the logits ``hidden @ weight.T + bias`` (an LM head) against ``targets``,
    by default without ever holding the ``(N, V)`` logits (docs/lvlm.md).

    The per-position loss is ``F.cross_entropy``'s for those logits, with the same
    ``label_smoothing`` and class weights, plus ``z_loss * logsumexp(logits)**2``; with ``softcap``
    every term reads the soft-capped logits ``softcap * tanh(logits / softcap)`` instead. The
    logits come out of the matmul in the inputs' dtype (float32 accumulation inside it) and
    everything after, the cap included, is float32 (float64 for float64 inputs); gradients are
    returned in the inputs' dtype. Under autocast the inputs are first cast to the autocast dtype,
    as the model's own LM head would be.

    Args:
        hidden: ``(..., H)`` hidden states, float32, bfloat16 or float16, any strides (a layout
            ``reshape`` cannot flatten is copied once).
        weight: ``(V, H)`` the LM head's weight, same dtype and device.
        targets: ``(...)`` integer class indices, ``ignore_index`` where nothing is predicted.
        bias: ``(V,)`` or None.
        ignore_index: positions with this target count for nothing and get zero gradient.
        label_smoothing: in ``[0, 1]``, as ``F.cross_entropy``.
        z_loss: ``>= 0``, coefficient of ``logsumexp(logits)**2`` (PaLM's z-loss), added at each
            counted position whatever its class weight.
        softcap: ``> 0``, or None for no cap: the logit soft-capping of Gemma 2 and PaliGemma 2
            (their config's ``final_logit_softcapping``), forward and backward.
        class_weight: ``(V,)`` float or None: ``F.cross_entropy``'s ``weight`` (named so because
            ``weight`` is the LM head's; Liger's ``ce_weight``), a constant (it gets no
            gradient). ``"mean"`` then divides the cross-entropy by the summed weights of the
            counted targets, as ``F.cross_entropy`` does.
        reduction: ``"mean"``: the cross-entropy over the counted positions (weighted as above)
            plus the z-loss term's mean over them; an exact, differentiable 0 when none counts
            (``F.cross_entropy`` gives NaN there). ``"sum"``, or ``"none"``: the ``(...)``
            losses, 0 at ignored positions.
        shift: the causal-LM convention: ``hidden (..., L, H)`` and ``targets (..., L)``, and
            position ``t`` predicts ``targets[..., t + 1]``; the last position predicts nothing
            (its ``"none"`` loss and its lse are 0, and the ``(..., L)`` shape is kept).
            ``hidden`` is not copied.
        return_z_loss: also return the z-loss term, reduced as the loss (it is included in the
            loss; differentiable, for logging or a loss of your own).
        return_lse: also return the ``(...)`` logsumexp of each position's logits (after the cap),
            0 at ignored positions; differentiable.
        backend: ``"chunked"`` (:mod:`fsc_losses.chunked`: extra memory a few ``(N, chunk)``
            blocks), ``"reference"`` (materialises the logits, ``F.cross_entropy``) or
            ``"auto"`` (today ``"chunked"``).
        chunk_size: vocabulary entries per block of the chunked backend; default from a memory
            budget, :func:`fsc_losses.chunked.default_chunk_size`.
        check_inputs: check that every target is in ``[0, V)`` or ``ignore_index``: one host
            synchronisation per call, skipped under ``torch.compile`` and CUDA-graph capture.
            Unchecked, the chunked backend makes such a position's loss NaN.

    Returns:
        The loss, float32 (float64 for float64 inputs), a scalar or ``(...)`` with
        ``reduction="none"``; with ``return_z_loss`` and/or ``return_lse`` a tuple of the loss,
        then the z-loss term, then the lse, each only if asked (``loss, lse`` as Cut
        Cross-Entropy's ``return_lse``, ``loss, z_loss`` as Liger-Kernel's ``return_z_loss``).
    """
    for name, value in (("hidden", hidden), ("weight", weight), ("targets", targets)):
        checks.require_tensor(name, value)
    checks.require_float("hidden", hidden)
    checks.require_float("weight", weight)
    checks.require_integer("targets", targets)
    if hidden.dim() < (2 if shift else 1):
        layout = "(..., L, H) with shift=True" if shift else "(..., H)"
        raise ValueError(f"hidden must have shape {layout}, got {tuple(hidden.shape)}")
    checks.require_rank("weight", weight, (2,), "(V, H)")
    checks.require_size("weight", weight, 1, hidden.shape[-1], "H")
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(
            f"targets must have hidden's shape without its last dimension, "
            f"{tuple(hidden.shape[:-1])}, got {tuple(targets.shape)}"
        )
    for name, value in (("bias", bias), ("class_weight", class_weight)):
        if value is not None:
            checks.require_tensor(name, value)
            checks.require_float(name, value)
            checks.require_rank(name, value, (1,), "(V,)")
            checks.require_size(name, value, 0, weight.shape[0], "V")
    if class_weight is not None and class_weight.requires_grad:
        raise ValueError(
            "class_weight requires grad, but it is a constant of the loss (as F.cross_entropy's "
            "weight): pass class_weight.detach()"
        )
    checks.require_same_device(
        hidden=hidden, weight=weight, targets=targets, bias=bias, class_weight=class_weight
    )
    checks.check_linear_ce_options(
        ignore_index, label_smoothing, z_loss, reduction, backend, chunk_size, softcap
    )
    if targets.numel() == 0:
        raise ValueError(
            f"the batch is empty: hidden has shape {tuple(hidden.shape)}, no position to predict"
        )
    if weight.shape[0] == 0:
        raise ValueError("weight has no rows: the vocabulary is empty (V = 0)")
    hidden, weight, bias = _autocast_inputs(hidden, weight, bias)
    checks.require_same_dtype("or run under autocast", hidden=hidden, weight=weight, bias=bias)
    checks.check_targets_in_range(targets, weight.shape[0], ignore_index, check_inputs)

    targets = targets.long()
    if shift:
        targets = _shift_targets(targets, ignore_index)
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    options = dict(
        ignore_index=ignore_index, label_smoothing=label_smoothing, softcap=softcap, class_weight=class_weight
    )
    with torch.autocast(hidden.device.type, enabled=False):
        if backend == "reference":
            losses, lse = reference.linear_cross_entropy(
                flat_hidden, weight, flat_targets, bias, **options, with_lse=bool(z_loss) or return_lse
            )
        else:
            losses, lse = chunked.linear_cross_entropy(
                flat_hidden, weight, flat_targets, bias, **options, chunk_size=chunk_size
            )
        losses = losses.view(targets.shape)
        lse = None if lse is None else lse.view(targets.shape)
        loss, z_term = reference.reduce_linear_cross_entropy(
            losses, lse, targets, ignore_index, z_loss, class_weight, reduction
        )
    if not (return_z_loss or return_lse):
        return loss
    return (loss, *([z_term] if return_z_loss else []), *([lse] if return_lse else []))


def ntp_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    lm_head_bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    softcap: float | None = None,
    world_size: int = 1,
    backend: str = "auto",
    chunk_size: int | None = None,
    check_inputs: bool = True,
) -> torch.Tensor:
    """Next-token prediction: :func:`linear_cross_entropy` with ``shift=True``, the mean over the
    counted positions of the whole batch, all processes together.

    With ``world_size > 1`` each process returns ``world_size * (its summed loss) / (positions
    counted on all processes)`` (one all-reduce of the count), so that the average DDP and FSDP
    take over the processes, of the loss and of the gradients, is the mean over the whole batch
    even when the processes count different numbers of positions.

    Args:
        hidden_states: ``(B, L, H)`` (or any ``(..., L, H)``) the hidden states the LM head reads.
        lm_head_weight: ``(V, H)``; lm_head_bias: ``(V,)`` or None.
        labels: ``(B, L)`` token ids, ``ignore_index`` where nothing is predicted (prompt,
            padding); position ``t`` predicts ``labels[..., t + 1]``.
        softcap: the LM's final logit soft-capping (``final_logit_softcapping``), or None.

    Returns:
        Scalar.
    """
    checks.check_distributed(0, world_size)
    options = dict(
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        softcap=softcap,
        shift=True,
        backend=backend,
        chunk_size=chunk_size,
        check_inputs=check_inputs,
    )
    if world_size == 1:
        return linear_cross_entropy(hidden_states, lm_head_weight, labels, lm_head_bias, **options)
    total = linear_cross_entropy(
        hidden_states, lm_head_weight, labels, lm_head_bias, reduction="sum", **options
    )
    counted = sum_across_ranks((labels[..., 1:] != ignore_index).sum(), world_size)
    return world_size * total / counted.clamp(min=1)


def prepare_embeddings(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks of ``(B, E)`` image and text embeddings; returns them in float32 (float64 stays),
    L2-normalised when ``normalize``. Float32 because 16-bit cosines times a large logit scale
    lose the differences the contrastive term is made of, and ``(B, E)`` is small."""
    for name, value in (("image_embeddings", image_embeddings), ("text_embeddings", text_embeddings)):
        checks.require_tensor(name, value)
        checks.require_float(name, value)
        checks.require_rank(name, value, (2,), "(B, E)")
    checks.require_size("text_embeddings", text_embeddings, 0, image_embeddings.shape[0], "B")
    checks.require_size("text_embeddings", text_embeddings, 1, image_embeddings.shape[1], "E")
    prepared = []
    for value in (image_embeddings, text_embeddings):
        value = value.to(torch.promote_types(value.dtype, torch.float32))
        prepared.append(F.normalize(value, dim=-1) if normalize else value)
    return prepared[0], prepared[1]
