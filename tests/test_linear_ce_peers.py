"""``linear_cross_entropy`` on the peers' own test cases, at the peers' tolerances.

The cases (shapes, input distributions, options, tolerances) are those of Liger-Kernel's
``test/transformers/test_fused_linear_cross_entropy.py`` (commit ead96b6) and of Apple's Cut
Cross-Entropy ``tests/test_cce_loss_forward.py`` / ``tests/test_cce_loss_backward.py`` (commit
d42911f), restated here; the ground truths are written here from what those tests compute. Where
our conventions differ (docs/lvlm.md, "Parity with Liger-Kernel and Cut Cross-Entropy"), the ground
truth follows ours and says so.

What is not ported: Liger's ``accum_dtype`` (we always accumulate in float32), token accuracy,
predicted tokens and token scaling (we have none of them); CCE's integer ``shift=2`` (our ``shift``
is the causal-LM shift by one), its gradient filter and vocabulary parallelism. To keep CI on a
2-core CPU short: Liger's large shape (B, T, H, V) = (8, 128, 1024, 4096) runs two of its 32
correctness cases (every option, bf16 and fp32) and its bf16 autocast case, the small shape all of
them; CCE's backward runs every option combination in fp32 and bf16 at its odd shape, fp16 (whose
CPU matmuls are slow) with ignored targets, the mean and the z-loss.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F

from fsc_losses import linear_cross_entropy

# ------------------------------------------------------------------------------------------------
# Liger-Kernel
# ------------------------------------------------------------------------------------------------

LIGER_SMALL, LIGER_LARGE = (4, 47, 31, 123), (8, 128, 1024, 4096)  # (B, T, H, V)
# (reduction, dtype, atol, rtol); Liger's "sum" bf16 tolerance is as loose as this in its suite
LIGER_TOLERANCES = [
    ("mean", torch.bfloat16, 5e-3, 5e-2),
    ("mean", torch.float32, 1e-5, 5e-4),
    ("sum", torch.bfloat16, 5e0, 5e1),
    ("sum", torch.float32, 1e-3, 5e-2),
]
# defaults, then every option at once: class weights, label smoothing, an ignore_index that is a
# class id, z-loss (Liger's lse_square_scale), soft cap, the z-loss term returned
LIGER_OPTIONS = {
    "defaults": dict(weighted=False, label_smoothing=0.0, ignore_index=-100, z_loss=0.0, softcap=None),
    "every_option": dict(weighted=True, label_smoothing=0.1, ignore_index=42, z_loss=1e-4, softcap=30.0),
}


def lm_head_cross_entropy(
    hidden, weight, bias, targets, *, class_weight, ignore_index, label_smoothing, z_loss, softcap, reduction
):
    """What the peers' ground truth computes: the LM head in the inputs' dtype (``nn.Linear``:
    the bias added inside the matmul), then float32 logits, the cap, ``F.cross_entropy`` and the
    z-loss term ``z_loss * lse**2`` over the counted positions (mean: divided by their number).
    Returns the loss and the z-loss term."""
    logits = F.linear(hidden, weight, bias).float()
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    loss = F.cross_entropy(
        logits,
        targets,
        weight=class_weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    counted = targets != ignore_index
    z_term = torch.where(counted, z_loss * logits.logsumexp(-1) ** 2, 0.0)
    z_term = {"mean": z_term.sum() / counted.sum(), "sum": z_term.sum(), "none": z_term}[reduction]
    return loss + z_term, z_term


def liger_inputs(shape, dtype, with_bias, ignore_index, seed=0):
    """Liger's draws: ``weight ~ U(0, 1)`` of shape ``(V, H)``, ``bias ~ U(0, 1)``, hidden states
    ``N(0, 1)`` of shape ``(B*T, H)``, uniform targets with between 1 and ``B*T/2`` of them set to
    ``ignore_index``."""
    B, T, H, V = shape
    g = torch.Generator().manual_seed(seed)
    weight = torch.rand(V, H, generator=g).to(dtype)
    bias = torch.rand(V, generator=g).to(dtype) if with_bias else None
    hidden = torch.randn(B * T, H, generator=g).to(dtype)
    targets = torch.randint(0, V, (B * T,), generator=g)
    num_ignored = int(torch.randint(1, B * T // 2, (1,), generator=g))
    targets[torch.randperm(B * T, generator=g)[:num_ignored]] = ignore_index
    return hidden, weight, bias, targets


def liger_cases():
    for shape, tolerances, with_bias, options in itertools.product(
        (LIGER_SMALL, LIGER_LARGE), LIGER_TOLERANCES, (True, False), LIGER_OPTIONS
    ):
        if shape == LIGER_LARGE and not (tolerances[0] == "mean" and with_bias and options == "every_option"):
            continue
        yield pytest.param(
            shape, *tolerances, with_bias, options, id=f"{shape}-{tolerances[:2]}-{with_bias}-{options}"
        )


@pytest.mark.parametrize("shape, reduction, dtype, atol, rtol, with_bias, options", list(liger_cases()))
def test_liger_correctness(shape, reduction, dtype, atol, rtol, with_bias, options):
    """Liger's ``test_correctness``: the loss, the z-loss term and the gradients of the hidden
    states, the weight and the bias for an upstream gradient of ones; and its
    ``test_correctness_with_forward_only``: the same values under ``torch.no_grad``."""
    options = dict(LIGER_OPTIONS[options])
    class_weight = (
        torch.rand(shape[3], generator=torch.Generator().manual_seed(1)) if options.pop("weighted") else None
    )
    hidden, weight, bias, targets = liger_inputs(shape, dtype, with_bias, options["ignore_index"])
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias) if t is not None]
    want = lm_head_cross_entropy(
        *leaves[:2],
        leaves[2] if with_bias else None,
        targets,
        class_weight=class_weight,
        reduction=reduction,
        **options,
    )
    want_grads = torch.autograd.grad(want[0], leaves)

    ours = [t.clone().requires_grad_() for t in (hidden, weight, bias) if t is not None]
    call = dict(class_weight=class_weight, reduction=reduction, return_z_loss=True, **options)
    got = linear_cross_entropy(ours[0], ours[1], targets, ours[2] if with_bias else None, **call)
    got_grads = torch.autograd.grad(got[0], ours)
    with torch.no_grad():
        forward_only = linear_cross_entropy(hidden, weight, targets, bias, **call)

    for g, w in zip((*got, *forward_only), (*want, *want), strict=True):
        torch.testing.assert_close(g, w.detach(), atol=atol, rtol=rtol)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol)


@pytest.mark.parametrize("shape", [(2, 2, 8, 8), (9, 7, 41, 41)])  # (B, T, H, V)
@pytest.mark.parametrize("dtype, atol, rtol", [(torch.bfloat16, 5e-3, 5e-2), (torch.float32, 1e-5, 5e-4)])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_liger_functional(shape, dtype, atol, rtol, weighted, with_bias):
    """Liger's ``test_correctness_functional``: ``N(0, 1)`` weight, bias and class weights (some
    negative), every option, the mean; the loss, the z-loss term and the hidden states' gradient
    for a random upstream gradient."""
    B, T, H, V = shape
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(B * T, H, generator=g).to(dtype)
    targets = torch.randint(0, V, (B * T,), generator=g)
    weight = torch.randn(V, H, generator=g).to(dtype)
    bias = torch.randn(V, generator=g).to(dtype) if with_bias else None
    class_weight = torch.randn(V, generator=g) if weighted else None
    options = dict(ignore_index=-100, z_loss=1e-4, label_smoothing=0.1, softcap=30.0, reduction="mean")
    upstream = torch.randn((), generator=g)

    x = hidden.clone().requires_grad_()
    want = lm_head_cross_entropy(x, weight, bias, targets, class_weight=class_weight, **options)
    (want_grad,) = torch.autograd.grad(want[0], x, upstream)
    x = hidden.clone().requires_grad_()
    got = linear_cross_entropy(
        x, weight, targets, bias, class_weight=class_weight, return_z_loss=True, **options
    )
    (got_grad,) = torch.autograd.grad(got[0], x, upstream)
    for g_, w in zip((*got, got_grad), (*want, want_grad), strict=True):
        torch.testing.assert_close(g_, w.detach(), atol=atol, rtol=rtol)


@pytest.mark.parametrize(
    "shape, cast_dtype",
    # float16 matmuls are slow on the CPU: the large shape in bfloat16 only
    [(LIGER_SMALL, torch.bfloat16), (LIGER_SMALL, torch.float16), (LIGER_LARGE, torch.bfloat16)],
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_liger_amp(shape, cast_dtype, with_bias):
    """Liger's ``test_amp``: float32 weight ``U(0, 1)`` and hidden states, the loss and its
    gradients under ``torch.autocast`` (the LM head in the autocast dtype), at 5e-3 / 5e-2."""
    B, T, H, V = shape
    g = torch.Generator().manual_seed(3)
    weight = torch.rand(V, H, generator=g).requires_grad_()
    bias = (torch.rand(V, generator=g) / H**0.5).requires_grad_() if with_bias else None
    hidden = torch.randn(B * T, H, generator=g).requires_grad_()
    targets = torch.randint(0, V, (B * T,), generator=g)
    leaves = [t for t in (hidden, weight, bias) if t is not None]
    with torch.autocast("cpu", dtype=cast_dtype):
        want = F.cross_entropy(F.linear(hidden, weight, bias).float(), targets)
        got = linear_cross_entropy(hidden, weight, targets, bias)
        want_grads = torch.autograd.grad(want, leaves)
        got_grads = torch.autograd.grad(got, leaves)
    for g_, w in zip((got, *got_grads), (want, *want_grads), strict=True):
        torch.testing.assert_close(g_, w, atol=5e-3, rtol=5e-2)


# ------------------------------------------------------------------------------------------------
# Cut Cross-Entropy
# ------------------------------------------------------------------------------------------------

CCE_SHAPES = [(256, 512, 128), (252, 507, 128), (252, 507, 123)]  # (N, V, D)


def cce_inputs(shape, dtype, with_bias, bias_scale, invalids, seed=0):
    """CCE's draws: embeddings ``N(0, 1/D)`` viewed ``(4, N/4, D)``, classifier ``N(0, 1)`` whose
    first ``min(N, V)/2`` rows are those embeddings (large logits on the diagonal), a small bias,
    uniform targets with 20% of them ignored when ``invalids``."""
    N, V, D = shape
    g = torch.Generator().manual_seed(seed)
    e = (torch.randn(N, D, generator=g) / D**0.5).to(dtype)
    c = torch.randn(V, D, generator=g).to(dtype)
    c[: min(N, V) // 2] = e[: min(N, V) // 2]
    bias = (torch.randn(V, generator=g) * bias_scale).to(dtype) if with_bias else None
    targets = torch.randint(0, V, (N,), generator=g)
    if invalids:
        targets[torch.randperm(N, generator=g)[: int(0.2 * N)]] = -100
    return e.view(4, -1, D), c, bias, targets.view(4, -1)


def cce_ground_truth(e, c, bias, targets, softcap, shift, reduction, z_loss):
    """CCE's ``_grads``: the logits in ``e``'s dtype, then float32, capped; ``F.cross_entropy``;
    ``"sum"`` divided by the counted positions, then a mean; plus the mean of ``lse**2`` over the
    counted positions. Our ``reduction="none"`` keeps the unshifted ``(..., T)`` shape (CCE's
    drops the last position), so with ``shift`` the mean runs over ``T`` positions per row here."""
    full_shape = targets.shape
    if shift:
        e, targets = e[:, :-1], targets[:, 1:]
    logits = e.flatten(0, -2) @ c.T
    if bias is not None:
        logits = logits + bias
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    logits, flat_targets = logits.float(), targets.flatten()
    loss = F.cross_entropy(logits, flat_targets, ignore_index=-100, reduction=reduction)
    counted = flat_targets != -100
    if reduction == "none" and shift:
        loss = torch.cat([loss.view(targets.shape), loss.new_zeros(full_shape[0], 1)], dim=1)
    if reduction == "sum":
        loss = loss / counted.sum()
    loss = loss.mean()
    if z_loss:
        lse = logits.logsumexp(-1)
        loss = loss + torch.where(counted, lse**2, 0.0).sum() / counted.sum()
    return loss


CCE_FORWARD_TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
CCE_BACKWARD_TOLERANCE = {torch.float32: 5e-4, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def assert_within_torch_error(got, truth, in_dtype, tolerance):
    """CCE's criterion: our error against the float32 truth is at most torch's own error in the
    inputs' dtype, plus ``tolerance``, element by element."""
    excess = (got.float() - truth).abs() - (in_dtype.float() - truth).abs()
    assert excess.max() <= tolerance, f"error {excess.max():.3g} beyond torch's own, allowed {tolerance}"


