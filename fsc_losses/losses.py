"""The losses as ``nn.Module``s, thin holders of hyper-parameters over ``fsc_losses.functional``:
FSC-CLIP's (``SelectiveCalibratedReg``, ``LocalHNLoss``, ``GlobalHNLoss``, ``FSCLoss``) and the
discriminative LVLM fine-tuning's (``LinearCrossEntropy``, ``ContrastiveNTPLoss``; docs/lvlm.md).

Shapes: ``B`` images, ``G = 1 + K`` captions per image (column 0 the true caption), ``T`` text
positions, ``P`` patches, ``D`` embedding width. Text inputs may be grouped ``(B, G, ...)`` or flat
``(B*G, ...)`` as trainers produce them (the ``B`` true captions, then ``K`` blocks of ``B``
negatives, type by type).

Every module takes ``check_inputs``: value checks (today: a present caption whose mask counts no
position) synchronise with the device, so they run once per call, are skipped under
``torch.compile`` and CUDA-graph capture, and are off with ``check_inputs=False``; unchecked, such a
caption is left out of the local HN contrast as a missing one (docs/losses.md). Shape, dtype and
device checks always run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import checks, functional, reference

Criterion = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class SelectiveCalibratedReg(nn.Module):
    """Selective Calibrated Regularization: the HN contrast with focal weighting and label
    smoothing (SPEC section 3).

    ``focal_gamma=0, label_smoothing=0`` is plain cross-entropy with the true caption as target.

    Args:
        focal_gamma: ``gamma >= 0`` of the focal factor ``(1 - p)^gamma``; paper default 2.0.
        label_smoothing: ``epsilon`` in ``[0, 1)`` shared over the row's present captions; paper
            default 0.02.
        check_inputs: accepted for a uniform interface; this criterion has no value checks.

    Shape:
        forward(logits ``(B, G)``, neg_valid ``(B, G-1)`` bool or None) -> scalar.
    """

    def __init__(
        self, focal_gamma: float = 2.0, label_smoothing: float | None = 0.02, check_inputs: bool = True
    ):
        super().__init__()
        checks.check_criterion_params(focal_gamma, label_smoothing)
        self.focal_gamma = float(focal_gamma)
        self.label_smoothing = float(label_smoothing or 0.0)
        self.check_inputs = check_inputs

    def forward(self, logits: torch.Tensor, neg_valid: torch.Tensor | None = None) -> torch.Tensor:
        return functional.hn_contrast(logits, neg_valid, self.focal_gamma, self.label_smoothing)

    def extra_repr(self) -> str:
        return f"focal_gamma={self.focal_gamma}, label_smoothing={self.label_smoothing}"


def _criterion_or_default(criterion: Criterion | None) -> Criterion:
    if criterion is None:
        return SelectiveCalibratedReg()
    if not callable(criterion):
        raise TypeError(f"criterion must be callable(logits, neg_valid), got {type(criterion).__name__}")
    return criterion


class LocalHNLoss(nn.Module):
    """Local hard-negative loss (SPEC sections 2 and 4).

    Each caption token pools the image patches it is most similar to; per-token cosine scores
    are aggregated by logsumexp into one local score per (image, caption), and the true caption is
    contrasted with its hard negatives by ``criterion`` (SCR by default). With an SCR criterion the
    whole term runs fused in the Triton kernels on CUDA.

    Args:
        normalizer: ``"minmax"`` (default) or ``"softmax"`` weights over patches.
        sparsify: with ``minmax``, drop patches whose min-max score is below ``1/P``.
        criterion: ``callable(logits (B, G), neg_valid) -> scalar``; default
            ``SelectiveCalibratedReg()``. It receives ``neg_valid`` as a ``(B, G-1)`` bool tensor:
            the present negatives whose caption counts a position
            (:func:`~fsc_losses.functional.contrasted_negatives`).
        backend: ``"auto"`` (kernels on CUDA when Triton imports, compute capability 8.0 or
            newer), ``"triton"`` or ``"reference"``.
        check_inputs: run the value checks (see the module docstring).

    Shape:
        forward(image_tokens ``(B, P, D)``, text_tokens ``(B, G, T, D)`` or ``(B*G, T, D)``,
        text_mask ``(B, G, T)`` or ``(B*G, T)`` bool/int, logit_scale scalar tensor,
        neg_valid ``(B, G-1)`` bool or None) -> scalar.
    """

    def __init__(
        self,
        normalizer: str = "minmax",
        sparsify: bool = False,
        criterion: Criterion | None = None,
        backend: str = "auto",
        check_inputs: bool = True,
    ):
        super().__init__()
        checks.check_normalizer(normalizer, sparsify)
        functional.check_backend(backend)
        self.normalizer = normalizer
        self.sparsify = sparsify
        self.criterion = _criterion_or_default(criterion)
        self.backend = backend
        self.check_inputs = check_inputs

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        logit_scale: torch.Tensor | float,
        neg_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if isinstance(self.criterion, SelectiveCalibratedReg):
            return functional.local_hn_loss(
                image_tokens,
                text_tokens,
                text_mask,
                logit_scale,
                neg_valid,
                normalizer=self.normalizer,
                sparsify=self.sparsify,
                focal_gamma=self.criterion.focal_gamma,
                label_smoothing=self.criterion.label_smoothing,
                backend=self.backend,
                check_inputs=self.check_inputs,
            )
        scores = functional.local_hn_scores(
            image_tokens,
            text_tokens,
            text_mask,
            logit_scale,
            self.normalizer,
            self.sparsify,
            neg_valid=neg_valid,
            backend=self.backend,
            check_inputs=self.check_inputs,
        )
        # A present caption without a counted position (the value check off) is left out as a
        # missing one, as the SCR path does.
        negatives = functional.contrasted_negatives(text_mask, neg_valid, image_tokens.shape[0])
        return self.criterion(scores, negatives)

    def extra_repr(self) -> str:
        return f"normalizer={self.normalizer!r}, sparsify={self.sparsify}, backend={self.backend!r}"


class GlobalHNLoss(nn.Module):
    """Global hard-negative loss: ``logit_scale * <image_features_b, text_features_bg>`` for the
    true caption and its hard negatives, contrasted by ``criterion`` (SCR by default).

    Args:
        criterion: ``callable(logits (B, G), neg_valid) -> scalar``; default
            ``SelectiveCalibratedReg()``.
        check_inputs: accepted for a uniform interface; this loss has no value checks.

    Shape:
        forward(image_features ``(B, D)``, text_features ``(B, G, D)`` or ``(B*G, D)``,
        logit_scale scalar tensor, neg_valid ``(B, G-1)`` bool or None) -> scalar.
    """

    def __init__(self, criterion: Criterion | None = None, check_inputs: bool = True):
        super().__init__()
        self.criterion = _criterion_or_default(criterion)
        self.check_inputs = check_inputs

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        neg_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        image_features, text_features, scale, neg_valid = functional.prepare_global_inputs(
            image_features, text_features, logit_scale, neg_valid
        )
        logits = reference.global_hn_logits(image_features, text_features, scale)
        return self.criterion(logits, neg_valid)


class FSCLoss(nn.Module):
    """The FSC-CLIP objective, a drop-in for open_clip's ``ClipLoss`` (or ``SigLipLoss``):
    ``L = L_clip + global_weight * L_global_HN + local_weight * L_local_HN``.

    The CLIP term is the in-batch contrastive term over the true captions
    (``functional.contrastive_loss``, gathered across processes as open_clip does): CLIP's
    symmetric InfoNCE, or SigLIP's pairwise sigmoid loss. The HN terms contrast each image's true
    caption with its own hard negatives under Selective Calibrated Regularization and stay on
    their rank.

    Args:
        global_weight, local_weight: ``lambda_g``, ``lambda_l`` (paper: 0.5, 0.2).
        normalizer, sparsify: the local pooling (see :class:`LocalHNLoss`).
        focal_gamma, label_smoothing: SCR's parameters for both HN terms (paper: 2.0, 0.02).
        contrastive: the CLIP term, ``"softmax"`` (CLIP's InfoNCE, default) or ``"sigmoid"``
            (SigLIP's pairwise loss with ``logit_bias``: keep a SigLIP model's own objective).
        local_loss, gather_with_grad, rank, world_size: open_clip's distributed options for the
            CLIP term. ``gather_with_grad`` unset (None) is open_clip's default for the kind:
            False for ``"softmax"``; ``"sigmoid"`` always gathers with gradient and refuses an
            explicit False (see ``functional.contrastive_loss``).
        backend: for the local term, ``"auto"``, ``"triton"`` or ``"reference"``.
        check_inputs: run the value checks (see the module docstring).

    Shape:
        forward(image_features ``(B, D)``, text_features ``(B, G, D)`` or ``(B*G, D)``,
        logit_scale scalar, image_tokens ``(B, P, D)``, text_tokens ``(B, G, T, D)`` or
        ``(B*G, T, D)``, text_mask ``(B, G, T)`` or ``(B*G, T)``, neg_valid ``(B, G-1)``,
        logit_bias scalar) -> scalar, or with ``output_dict=True`` a dict with
        ``contrastive_loss``, ``global_hn_loss`` and (when tokens are given and
        ``local_weight != 0``) ``local_hn_loss``, each already weighted. Extra keyword arguments
        (other model outputs) are ignored.
    """

    def __init__(
        self,
        global_weight: float = 0.5,
        local_weight: float = 0.2,
        normalizer: str = "minmax",
        sparsify: bool = False,
        focal_gamma: float = 2.0,
        label_smoothing: float | None = 0.02,
        contrastive: str = "softmax",
        local_loss: bool = False,
        gather_with_grad: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        backend: str = "auto",
        check_inputs: bool = True,
    ):
        super().__init__()
        checks.check_normalizer(normalizer, sparsify)
        checks.check_criterion_params(focal_gamma, label_smoothing)
        gather_with_grad = checks.resolve_gather_with_grad(contrastive, gather_with_grad)
        functional.check_backend(backend)
        checks.check_distributed(rank, world_size)
        self.global_weight = float(global_weight)
        self.local_weight = float(local_weight)
        self.normalizer = normalizer
        self.sparsify = sparsify
        self.focal_gamma = float(focal_gamma)
        self.label_smoothing = float(label_smoothing or 0.0)
        self.contrastive = contrastive
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.rank = rank
        self.world_size = world_size
        self.backend = backend
        self.check_inputs = check_inputs

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        image_tokens: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        neg_valid: torch.Tensor | None = None,
        logit_bias: torch.Tensor | None = None,
        output_dict: bool = False,
        **kwargs,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        image_features, text_features, scale, neg_valid = functional.prepare_global_inputs(
            image_features, text_features, logit_scale, neg_valid
        )
        local_inputs = self._local_inputs(image_tokens, text_tokens, text_mask, scale, neg_valid)
        if local_inputs is not None:
            checks.require_size("image_tokens", local_inputs.image_tokens, 2, image_features.shape[1], "D")
            checks.require_size("text_tokens", local_inputs.text_tokens, 1, text_features.shape[1], "G")
            max_rows = checks.check_masks_not_empty(local_inputs.text_mask, neg_valid, self.check_inputs)
            local_inputs = local_inputs._replace(max_rows=max_rows)

        losses = {
            "contrastive_loss": functional.contrastive_loss(
                image_features,
                text_features[:, 0],
                scale,
                logit_bias,
                contrastive=self.contrastive,
                local_loss=self.local_loss,
                gather_with_grad=self.gather_with_grad,
                rank=self.rank,
                world_size=self.world_size,
            ),
            "global_hn_loss": self.global_weight
            * reference.hn_contrast_loss(
                reference.global_hn_logits(image_features, text_features, scale),
                neg_valid,
                self.focal_gamma,
                self.label_smoothing,
            ),
        }
        if local_inputs is not None:
            losses["local_hn_loss"] = self.local_weight * functional.local_hn_loss_unchecked(
                local_inputs,
                self.normalizer,
                self.sparsify,
                self.focal_gamma,
                self.label_smoothing,
                self.backend,
            )
        return losses if output_dict else sum(losses.values())

    def _local_inputs(self, image_tokens, text_tokens, text_mask, scale, neg_valid):
        given = {"image_tokens": image_tokens, "text_tokens": text_tokens, "text_mask": text_mask}
        if all(v is None for v in given.values()):
            return None
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"the local HN term needs all of {list(given)}; missing {missing}")
        if self.local_weight == 0:
            return None
        return functional.prepare_local_inputs(image_tokens, text_tokens, text_mask, scale, neg_valid)


class LinearCrossEntropy(nn.Module):
    """Cross-entropy of an LM head's logits ``hidden @ weight.T + bias`` without materialising
    them (:func:`fsc_losses.functional.linear_cross_entropy`, which documents every argument).

    Args:
        ignore_index, label_smoothing, z_loss, softcap, class_weight, reduction, shift,
        return_z_loss, return_lse, backend, chunk_size, check_inputs: as
            :func:`~fsc_losses.functional.linear_cross_entropy`. ``class_weight`` (``(V,)`` or
            None) is a buffer, as ``nn.CrossEntropyLoss``'s ``weight``: ``.to(device)`` moves it.

    Shape:
        forward(hidden ``(..., H)``, weight ``(V, H)``, targets ``(...)`` int, bias ``(V,)`` or
        None) -> float32 scalar, or ``(...)`` with ``reduction="none"``; with ``return_z_loss``
        and/or ``return_lse`` a tuple (loss, then the z-loss term, then the ``(...)`` lse).
    """

    def __init__(
        self,
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
    ):
        super().__init__()
        checks.check_linear_ce_options(
            ignore_index, label_smoothing, z_loss, reduction, backend, chunk_size, softcap
        )
        if class_weight is not None:
            checks.require_tensor("class_weight", class_weight)
            checks.require_float("class_weight", class_weight)
            checks.require_rank("class_weight", class_weight, (1,), "(V,)")
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self.z_loss = float(z_loss)
        self.softcap = softcap
        self.register_buffer("class_weight", None if class_weight is None else class_weight.detach())
        self.reduction = reduction
        self.shift = shift
        self.return_z_loss = return_z_loss
        self.return_lse = return_lse
        self.backend = backend
        self.chunk_size = chunk_size
        self.check_inputs = check_inputs

    def forward(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return functional.linear_cross_entropy(
            hidden,
            weight,
            targets,
            bias,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            softcap=self.softcap,
            class_weight=self.class_weight,
            reduction=self.reduction,
            shift=self.shift,
            return_z_loss=self.return_z_loss,
            return_lse=self.return_lse,
            backend=self.backend,
            chunk_size=self.chunk_size,
            check_inputs=self.check_inputs,
        )

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}, "
            f"z_loss={self.z_loss}, softcap={self.softcap}, "
            f"class_weight={'None' if self.class_weight is None else tuple(self.class_weight.shape)}, "
            f"reduction={self.reduction!r}, shift={self.shift}, return_z_loss={self.return_z_loss}, "
            f"return_lse={self.return_lse}, backend={self.backend!r}, chunk_size={self.chunk_size}"
        )


class ContrastiveNTPLoss(nn.Module):
    """Discriminative fine-tuning of an LVLM (VladVA, Ouali et al., CVPR 2025):
    ``L = contrastive + ntp_weight * NTP``.

    The contrastive term is ``FSCLoss``'s CLIP term (:func:`fsc_losses.functional.contrastive_loss`,
    gathered across processes) on the last-token embeddings of the images and of their short
    captions. The NTP term is next-token prediction on the long captions, from the LM head's input
    hidden states and weight, without materialising the logits
    (:func:`fsc_losses.functional.ntp_loss`: ``shift=True``, mean over the counted positions of all
    processes).

    Args:
        ntp_weight: weight of the NTP term (our default 1.0; the paper does not publish its own).
        contrastive: kind of contrastive term, one of ``fsc_losses.checks.CONTRASTIVE``.
        normalize: L2-normalise the embeddings first (LVLM hidden states are not normalised).
            Embeddings enter the contrastive term in float32 either way.
        ignore_index, label_smoothing: of the NTP term, as ``F.cross_entropy``.
        softcap: the NTP term's logit soft-capping (the LM's ``final_logit_softcapping``), or None.
        local_loss, gather_with_grad, rank, world_size: open_clip's distributed options for the
            contrastive term, as :class:`FSCLoss`'s; ``world_size`` also makes the NTP mean
            global.
        backend, chunk_size: of the NTP term's linear cross-entropy (``"auto"``, ``"chunked"``,
            ``"reference"``).
        check_inputs: the NTP term's value check (labels in range: one host synchronisation).

    Shape:
        forward(image_embeddings ``(B, E)``, text_embeddings ``(B, E)``, logit_scale scalar
        (already exponentiated), hidden_states ``(B', L, H)``, lm_head_weight ``(V, H)``, labels
        ``(B', L)``, logit_bias scalar, lm_head_bias ``(V,)``) -> scalar, or with
        ``output_dict=True`` a dict with ``contrastive_loss`` and (when ``hidden_states`` is
        given) ``ntp_loss``, weighted.
    """

    def __init__(
        self,
        ntp_weight: float = 1.0,
        contrastive: str = "softmax",
        normalize: bool = True,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        softcap: float | None = None,
        local_loss: bool = False,
        gather_with_grad: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        backend: str = "auto",
        chunk_size: int | None = None,
        check_inputs: bool = True,
    ):
        super().__init__()
        gather_with_grad = checks.resolve_gather_with_grad(contrastive, gather_with_grad)
        checks.check_linear_ce_options(
            ignore_index, label_smoothing, 0.0, "mean", backend, chunk_size, softcap
        )
        checks.check_distributed(rank, world_size)
        self.ntp_weight = float(ntp_weight)
        self.contrastive = contrastive
        self.normalize = normalize
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self.softcap = softcap
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.rank = rank
        self.world_size = world_size
        self.backend = backend
        self.chunk_size = chunk_size
        self.check_inputs = check_inputs

    def forward(
        self,
        image_embeddings: torch.Tensor,
        text_embeddings: torch.Tensor,
        logit_scale: torch.Tensor | float,
        hidden_states: torch.Tensor | None = None,
        lm_head_weight: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logit_bias: torch.Tensor | float | None = None,
        lm_head_bias: torch.Tensor | None = None,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        images, texts = functional.prepare_embeddings(image_embeddings, text_embeddings, self.normalize)
        losses = {
            "contrastive_loss": functional.contrastive_loss(
                images,
                texts,
                logit_scale,
                logit_bias,
                contrastive=self.contrastive,
                local_loss=self.local_loss,
                gather_with_grad=self.gather_with_grad,
                rank=self.rank,
                world_size=self.world_size,
            )
        }
        ntp_inputs = {"hidden_states": hidden_states, "lm_head_weight": lm_head_weight, "labels": labels}
        missing = [name for name, value in ntp_inputs.items() if value is None]
        if len(missing) < len(ntp_inputs):
            if missing:
                raise ValueError(f"the NTP term needs all of {list(ntp_inputs)}; missing {missing}")
            losses["ntp_loss"] = self.ntp_weight * functional.ntp_loss(
                hidden_states,
                lm_head_weight,
                labels,
                lm_head_bias,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                softcap=self.softcap,
                world_size=self.world_size,
                backend=self.backend,
                chunk_size=self.chunk_size,
                check_inputs=self.check_inputs,
            )
        return losses if output_dict else sum(losses.values())

    def extra_repr(self) -> str:
        return (
            f"ntp_weight={self.ntp_weight}, contrastive={self.contrastive!r}, normalize={self.normalize}, "
            f"world_size={self.world_size}, backend={self.backend!r}"
        )
