"""Fused Triton kernels for the local hard-negative loss (SPEC sections 2-3, docs/kernels.md).

Shapes: ``B`` images, ``G = 1 + K`` captions per image (column 0 the true caption), ``T`` text
positions, ``P`` patches, ``D`` embedding width. A caption's *rows* are its counted positions
(mask set, caption present); only rows are ever loaded, multiplied or written with real values.

Layers, bottom to top: ``@triton.jit`` kernels, host ``*_fwd`` / ``*_bwd`` functions (grids,
block sizes, strides), the ``torch.library`` custom ops with their fake implementations and
autograd, then the two public functions the functional layer calls.

Launches: scores forward 1, loss forward 2 (scores, then the contrast), backward 2 (token
gradients, then the ``logit_scale`` reduction).
"""

import functools
import os

import torch
import triton
import triton.language as tl

_NORM_EPS = tl.constexpr(1e-12)  # F.normalize's clamp on the norm, as in the reference
_MAX_GROUPS = 16
_MAX_PATCHES = 1024
_MAX_WIDTH = 1280
_MAX_POSITIONS = 256
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _counted_positions(
    mask_ptr, valid_ptr, b, g, T, smb, smg, smt, snb, snk, HAS_VALID: tl.constexpr, BLOCK_TT: tl.constexpr
):
    """``(BLOCK_TT,)`` int32 0/1: which positions of caption ``(b, g)`` count (mask and present)."""
    offs_t = tl.arange(0, BLOCK_TT)
    counted = tl.load(mask_ptr + b.to(tl.int64) * smb + g * smg + offs_t * smt, mask=offs_t < T, other=0) != 0
    if HAS_VALID:
        # Column 0 (the true caption) is always present; neg_valid has one column per negative.
        valid = tl.load(valid_ptr + b.to(tl.int64) * snb + (g - 1) * snk, mask=g > 0, other=1)
        counted = counted & (valid != 0)
    return counted.to(tl.int32)


@triton.jit
def _patch_weights(s, p_ok, num_patches, SOFTMAX: tl.constexpr, SPARSIFY: tl.constexpr):
    """Pooling weights ``(BT, BP)`` from the similarity tile ``s``, as ``reference.patch_weights``;
    padded patches (``~p_ok``) get weight 0."""
    if SOFTMAX:
        row_max = tl.max(tl.where(p_ok[None, :], s, float("-inf")), axis=1)
        w = tl.where(p_ok[None, :], tl.exp(s - row_max[:, None]), 0.0)
    else:
        row_min = tl.min(tl.where(p_ok[None, :], s, float("inf")), axis=1)
        w = tl.where(p_ok[None, :], s - row_min[:, None], 0.0)
        spread = tl.max(w, axis=1)
        if SPARSIFY:
            w = tl.where(w >= (spread / num_patches)[:, None], w, 0.0)
        # All scores equal: no preferred patch, uniform weights instead of 0/0.
        w = tl.where((spread == 0.0)[:, None] & p_ok[None, :], 1.0, w)
    return w / tl.sum(w, axis=1)[:, None]