@pytest.mark.parametrize("shape", CCE_SHAPES)
@pytest.mark.parametrize("dtype", list(CCE_FORWARD_TOLERANCE))
@pytest.mark.parametrize("softcap", [None, 20.0])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("invalids", [False, True])
def test_cce_forward(shape, dtype, softcap, with_bias, shift, invalids):
    """CCE's ``test_loss_forward``: ``reduction="none"`` per position (CCE's shift 2 is not ours;
    shift 1 is)."""
    e, c, bias, targets = cce_inputs(shape, dtype, with_bias, 0.01, invalids)
    fp32 = [None if t is None else t.float() for t in (e, c, bias)]

    def per_position(e, c, bias):
        full = torch.zeros(targets.shape)
        rows = slice(None, -1) if shift else slice(None)
        logits = e[:, rows].flatten(0, -2) @ c.T + (0 if bias is None else bias)
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        shifted = targets[:, 1:] if shift else targets
        losses = F.cross_entropy(logits.float(), shifted.flatten(), ignore_index=-100, reduction="none")
        full[:, rows] = losses.view(shifted.shape)
        return full

    got = linear_cross_entropy(e, c, targets, bias, softcap=softcap, shift=shift, reduction="none")
    assert got.shape == targets.shape
    assert_within_torch_error(
        got, per_position(*fp32), per_position(e, c, bias), CCE_FORWARD_TOLERANCE[dtype]
    )


