"""The local HN kernels' arithmetic in PyTorch, with their 16-bit roundings, for dtypes the CPU
interpreter cannot run (bf16) and shapes it is too slow for.

The kernels compute in fp32 and round to the tokens' dtype only at a few points: the operands of
their tensor-core dots and what they store in that dtype. Everything else here is float64 (fp32's
own rounding is far below a 16-bit ulp), and every rounding point of the kernels is rounded here
too, so the emulation's errors against the float64 reference are the kernels' up to fp32 noise:
``tests/test_kernels.py`` checks that it matches the fp16 kernels under the interpreter within an
ulp or two. The GPU suite's bf16 bounds are set from it (``tests/test_kernel_emulation.py``).

``design`` selects whose roundings: ``"v4"`` (the kernels as they are: fp32 weights ``A`` in
``[0, 1]``, the pooling's dot on their high and low 16-bit parts, the backward on the normalised
weights ``W = A / sum(A)`` rounded once and ``dZ`` built from ``Z``), or ``"v3"`` (weights stored
in the tokens' dtype shifted by their tile's statistic, one 16-bit operand everywhere, ``dZ``
rebuilt from the stored ``dX``), kept to show what the v4 precision change fixed.
"""

from __future__ import annotations

import torch

from fsc_losses import reference

NORM_EPS = 1e-12