@triton.jit
def _row_weights(
    x_rows,
    row_ok,
    v_img,
    svp,
    svd,
    sxd,
    P,
    D,
    SOFTMAX: tl.constexpr,
    SPARSIFY: tl.constexpr,
    BT: tl.constexpr,
    BP: tl.constexpr,
    BD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Weights ``W (BT, BP)`` fp32 of the rows at pointers ``x_rows (BT,)`` against the image at
    ``v_img``, and the rows' squared norms ``(BT,)``.

    The similarity tile ``S = X V^T`` stays in registers, accumulated over D chunks: the forward
    and every backward program recompute it rather than store a rows x patches intermediate.
    """
    offs_p = tl.arange(0, BP)
    p_ok = offs_p < P
    s = tl.zeros((BT, BP), dtype=tl.float32)
    sq_norm = tl.zeros((BT,), dtype=tl.float32)
    for d0 in range(0, D, BD):
        offs_d = d0 + tl.arange(0, BD)
        d_ok = offs_d < D
        x = tl.load(x_rows[:, None] + offs_d[None, :] * sxd, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        v_t = tl.load(
            v_img + offs_p[None, :] * svp + offs_d[:, None] * svd,
            mask=p_ok[None, :] & d_ok[:, None],
            other=0.0,
        )
        s = tl.dot(x, v_t, s, input_precision=DOT_PRECISION)
        xf = x.to(tl.float32)
        sq_norm += tl.sum(xf * xf, axis=1)
    return _patch_weights(s, p_ok, P, SOFTMAX, SPARSIFY), sq_norm


@triton.jit
def _pooled_chunk(w_lp, v_img, svp, svd, offs_d, d_ok, P, BP: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Columns ``offs_d`` of the pooled tokens ``Z = W V``: ``(BT, BD)`` fp32."""
    offs_p = tl.arange(0, BP)
    v = tl.load(
        v_img + offs_p[:, None] * svp + offs_d[None, :] * svd,
        mask=(offs_p < P)[:, None] & d_ok[None, :],
        other=0.0,
    )
    return tl.dot(w_lp, v, input_precision=DOT_PRECISION)


@triton.jit
def _cosine(zx, zz, xx):
    """``<Z, X> / (max(|Z|, eps) max(|X|, eps))``, the cosine of F.normalize'd vectors."""
    return zx / (tl.maximum(tl.sqrt(zz), _NORM_EPS) * tl.maximum(tl.sqrt(xx), _NORM_EPS))


@triton.jit
def _scores_fwd_kernel(
    v_ptr,
    x_ptr,
    mask_ptr,
    valid_ptr,
    scale_ptr,
    lse_ptr,
    scores_ptr,
    stats_ptr,
    rows_ptr,
    counts_ptr,
    G,
    T,
    P,
    D,
    n_pos,
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
    WRITE_SCORES: tl.constexpr,
    SOFTMAX: tl.constexpr,
    SPARSIFY: tl.constexpr,
    BT: tl.constexpr,
    BP: tl.constexpr,
    BD: tl.constexpr,
    BLOCK_TT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One program per caption ``(b, g)``: its local score ``l`` (fp32, and in the tokens' dtype
    when WRITE_SCORES), per-row ``<Z,X>`` and ``|Z|^2`` for the backward (0 elsewhere), the
    caption's row count and its rows' ids ``g*T + t`` in the image's row list (captions in
    order)."""
    pid = tl.program_id(0)
    b = pid // G
    g = pid % G
    offs_t = tl.arange(0, BLOCK_TT)
    counted = _counted_positions(mask_ptr, valid_ptr, b, g, T, smb, smg, smt, snb, snk, HAS_VALID, BLOCK_TT)
    n_rows = tl.sum(counted, axis=0)
    # Rank of each counted position among the caption's rows: compacts a non-prefix mask so that
    # a 16-of-77 caption is a single block of BT rows.
    rank = tl.cumsum(counted, axis=0) - counted
    first_row = 0
    for g_prev in range(0, g):
        first_row += tl.sum(
            _counted_positions(
                mask_ptr, valid_ptr, b, g_prev, T, smb, smg, smt, snb, snk, HAS_VALID, BLOCK_TT
            ),
            axis=0,
        )
    image_rows = rows_ptr + b.to(tl.int64) * G * T
    tl.store(image_rows + first_row + rank, g * T + offs_t, mask=counted != 0)
    if g == G - 1:  # every output element is defined: the unused tail of the row list is -1
        for tail in range(first_row + n_rows, G * T, BLOCK_TT):
            tl.store(image_rows + tail + offs_t, -1, mask=tail + offs_t < G * T)
    tl.store(counts_ptr + pid, n_rows)
    not_rows = (counted == 0) & (offs_t < T)
    tl.store(stats_ptr + pid.to(tl.int64) * T + offs_t, 0.0, mask=not_rows)
    tl.store(stats_ptr + n_pos + pid.to(tl.int64) * T + offs_t, 0.0, mask=not_rows)

    scale = tl.load(scale_ptr).to(tl.float32)
    v_img = v_ptr + b.to(tl.int64) * svb
    x_cap = x_ptr + b.to(tl.int64) * sxb + g.to(tl.int64) * sxg
    run_max = float("-inf")
    run_sum = 0.0
    for start in range(0, n_rows, BT):
        target = start + tl.arange(0, BT)
        row_ok = target < n_rows
        hit = (counted[None, :] != 0) & (rank[None, :] == target[:, None])
        t_row = tl.sum(tl.where(hit, offs_t[None, :], 0), axis=1)
        x_rows = x_cap + t_row.to(tl.int64) * sxt
        w, xx = _row_weights(
            x_rows, row_ok, v_img, svp, svd, sxd, P, D, SOFTMAX, SPARSIFY, BT, BP, BD, DOT_PRECISION
        )
        w_lp = w.to(x_ptr.dtype.element_ty)
        zx = tl.zeros((BT,), dtype=tl.float32)
        zz = tl.zeros((BT,), dtype=tl.float32)
        for d0 in range(0, D, BD):
            offs_d = d0 + tl.arange(0, BD)
            d_ok = offs_d < D
            z = _pooled_chunk(w_lp, v_img, svp, svd, offs_d, d_ok, P, BP, DOT_PRECISION)
            x = tl.load(
                x_rows[:, None] + offs_d[None, :] * sxd, mask=row_ok[:, None] & d_ok[None, :], other=0.0
            ).to(tl.float32)
            zx += tl.sum(z * x, axis=1)
            zz += tl.sum(z * z, axis=1)
        pos = pid.to(tl.int64) * T + t_row
        tl.store(stats_ptr + pos, zx, mask=row_ok)
        tl.store(stats_ptr + n_pos + pos, zz, mask=row_ok)
        a = tl.where(row_ok, scale * _cosine(zx, zz, xx), float("-inf"))
        new_max = tl.maximum(run_max, tl.max(a, axis=0))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(a - new_max), axis=0)
        run_max = new_max
    lse = tl.where(n_rows > 0, run_max + tl.log(run_sum), float("-inf"))
    tl.store(lse_ptr + pid, lse)
    if WRITE_SCORES:
        tl.store(scores_ptr + pid, lse.to(scores_ptr.dtype.element_ty))


@triton.jit
def _contrast_rows(
    lse_ptr, valid_ptr, rows, B, G, snb, snk, gamma, eps, HAS_VALID: tl.constexpr, GP: tl.constexpr
):
    """The HN contrast of image rows ``rows (BB,)``: per-row loss ``(BB,)`` (0 for rows without a
    present negative), its gradient w.r.t. the logits ``(BB, GP)`` and which rows count."""
    offs_g = tl.arange(0, GP)
    present = (rows < B)[:, None] & (offs_g < G)[None, :]
    if HAS_VALID:
        valid = tl.load(
            valid_ptr + rows[:, None].to(tl.int64) * snb + (offs_g[None, :] - 1) * snk,
            mask=present & (offs_g[None, :] > 0),
            other=1,
        )
        present = present & (valid != 0)
    counted = tl.sum((present & (offs_g[None, :] > 0)).to(tl.int32), axis=1) > 0
    logits = tl.load(
        lse_ptr + rows[:, None].to(tl.int64) * G + offs_g[None, :], mask=present, other=float("-inf")
    )
    logits = tl.where(present, logits, float("-inf"))
    row_max = tl.max(logits, axis=1)
    log_p = logits - row_max[:, None]
    log_p = log_p - tl.log(tl.sum(tl.where(present, tl.exp(log_p), 0.0), axis=1))[:, None]
    p = tl.where(present, tl.exp(log_p), 0.0)
    log_p = tl.where(present, log_p, 0.0)
    n_present = tl.sum(present.to(tl.float32), axis=1)
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
    """A single program: the mean row loss over counted rows and ``dLoss/dl (B, G)`` fp32, so the
    backward only scales it by the upstream gradient. Rows are summed in a fixed order."""
    total = 0.0
    n_counted = 0
    for b0 in range(0, B, BB):
        rows = b0 + tl.arange(0, BB)
        row_loss, _, counted = _contrast_rows(
            lse_ptr, valid_ptr, rows, B, G, snb, snk, gamma, eps, HAS_VALID, GP
        )
        total += tl.sum(row_loss, axis=0)
        n_counted += tl.sum(counted.to(tl.int32), axis=0)
    inv_count = 1.0 / tl.maximum(n_counted, 1).to(tl.float32)
    tl.store(loss_ptr, (total * inv_count).to(loss_ptr.dtype.element_ty))
    offs_g = tl.arange(0, GP)
    for b0 in range(0, B, BB):
        rows = b0 + tl.arange(0, BB)
        _, d_logits, _ = _contrast_rows(lse_ptr, valid_ptr, rows, B, G, snb, snk, gamma, eps, HAS_VALID, GP)
        tl.store(
            dlse_ptr + rows[:, None].to(tl.int64) * G + offs_g[None, :],
            d_logits * inv_count,
            mask=(rows < B)[:, None] & (offs_g < G)[None, :],
        )


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
    stats_ptr,
    rows_ptr,
    counts_ptr,
    dv_ptr,
    dv_acc_ptr,
    dx_ptr,
    dscale_part_ptr,
    G,
    T,
    P,
    D,
    n_pos,
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
    HAS_VALID: tl.constexpr,
    HAS_DLSE: tl.constexpr,
    SOFTMAX: tl.constexpr,
    SPARSIFY: tl.constexpr,
    BT: tl.constexpr,
    BP: tl.constexpr,
    BD: tl.constexpr,
    CHUNKS: tl.constexpr,
    BLOCK_TT: tl.constexpr,
    GP: tl.constexpr,
    ZD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Program ``(split, b)`` owns columns ``[split*CHUNKS*BD, (split+1)*CHUNKS*BD)`` of image
    ``b``'s gradients: ``dV_b`` and ``dX`` of all its captions. It walks the image's row list in
    blocks of BT rows (rows of different captions share a block), recomputes ``S``, ``W`` and
    the needed columns of ``Z``, and accumulates ``dV_b = sum W^T dZ`` in that fixed order, so no
    two programs ever write the same element. Split 0 also writes ``sum da * cos`` for the
    ``logit_scale`` gradient. ``dl = upstream * dlse`` (loss) or ``upstream`` (scores)."""
    split = tl.program_id(0)  # an image's splits run side by side and share its tokens in L2
    b = tl.program_id(1)
    b64 = b.to(tl.int64)
    col0 = split * (CHUNKS * BD)
    offs_tt = tl.arange(0, BLOCK_TT)

    # Positions that are not rows get an exact zero gradient (missing negatives included).
    for g in range(0, G):
        counted = _counted_positions(
            mask_ptr, valid_ptr, b, g, T, smb, smg, smt, snb, snk, HAS_VALID, BLOCK_TT
        )
        zero_rows = (counted == 0) & (offs_tt < T)
        dx_cap = dx_ptr + ((b64 * G + g) * T + offs_tt) * D
        for c0 in range(col0, col0 + CHUNKS * BD, ZD):
            offs_d = c0 + tl.arange(0, ZD)
            tl.store(
                dx_cap[:, None] + offs_d[None, :],
                tl.zeros((BLOCK_TT, ZD), dtype=dx_ptr.dtype.element_ty),
                mask=zero_rows[:, None] & (offs_d < D)[None, :],
            )

    offs_g = tl.arange(0, GP)
    n_rows = tl.sum(tl.load(counts_ptr + b64 * G + offs_g, mask=offs_g < G, other=0), axis=0)
    n_blocks = tl.maximum(tl.cdiv(n_rows, BT), 1)  # an image without rows still writes dV_b = 0
    scale = tl.load(scale_ptr).to(tl.float32)
    v_img = v_ptr + b64 * svb
    offs_p = tl.arange(0, BP)
    p_ok = offs_p < P
    dscale = 0.0
    for blk in range(0, n_blocks):
        i = blk * BT + tl.arange(0, BT)
        row_ok = i < n_rows
        q = tl.load(rows_ptr + b64 * G * T + i, mask=row_ok, other=0)
        g_row = q // T
        x_rows = x_ptr + b64 * sxb + g_row.to(tl.int64) * sxg + (q % T).to(tl.int64) * sxt
        w, xx = _row_weights(
            x_rows, row_ok, v_img, svp, svd, sxd, P, D, SOFTMAX, SPARSIFY, BT, BP, BD, DOT_PRECISION
        )
        w_lp = w.to(x_ptr.dtype.element_ty)
        pos = b64 * G * T + q
        zx = tl.load(stats_ptr + pos, mask=row_ok, other=0.0)
        zz = tl.load(stats_ptr + n_pos + pos, mask=row_ok, other=0.0)
        cos = _cosine(zx, zz, xx)
        cap = b64 * G + g_row
        dl = tl.load(up_ptr + b64 * sub + g_row * sug, mask=row_ok, other=0.0).to(tl.float32)
        if HAS_DLSE:
            dl = dl * tl.load(dlse_ptr + cap, mask=row_ok, other=0.0)
        lse = tl.load(lse_ptr + cap, mask=row_ok, other=0.0)
        da = tl.where(row_ok, dl * tl.exp(scale * cos - lse), 0.0)
        dscale += tl.sum(da * cos, axis=0)
        # d cos / dZ = (X - [|Z| > eps] Z <Z,X>/|Z|^2) / (max(|Z|,eps) max(|X|,eps)), and the
        # same with Z and X swapped: F.normalize's clamp_min passes no gradient at or below eps.
        nz = tl.sqrt(zz)
        nx = tl.sqrt(xx)
        coef = da * scale / (tl.maximum(nz, _NORM_EPS) * tl.maximum(nx, _NORM_EPS))
        z_proj = tl.where(nz > _NORM_EPS, zx / tl.where(zz > 0.0, zz, 1.0), 0.0)
        x_proj = tl.where(nx > _NORM_EPS, zx / tl.where(xx > 0.0, xx, 1.0), 0.0)
        last = blk == n_blocks - 1
        for c in range(0, CHUNKS):
            offs_d = col0 + c * BD + tl.arange(0, BD)
            d_ok = offs_d < D
            z = _pooled_chunk(w_lp, v_img, svp, svd, offs_d, d_ok, P, BP, DOT_PRECISION)
            x = tl.load(
                x_rows[:, None] + offs_d[None, :] * sxd, mask=row_ok[:, None] & d_ok[None, :], other=0.0
            ).to(tl.float32)
            dx = coef[:, None] * (z - x_proj[:, None] * x)
            tl.store(
                dx_ptr + pos[:, None] * D + offs_d[None, :],
                dx.to(dx_ptr.dtype.element_ty),
                mask=row_ok[:, None] & d_ok[None, :],
            )
            dz = coef[:, None] * (x - z_proj[:, None] * z)
            dv_part = tl.dot(tl.trans(w_lp), dz.to(w_lp.dtype), input_precision=DOT_PRECISION)
            # dV_b accumulates over the image's row blocks in fp32 (in place when dV is fp32):
            # read-modify-write by this program only, in block order.
            tile = b64 * P * D + offs_p[:, None] * D + offs_d[None, :]
            tile_ok = p_ok[:, None] & d_ok[None, :]
            dv = dv_part + tl.load(dv_acc_ptr + tile, mask=tile_ok & (blk > 0), other=0.0)
            tl.store(dv_ptr + tile, dv.to(dv_ptr.dtype.element_ty), mask=tile_ok & last)
            tl.store(dv_acc_ptr + tile, dv, mask=tile_ok & (blk < n_blocks - 1))
        # The next block reads back what other threads of this program just stored.
        tl.debug_barrier()
    tl.store(dscale_part_ptr + b, dscale, mask=split == 0)


@triton.jit
def _sum_kernel(part_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """A single program: ``out = sum(part)`` in a fixed order, stored in ``out``'s dtype."""
    total = 0.0
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        total += tl.sum(tl.load(part_ptr + offs, mask=offs < n, other=0.0), axis=0)
    tl.store(out_ptr, total.to(out_ptr.dtype.element_ty))


# ---------------------------------------------------------------------------------------------
# Host functions: allocation, block sizes, grids, strides
# ---------------------------------------------------------------------------------------------


def _empty(shape, dtype, device) -> torch.Tensor:
    """Every buffer the host code allocates goes through here (tests fill them with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


@functools.cache
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def _dot_precision(dtype: torch.dtype) -> str:
    # The similarity map decides the weights: TF32's 10-bit mantissa would move them visibly.
    return "ieee" if dtype == torch.float32 else "tf32"


def _fwd_config(dtype: torch.dtype, num_patches: int, width: int) -> tuple[int, int, int, int]:
    """``(BT, BP, BD, num_warps)`` of the scores kernel: the whole padded patch axis in one tile.

    Chosen by compiling for sm_90 and reading the register use (docs/kernels.md): the largest
    D chunk that does not spill. 16 rows cover a typical caption in one block.
    """
    bp = max(16, triton.next_power_of_2(num_patches))
    bd_cap = max(16, triton.next_power_of_2(width))
    if dtype == torch.float32:  # FMA dots hold both operands' whole K extent in registers
        return 16, bp, 16, 4 if bp <= 64 else 8 if bp <= 256 else 16
    return 16, bp, min(64, max(16, 8192 // bp), bd_cap), 4 if bp <= 128 else 8


def _bwd_config(dtype: torch.dtype, num_patches: int, width: int) -> tuple[int, int, int, int]:
    """``(BT, BP, BD, num_warps)`` of the token-gradient kernel, chosen like ``_fwd_config``;
    the most rows that do not spill, since every further row block of an image costs a
    read-modify-write of its dV."""
    bp = max(16, triton.next_power_of_2(num_patches))
    if dtype == torch.float32:
        # 16 warps spill least from 256 patches on; at 1024 they would need 226 KiB of shared
        # memory, within 1 KiB of the limit.
        return 16, bp, 16, 16 if 256 <= bp <= 512 else 8
    bd = min(32 if bp <= 64 else 16, max(16, triton.next_power_of_2(width)))
    return min(64, max(16, 8192 // bp)), bp, bd, 8


def _valid_args(neg_valid: torch.Tensor | None, stand_in: torch.Tensor):
    """neg_valid as bytes (a free view, any strides) with its strides; without it, a never-read
    stand-in pointer."""
    if neg_valid is None:
        return stand_in, 0, 0
    valid = neg_valid.view(torch.uint8)
    return (valid, *valid.stride())


def _scores_fwd(
    image_tokens, text_tokens, text_mask, logit_scale, neg_valid, normalizer, sparsify, write_scores
):
    """Launch 1. Returns ``scores (B, G)`` in the tokens' dtype (None unless write_scores),
    ``lse (B, G)`` fp32, ``stats (2, B, G, T)`` fp32 (``<Z,X>``, ``|Z|^2`` on rows, else 0),
    ``rows (B, G*T)`` int32 (each image's row ids ``g*T + t``, then -1) and ``counts (B, G)``
    int32."""
    B, P, D = image_tokens.shape
    G, T = text_tokens.shape[1], text_tokens.shape[2]
    device = image_tokens.device
    bt, bp, bd, num_warps = _fwd_config(text_tokens.dtype, P, D)
    lse = _empty((B, G), torch.float32, device)
    scores = _empty((B, G), text_tokens.dtype, device) if write_scores else lse
    stats = _empty((2, B, G, T), torch.float32, device)
    rows = _empty((B, G * T), torch.int32, device)
    counts = _empty((B, G), torch.int32, device)
    mask = text_mask.view(torch.uint8)
    valid, snb, snk = _valid_args(neg_valid, mask)
    _scores_fwd_kernel[(B * G,)](
        image_tokens,
        text_tokens,
        mask,
        valid,
        logit_scale,
        lse,
        scores,
        stats,
        rows,
        counts,
        G,
        T,
        P,
        D,
        B * G * T,
        *image_tokens.stride(),
        *text_tokens.stride(),
        *mask.stride(),
        snb,
        snk,
        HAS_VALID=neg_valid is not None,
        WRITE_SCORES=write_scores,
        SOFTMAX=normalizer == "softmax",
        SPARSIFY=bool(sparsify),
        BT=bt,
        BP=bp,
        BD=bd,
        BLOCK_TT=triton.next_power_of_2(T),
        DOT_PRECISION=_dot_precision(text_tokens.dtype),
        num_warps=num_warps,
    )
    return (scores if write_scores else None), lse, stats, rows, counts


def _contrast_fwd(lse, neg_valid, focal_gamma, label_smoothing, out_dtype):
    """Launch 2 of the loss. Returns ``loss ()`` in ``out_dtype`` and ``dLoss/dl (B, G)`` fp32."""
    B, G = lse.shape
    loss = _empty((), out_dtype, lse.device)
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


def _local_hn_bwd(
    grad,
    dlse,
    image_tokens,
    text_tokens,
    text_mask,
    logit_scale,
    neg_valid,
    lse,
    stats,
    rows,
    counts,
    normalizer,
    sparsify,
):
    """Backward launches. ``grad`` is the upstream gradient: ``()`` for the loss (with ``dlse``
    its ``dLoss/dl``), ``(B, G)`` for the scores (``dlse`` None). Returns the gradients of
    image_tokens ``(B, P, D)``, text_tokens ``(B, G, T, D)`` and logit_scale ``()``, each in its
    input's dtype."""
    B, P, D = image_tokens.shape
    G, T = text_tokens.shape[1], text_tokens.shape[2]
    device = image_tokens.device
    bt, bp, bd, num_warps = _bwd_config(text_tokens.dtype, P, D)
    n_chunks = triton.cdiv(D, bd)
    # Each split recomputes S over the full width: split only as far as it fills idle SMs.
    splits = max(1, min(n_chunks, _num_sms(device) // B))
    chunks = triton.cdiv(n_chunks, splits)
    splits = triton.cdiv(n_chunks, chunks)

    d_image = _empty((B, P, D), image_tokens.dtype, device)
    d_text = _empty((B, G, T, D), text_tokens.dtype, device)
    d_scale = _empty((), logit_scale.dtype, device)
    dscale_part = _empty((B,), torch.float32, device)
    if image_tokens.dtype == torch.float32 or G * T <= bt:
        dv_acc = d_image  # fp32 accumulates in place; a single row block never reads back
    else:
        dv_acc = _empty((B, P, D), torch.float32, device)
    mask = text_mask.view(torch.uint8)
    valid, snb, snk = _valid_args(neg_valid, mask)
    up_strides = grad.stride() if grad.dim() == 2 else (0, 0)
    block_tt = triton.next_power_of_2(T)
    _tokens_bwd_kernel[(splits, B)](
        image_tokens,
        text_tokens,
        mask,
        valid,
        logit_scale,
        grad,
        lse if dlse is None else dlse,
        lse,
        stats,
        rows,
        counts,
        d_image,
        dv_acc,
        d_text,
        dscale_part,
        G,
        T,
        P,
        D,
        B * G * T,
        *image_tokens.stride(),
        *text_tokens.stride(),
        *mask.stride(),
        snb,
        snk,
        *up_strides,
        HAS_VALID=neg_valid is not None,
        HAS_DLSE=dlse is not None,
        SOFTMAX=normalizer == "softmax",
        SPARSIFY=bool(sparsify),
        BT=bt,
        BP=bp,
        BD=bd,
        CHUNKS=chunks,
        BLOCK_TT=block_tt,
        GP=max(2, triton.next_power_of_2(G)),
        ZD=min(bd, max(16, 4096 // block_tt)),
        DOT_PRECISION=_dot_precision(text_tokens.dtype),
        num_warps=num_warps,
    )
    _sum_kernel[(1,)](
        dscale_part, d_scale, B, BLOCK=max(16, min(1024, triton.next_power_of_2(B))), num_warps=4
    )
    return d_image, d_text, d_scale


# ---------------------------------------------------------------------------------------------
# torch.library custom ops, their fake implementations and autograd
# ---------------------------------------------------------------------------------------------


def _saved_like(image_tokens: torch.Tensor, text_tokens: torch.Tensor):
    """Fake ``lse, stats, rows, counts`` with the shapes ``_scores_fwd`` returns."""
    B, G, T = text_tokens.shape[:3]
    device = image_tokens.device
    return (
        torch.empty((B, G), dtype=torch.float32, device=device),
        torch.empty((2, B, G, T), dtype=torch.float32, device=device),
        torch.empty((B, G * T), dtype=torch.int32, device=device),
        torch.empty((B, G), dtype=torch.int32, device=device),
    )


@torch.library.custom_op("fsc_losses::local_hn_scores", mutates_args=())
def _scores_op(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor,
    normalizer: str,
    sparsify: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``scores (B, G)`` in the tokens' dtype, then what the backward needs (see _scores_fwd)."""
    return _scores_fwd(
        image_tokens, text_tokens, text_mask, logit_scale, None, normalizer, sparsify, write_scores=True
    )


@_scores_op.register_fake
def _scores_fake(image_tokens, text_tokens, text_mask, logit_scale, normalizer, sparsify):
    B, G = text_tokens.shape[:2]
    scores = torch.empty((B, G), dtype=text_tokens.dtype, device=text_tokens.device)
    return (scores, *_saved_like(image_tokens, text_tokens))


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``loss ()`` in the tokens' dtype, ``dLoss/dl (B, G)`` fp32, then what _scores_fwd saves."""
    _, lse, stats, rows, counts = _scores_fwd(
        image_tokens, text_tokens, text_mask, logit_scale, neg_valid, normalizer, sparsify, write_scores=False
    )
    loss, dlse = _contrast_fwd(lse, neg_valid, focal_gamma, label_smoothing, text_tokens.dtype)
    return loss, dlse, lse, stats, rows, counts


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
):
    B, G = text_tokens.shape[:2]
    loss = torch.empty((), dtype=text_tokens.dtype, device=text_tokens.device)
    dlse = torch.empty((B, G), dtype=torch.float32, device=text_tokens.device)
    return (loss, dlse, *_saved_like(image_tokens, text_tokens))


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
    stats: torch.Tensor,
    rows: torch.Tensor,
    counts: torch.Tensor,
    normalizer: str,
    sparsify: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of image_tokens, text_tokens and logit_scale (see _local_hn_bwd)."""
    return _local_hn_bwd(
        grad,
        dlse,
        image_tokens,
        text_tokens,
        text_mask,
        logit_scale,
        neg_valid,
        lse,
        stats,
        rows,
        counts,
        normalizer,
        sparsify,
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
    stats,
    rows,
    counts,
    normalizer,
    sparsify,
):
    # Contiguous, like the real gradients (empty_like would keep a grouped view's strides).
    return tuple(
        torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (image_tokens, text_tokens, logit_scale)
    )


def _setup_scores(ctx, inputs, output):
    image_tokens, text_tokens, text_mask, logit_scale, normalizer, sparsify = inputs
    _, lse, stats, rows, counts = output
    # The saved outputs get no gradient: no zeros are materialised for them in the backward.
    ctx.mark_non_differentiable(lse, stats, rows, counts)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(image_tokens, text_tokens, text_mask, logit_scale, lse, stats, rows, counts)
    ctx.normalizer, ctx.sparsify = normalizer, sparsify


def _scores_backward(ctx, grad_scores, *_):
    image_tokens, text_tokens, text_mask, logit_scale, lse, stats, rows, counts = ctx.saved_tensors
    d_image, d_text, d_scale = _bwd_op(
        grad_scores,
        None,
        image_tokens,
        text_tokens,
        text_mask,
        logit_scale,
        None,
        lse,
        stats,
        rows,
        counts,
        ctx.normalizer,
        ctx.sparsify,
    )
    return d_image, d_text, None, d_scale, None, None


def _setup_loss(ctx, inputs, output):
    (image_tokens, text_tokens, text_mask, logit_scale, neg_valid, normalizer, sparsify, _, _) = inputs
    _, dlse, lse, stats, rows, counts = output
    ctx.mark_non_differentiable(dlse, lse, stats, rows, counts)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(
        image_tokens, text_tokens, text_mask, logit_scale, neg_valid, dlse, lse, stats, rows, counts
    )
    ctx.normalizer, ctx.sparsify = normalizer, sparsify


def _loss_backward(ctx, grad_loss, *_):
    (image_tokens, text_tokens, text_mask, logit_scale, neg_valid, dlse, lse, stats, rows, counts) = (
        ctx.saved_tensors
    )
    d_image, d_text, d_scale = _bwd_op(
        grad_loss,
        dlse,
        image_tokens,
        text_tokens,
        text_mask,
        logit_scale,
        neg_valid,
        lse,
        stats,
        rows,
        counts,
        ctx.normalizer,
        ctx.sparsify,
    )
    return d_image, d_text, None, d_scale, None, None, None, None, None


_scores_op.register_autograd(_scores_backward, setup_context=_setup_scores)
_loss_op.register_autograd(_loss_backward, setup_context=_setup_loss)


# ---------------------------------------------------------------------------------------------
# Public functions (called by fsc_losses.functional on validated inputs)
# ---------------------------------------------------------------------------------------------


def unsupported_reason(image_tokens: torch.Tensor, text_tokens: torch.Tensor) -> str | None:
    """Why the kernels cannot take these inputs, or None when they can.

    Args:
        image_tokens: ``(B, P, D)``.
        text_tokens: ``(B, G, T, D)``.
    """
    if image_tokens.dtype not in _DTYPES or text_tokens.dtype != image_tokens.dtype:
        return f"token dtypes {image_tokens.dtype}/{text_tokens.dtype} (need one of fp32/fp16/bf16)"
    if image_tokens.device != text_tokens.device:
        return "image and text tokens on different devices"
    device = image_tokens.device
    if device.type != "cuda" and not (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return f"tensors on {device} (need CUDA, or the CPU with TRITON_INTERPRET=1)"
    B, P, D = image_tokens.shape
    G, T = text_tokens.shape[1], text_tokens.shape[2]
    if min(B, P, D, T) == 0:
        return "empty inputs"
    if G > _MAX_GROUPS:
        return f"{G} captions per image (at most {_MAX_GROUPS})"
    if P > _MAX_PATCHES:
        return f"{P} patches (at most {_MAX_PATCHES})"
    if D > _MAX_WIDTH:
        return f"width {D} (at most {_MAX_WIDTH})"
    if T > _MAX_POSITIONS:
        return f"{T} text positions (at most {_MAX_POSITIONS})"
    return None


def local_hn_scores(
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    logit_scale: torch.Tensor,
    normalizer: str,
    sparsify: bool,
) -> torch.Tensor:
    """Local score of every (image, own caption) pair, as ``reference.local_hn_scores``.

    Args:
        image_tokens: ``(B, P, D)`` fp32/fp16/bf16, any strides.
        text_tokens: ``(B, G, T, D)`` same dtype, any strides (grouped or expanded views).
        text_mask: ``(B, G, T)`` bool.
        logit_scale: ``()`` floating.
        normalizer: ``"minmax"`` or ``"softmax"``; sparsify: minmax only.

    Returns:
        ``(B, G)`` in the tokens' dtype, ``-inf`` where a caption counts no position;
        differentiable w.r.t. image_tokens, text_tokens and logit_scale.
    """
    return _scores_op(image_tokens, text_tokens, text_mask, logit_scale, normalizer, bool(sparsify))[0]


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
) -> torch.Tensor:
    """``reference.hn_contrast_loss(reference.local_hn_scores(...), neg_valid, focal_gamma,
    label_smoothing)`` in two launches.

    Args:
        as :func:`local_hn_scores`, plus ``neg_valid (B, G-1)`` bool or None (all present),
        ``focal_gamma >= 0`` and ``label_smoothing`` in ``[0, 1)``. A missing negative neither
        affects the loss nor receives gradient; a present caption counts at least one position.

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
    )[0]