def cce_backward_cases():
    """CCE's options, all combinations in float32 and bfloat16; float16 (slow on the CPU) with
    ignored targets, the mean and the z-loss."""
    for dtype, softcap, with_bias, shift, invalids, reduction, z_loss in itertools.product(
        CCE_BACKWARD_TOLERANCE,
        [None, 20.0],
        [False, True],
        [False, True],
        [False, True],
        ["none", "mean", "sum"],
        [True, False],
    ):
        if dtype == torch.float16 and not (invalids and reduction == "mean" and z_loss):
            continue
        yield pytest.param(
            dtype,
            softcap,
            with_bias,
            shift,
            invalids,
            reduction,
            z_loss,
            id=f"{dtype}-{softcap}-{with_bias}-{shift}-{invalids}-{reduction}-{z_loss}",
        )


@pytest.mark.parametrize(
    "dtype, softcap, with_bias, shift, invalids, reduction, z_loss", list(cce_backward_cases())
)
def test_cce_backward(dtype, softcap, with_bias, shift, invalids, reduction, z_loss):
    """CCE's ``test_loss_backward`` at its odd shape (252, 507, 123): the gradients of the
    embeddings, the classifier and the bias, with the z-loss built from the returned lse as CCE's
    users build it (``return_lse=True``)."""
    e, c, bias, targets = cce_inputs(CCE_SHAPES[2], dtype, with_bias, 0.02, invalids)

    def grads(fn, cast):
        leaves = [t.clone().requires_grad_() for t in (e, c, bias) if t is not None]
        inputs = [t.float() if cast else t for t in leaves]
        loss = fn(inputs[0], inputs[1], inputs[2] if with_bias else None)
        return torch.autograd.grad(loss, leaves)

    def truth(e, c, bias):
        return cce_ground_truth(e, c, bias, targets, softcap, shift, reduction, z_loss)

    def ours(e, c, bias):
        loss, lse = linear_cross_entropy(
            e, c, targets, bias, softcap=softcap, shift=shift, reduction=reduction, return_lse=True
        )
        counted = (targets[:, 1:] if shift else targets) != -100
        if reduction == "sum":
            loss = loss / counted.sum()
        loss = loss.mean()
        return loss + lse.square().sum() / counted.sum() if z_loss else loss

    tolerance = CCE_BACKWARD_TOLERANCE[dtype]
    for got, want, in_dtype in zip(grads(ours, False), grads(truth, True), grads(truth, False), strict=True):
        assert_within_torch_error(got, want, in_dtype, tolerance)