def _round(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` rounded to ``dtype`` (round to nearest even) and back to float64."""
    return x.to(dtype).double()


def _split(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The high and low ``dtype`` parts of ``x``: ``x ~ high + low`` to about twice the bits."""
    high = _round(x, dtype)
    return high, _round(x - high, dtype)


def _weights_v4(sim: torch.Tensor, normalizer: str, sparsify: bool) -> torch.Tensor:
    """The fix-up's fp32 weights ``A`` of one image's rows (``sim`` rows x P): min-max scores in
    ``[0, 1]`` (sparsified, uniform for a degenerate row) or ``exp(S - max)``."""
    num_patches = sim.shape[-1]
    hi = sim.amax(-1, keepdim=True)
    if normalizer == "softmax":
        return torch.exp(sim - hi)
    lo = sim.amin(-1, keepdim=True)
    spread = hi - lo
    weights = (sim - lo) / torch.where(spread > 0, spread, 1.0)
    if sparsify:
        weights = torch.where(weights >= 1.0 / num_patches, weights, 0.0)
    return torch.where(spread > 0, weights, 1.0)


def _weights_v3(sim: torch.Tensor, normalizer: str, sparsify: bool, dtype, tile: int) -> torch.Tensor:
    """v3's dot operand ``U``: stored per patch tile shifted by the tile's statistic (in the
    tokens' dtype, fp32 with sparsify), fixed up in fp32 and rounded to the dtype."""
    num_patches = sim.shape[-1]
    store = torch.float32 if sparsify else dtype
    hi = sim.amax(-1, keepdim=True)
    lo = sim.amin(-1, keepdim=True)
    parts = []
    for j in range(0, num_patches, tile):
        s = sim[:, j : j + tile]
        if normalizer == "softmax":
            tile_max = s.amax(-1, keepdim=True)
            parts.append(_round(torch.exp(s - tile_max), store) * torch.exp(tile_max - hi))
        else:
            tile_min = s.amin(-1, keepdim=True)
            parts.append(_round(s - tile_min, store) + (tile_min - lo))
    u = torch.cat(parts, -1)
    if normalizer == "minmax":
        if sparsify:
            u = torch.where(u >= (hi - lo) / num_patches, u, 0.0)
        u = torch.where(hi == lo, 1.0, u)
    return u


def emulate(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: float,
    neg_valid: torch.Tensor | None,
    dtype: torch.dtype,
    upstream: float = 1.0,
    *,
    normalizer: str = "minmax",
    sparsify: bool = False,
    focal_gamma: float = 2.0,
    label_smoothing: float = 0.02,
    design: str = "v4",
    patch_tile: int = 64,
    rows_block: int = 64,
) -> dict[str, torch.Tensor]:
    """The kernels' loss and gradients (of the image tokens, the text tokens and the scale) for
    the loss times ``upstream``, in float64 with the kernels' roundings to ``dtype``.

    Args:
        image_tokens: ``(B, P, D)``, text_tokens ``(B, G, T, D)``: rounded to ``dtype`` first.
        text_mask: ``(B, G, T)`` bool; neg_valid ``(B, G-1)`` bool or None.
        patch_tile: v3's patch tile (its stored weights are shifted per tile).
        rows_block: v4's rows per block: the backward rebuilds ``dZ`` of the rows past the
            first block from the stored ``dX``.

    Returns:
        ``value``, ``image_tokens``, ``text_tokens``, ``logit_scale``: float64 tensors holding
        values of ``dtype`` (fp32 for the scale's gradient).
    """
    image = _round(image_tokens, dtype)
    text = _round(text_tokens, dtype)
    B, P, D = image.shape
    G = text.shape[1]
    negatives = reference.contrasted_negatives(text_mask, neg_valid)
    present = torch.cat([torch.ones(B, 1, dtype=torch.bool), negatives], 1)
    rows_of = text_mask & present.unsqueeze(-1)
    saved = []
    lse = torch.full((B, G), float("-inf"), dtype=torch.float64)
    for b in range(B):
        where = rows_of[b].nonzero()
        x = text[b][where[:, 0], where[:, 1]]  # rows x D
        v = image[b]
        sim = x @ v.T
        if design == "v3":
            u = _weights_v3(sim, normalizer, sparsify, dtype, patch_tile)
            u_sum = u.sum(-1, keepdim=True)
            u_op = _round(u, dtype)
            z = (u_op @ v) / u_sum
        else:
            a = _weights_v4(sim, normalizer, sparsify)
            u_sum = a.sum(-1, keepdim=True)
            high, low = _split(a, dtype)
            z = (high @ v + low @ v) / u_sum
            u_op = a
        zx, zz, xx = (z * x).sum(-1), (z * z).sum(-1), (x * x).sum(-1)
        cos = zx / (zz.sqrt().clamp_min(NORM_EPS) * xx.sqrt().clamp_min(NORM_EPS))
        score = logit_scale * cos
        for g in range(G):
            mine = where[:, 0] == g
            if mine.any():
                lse[b, g] = torch.logsumexp(score[mine], 0)
        saved.append((where, x, v, u_op, u_sum, zx, zz, xx, cos, score))

    logits = lse.clone().requires_grad_()
    loss = reference.hn_contrast_loss(logits, negatives, focal_gamma, label_smoothing)
    (dlse,) = torch.autograd.grad(loss, logits, torch.tensor(float(upstream), dtype=torch.float64))
    d_image = torch.zeros_like(image)
    d_text = torch.zeros_like(text)
    d_scale = torch.zeros((), dtype=torch.float64)
    for b, (where, x, v, u_op, u_sum, zx, zz, xx, cos, score) in enumerate(saved):
        g_row = where[:, 0]
        da = dlse[b, g_row] * torch.exp(score - lse[b, g_row])
        d_scale += (da * cos).sum()
        nz, nx = zz.sqrt(), xx.sqrt()
        coef = da * logit_scale / (nz.clamp_min(NORM_EPS) * nx.clamp_min(NORM_EPS))
        z_proj = torch.where(nz > NORM_EPS, zx / torch.where(zz > 0, zz, 1.0), 0.0)
        x_proj = torch.where(nx > NORM_EPS, zx / torch.where(xx > 0, xx, 1.0), 0.0)
        if design == "v3":
            w = _round(u_op / u_sum, dtype)
            z = (u_op @ v) / u_sum  # the stored weights are the forward's operands
            dx = _round(coef[:, None] * (z - x_proj[:, None] * x), dtype)
            dz = (coef * (1 - z_proj * x_proj))[:, None] * x - z_proj[:, None] * dx
        else:
            w = _round(u_op / u_sum, dtype)
            z = w @ v
            dx = _round(coef[:, None] * (z - x_proj[:, None] * x), dtype)
            dz = coef[:, None] * (x - z_proj[:, None] * z)
            # Rows past the first block: dZ rebuilt from the stored dX (only the first block's
            # stays on chip).
            rebuilt = (coef * (1 - z_proj * x_proj))[:, None] * x - z_proj[:, None] * dx
            dz = torch.where((torch.arange(len(dz)) >= rows_block)[:, None], rebuilt, dz)
        d_image[b] = _round(w.T @ _round(dz, dtype), dtype)
        d_text[b][where[:, 0], where[:, 1]] = dx
    return dict(
        value=_round(loss.detach() * 1.0, dtype),
        image_tokens=d_image,
        text_tokens=d_text,
        logit_scale=_round(d_scale, torch.float32),
    )
