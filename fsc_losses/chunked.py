"""The linear cross-entropy without the ``(N, V)`` logits: plain PyTorch, any device.

The vocabulary is cut into blocks of ``chunk`` entries. The forward runs an online logsumexp over
the blocks (a running maximum and sum per position) and keeps, per position, only the logsumexp,
the target's logit and, with label smoothing, the (class-weighted) sum of the logits. The backward
recomputes each block's logits from ``hidden`` and ``weight``, turns them into that block's logit
gradient (from the loss's and the logsumexp's upstream gradients), and takes from it the block's
rows of the weight (and bias) gradient, complete, and its contribution to the hidden gradient,
accumulated in float32. Everything after the matmuls is float32 (float64 for float64 inputs). Live
memory beyond the inputs and the returned gradients is a few ``(N, chunk)`` float32 blocks,
``O(N)`` vectors and, for 16-bit inputs, the ``(N, H)`` float32 hidden-gradient accumulator.

Blocks of the vocabulary rather than of the positions: each weight-gradient row then comes from a
single matmul over all positions, rounded once to the input dtype, instead of a sum over position
chunks that a 16-bit gradient could not hold without a ``(V, H)`` float32 buffer; the float32
accumulator is the hidden gradient's, ``N * H``, smaller than ``V * H`` in LM training.

The loop is over Python ints fixed by the shapes, the math has no data-dependent control flow and
nothing reads a value back to the host, so the function traces under ``torch.compile`` with
``fullgraph=True`` and never synchronises. It adds no non-determinism of its own (no atomics, sums
in a fixed order): reruns are bitwise equal wherever the matmuls are.
"""

from __future__ import annotations

import math

import torch

# The default block: at most this many bytes of float32 logits...
BLOCK_BUDGET_BYTES = 128 * 2**20
# ...and at most 1/MIN_BLOCKS of the vocabulary, so that the workspace stays a small fraction of
# the logits it replaces even where the budget would hold them all...
MIN_BLOCKS = 16
# ...but at least this many entries, below which matmuls get inefficient.
MIN_CHUNK = 128


def default_chunk_size(num_positions: int, vocab_size: int) -> int:
    """Vocabulary entries per block for ``num_positions`` rows: the largest block whose float32
    logits fit :data:`BLOCK_BUDGET_BYTES` and that is at most ``1/MIN_BLOCKS`` of the vocabulary,
    but at least :data:`MIN_CHUNK` entries (and at most ``vocab_size``)."""
    budget = BLOCK_BUDGET_BYTES // (4 * max(num_positions, 1))
    chunk = max(MIN_CHUNK, min(math.ceil(vocab_size / MIN_BLOCKS), budget))
    return min(chunk, vocab_size)


def _block_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, start: int, end: int
) -> torch.Tensor:
    """``(N, end - start)`` logits of vocabulary entries ``start:end`` in float32 (float64 for
    float64 inputs), before any soft cap, a fresh tensor the caller may overwrite. As in the
    reference: the matmul in the inputs' dtype, then the accumulation dtype."""
    accumulate = torch.promote_types(hidden.dtype, torch.float32)
    logits = (hidden @ weight[start:end].T).to(accumulate)
    if bias is not None:
        logits = logits + bias[start:end].to(accumulate)
    return logits


