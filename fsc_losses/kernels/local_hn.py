"""Fused Triton kernels for the local hard-negative loss (SPEC sections 2-3, docs/kernels.md).

Shapes: ``B`` images, ``G = 1 + K`` captions per image (column 0 the true caption), ``T`` text
positions, ``P`` patches, ``D`` embedding width. A caption's *rows* are its counted positions
(mask set, caption present); an image's rows are those of all its captions, numbered caption after
caption (at most ``S = G*T``). Only rows are ever loaded, multiplied or written with real values.

The work is per image, in tiles that keep every program busy whatever the rows: the similarity
launch gives each patch tile of an image its own program, which meets all the image's rows; the
pooling launch and the backward give each block of columns of ``D`` its own. The pooling weights
``U`` (rows x P) are the one intermediate kept in memory, each tile shifted by its own statistic
and fixed up by the row's final ones wherever it is read (flash-attention style).

Layers, bottom to top: ``@triton.jit`` kernels, the launch plan (tile sizes per dtype and device,
grids, strides), host functions, the ``torch.library`` custom ops with their fake implementations
and autograd, then the functions the functional layer calls.

Launches: forward 3 (similarity; pooling; the weights' fix-up with the row statistics and the
captions' log-sum-exps, which are the scores) and a 4th for the loss (the contrast); backward 2
(token gradients, then the ``logit_scale`` reduction).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

_NORM_EPS = tl.constexpr(1e-12)  # F.normalize's clamp on the norm, as in the reference
_MAX_GROUPS = 16
_MAX_POSITIONS = 256
_MAX_PATCHES = 4096
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Triton 3.6's interpreter cannot loop to a bound read from memory or derived from the program id
# (compiled kernels can); 3.8's can.
_INTERPRETER_TOO_OLD = tuple(int(v) for v in triton.__version__.split(".")[:2]) < (3, 8)
# Every kernel the host code launches (the tests count them, the resource report compiles them,
# fsc_losses.check replaces them by no-ops to time the host's own work).
LAUNCHED = (
    "_similarity_kernel",
    "_fixup_kernel",
    "_pool_kernel",
    "_finish_kernel",
    "_contrast_fwd_kernel",
    "_tokens_bwd_kernel",
)
_ROW_STATS = 4  # per row: <Z,X>, |Z|^2 and |X|^2 of the pooled token Z and text token X, sum(A)


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _counted(mask_ptr, valid_ptr, b64, g, t, G, T, smb, smg, smt, snb, snk, HAS_VALID: tl.constexpr):
    """int32 0/1 in the broadcast shape of ``g`` and ``t``: whether position ``t`` of caption ``g``
    of image ``b`` is a row (mask set and caption present)."""
    at = b64 * smb + tl.cast(g, tl.int64) * smg + tl.cast(t, tl.int64) * smt
    counted = tl.load(mask_ptr + at, mask=(g < G) & (t < T), other=0) != 0
    if HAS_VALID:
        # Column 0 (the true caption) is always present; neg_valid has one column per negative.
        valid = tl.load(
            valid_ptr + b64 * snb + tl.cast(g - 1, tl.int64) * snk, mask=(g > 0) & (g < G), other=1
        )
        counted = counted & (valid != 0)
    return counted.to(tl.int32)


@triton.jit
def _text_rows(x_ptr, b64, q, sxb, sxg, sxt):
    """Pointers to the text tokens (or their gradient, with its strides) of image ``b``'s
    positions ``q = g * 256 + t`` (``T <= 256``: a shift and a mask, not a division)."""
    return x_ptr + b64 * sxb + (q >> 8).to(tl.int64) * sxg + (q & 255).to(tl.int64) * sxt


@triton.jit
def _block_rows(rows_ptr, b64, first, n_rows, NT, R, x_ptr, sxb, sxg, sxt, BR: tl.constexpr):
    """Rows ``first .. first+BR`` of image ``b`` from its row list (the similarity's copy 0):
    their slots, which exist, their positions ``q = g * 256 + t`` and pointers to their text
    tokens."""
    slot = first + tl.arange(0, BR)
    row_ok = slot < n_rows
    q = tl.load(rows_ptr + b64 * NT * R + slot, mask=row_ok, other=0)
    return slot, row_ok, q, _text_rows(x_ptr, b64, q, sxb, sxg, sxt)


@triton.jit
def _row_range(tstat_ptr, b64, slot, row_ok, B, R, NT, BR: tl.constexpr):
    """The rows' final statistics from their tiles': the smallest tile shift (``minmax``: the
    row's minimum) and the largest tile maximum (the row's maximum)."""
    lo = tl.full((BR,), float("inf"), dtype=tl.float32)
    hi = tl.full((BR,), float("-inf"), dtype=tl.float32)
    for j in range(0, NT):
        lo = tl.minimum(lo, tl.load(tstat_ptr + (b64 * NT + j) * R + slot, mask=row_ok, other=float("inf")))
        hi = tl.maximum(
            hi, tl.load(tstat_ptr + ((B + b64) * NT + j) * R + slot, mask=row_ok, other=float("-inf"))
        )
    return lo, hi


@triton.jit
def _fixed_up(stored, shift, lo, hi, p_ok, P, SOFTMAX: tl.constexpr, SPARSIFY: tl.constexpr):
    """The weights ``A (BR, BP)`` fp32 in ``[0, 1]`` from a tile stored shifted by its own
    statistic ``shift`` and the rows' final ones (the flash-attention rescaling): ``minmax``
    ``(S - min) / (max - min)``, entries below ``1/P`` of the spread dropped with sparsify and a
    row whose scores are all equal uniform (SPEC 6.2); ``softmax`` ``exp(S - max)``. The row's
    largest weight is 1, so ``sum(A)`` is in ``[1, P]``. Zero at the padding ``p >= P``."""
    if SOFTMAX:
        a = stored * tl.exp(shift - hi)[:, None]
    else:
        u = stored + (shift - lo)[:, None]
        spread = hi - lo
        a = u * (1.0 / tl.where(spread > 0.0, spread, 1.0))[:, None]
        if SPARSIFY:
            a = tl.where(u >= (spread / P)[:, None], a, 0.0)
        a = tl.where((spread > 0.0)[:, None], a, 1.0)
    return tl.where(p_ok[None, :], a, 0.0)


@triton.jit
def _store_weights(w32_ptr, w16_ptr, w_rows, j, a, row_ok, PP, SPLIT: tl.constexpr, BP: tl.constexpr):
    """Stores ``A`` of patch tile ``j`` (rows ``w_rows`` of the weights, ``PP`` fp32 a row), in
    the bytes the similarity stored it: fp32, or (``SPLIT``, 16-bit tokens) its high and low
    16-bit parts side by side, ``BP`` each, the operands of the pooling's two dots."""
    offs = tl.arange(0, BP)
    if SPLIT:
        high = a.to(w16_ptr.dtype.element_ty)
        low = (a - high.to(tl.float32)).to(w16_ptr.dtype.element_ty)
        tile = w16_ptr + w_rows[:, None] * (2 * PP) + 2 * j * BP + offs[None, :]
        tl.store(tile, high, mask=row_ok[:, None])
        tl.store(tile + BP, low, mask=row_ok[:, None])
    else:
        tl.store(w32_ptr + w_rows[:, None] * PP + j * BP + offs[None, :], a, mask=row_ok[:, None])


@triton.jit
def _cosine(zx, zz, xx):
    """``<Z, X> / (max(|Z|, eps) max(|X|, eps))``, the cosine of F.normalize'd vectors."""
    return zx / (tl.maximum(tl.sqrt(zz), _NORM_EPS) * tl.maximum(tl.sqrt(xx), _NORM_EPS))


@triton.jit
def _similarity_kernel(
    v_ptr,
    x_ptr,
    mask_ptr,
    valid_ptr,
    w32_ptr,
    w16_ptr,
    tstat_ptr,
    tsum_ptr,
    rows_ptr,
    nrows_ptr,
    B,
    G,
    T,
    P,
    D,
    R,
    NT,
    svb,
    svp,
    svd,
    sxb,
    sxg,
    sxt,
    sxd,
    smb,
    smg,
    smt,
    snb,
    snk,
    HAS_VALID: tl.constexpr,
    SOFTMAX: tl.constexpr,
    SPARSIFY: tl.constexpr,
    ONE_TILE: tl.constexpr,
    SPLIT: tl.constexpr,
    BR: tl.constexpr,
    BP: tl.constexpr,
    BD: tl.constexpr,
    GP: tl.constexpr,
    TP: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Program ``b * NT + j``: patch tile ``j`` of image ``b`` against every row of the image.

    Numbers the image's rows once: a cumulative sum over its ``G x T`` mask gives each counted
    position its slot, and the positions are written to the program's own copy of the row list
    ``(B, NT, R)`` (copy 0 is the one the other launches read; program ``j = 0`` also writes the
    row count), then read back by slot. Per block of ``BR`` rows: ``S = X V^T`` (``BR x BP``,
    accumulated over D chunks of ``BD``), stored fp32 into the weights ``(B, R, NT*BP)`` shifted by
    the tile's own statistic (``S - min``, or ``exp(S - max)`` for ``softmax``), with that shift and
    the tile's maximum into the tile statistics ``(2, B, NT, R)``. With one tile (``ONE_TILE``)
    those are the row's final statistics: the weights are stored fixed up, with their sums.
    """
    # One axis, image-major: B may pass the 65,535 blocks CUDA allows on axes 1 and 2.
    b = tl.program_id(0) // NT
    j = tl.program_id(0) % NT
    b64 = b.to(tl.int64)
    offs_g = tl.arange(0, GP)
    offs_t = tl.arange(0, TP)
    counted = _counted(
        mask_ptr, valid_ptr, b64, offs_g[:, None], offs_t[None, :], G, T, smb, smg, smt, snb, snk, HAS_VALID
    )
    per_caption = tl.sum(counted, axis=1)
    n_rows = tl.minimum(tl.sum(per_caption, axis=0), R)
    rank = (tl.cumsum(per_caption, axis=0) - per_caption)[:, None] + tl.cumsum(counted, axis=1) - counted
    my_rows = rows_ptr + (b64 * NT + j) * R
    tl.store(my_rows + rank, offs_g[:, None] * 256 + offs_t[None, :], mask=(counted != 0) & (rank < R))
    tl.store(nrows_ptr + b, n_rows, mask=j == 0)
    tl.debug_barrier()  # the row list is read back below by other threads of the program

    PP = NT * BP
    offs_p = j * BP + tl.arange(0, BP)
    p_ok = offs_p < P
    v_tile = v_ptr + b64 * svb + offs_p.to(tl.int64)[:, None] * svp
    for first in range(0, n_rows, BR):
        slot = first + tl.arange(0, BR)
        row_ok = slot < n_rows
        q = tl.load(my_rows + slot, mask=row_ok, other=0)
        x_rows = _text_rows(x_ptr, b64, q, sxb, sxg, sxt)
        s = tl.zeros((BR, BP), dtype=tl.float32)
        for d0 in range(0, D, BD):
            offs_d = d0 + tl.arange(0, BD)
            d_ok = offs_d < D
            x = tl.load(
                x_rows[:, None] + offs_d.to(tl.int64)[None, :] * sxd,
                mask=row_ok[:, None] & d_ok[None, :],
                other=0.0,
            )
            v = tl.load(
                v_tile + offs_d.to(tl.int64)[None, :] * svd, mask=p_ok[:, None] & d_ok[None, :], other=0.0
            )
            s = tl.dot(x, tl.trans(v), s, input_precision=DOT_PRECISION)
        tile_max = tl.max(tl.where(p_ok[None, :], s, float("-inf")), axis=1)
        tile_min = tl.min(tl.where(p_ok[None, :], s, float("inf")), axis=1)
        if SOFTMAX:
            shift = tile_max
            stored = tl.exp(s - shift[:, None])
        else:
            shift = tile_min
            stored = s - shift[:, None]
        w_rows = b64 * R + slot
        if ONE_TILE:
            a = _fixed_up(stored, shift, tile_min, tile_max, p_ok, P, SOFTMAX, SPARSIFY)
            _store_weights(w32_ptr, w16_ptr, w_rows, j, a, row_ok, PP, SPLIT, BP)
            tl.store(tsum_ptr + (b64 * NT + j) * R + slot, tl.sum(a, axis=1), mask=row_ok)
        else:
            tl.store(w32_ptr + w_rows[:, None] * PP + offs_p[None, :], stored, mask=row_ok[:, None])
            tl.store(tstat_ptr + (b64 * NT + j) * R + slot, shift, mask=row_ok)
            tl.store(tstat_ptr + ((B + b64) * NT + j) * R + slot, tile_max, mask=row_ok)


@triton.jit
def _fixup_kernel(
    w32_ptr,
    w16_ptr,
    tstat_ptr,
    tsum_ptr,
    nrows_ptr,
    B,
    P,
    R,
    NT,
    SOFTMAX: tl.constexpr,
    SPARSIFY: tl.constexpr,
    SPLIT: tl.constexpr,
    BR: tl.constexpr,
    BP: tl.constexpr,
):
    """Program ``b * NT + j``: patch tile ``j`` of image ``b``'s weights fixed up in place, once,
    before the pooling reads them (:func:`_fixed_up`), with the tile's row sums of ``A`` into
    ``(B, NT, R)``."""
    b = tl.program_id(0) // NT
    j = tl.program_id(0) % NT
    b64 = b.to(tl.int64)
    n_rows = tl.load(nrows_ptr + b)
    PP = NT * BP
    offs_p = j * BP + tl.arange(0, BP)
    p_ok = offs_p < P
    for first in range(0, n_rows, BR):
        slot = first + tl.arange(0, BR)
        row_ok = slot < n_rows
        lo, hi = _row_range(tstat_ptr, b64, slot, row_ok, B, R, NT, BR)
        shift = tl.load(tstat_ptr + (b64 * NT + j) * R + slot, mask=row_ok, other=0.0)
        w_rows = b64 * R + slot
        stored = tl.load(w32_ptr + w_rows[:, None] * PP + offs_p[None, :], mask=row_ok[:, None], other=0.0)
        a = _fixed_up(stored, shift, lo, hi, p_ok, P, SOFTMAX, SPARSIFY)
        tl.debug_barrier()  # every thread has read the tile before any overwrites it
        _store_weights(w32_ptr, w16_ptr, w_rows, j, a, row_ok, PP, SPLIT, BP)
        tl.store(tsum_ptr + (b64 * NT + j) * R + slot, tl.sum(a, axis=1), mask=row_ok)


@triton.jit
def _pool_kernel(
    v_ptr,
    x_ptr,
    w32_ptr,
    w16_ptr,
    wsave_ptr,
    tsum_ptr,
    rows_ptr,
    nrows_ptr,
    stats_ptr,
    part_ptr,
    B,
    P,
    D,
    R,
    NT,
    NC,
    svb,
    svp,
    svd,
    sxb,
    sxg,
    sxt,
    sxd,
    SPLIT: tl.constexpr,
    BR: tl.constexpr,
    BP: tl.constexpr,
    BC: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Program ``(B-1-b) * NC + c``: columns ``[c*BC, (c+1)*BC)`` of image ``b``'s pooled tokens.

    Per block of the image's rows: ``sum(A)`` from the tiles' sums, ``Z = A V / sum(A)`` for its
    columns from the fixed-up weights (16-bit tokens: two dots, on the high and the low parts of
    ``A``, so that ``A`` counts with about 16 bits, not 8 or 11: ``logit_scale`` amplifies the
    error of ``Z`` before ``exp``), and the columns' parts of ``<Z,X>``, ``|Z|^2`` and ``|X|^2`` into
    ``(3, NC, B, R)``. Column block 0 also stores the normalised weights ``W = A / sum(A)`` in the
    tokens' dtype for the backward, and ``sum(A)`` into the row statistics. The last image comes
    first: its patches are the ones the similarity launch read last, the likeliest still in the L2.
    """
    b = B - 1 - tl.program_id(0) // NC
    c = tl.program_id(0) % NC
    b64 = b.to(tl.int64)
    offs_d = c * BC + tl.arange(0, BC)
    d_ok = offs_d < D
    n_rows = tl.load(nrows_ptr + b)
    v_img = v_ptr + b64 * svb
    PP = NT * BP
    for first in range(0, n_rows, BR):
        slot, row_ok, q, x_rows = _block_rows(rows_ptr, b64, first, n_rows, NT, R, x_ptr, sxb, sxg, sxt, BR)
        u_sum = tl.zeros((BR,), dtype=tl.float32)
        for j in range(0, NT):
            u_sum += tl.load(tsum_ptr + (b64 * NT + j) * R + slot, mask=row_ok, other=0.0)
        inv_sum = 1.0 / tl.where(row_ok, u_sum, 1.0)
        w_rows = b64 * R + slot
        acc = tl.zeros((BR, BC), dtype=tl.float32)
        for j in range(0, NT):
            offs_p = j * BP + tl.arange(0, BP)
            v = tl.load(
                v_img + offs_p.to(tl.int64)[:, None] * svp + offs_d.to(tl.int64)[None, :] * svd,
                mask=(offs_p < P)[:, None] & d_ok[None, :],
                other=0.0,
            )
            if SPLIT:
                tile = w16_ptr + w_rows[:, None] * (2 * PP) + 2 * j * BP + tl.arange(0, BP)[None, :]
                acc = tl.dot(tl.load(tile, mask=row_ok[:, None], other=0.0), v, acc)
                acc = tl.dot(tl.load(tile + BP, mask=row_ok[:, None], other=0.0), v, acc)
            else:
                tile = w32_ptr + w_rows[:, None] * PP + offs_p[None, :]
                acc = tl.dot(
                    tl.load(tile, mask=row_ok[:, None], other=0.0), v, acc, input_precision=DOT_PRECISION
                )
            if c == 0:
                # Loaded again here (from the L2), so that the dots' operands go straight to
                # shared memory in every other program.
                if SPLIT:
                    a = tl.load(tile, mask=row_ok[:, None], other=0.0).to(tl.float32)
                    a += tl.load(tile + BP, mask=row_ok[:, None], other=0.0).to(tl.float32)
                else:
                    a = tl.load(tile, mask=row_ok[:, None], other=0.0)
                w = (a * inv_sum[:, None]).to(wsave_ptr.dtype.element_ty)
                tl.store(wsave_ptr + w_rows[:, None] * PP + offs_p[None, :], w, mask=row_ok[:, None])
        z = acc * inv_sum[:, None]
        x = tl.load(
            x_rows[:, None] + offs_d.to(tl.int64)[None, :] * sxd,
            mask=row_ok[:, None] & d_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        tl.store(part_ptr + (c * B + b64) * R + slot, tl.sum(z * x, axis=1), mask=row_ok)
        tl.store(part_ptr + ((NC + c) * B + b64) * R + slot, tl.sum(z * z, axis=1), mask=row_ok)
        tl.store(part_ptr + ((2 * NC + c) * B + b64) * R + slot, tl.sum(x * x, axis=1), mask=row_ok)
        tl.store(stats_ptr + (3 * B + b64) * R + slot, u_sum, mask=row_ok & (c == 0))


@triton.jit
def _finish_kernel(
    part_ptr,
    stats_ptr,
    rows_ptr,
    nrows_ptr,
    scale_ptr,
    lse_ptr,
    dlds_ptr,
    scores_ptr,
    B,
    G,
    R,
    NT,
    NC,
    SCORES: tl.constexpr,
    BR: tl.constexpr,
    GP: tl.constexpr,
):
    """Program ``b``: image ``b``'s row statistics ``<Z,X>``, ``|Z|^2``, ``|X|^2`` (the column
    blocks' parts summed in column order), and per caption, online over its row blocks, the
    local score ``l = logsumexp over its rows of a = logit_scale * cos(Z, X)`` (fp32, saved for
    the backward; ``-inf`` without rows; for the scores also in the tokens' dtype) and
    ``dl/dlogit_scale = sum over its rows of softmax(a) cos`` (the backward's ``logit_scale``
    gradient is then a sum over captions, not rows)."""
    b = tl.program_id(0)
    b64 = b.to(tl.int64)
    n_rows = tl.load(nrows_ptr + b)
    scale = tl.load(scale_ptr).to(tl.float32)
    offs_g = tl.arange(0, GP)
    run_max = tl.full((GP,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((GP,), dtype=tl.float32)
    run_cos = tl.zeros((GP,), dtype=tl.float32)
    for first in range(0, n_rows, BR):
        slot = first + tl.arange(0, BR)
        row_ok = slot < n_rows
        q = tl.load(rows_ptr + b64 * NT * R + slot, mask=row_ok, other=0)
        zx = tl.zeros((BR,), dtype=tl.float32)
        zz = tl.zeros((BR,), dtype=tl.float32)
        xx = tl.zeros((BR,), dtype=tl.float32)
        for c in range(0, NC):
            zx += tl.load(part_ptr + (c * B + b64) * R + slot, mask=row_ok, other=0.0)
            zz += tl.load(part_ptr + ((NC + c) * B + b64) * R + slot, mask=row_ok, other=0.0)
            xx += tl.load(part_ptr + ((2 * NC + c) * B + b64) * R + slot, mask=row_ok, other=0.0)
        tl.store(stats_ptr + b64 * R + slot, zx, mask=row_ok)
        tl.store(stats_ptr + (B + b64) * R + slot, zz, mask=row_ok)
        tl.store(stats_ptr + (2 * B + b64) * R + slot, xx, mask=row_ok)
        cos = _cosine(zx, zz, xx)
        a = tl.where(row_ok, scale * cos, float("-inf"))
        of_caption = row_ok[:, None] & ((q >> 8)[:, None] == offs_g[None, :])
        new_max = tl.maximum(run_max, tl.max(tl.where(of_caption, a[:, None], float("-inf")), axis=0))
        safe_max = tl.where(new_max > float("-inf"), new_max, 0.0)
        rescale = tl.exp(tl.where(run_max > float("-inf"), run_max - safe_max, 0.0))
        e = tl.where(of_caption, tl.exp(a[:, None] - safe_max[None, :]), 0.0)
        run_sum = run_sum * rescale + tl.sum(e, axis=0)
        run_cos = run_cos * rescale + tl.sum(e * cos[:, None], axis=0)
        run_max = new_max
    has_rows = run_sum > 0.0
    lse = tl.where(has_rows, run_max + tl.log(tl.where(has_rows, run_sum, 1.0)), float("-inf"))
    dlds = tl.where(has_rows, run_cos / tl.where(has_rows, run_sum, 1.0), 0.0)
    tl.store(lse_ptr + b64 * G + offs_g, lse, mask=offs_g < G)
    tl.store(dlds_ptr + b64 * G + offs_g, dlds, mask=offs_g < G)
    if SCORES:
        tl.store(scores_ptr + b64 * G + offs_g, lse.to(scores_ptr.dtype.element_ty), mask=offs_g < G)


@triton.jit
def _contrast_rows(
    logits, valid_ptr, images, B, G, snb, snk, gamma, eps, HAS_VALID: tl.constexpr, GP: tl.constexpr
):
    """The HN contrast of images ``images (BB,)`` with logits ``(BB, GP)``: per-image loss
    ``(BB,)`` (0 for images without a present negative), its gradient w.r.t. the logits
    ``(BB, GP)`` and which images count.

    A caption without a counted position has the logit ``-inf`` (it has no rows): it takes part
    as a missing one, and an image whose true caption has none does not count (with the value
    check on, only missing negatives have none). NaN, unlike ``-inf``, stays in and propagates."""
    offs_g = tl.arange(0, GP)
    present = (images < B)[:, None] & (offs_g < G)[None, :]
    if HAS_VALID:
        valid = tl.load(
            valid_ptr + images.to(tl.int64)[:, None] * snb + (offs_g - 1).to(tl.int64)[None, :] * snk,
            mask=present & (offs_g[None, :] > 0),
            other=1,
        )
        present = present & (valid != 0)
    present = present & (logits != float("-inf"))
    true_present = tl.sum((present & (offs_g[None, :] == 0)).to(tl.int32), axis=1) > 0
    counted = (tl.sum((present & (offs_g[None, :] > 0)).to(tl.int32), axis=1) > 0) & true_present
    logits = tl.where(present, logits, float("-inf"))
    row_max = tl.max(logits, axis=1)
    row_max = tl.where(row_max > float("-inf"), row_max, 0.0)
    log_p = logits - row_max[:, None]
    log_p = log_p - tl.log(tl.sum(tl.where(present, tl.exp(log_p), 0.0), axis=1))[:, None]
    p = tl.where(present, tl.exp(log_p), 0.0)
    log_p = tl.where(present, log_p, 0.0)
    n_present = tl.maximum(tl.sum(present.to(tl.float32), axis=1), 1.0)
    target = tl.where(present, eps / n_present[:, None], 0.0) + tl.where(offs_g == 0, 1.0 - eps, 0.0)[None, :]
    # f = -(1-p)^gamma log p; written with exp/log so that 0^0 = 1 and the (1-p)^(gamma-1) term
    # of the derivative, whose limit at p = 1 is 0 for every gamma, never evaluates 0 * inf.
    one_minus_p = tl.maximum(1.0 - p, 0.0)
    log_1mp = tl.log(tl.where(one_minus_p > 0.0, one_minus_p, 1.0))
    focal = tl.where(one_minus_p > 0.0, tl.exp(gamma * log_1mp), tl.where(gamma == 0.0, 1.0, 0.0))
    d_focal = tl.where(one_minus_p > 0.0, gamma * log_p * p * tl.exp((gamma - 1.0) * log_1mp), 0.0)
    entry = target * (-focal * log_p)
    # d(loss)/d(log p), then through log_softmax: dL/dlogit_j = c_j - p_j sum_c c_c.
    c = tl.where(present, target * (d_focal - focal), 0.0)
    d_logits = c - p * tl.sum(c, axis=1)[:, None]
    row_loss = tl.where(counted, tl.sum(tl.where(present, entry, 0.0), axis=1), 0.0)
    d_logits = tl.where(counted[:, None] & present, d_logits, 0.0)
    return row_loss, d_logits, counted


@triton.jit
def _contrast_fwd_kernel(
    lse_ptr,
    valid_ptr,
    loss_ptr,
    dlse_ptr,
    B,
    G,
    snb,
    snk,
    gamma,
    eps,
    HAS_VALID: tl.constexpr,
    BB: tl.constexpr,
    GP: tl.constexpr,
):
    """A single program: from every caption's local score ``l (B, G)``, the mean image loss over
    counted images and ``dLoss/dl (B, G)`` fp32, so the backward only scales it by the upstream
    gradient. Images are summed in a fixed order."""
    offs_g = tl.arange(0, GP)
    total = 0.0
    n_counted = 0
    for b0 in range(0, B, BB):
        images = b0 + tl.arange(0, BB)
        ok = (images < B)[:, None] & (offs_g < G)[None, :]
        lse = tl.load(
            lse_ptr + images.to(tl.int64)[:, None] * G + offs_g[None, :], mask=ok, other=float("-inf")
        )
        row_loss, _, counted = _contrast_rows(
            lse, valid_ptr, images, B, G, snb, snk, gamma, eps, HAS_VALID, GP
        )
        total += tl.sum(row_loss, axis=0)
        n_counted += tl.sum(counted.to(tl.int32), axis=0)
    inv_count = 1.0 / tl.maximum(n_counted, 1).to(tl.float32)
    tl.store(loss_ptr, (total * inv_count).to(loss_ptr.dtype.element_ty))
    for b0 in range(0, B, BB):
        images = b0 + tl.arange(0, BB)
        ok = (images < B)[:, None] & (offs_g < G)[None, :]
        out = images.to(tl.int64)[:, None] * G + offs_g[None, :]
        lse = tl.load(lse_ptr + out, mask=ok, other=float("-inf"))
        _, d_logits, _ = _contrast_rows(lse, valid_ptr, images, B, G, snb, snk, gamma, eps, HAS_VALID, GP)
        tl.store(dlse_ptr + out, d_logits * inv_count, mask=ok)


@triton.jit
def _bwd_rows(
    rows_ptr,
    x_ptr,
    stats_ptr,
    lse_ptr,
    up_ptr,
    dlse_ptr,
    b64,
    first,
    n_rows,
    B,
    G,
    R,
    NT,
    scale,
    sxb,
    sxg,
    sxt,
    sub,
    sug,
    HAS_DLSE: tl.constexpr,
    BR: tl.constexpr,
):
    """Rows ``first .. first+BR`` of image ``b`` and what their gradients need: slots, which
    exist, positions, pointers to their text tokens; ``coef = da * scale / (max(|Z|,eps)
    max(|X|,eps))`` with ``da = dl * exp(a - l)`` (the gradient of ``a``), and the projections
    ``z_proj = [|Z| > eps] <Z,X>/|Z|^2`` and ``x_proj = [|X| > eps] <Z,X>/|X|^2``.

    F.normalize's clamp_min passes no gradient at or below eps, hence the indicators."""
    slot, row_ok, q, x_rows = _block_rows(rows_ptr, b64, first, n_rows, NT, R, x_ptr, sxb, sxg, sxt, BR)
    zx = tl.load(stats_ptr + b64 * R + slot, mask=row_ok, other=0.0)
    zz = tl.load(stats_ptr + (B + b64) * R + slot, mask=row_ok, other=0.0)
    xx = tl.load(stats_ptr + (2 * B + b64) * R + slot, mask=row_ok, other=0.0)
    g_row = q >> 8
    cap = b64 * G + g_row
    dl = tl.load(up_ptr + b64 * sub + g_row.to(tl.int64) * sug, mask=row_ok, other=0.0).to(tl.float32)
    if HAS_DLSE:
        dl = dl * tl.load(dlse_ptr + cap, mask=row_ok, other=0.0)
    lse = tl.load(lse_ptr + cap, mask=row_ok, other=0.0)
    nz = tl.sqrt(zz)
    nx = tl.sqrt(xx)
    norms = tl.maximum(nz, _NORM_EPS) * tl.maximum(nx, _NORM_EPS)
    da = tl.where(row_ok, dl * tl.exp(scale * zx / norms - lse), 0.0)
    coef = da * scale / norms
    z_proj = tl.where(nz > _NORM_EPS, zx / tl.where(zz > 0.0, zz, 1.0), 0.0)
    x_proj = tl.where(nx > _NORM_EPS, zx / tl.where(xx > 0.0, xx, 1.0), 0.0)
    return slot, row_ok, q, x_rows, coef, z_proj, x_proj


@triton.jit
def _scale_grad(
    up_ptr, dlse_ptr, dlds_ptr, out_ptr, B, G, sub, sug, HAS_DLSE: tl.constexpr, GP: tl.constexpr
):
    """``d logit_scale = sum over captions of dl * dl/dlogit_scale`` (the finish launch's
    ``(B, G)``), summed in a fixed order and stored in ``out``'s dtype."""
    BB: tl.constexpr = 128
    offs_g = tl.arange(0, GP)
    total = tl.zeros((BB, GP), dtype=tl.float32)
    for b0 in range(0, B, BB):
        images = (b0 + tl.arange(0, BB)).to(tl.int64)
        ok = (images < B)[:, None] & (offs_g < G)[None, :]
        at = images[:, None] * G + offs_g[None, :]
        dl = tl.load(up_ptr + images[:, None] * sub + offs_g.to(tl.int64)[None, :] * sug, mask=ok, other=0.0)
        dl = dl.to(tl.float32)
        if HAS_DLSE:
            dl = dl * tl.load(dlse_ptr + at, mask=ok, other=0.0)
        total += dl * tl.load(dlds_ptr + at, mask=ok, other=0.0)
    tl.store(out_ptr, tl.sum(tl.sum(total, axis=1), axis=0).to(out_ptr.dtype.element_ty))


@triton.jit
def _pooled(
    w_ptr,
    v_img,
    w_rows,
    row_ok,
    P,
    NT,
    svp,
    svd,
    offs_d,
    d_ok,
    BR: tl.constexpr,
    BP: tl.constexpr,
    BC: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """``Z = W V`` ``(BR, BC)`` fp32 of the rows ``w_rows`` and columns ``offs_d``, from the
    normalised weights the pooling saved."""
    acc = tl.zeros((BR, BC), dtype=tl.float32)
    for j in range(0, NT):
        offs_p = j * BP + tl.arange(0, BP)
        w = tl.load(w_ptr + w_rows[:, None] * (NT * BP) + offs_p[None, :], mask=row_ok[:, None], other=0.0)
        v = tl.load(
            v_img + offs_p.to(tl.int64)[:, None] * svp + offs_d.to(tl.int64)[None, :] * svd,
            mask=(offs_p < P)[:, None] & d_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(w, v, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _dx_block(
    rows_ptr, x_ptr, stats_ptr, lse_ptr, up_ptr, dlse_ptr, w_ptr, v_img, dx_ptr, b64, first, n_rows, B, G,
    R, P, NT, scale, offs_d, d_ok, sxb, sxg, sxt, sxd, sub, sug, svp, svd, sdxb, sdxg, sdxt, sdxd,
    HAS_DLSE: tl.constexpr, STORE_DX: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """Step A of the backward on rows ``first .. first+BR`` of image ``b``, columns ``offs_d``:
    ``Z = W V`` from the saved weights, the rows' text tokens ``X`` and ``dX = coef (Z - x_proj X)``,
    stored where ``STORE_DX``. Returns ``Z``, ``X``, ``coef`` and ``z_proj`` (the first block's
    ``dZ`` is made of them)."""
    slot, row_ok, q, x_rows, coef, z_proj, x_proj = _bwd_rows(
        rows_ptr, x_ptr, stats_ptr, lse_ptr, up_ptr, dlse_ptr, b64, first, n_rows, B, G, R, NT, scale,
        sxb, sxg, sxt, sub, sug, HAS_DLSE, BR,
    )  # fmt: skip
    z = _pooled(
        w_ptr, v_img, b64 * R + slot, row_ok, P, NT, svp, svd, offs_d, d_ok, BR, BP, BC, DOT_PRECISION
    )
    tile_ok = row_ok[:, None] & d_ok[None, :]
    x = tl.load(x_rows[:, None] + offs_d.to(tl.int64)[None, :] * sxd, mask=tile_ok, other=0.0).to(tl.float32)
    if STORE_DX:
        dx = coef[:, None] * (z - x_proj[:, None] * x)
        dx_rows = _text_rows(dx_ptr, b64, q, sdxb, sdxg, sdxt)
        tl.store(
            dx_rows[:, None] + offs_d.to(tl.int64)[None, :] * sdxd,
            dx.to(dx_ptr.dtype.element_ty),
            mask=tile_ok,
        )
    return z, x, coef, z_proj


@triton.jit
def _tokens_bwd_kernel(
    v_ptr,
    x_ptr,
    mask_ptr,
    valid_ptr,
    scale_ptr,
    up_ptr,
    dlse_ptr,
    lse_ptr,
    dlds_ptr,
    w_ptr,
    stats_ptr,
    rows_ptr,
    nrows_ptr,
    dv_ptr,
    dx_ptr,
    dscale_ptr,
    B,
    G,
    T,
    P,
    D,
    R,
    NT,
    NC,
    svb,
    svp,
    svd,
    sxb,
    sxg,
    sxt,
    sxd,
    smb,
    smg,
    smt,
    snb,
    snk,
    sub,
    sug,
    sdvb,
    sdvp,
    sdvd,
    sdxb,
    sdxg,
    sdxt,
    sdxd,
    HAS_VALID: tl.constexpr,
    HAS_DLSE: tl.constexpr,
    IMAGE_GRAD: tl.constexpr,
    TEXT_GRAD: tl.constexpr,
    SCALE_GRAD: tl.constexpr,
    BR: tl.constexpr,
    BP: tl.constexpr,
    BC: tl.constexpr,
    TP: tl.constexpr,
    ZD: tl.constexpr,
    GP: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Program ``b * NC + c`` owns columns ``[c*BC, (c+1)*BC)`` of image ``b``'s gradients:
    ``dV_b`` and ``dX`` of all its captions (gradients in the layouts the host gives, any strides).
    ``dl = upstream * dLoss/dl`` (loss) or ``upstream`` (scores). ``*_GRAD`` say which gradients
    are asked for. Program 0 also sums ``d logit_scale`` (:func:`_scale_grad`).

    A. Per block of the image's rows: ``Z = W V`` from the saved weights, ``dX = coef (Z - x_proj
       X)``, stored (positions that are not rows get an exact zero), and ``dZ = coef (X - z_proj
       Z)``. The first block's ``dZ`` stays on chip, in the dots' 16-bit operand.
    B. Per patch tile: ``dV^T = dZ^T W`` (``BC x BP``: the columns are the dot's M, 64 in 16 bits,
       whatever the patch tile), stored once. Rows past the first block (images of more than
       ``BR`` rows) rebuild their ``dZ`` from what A stored: ``dZ = coef (1 - z_proj x_proj) X -
       z_proj dX``.
    """
    pid = tl.program_id(0)
    if SCALE_GRAD:
        if pid == 0:
            _scale_grad(up_ptr, dlse_ptr, dlds_ptr, dscale_ptr, B, G, sub, sug, HAS_DLSE, GP)
    if TEXT_GRAD or IMAGE_GRAD:
        # One axis, image-major: B may pass 65,535, and an image's column blocks run side by
        # side, sharing its weights in L2.
        b = pid // NC
        c = pid % NC
        b64 = b.to(tl.int64)
        offs_d = c * BC + tl.arange(0, BC)
        d_ok = offs_d < D
        dx_img = dx_ptr + b64 * sdxb
        if TEXT_GRAD:
            offs_t = tl.arange(0, TP)
            for g in range(0, G):
                counted = _counted(
                    mask_ptr, valid_ptr, b64, g, offs_t, G, T, smb, smg, smt, snb, snk, HAS_VALID
                )
                zero_rows = (counted == 0) & (offs_t < T)
                dx_cap = dx_img + g * sdxg + offs_t.to(tl.int64) * sdxt
                for z0 in range(0, BC, ZD):
                    offs_z = c * BC + z0 + tl.arange(0, ZD)
                    tl.store(
                        dx_cap[:, None] + offs_z.to(tl.int64)[None, :] * sdxd,
                        tl.zeros((TP, ZD), dtype=dx_ptr.dtype.element_ty),
                        mask=zero_rows[:, None] & (offs_z < D)[None, :],
                    )

        n_rows = tl.load(nrows_ptr + b)
        scale = tl.load(scale_ptr).to(tl.float32)
        v_img = v_ptr + b64 * svb
        dtype = x_ptr.dtype.element_ty
        # A, the first block: its dZ is kept for B.
        z, x, coef, z_proj = _dx_block(
            rows_ptr, x_ptr, stats_ptr, lse_ptr, up_ptr, dlse_ptr, w_ptr, v_img, dx_ptr, b64, 0, n_rows, B,
            G, R, P, NT, scale, offs_d, d_ok, sxb, sxg, sxt, sxd, sub, sug, svp, svd, sdxb, sdxg, sdxt,
            sdxd, HAS_DLSE, TEXT_GRAD, BR, BP, BC, DOT_PRECISION,
        )  # fmt: skip
        dz_first = tl.trans((coef[:, None] * (x - z_proj[:, None] * z)).to(dtype))
        # A, further blocks: dX is stored, for the text gradient and for B to rebuild dZ from.
        for first in range(BR, n_rows, BR):
            _dx_block(
                rows_ptr, x_ptr, stats_ptr, lse_ptr, up_ptr, dlse_ptr, w_ptr, v_img, dx_ptr, b64, first,
                n_rows, B, G, R, P, NT, scale, offs_d, d_ok, sxb, sxg, sxt, sxd, sub, sug, svp, svd, sdxb,
                sdxg, sdxt, sdxd, HAS_DLSE, True, BR, BP, BC, DOT_PRECISION,
            )  # fmt: skip

        if IMAGE_GRAD:
            tl.debug_barrier()  # B reads back the dX that other threads of this program stored
            for j in range(0, NT):
                offs_p = j * BP + tl.arange(0, BP)
                w_first = tl.load(
                    w_ptr + (b64 * R + tl.arange(0, BR))[:, None] * (NT * BP) + offs_p[None, :],
                    mask=(tl.arange(0, BR) < n_rows)[:, None],
                    other=0.0,
                )
                dv = tl.dot(dz_first, w_first, input_precision=DOT_PRECISION)
                # Not pipelined: its prologue would run in every patch tile even when no row
                # is past the first block (most images at the anchor shapes).
                for first in tl.range(BR, n_rows, BR, num_stages=1):
                    slot, row_ok, q, x_rows, coef, z_proj, x_proj = _bwd_rows(
                        rows_ptr, x_ptr, stats_ptr, lse_ptr, up_ptr, dlse_ptr, b64, first, n_rows, B, G, R,
                        NT, scale, sxb, sxg, sxt, sub, sug, HAS_DLSE, BR,
                    )  # fmt: skip
                    tile_ok = row_ok[:, None] & d_ok[None, :]
                    x_at = x_rows[:, None] + offs_d.to(tl.int64)[None, :] * sxd
                    x = tl.load(x_at, mask=tile_ok, other=0.0).to(tl.float32)
                    dx_rows = _text_rows(dx_ptr, b64, q, sdxb, sdxg, sdxt)
                    dx_at = dx_rows[:, None] + offs_d.to(tl.int64)[None, :] * sdxd
                    dx = tl.load(dx_at, mask=tile_ok, other=0.0).to(tl.float32)
                    dz = (coef * (1.0 - z_proj * x_proj))[:, None] * x - z_proj[:, None] * dx
                    w = tl.load(
                        w_ptr + (b64 * R + slot)[:, None] * (NT * BP) + offs_p[None, :],
                        mask=row_ok[:, None],
                        other=0.0,
                    )
                    dv = tl.dot(tl.trans(dz.to(dtype)), w, dv, input_precision=DOT_PRECISION)
                tl.store(
                    dv_ptr
                    + b64 * sdvb
                    + offs_p.to(tl.int64)[None, :] * sdvp
                    + offs_d.to(tl.int64)[:, None] * sdvd,
                    dv.to(dv_ptr.dtype.element_ty),
                    mask=(offs_p < P)[None, :] & d_ok[:, None],
                )


# ---------------------------------------------------------------------------------------------
# Launch plan: tile sizes per dtype and device
# ---------------------------------------------------------------------------------------------


class DeviceSpec(NamedTuple):
    """What the plan needs to know of a device: its per-block shared-memory limit (the opt-in
    maximum, bytes) and its compute capability ``(major, minor)``; Triton's CPU interpreter has
    neither limit nor capability (None)."""

    shared_limit: int
    capability: tuple[int, int] | None = None


INTERPRETER = DeviceSpec(shared_limit=1 << 30)
# Ampere and newer: below it the 16-bit dots compile without tensor cores (sm_75) or spill
# hundreds of bytes a thread (sm_70), and bf16 has no hardware support.
MIN_CAPABILITY = (8, 0)


class Tiles(NamedTuple):
    """Tile sizes of one launch plan.

    rows (``BR``): rows per block, the M of the dots of the similarity, the pooling and phase A,
    the K of dV's; patches (``BP``): patches per tile; width (``BD``): the similarity's D chunk;
    columns: the columns of ``D`` each pooling and backward program owns; num_warps,
    num_stages: as Triton takes them.
    """

    rows: int
    patches: int
    width: int
    columns: int
    num_warps: int
    num_stages: int


@functools.cache
def device_spec(device: torch.device) -> DeviceSpec:
    """The device's :class:`DeviceSpec`, read once per device (a cached host-side property)."""
    if device.type != "cuda":
        return INTERPRETER
    props = torch.cuda.get_device_properties(device)
    return DeviceSpec(props.shared_memory_per_block_optin, (props.major, props.minor))


def _patch_tile(num_patches: int) -> int:
    """The patch tile (32 or 64) that pads ``P`` least, 64 on a tie: P = 196 takes 7 tiles of
    32 (224) rather than 4 of 64 (256); P = 576 takes 9 of 64."""
    return min((64, 32), key=lambda bp: (triton.cdiv(num_patches, bp) * bp, -bp))


def _candidates(dtype: torch.dtype, num_patches: int) -> list[Tiles]:
    """Tile sizes to try, most preferred first; the plan takes the first that fits the device.

    Chosen by compiling for sm_80 to sm_90 and reading registers and spills
    (benchmarks/kernel_resources.py, docs/kernels.md): 16-bit tiles of 64 rows so that sm_90 runs
    the dots as warpgroup MMAs, 8 warps to keep the register use without spills. fp32 dots run on
    FMA units, which hold a whole reduction extent of both operands in registers: smaller tiles.
    The last candidate is for devices with little shared memory.
    """
    if dtype == torch.float32:
        return [Tiles(32, 32, 16, 32, 8, 2), Tiles(16, 16, 16, 32, 4, 1)]
    return [Tiles(64, _patch_tile(num_patches), 64, 64, 4, 2), Tiles(32, 32, 32, 32, 4, 1)]


def plan(image_tokens: torch.Tensor, text_tokens: torch.Tensor, spec: DeviceSpec) -> Tiles | None:
    """The tiles the kernels use for these inputs on a device like ``spec``: the first candidate
    whose shared memory fits, or None when none does."""
    groups, positions = text_tokens.shape[1], text_tokens.shape[2]
    for tiles in _candidates(image_tokens.dtype, image_tokens.shape[1]):
        if shared_bytes(tiles, image_tokens.dtype, groups, positions) <= spec.shared_limit:
            return tiles
    return None


def shared_bytes(tiles: Tiles, dtype: torch.dtype, groups: int, positions: int) -> int:
    """An upper bound of the shared memory (bytes per block) of any launch with ``tiles``, for
    tokens of ``dtype`` and ``groups x positions`` text positions per image; the compiled kernels
    are checked against it for sm_80 to sm_90 (tests/test_kernel_resources.py).

    Triton keeps ``num_stages`` copies of each pipelined dot's operand tiles (the similarity's
    ``X`` and ``V`` chunks, or a weight tile, fp32 at most, with a ``V`` or ``dZ`` tile), converts
    an fp32 accumulator's layout through shared memory, and the per-row values of a block (up to
    eight fp32 vectors in the backward) into the dots' layouts. The row numbering's cumulative sums
    over the image's ``G x T`` positions need scratch too, but before any of that is live: Triton
    reuses it.
    """
    size = torch.finfo(dtype).bits // 8
    br, bp, bd, bc = tiles.rows, tiles.patches, tiles.width, tiles.columns
    operands = max((br + bp) * bd * size, br * bp * 4 + max(bp, br) * bc * size)
    accumulator = 4 * max(br * bp, br * bd, max(br, bp) * bc)
    row_vectors = 8 * 4 * br
    numbering = 8 * triton.next_power_of_2(max(groups, 2)) * triton.next_power_of_2(positions)
    return max(tiles.num_stages * operands + accumulator + row_vectors, numbering)


# ---------------------------------------------------------------------------------------------
# Host functions: allocation, grids, strides
# ---------------------------------------------------------------------------------------------


def _empty(shape, dtype, device, strides=None) -> torch.Tensor:
    """Every buffer the host code allocates goes through here (tests fill them with NaN)."""
    if strides is None:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.empty_strided(shape, strides, dtype=dtype, device=device)


def _nothing(like: torch.Tensor) -> torch.Tensor:
    """What the backward returns for a gradient not asked for (a custom op returns tensors)."""
    return torch.empty((0,), dtype=like.dtype, device=like.device)


def _gradient_buffer(like: torch.Tensor, wanted: bool) -> torch.Tensor:
    """The uninitialised gradient of ``like``, in its dtype with :func:`gradient_strides`; or
    :func:`_nothing` where it is not ``wanted``. The backward and its fake both allocate here, so
    the strides they report agree."""
    if not wanted:
        return _nothing(like)
    return _empty(like.shape, like.dtype, like.device, gradient_strides(like))


def gradient_strides(tensor: torch.Tensor) -> tuple[int, ...]:
    """The strides a gradient of ``tensor`` gets: ``tensor``'s own where they lay its elements
    out densely (a permutation of a contiguous layout, as the grouped view of a flat ``(G*B, T,
    D)`` caption batch is: autograd then hands the caller's flat gradient back as a view, with no
    copy), else contiguous ones (slices, expanded views)."""
    expected = 1
    for stride, size in sorted((st, n) for st, n in zip(tensor.stride(), tensor.shape, strict=True) if n > 1):
        if stride != expected:
            return torch.empty(tensor.shape, device="meta").stride()
        expected *= size
    return tensor.stride()


def _on_device(tensor: torch.Tensor):
    """Triton launches on the current CUDA device, on its current stream: make them the inputs'
    (tensors on ``cuda:1`` while device 0 is current, as DDP without ``set_device`` or
    ``device_map="auto"`` leave them). Allocations name their device anyway."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _dot_precision(dtype: torch.dtype) -> str:
    # The similarity map decides the weights: TF32's 10-bit mantissa would move them visibly.
    return "ieee" if dtype == torch.float32 else "tf32"


def _valid_args(neg_valid: torch.Tensor | None, stand_in: torch.Tensor):
    """neg_valid as bytes (a free view, any strides) with its strides; without it, a never-read
    stand-in pointer."""
    if neg_valid is None:
        return stand_in, 0, 0
    valid = neg_valid.view(torch.uint8)
    return (valid, *valid.stride())


def _tiles_for(image_tokens: torch.Tensor, text_tokens: torch.Tensor) -> Tiles:
    tiles = plan(image_tokens, text_tokens, device_spec(image_tokens.device))
    if tiles is None:  # dispatch checked the fit; reaching here is a bug
        raise RuntimeError(f"fsc_losses: no kernel tiles fit {image_tokens.device}")
    return tiles


def row_capacity(groups: int, positions: int, max_rows: int | None) -> int:
    """Rows the buffers hold per image: ``max_rows`` (the most any image counts, which the value
    check reads) or, unknown, every position ``G*T``; rounded up to 16 (aligned, and one compiled
    kernel for every batch)."""
    bound = groups * positions if max_rows is None else min(max(int(max_rows), 1), groups * positions)
    return triton.cdiv(bound, 16) * 16


def _saved_shapes(image_tokens: torch.Tensor, text_tokens: torch.Tensor, rows: int, tiles: Tiles):
    """``(shape, dtype)`` of what the forward saves for the backward: the normalised weights
    ``W (B, R, NT*BP)`` (the tokens' dtype), the row statistics ``(4, B, R)`` fp32, the row list
    ``(B, NT, R)`` and the row counts ``(B,)`` int32, and ``dl/dlogit_scale (B, G)`` fp32, for
    ``R = rows`` rows an image."""
    B, P, _ = image_tokens.shape
    G = text_tokens.shape[1]
    n_tiles = triton.cdiv(P, tiles.patches)
    return (
        ((B, rows, n_tiles * tiles.patches), text_tokens.dtype),
        ((_ROW_STATS, B, rows), torch.float32),
        ((B, n_tiles, rows), torch.int32),
        ((B,), torch.int32),
        ((B, G), torch.float32),
    )


def _forward(
    image_tokens, text_tokens, text_mask, logit_scale, neg_valid, normalizer, sparsify, rows, tiles, scores
):
    """Launches 1 to 4 (3 with one patch tile). Returns ``l (B, G)`` fp32, the scores ``(B, G)`` in
    the tokens' dtype when ``scores`` (else None) and the saved tensors of :func:`_saved_shapes`."""
    B, P, D = image_tokens.shape
    G, T = text_tokens.shape[1], text_tokens.shape[2]
    device = image_tokens.device
    saved_weights, stats, row_list, n_rows, dlds = (
        _empty(shape, dtype, device) for shape, dtype in _saved_shapes(image_tokens, text_tokens, rows, tiles)
    )
    n_tiles, n_cols = triton.cdiv(P, tiles.patches), triton.cdiv(D, tiles.columns)
    split = text_tokens.dtype != torch.float32
    # Forward-only: the fp32 weights (16-bit tokens: rewritten in place as their high and low
    # parts), the tiles' statistics and sums, the column blocks' parts of the row statistics.
    weights = _empty((B, rows, n_tiles * tiles.patches), torch.float32, device)
    weights16 = weights.view(text_tokens.dtype) if split else weights
    tile_sums = _empty((B, n_tiles, rows), torch.float32, device)
    tile_stats = _empty((2, B, n_tiles, rows), torch.float32, device) if n_tiles > 1 else tile_sums
    parts = _empty((3, n_cols, B, rows), torch.float32, device)
    lse = _empty((B, G), torch.float32, device)
    out = _empty((B, G), text_tokens.dtype, device) if scores else lse
    mask = text_mask.view(torch.uint8)
    valid, snb, snk = _valid_args(neg_valid, mask)
    common = dict(num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    weights_args = dict(SOFTMAX=normalizer == "softmax", SPARSIFY=bool(sparsify), SPLIT=split)
    _similarity_kernel[(B * n_tiles,)](
        image_tokens,
        text_tokens,
        mask,
        valid,
        weights,
        weights16,
        tile_stats,
        tile_sums,
        row_list,
        n_rows,
        B,
        G,
        T,
        P,
        D,
        rows,
        n_tiles,
        *image_tokens.stride(),
        *text_tokens.stride(),
        *mask.stride(),
        snb,
        snk,
        HAS_VALID=neg_valid is not None,
        ONE_TILE=n_tiles == 1,
        BR=tiles.rows,
        BP=tiles.patches,
        BD=tiles.width,
        GP=max(2, triton.next_power_of_2(G)),
        TP=triton.next_power_of_2(T),
        DOT_PRECISION=_dot_precision(text_tokens.dtype),
        **weights_args,
        **common,
    )
    if n_tiles > 1:
        _fixup_kernel[(B * n_tiles,)](
            weights,
            weights16,
            tile_stats,
            tile_sums,
            n_rows,
            B,
            P,
            rows,
            n_tiles,
            BR=tiles.rows,
            BP=tiles.patches,
            num_warps=tiles.num_warps,
            **weights_args,
        )
    _pool_kernel[(B * n_cols,)](
        image_tokens,
        text_tokens,
        weights,
        weights16,
        saved_weights,
        tile_sums,
        row_list,
        n_rows,
        stats,
        parts,
        B,
        P,
        D,
        rows,
        n_tiles,
        n_cols,
        *image_tokens.stride(),
        *text_tokens.stride(),
        SPLIT=split,
        BR=tiles.rows,
        BP=tiles.patches,
        BC=tiles.columns,
        DOT_PRECISION=_dot_precision(text_tokens.dtype),
        **common,
    )
    _finish_kernel[(B,)](
        parts,
        stats,
        row_list,
        n_rows,
        logit_scale,
        lse,
        dlds,
        out,
        B,
        G,
        rows,
        n_tiles,
        n_cols,
        SCORES=bool(scores),
        BR=tiles.rows,
        GP=max(2, triton.next_power_of_2(G)),
        num_warps=4,
    )
    return lse, out if scores else None, (saved_weights, stats, row_list, n_rows, dlds)


def _contrast(lse, neg_valid, focal_gamma, label_smoothing, dtype):
    """The loss's last forward launch. Returns ``loss ()`` in ``dtype`` and ``dLoss/dl (B, G)``
    fp32."""
    B, G = lse.shape
    loss = _empty((), dtype, lse.device)
    dlse = _empty((B, G), torch.float32, lse.device)
    valid, snb, snk = _valid_args(neg_valid, lse)
    _contrast_fwd_kernel[(1,)](
        lse,
        valid,
        loss,
        dlse,
        B,
        G,
        snb,
        snk,
        float(focal_gamma),
        float(label_smoothing),
        HAS_VALID=neg_valid is not None,
        BB=max(16, min(128, triton.next_power_of_2(B))),
        GP=max(2, triton.next_power_of_2(G)),
        num_warps=4,
    )
    return loss, dlse


def _backward(
    grad,
    dlse,
    image_tokens,
    text_tokens,
    text_mask,
    logit_scale,
    neg_valid,
    lse,
    saved,
    tiles,
    wanted,
):
    """The backward launch. ``grad`` is the upstream gradient: ``()`` for the loss (with ``dlse``
    its ``dLoss/dl``), ``(B, G)`` for the scores (``dlse`` None). ``saved`` is what
    :func:`_forward` saved; ``wanted`` says which of the gradients of image_tokens ``(B, P, D)``,
    text_tokens ``(B, G, T, D)`` and logit_scale ``()`` to compute. Returns them, each in its
    input's dtype with :func:`gradient_strides`, and an empty tensor for each one not wanted."""
    need_image, need_text, need_scale = wanted
    weights, stats, row_list, n_rows, dlds = saved
    B, P, D = image_tokens.shape
    G, T = text_tokens.shape[1], text_tokens.shape[2]
    rows = stats.shape[2]
    device = image_tokens.device
    d_image = _gradient_buffer(image_tokens, need_image)
    # B rebuilds dZ from dX past an image's first row block: with dV alone wanted, dX of the rows
    # is kept in this buffer.
    d_text = _gradient_buffer(text_tokens, need_text or need_image)
    d_scale = _empty((), logit_scale.dtype, device) if need_scale else _nothing(logit_scale)
    mask = text_mask.view(torch.uint8)
    valid, snb, snk = _valid_args(neg_valid, mask)
    up_strides = grad.stride() if grad.dim() == 2 else (0, 0)
    block_t = triton.next_power_of_2(T)
    # d logit_scale alone is a sum over the (B, G) captions: one program.
    n_cols = triton.cdiv(D, tiles.columns)
    grid = B * n_cols if need_image or need_text else 1
    _tokens_bwd_kernel[(grid,)](
        image_tokens,
        text_tokens,
        mask,
        valid,
        logit_scale,
        grad,
        lse if dlse is None else dlse,
        lse,
        dlds,
        weights,
        stats,
        row_list,
        n_rows,
        d_image if need_image else lse,
        d_text if need_image or need_text else lse,
        d_scale if need_scale else lse,
        B,
        G,
        T,
        P,
        D,
        rows,
        triton.cdiv(P, tiles.patches),
        n_cols,
        *image_tokens.stride(),
        *text_tokens.stride(),
        *mask.stride(),
        snb,
        snk,
        *up_strides,
        *(d_image.stride() if need_image else (0, 0, 0)),
        *(d_text.stride() if need_image or need_text else (0, 0, 0, 0)),
        HAS_VALID=neg_valid is not None,
        HAS_DLSE=dlse is not None,
        IMAGE_GRAD=need_image,
        TEXT_GRAD=need_text,
        SCALE_GRAD=need_scale,
        BR=tiles.rows,
        BP=tiles.patches,
        BC=tiles.columns,
        TP=block_t,
        ZD=min(tiles.columns, max(16, 4096 // block_t)),
        GP=max(2, triton.next_power_of_2(G)),
        DOT_PRECISION=_dot_precision(text_tokens.dtype),
        num_warps=tiles.num_warps,
        num_stages=tiles.num_stages,
    )
    return d_image, d_text if need_text else _nothing(text_tokens), d_scale


# ---------------------------------------------------------------------------------------------
# torch.library custom ops, their fake implementations and autograd
# ---------------------------------------------------------------------------------------------


def _saved_like(image_tokens: torch.Tensor, text_tokens: torch.Tensor, rows: int):
    """Fake saved tensors, with the shapes :func:`_forward` gives them."""
    tiles = _tiles_for(image_tokens, text_tokens)
    return tuple(
        torch.empty(shape, dtype=dtype, device=image_tokens.device)
        for shape, dtype in _saved_shapes(image_tokens, text_tokens, rows, tiles)
    )


@torch.library.custom_op("fsc_losses::local_hn_scores", mutates_args=())
def _scores_op(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor,
    normalizer: str,
    sparsify: bool,
    rows: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``scores (B, G)`` in the tokens' dtype, ``l (B, G)`` fp32, then what the backward needs
    (see _saved_shapes) for ``rows`` rows an image (:func:`row_capacity`)."""
    tiles = _tiles_for(image_tokens, text_tokens)
    with _on_device(image_tokens):
        lse, scores, saved = _forward(
            image_tokens, text_tokens, text_mask, logit_scale, None, normalizer, sparsify, rows, tiles, True
        )
    return scores, lse, *saved


@_scores_op.register_fake
def _scores_fake(image_tokens, text_tokens, text_mask, logit_scale, normalizer, sparsify, rows):
    B, G = text_tokens.shape[:2]
    scores = torch.empty((B, G), dtype=text_tokens.dtype, device=text_tokens.device)
    lse = torch.empty((B, G), dtype=torch.float32, device=text_tokens.device)
    return (scores, lse, *_saved_like(image_tokens, text_tokens, rows))


@torch.library.custom_op("fsc_losses::local_hn_loss", mutates_args=())
def _loss_op(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor,
    neg_valid: torch.Tensor | None,
    normalizer: str,
    sparsify: bool,
    focal_gamma: float,
    label_smoothing: float,
    rows: int,
) -> tuple[
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
]:
    """``loss ()`` in the tokens' dtype, ``dLoss/dl (B, G)`` and ``l (B, G)`` fp32, then what the
    backward needs (see _saved_shapes) for ``rows`` rows an image."""
    tiles = _tiles_for(image_tokens, text_tokens)
    with _on_device(image_tokens):
        lse, _, saved = _forward(
            image_tokens,
            text_tokens,
            text_mask,
            logit_scale,
            neg_valid,
            normalizer,
            sparsify,
            rows,
            tiles,
            False,
        )
        loss, dlse = _contrast(lse, neg_valid, focal_gamma, label_smoothing, text_tokens.dtype)
    return loss, dlse, lse, *saved


@_loss_op.register_fake
def _loss_fake(
    image_tokens,
    text_tokens,
    text_mask,
    logit_scale,
    neg_valid,
    normalizer,
    sparsify,
    focal_gamma,
    label_smoothing,
    rows,
):
    B, G = text_tokens.shape[:2]
    loss = torch.empty((), dtype=text_tokens.dtype, device=text_tokens.device)
    dlse = torch.empty((B, G), dtype=torch.float32, device=text_tokens.device)
    lse = torch.empty((B, G), dtype=torch.float32, device=text_tokens.device)
    return (loss, dlse, lse, *_saved_like(image_tokens, text_tokens, rows))


@torch.library.custom_op("fsc_losses::local_hn_bwd", mutates_args=())
def _bwd_op(
    grad: torch.Tensor,
    dlse: torch.Tensor | None,
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor,
    neg_valid: torch.Tensor | None,
    lse: torch.Tensor,
    weights: torch.Tensor,
    stats: torch.Tensor,
    row_list: torch.Tensor,
    n_rows: torch.Tensor,
    dlds: torch.Tensor,
    need_image: bool,
    need_text: bool,
    need_scale: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of image_tokens, text_tokens and logit_scale, the ones asked for (see
    _backward)."""
    tiles = _tiles_for(image_tokens, text_tokens)
    with _on_device(image_tokens):
        return _backward(
            grad,
            dlse,
            image_tokens,
            text_tokens,
            text_mask,
            logit_scale,
            neg_valid,
            lse,
            (weights, stats, row_list, n_rows, dlds),
            tiles,
            (need_image, need_text, need_scale),
        )


@_bwd_op.register_fake
def _bwd_fake(
    grad,
    dlse,
    image_tokens,
    text_tokens,
    text_mask,
    logit_scale,
    neg_valid,
    lse,
    weights,
    stats,
    row_list,
    n_rows,
    dlds,
    need_image,
    need_text,
    need_scale,
):
    return (
        _gradient_buffer(image_tokens, need_image),
        _gradient_buffer(text_tokens, need_text),
        _empty((), logit_scale.dtype, logit_scale.device) if need_scale else _nothing(logit_scale),
    )


def _setup_scores(ctx, inputs, output):
    image_tokens, text_tokens, text_mask, logit_scale, *_ = inputs
    _, lse, *saved = output
    # The saved outputs get no gradient: no zeros are materialised for them in the backward.
    ctx.mark_non_differentiable(lse, *saved)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(image_tokens, text_tokens, text_mask, logit_scale, lse, *saved)


def _wanted(ctx) -> tuple[bool, bool, bool]:
    """Which of image_tokens, text_tokens and logit_scale (inputs 0, 1 and 3) need a gradient: a
    frozen tower's tokens do not, and their gradient is not computed."""
    needs = ctx.needs_input_grad
    return needs[0], needs[1], needs[3]


def _given(grads, wanted):
    return tuple(grad if need else None for grad, need in zip(grads, wanted, strict=True))


def _scores_backward(ctx, grad_scores, *_):
    image_tokens, text_tokens, text_mask, logit_scale, lse, *saved = ctx.saved_tensors
    wanted = _wanted(ctx)
    grads = _bwd_op(
        grad_scores, None, image_tokens, text_tokens, text_mask, logit_scale, None, lse, *saved, *wanted
    )
    d_image, d_text, d_scale = _given(grads, wanted)
    return d_image, d_text, None, d_scale, None, None, None


def _setup_loss(ctx, inputs, output):
    image_tokens, text_tokens, text_mask, logit_scale, neg_valid, *_ = inputs
    _, dlse, lse, *saved = output
    ctx.mark_non_differentiable(dlse, lse, *saved)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(image_tokens, text_tokens, text_mask, logit_scale, neg_valid, dlse, lse, *saved)


def _loss_backward(ctx, grad_loss, *_):
    image_tokens, text_tokens, text_mask, logit_scale, neg_valid, dlse, lse, *saved = ctx.saved_tensors
    wanted = _wanted(ctx)
    grads = _bwd_op(
        grad_loss, dlse, image_tokens, text_tokens, text_mask, logit_scale, neg_valid, lse, *saved, *wanted
    )
    d_image, d_text, d_scale = _given(grads, wanted)
    return d_image, d_text, None, d_scale, None, None, None, None, None, None


_scores_op.register_autograd(_scores_backward, setup_context=_setup_scores)
_loss_op.register_autograd(_loss_backward, setup_context=_setup_loss)


# ---------------------------------------------------------------------------------------------
# Public functions (called by fsc_losses.functional on validated inputs)
# ---------------------------------------------------------------------------------------------


def unsupported_reason(image_tokens: torch.Tensor, text_tokens: torch.Tensor) -> str | None:
    """Why the kernels cannot take these inputs on their device, or None when they can: dtypes,
    devices, sizes beyond the kernels' limits, a GPU older than compute capability 8.0, or no tile
    size that fits the device's shared memory (:func:`device_reason`).

    Args:
        image_tokens: ``(B, P, D)``.
        text_tokens: ``(B, G, T, D)``.
    """
    if image_tokens.device != text_tokens.device:
        return "image and text tokens on different devices"
    device = image_tokens.device
    if device.type != "cuda" and not (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return f"tensors on {device} (need CUDA, or the CPU with TRITON_INTERPRET=1)"
    if device.type == "cpu" and _INTERPRETER_TOO_OLD:
        return (
            f"Triton {triton.__version__}'s CPU interpreter (loop bounds that depend on the program need 3.8)"
        )
    return shape_reason(image_tokens, text_tokens, device_spec(device))


def shape_reason(image_tokens: torch.Tensor, text_tokens: torch.Tensor, spec: DeviceSpec) -> str | None:
    """:func:`unsupported_reason` for a device like ``spec``, from shapes and dtypes alone (any
    tensors, meta ones too)."""
    if image_tokens.dtype not in _DTYPES or text_tokens.dtype != image_tokens.dtype:
        return f"token dtypes {image_tokens.dtype}/{text_tokens.dtype} (need one of fp32/fp16/bf16)"
    B, P, D = image_tokens.shape
    G, T = text_tokens.shape[1], text_tokens.shape[2]
    if min(B, P, D, T) == 0:
        return "empty inputs"
    if G > _MAX_GROUPS:
        return f"{G} captions per image (at most {_MAX_GROUPS})"
    if P > _MAX_PATCHES:
        return f"{P} patches (at most {_MAX_PATCHES})"
    if T > _MAX_POSITIONS:
        return f"{T} text positions (at most {_MAX_POSITIONS})"
    return device_reason(image_tokens, text_tokens, spec)


def device_reason(
    image_tokens: torch.Tensor, text_tokens: torch.Tensor, spec: DeviceSpec | None = None
) -> str | None:
    """Why the tokens' device (or a device like ``spec``) cannot run the kernels on these inputs:
    a compute capability below :data:`MIN_CAPABILITY`, or no tile size that fits its shared memory
    (:func:`fit_reason`); None when it can. ``backend="triton"`` raises with this reason where
    ``auto`` falls back to the reference."""
    spec = device_spec(image_tokens.device) if spec is None else spec
    if spec.capability is not None and tuple(spec.capability) < MIN_CAPABILITY:
        major, minor = spec.capability
        return (
            f"compute capability {major}.{minor} (sm_{major}{minor}): the kernels need "
            f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer (tensor-core dots and bf16)"
        )
    return fit_reason(image_tokens, text_tokens, spec)


def fit_reason(
    image_tokens: torch.Tensor, text_tokens: torch.Tensor, spec: DeviceSpec | None = None
) -> str | None:
    """Why no tile size fits the shared memory of the tokens' device (or of a device like
    ``spec``), naming the shape and the limit; None when one does."""
    spec = device_spec(image_tokens.device) if spec is None else spec
    if plan(image_tokens, text_tokens, spec) is not None:
        return None
    B, P, D = image_tokens.shape
    G, T = text_tokens.shape[1], text_tokens.shape[2]
    need = min(shared_bytes(t, image_tokens.dtype, G, T) for t in _candidates(image_tokens.dtype, P))
    return (
        f"inputs of (B, G, T, P, D) = {(B, G, T, P, D)} in {image_tokens.dtype}: the smallest tiles need "
        f"{need} bytes of shared memory per block, the device allows {spec.shared_limit}"
    )


def local_hn_scores(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor,
    normalizer: str,
    sparsify: bool,
    max_rows: int | None = None,
) -> torch.Tensor:
    """Local score of every (image, own caption) pair, as ``reference.local_hn_scores``.

    Args:
        image_tokens: ``(B, P, D)`` fp32/fp16/bf16, any strides.
        text_tokens: ``(B, G, T, D)`` same dtype, any strides (grouped or expanded views).
        text_mask: ``(B, G, T)`` bool.
        logit_scale: ``()`` floating.
        normalizer: ``"minmax"`` or ``"softmax"``; sparsify: minmax only.
        max_rows: the most positions any image counts, over its present captions (the value
            check reads it), or None: the buffers are then sized for every position.

    Returns:
        ``(B, G)`` in the tokens' dtype, ``-inf`` where a caption counts no position;
        differentiable w.r.t. image_tokens, text_tokens and logit_scale.
    """
    rows = row_capacity(text_tokens.shape[1], text_tokens.shape[2], max_rows)
    return _scores_op(image_tokens, text_tokens, text_mask, logit_scale, normalizer, bool(sparsify), rows)[0]


def local_hn_loss(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor,
    neg_valid: torch.Tensor | None,
    normalizer: str,
    sparsify: bool,
    focal_gamma: float,
    label_smoothing: float,
    max_rows: int | None = None,
) -> torch.Tensor:
    """``reference.local_hn_loss``: in five launches forward (four with one patch tile) and one
    backward.

    Args:
        as :func:`local_hn_scores`, plus ``neg_valid (B, G-1)`` bool or None (all present),
        ``focal_gamma >= 0`` and ``label_smoothing`` in ``[0, 1)``. A missing negative neither
        affects the loss nor receives gradient; so does a present one that counts no position,
        and an image whose true caption counts none does not count
        (``reference.contrasted_negatives``).

    Returns:
        ``()`` in the tokens' dtype; differentiable w.r.t. image_tokens, text_tokens and
        logit_scale.
    """
    return _loss_op(
        image_tokens,
        text_tokens,
        text_mask,
        logit_scale,
        neg_valid,
        normalizer,
        bool(sparsify),
        float(focal_gamma),
        float(label_smoothing),
        row_capacity(text_tokens.shape[1], text_tokens.shape[2], max_rows),
    )[0]