def _soft_capped(logits: torch.Tensor, softcap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``softcap * tanh(logits / softcap)`` and ``tanh(logits / softcap)`` (whose ``1 - t**2`` is
    the cap's derivative); overwrites ``logits``."""
    tanh = logits.div_(softcap).tanh_()
    return tanh * softcap, tanh


def _target_in_block(targets: torch.Tensor, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 1)`` column of each target within the block (clamped when outside it) and ``(N,)``
    whether it is inside."""
    inside = (targets >= start) & (targets < end)
    column = (targets - start).clamp(0, end - start - 1).unsqueeze(1)
    return column, inside


def _class_weights(
    class_weight: torch.Tensor | None, targets: torch.Tensor, vocab_size: int
) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """``(N,)`` class weight of each target (clamped into ``[0, V)``: ignored and out-of-range
    positions are masked later) and the sum of all class weights; 1 and ``V`` without weights."""
    if class_weight is None:
        return 1.0, float(vocab_size)
    return class_weight[targets.clamp(0, vocab_size - 1)], class_weight.sum()


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Per-position losses and logsumexps ``(N,)`` (float32, or float64 for float64 inputs) of
    ``hidden (N, H)``, ``weight (V, H)``, ``bias (V,)`` or None, ``targets (N,)`` int64, with
    ``class_weight (V,)`` (accumulation dtype) or None; both 0 at ``ignore_index``, the loss NaN at
    any other target outside ``[0, V)`` (the checks normally refuse those before they get here).
    ``softcap`` is a positive float or None (no cap). Both outputs are differentiable."""

    @staticmethod
    def forward(
        ctx, hidden, weight, bias, class_weight, targets, ignore_index, label_smoothing, softcap, chunk
    ):
        num_positions, vocab_size = hidden.shape[0], weight.shape[0]
        per_position = dict(device=hidden.device, dtype=torch.promote_types(hidden.dtype, torch.float32))
        running_max = torch.full((num_positions,), float("-inf"), **per_position)
        running_sum = torch.zeros(num_positions, **per_position)
        target_logit = torch.zeros(num_positions, **per_position)
        weighted_logit_sum = torch.zeros(num_positions, **per_position)  # sum_j w_j logit_j
        for start in range(0, vocab_size, chunk):
            end = min(start + chunk, vocab_size)
            logits = _block_logits(hidden, weight, bias, start, end)
            if softcap is not None:
                logits = _soft_capped(logits, softcap)[0]
            column, inside = _target_in_block(targets, start, end)
            target_logit = target_logit + torch.where(inside, logits.gather(1, column).squeeze(1), 0.0)
            if label_smoothing:
                weighted = logits.sum(dim=1) if class_weight is None else logits @ class_weight[start:end]
                weighted_logit_sum = weighted_logit_sum + weighted
            new_max = torch.maximum(running_max, logits.amax(dim=1))
            block_sum = logits.sub_(new_max.unsqueeze(1)).exp_().sum(dim=1)
            running_sum = running_sum * (running_max - new_max).exp() + block_sum
            running_max = new_max
        lse = running_max + running_sum.log()

        # F.cross_entropy's: (1 - eps) w_t (lse - logit_t) + eps / V * sum_j w_j (lse - logit_j)
        target_weight, total_weight = _class_weights(class_weight, targets, vocab_size)
        losses = (1 - label_smoothing) * target_weight * (lse - target_logit)
        if label_smoothing:
            losses = losses + (label_smoothing / vocab_size) * (total_weight * lse - weighted_logit_sum)
        counted = targets != ignore_index
        in_range = (targets >= 0) & (targets < vocab_size)
        losses = torch.where(counted, torch.where(in_range, losses, float("nan")), 0.0)

        ctx.save_for_backward(hidden, weight, bias, class_weight, targets, lse)
        ctx.options = (ignore_index, label_smoothing, softcap, chunk)
        ctx.set_materialize_grads(False)
        return losses, torch.where(counted, lse, 0.0)

    @staticmethod
    def backward(ctx, grad_losses, grad_lse):
        hidden, weight, bias, class_weight, targets, lse = ctx.saved_tensors
        ignore_index, label_smoothing, softcap, chunk = ctx.options
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        vocab_size = weight.shape[0]

        # With g the loss's upstream gradient and h the lse's, on the logits after the cap:
        # d / d logit_ij = (g_i ((1 - eps) w_t + eps W / V) + h_i) p_ij - g_i (1 - eps) w_t [j = t_i]
        # - g_i eps w_j / V  (w = 1, W = V without class weights); times the cap's derivative
        # 1 - tanh**2 for the logits before it. Ignored positions get none.
        counted = targets != ignore_index
        target_weight, total_weight = _class_weights(class_weight, targets, vocab_size)
        grad = torch.zeros_like(lse)
        if grad_losses is not None:
            grad = torch.where(counted, grad_losses.to(lse.dtype), 0.0)
        softmax_scale = grad * (
            (1 - label_smoothing) * target_weight + label_smoothing / vocab_size * total_weight
        )
        if grad_lse is not None:
            softmax_scale = softmax_scale + torch.where(counted, grad_lse.to(lse.dtype), 0.0)
        softmax_scale = softmax_scale.unsqueeze(1)
        target_grad = (grad * (1 - label_smoothing) * target_weight).unsqueeze(1)
        uniform_grad = grad * (label_smoothing / vocab_size)

        grad_hidden = (
            torch.zeros(hidden.shape, dtype=lse.dtype, device=hidden.device) if need_hidden else None
        )
        grad_weight = torch.empty_like(weight) if need_weight else None
        grad_bias = torch.empty_like(bias) if need_bias else None
        for start in range(0, vocab_size, chunk):
            end = min(start + chunk, vocab_size)
            grad_logits = _block_logits(hidden, weight, bias, start, end)
            if softcap is not None:
                grad_logits, tanh = _soft_capped(grad_logits, softcap)
            grad_logits.sub_(lse.unsqueeze(1)).exp_().mul_(softmax_scale)
            if label_smoothing and class_weight is None:
                grad_logits.sub_(uniform_grad.unsqueeze(1))
            elif label_smoothing:
                grad_logits.addr_(uniform_grad, class_weight[start:end], alpha=-1)
            column, inside = _target_in_block(targets, start, end)
            at_target = grad_logits.gather(1, column)
            grad_logits.scatter_(1, column, at_target - torch.where(inside.unsqueeze(1), target_grad, 0.0))
            if softcap is not None:
                grad_logits.mul_(tanh.square_().neg_().add_(1))
            if need_bias:
                grad_bias[start:end] = grad_logits.sum(dim=0)
            grad_logits = grad_logits.to(hidden.dtype)
            if need_hidden:
                grad_hidden += grad_logits @ weight[start:end]
            if need_weight:
                grad_weight[start:end] = grad_logits.T @ hidden
        if need_hidden:
            grad_hidden = grad_hidden.to(hidden.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    softcap: float | None = None,
    class_weight: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fsc_losses.reference.linear_cross_entropy` (same arguments and results) computed one
    vocabulary block at a time; ``chunk_size`` entries per block, default
    :func:`default_chunk_size`."""
    chunk = chunk_size or default_chunk_size(hidden.shape[0], weight.shape[0])
    if class_weight is not None:
        class_weight = class_weight.detach().to(torch.promote_types(hidden.dtype, torch.float32))
    return ChunkedLinearCrossEntropy.apply(
        hidden,
        weight,
        bias,
        class_weight,
        targets,
        ignore_index,
        float(label_smoothing),
        None if softcap is None else float(softcap),
        chunk,
    )
