"""linear_cross_entropy / LinearCrossEntropy: both backends against the logits materialised in
float64 and F.cross_entropy, for every option and their combinations; odd sizes, strides, dtypes,
bad inputs, torch.compile, and the chunked backend's memory bound."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fsc_losses import LinearCrossEntropy, chunked, linear_cross_entropy

IGNORE = -100
BACKENDS = ["chunked", "reference"]


def make_inputs(batch=(3, 7), hidden_size=8, vocab=37, dtype=torch.float64, bias=False, seed=0, ignored=0.3):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*batch, hidden_size, generator=g, dtype=torch.float64).to(dtype)
    weight = (torch.randn(vocab, hidden_size, generator=g, dtype=torch.float64) / hidden_size**0.25).to(dtype)
    b = torch.randn(vocab, generator=g, dtype=torch.float64).to(dtype) if bias else None
    targets = torch.randint(0, vocab, batch, generator=g)
    targets[torch.rand(batch, generator=g) < ignored] = IGNORE
    return hidden, weight, targets, b


def expected_loss(
    hidden,
    weight,
    targets,
    bias,
    *,
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    class_weight=None,
    reduction="mean",
    shift=False,
    return_z_loss=False,
    return_lse=False,
):
    """Materialised float64 logits, soft-capped as Gemma 2 caps them, and F.cross_entropy with
    its own reductions (class weights included), plus the z-loss term averaged over the counted
    positions; ``shift`` by slicing, then the per-position outputs padded back to ``(..., L)``."""
    full_shape = targets.shape
    if shift:
        hidden, targets = hidden[..., :-1, :], targets[..., 1:]
    logits = hidden.double() @ weight.double().T
    if bias is not None:
        logits = logits + bias.double()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    flat_logits, flat_targets = logits.reshape(-1, weight.shape[0]), targets.reshape(-1)
    ce_options = dict(
        weight=None if class_weight is None else class_weight.double(),
        ignore_index=IGNORE,
        label_smoothing=label_smoothing,
    )
    counted = flat_targets != IGNORE
    lse = torch.where(counted, flat_logits.logsumexp(-1), 0.0)
    z_term = z_loss * lse**2

    def per_position(values):  # (N,) -> targets' unshifted shape, 0 at the last position with shift
        values = values.view(targets.shape)
        if shift:
            values = torch.cat([values, values.new_zeros(*values.shape[:-1], 1)], dim=-1)
        assert values.shape == full_shape
        return values

    if reduction == "none":
        losses = F.cross_entropy(flat_logits, flat_targets, **ce_options, reduction="none")
        loss, z_term = per_position(losses + z_term), per_position(z_term)
    elif reduction == "sum":
        losses = F.cross_entropy(flat_logits, flat_targets, **ce_options, reduction="sum")
        loss, z_term = losses + z_term.sum(), z_term.sum()
    else:
        losses = F.cross_entropy(flat_logits, flat_targets, **ce_options, reduction="mean")
        z_term = z_term.sum() / counted.sum()
        loss = losses + z_term
    extras = ([z_term] if return_z_loss else []) + ([per_position(lse)] if return_lse else [])
    return (loss, *extras) if extras else loss


def leaves(hidden, weight, bias):
    return [t.detach().clone().requires_grad_() if t is not None else None for t in (hidden, weight, bias)]


def loss_and_grads(fn, hidden, weight, targets, bias, upstream_seed=1, **options):
    """The loss (or the tuple of outputs) and the gradients of hidden, weight (and bias) for
    random upstream gradients, one per output."""
    hidden, weight, bias = leaves(hidden, weight, bias)
    result = fn(hidden, weight, targets, bias, **options)
    outputs = result if isinstance(result, tuple) else (result,)
    upstreams = [  # drawn in float64, then cast: the same values for every dtype of output
        torch.randn(
            out.shape, generator=torch.Generator().manual_seed(upstream_seed + i), dtype=torch.float64
        ).to(out.dtype)
        for i, out in enumerate(outputs)
    ]
    inputs = [t for t in (hidden, weight, bias) if t is not None]
    grads = torch.autograd.grad(outputs, inputs, upstreams)
    detached = tuple(out.detach() for out in outputs)
    return (detached if isinstance(result, tuple) else detached[0]), grads


def assert_matches(got, got_grads, want, want_grads):
    """Loss (or outputs) and gradients equal to float64 rounding."""
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def call_expected(hidden, weight, targets, bias, **options):
    options.pop("backend", None)
    options.pop("chunk_size", None)
    return expected_loss(hidden, weight, targets, bias, **options)


def class_weights(vocab, dtype=torch.float64, seed=5):
    """Random class weights in [0, 2): some classes nearly ignored, some counted twice."""
    return 2 * torch.rand(vocab, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "label_smoothing, z_loss, softcap, weighted, reduction, with_bias_and_shift",
    list(
        itertools.product(
            [0.0, 0.1], [0.0, 1e-2], [None, 1.5], [False, True], ["mean", "sum", "none"], [False, True]
        )
    ),
)
def test_every_option_combination_matches_materialised_logits(
    backend, label_smoothing, z_loss, softcap, weighted, reduction, with_bias_and_shift
):
    """The loss, the z-loss term and the lse, and the gradients through all three. The bias and
    the shift touch nothing the other options do (the logits' matmul, the targets' order), so
    they vary together."""
    with_bias = shift = with_bias_and_shift
    # logits have a standard deviation of about 2, so a cap of 1.5 bends most of them
    hidden, weight, targets, bias = make_inputs(bias=with_bias)
    options = dict(
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        class_weight=class_weights(weight.shape[0]) if weighted else None,
        reduction=reduction,
        shift=shift,
        return_z_loss=True,
        return_lse=True,
    )
    got, got_grads = loss_and_grads(
        linear_cross_entropy, hidden, weight, targets, bias, backend=backend, chunk_size=10, **options
    )
    want, want_grads = loss_and_grads(call_expected, hidden, weight, targets, bias, **options)
    if shift:
        # the last position predicts nothing: its lse (and its "none" loss) is 0 and its upstream
        # gradient is unused
        assert torch.equal(got[2][..., -1], torch.zeros_like(got[2][..., -1]))
    assert [t.dtype for t in got] == [torch.float64] * 3 and [t.shape for t in got] == [t.shape for t in want]
    assert len(got_grads) == len(want_grads) == (3 if with_bias else 2)
    assert_matches(got, got_grads, want, want_grads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_positions_get_zero_loss_and_gradient(backend):
    hidden, weight, targets, bias = make_inputs(batch=(40,), ignored=0.5, bias=True)
    hidden, weight, bias = leaves(hidden, weight, bias)
    losses = linear_cross_entropy(
        hidden, weight, targets, bias, reduction="none", backend=backend, chunk_size=7, label_smoothing=0.2
    )
    ignored = targets == IGNORE
    assert ignored.any() and (~ignored).any()
    assert torch.equal(losses[ignored], torch.zeros(int(ignored.sum()), dtype=torch.float64))
    upstream = torch.randn(40, dtype=torch.float64)
    upstream[ignored] = float("nan")  # must not leak into any gradient
    grad_hidden, grad_weight, grad_bias = torch.autograd.grad(losses, (hidden, weight, bias), upstream)
    assert torch.equal(grad_hidden[ignored], torch.zeros_like(grad_hidden[ignored]))
    assert (
        torch.isfinite(grad_hidden).all()
        and torch.isfinite(grad_weight).all()
        and torch.isfinite(grad_bias).all()
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ignore_index", [-1, 3])
def test_other_ignore_index(backend, ignore_index):
    """Any int, even a class id, marks the positions to skip, as in F.cross_entropy."""
    hidden, weight, targets, bias = make_inputs(bias=True, ignored=0)
    targets[:, ::3] = ignore_index
    got, got_grads = loss_and_grads(
        linear_cross_entropy,
        hidden,
        weight,
        targets,
        bias,
        backend=backend,
        ignore_index=ignore_index,
        shift=True,
    )
    hidden, weight, bias = leaves(hidden, weight, bias)
    logits = hidden[:, :-1] @ weight.T + bias
    want = F.cross_entropy(logits.flatten(0, 1), targets[:, 1:].flatten(), ignore_index=ignore_index)
    upstream = torch.randn((), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want_grads = torch.autograd.grad(want, (hidden, weight, bias), upstream)
    assert_matches(got, got_grads, want.detach(), want_grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_all_targets_ignored_is_an_exact_differentiable_zero(backend, reduction, weighted):
    """Our convention where F.cross_entropy, CCE and Liger return NaN for "mean" (docs/lvlm.md)."""
    hidden, weight, targets, bias = make_inputs(bias=True, ignored=1.0)
    assert (targets == IGNORE).all()
    hidden, weight, bias = leaves(hidden, weight, bias)
    class_weight = class_weights(weight.shape[0]) if weighted else None
    loss, z_term, lse = linear_cross_entropy(
        hidden,
        weight,
        targets,
        bias,
        reduction=reduction,
        backend=backend,
        z_loss=0.1,
        label_smoothing=0.1,
        class_weight=class_weight,
        return_z_loss=True,
        return_lse=True,
    )
    assert loss.requires_grad and loss.item() == 0.0 and z_term.item() == 0.0
    assert torch.equal(lse, torch.zeros_like(lse))
    for grad in torch.autograd.grad(loss + lse.sum(), (hidden, weight, bias)):
        assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("backend", BACKENDS)
def test_targets_of_zero_weight_count_nothing(backend):
    """Class weight 0 on every counted target: F.cross_entropy's mean is 0/0 there; ours, as for no
    counted target, divides by 1: the loss is the label-smoothing part alone, and the z-loss term
    still averages over the counted positions."""
    hidden, weight, targets, bias = make_inputs(bias=True)
    class_weight = class_weights(weight.shape[0])
    class_weight[targets[targets != IGNORE]] = 0.0
    options = dict(backend=backend, class_weight=class_weight, label_smoothing=0.1, z_loss=0.1)
    total = linear_cross_entropy(
        hidden, weight, targets, bias, reduction="sum", return_z_loss=True, **options
    )
    loss, z_term = linear_cross_entropy(hidden, weight, targets, bias, return_z_loss=True, **options)
    torch.testing.assert_close(loss - z_term, total[0] - total[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(z_term, total[1] / (targets != IGNORE).sum(), rtol=1e-12, atol=0)
    assert torch.isfinite(loss) and loss > z_term


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_asked_for(backend):
    """A bare tensor by default; ``loss, z_loss`` (Liger's order), ``loss, lse`` (CCE's), or all
    three, each equal to the full call's."""
    hidden, weight, targets, bias = make_inputs(bias=True)
    options = dict(backend=backend, z_loss=1e-2, shift=True)
    loss = linear_cross_entropy(hidden, weight, targets, bias, **options)
    assert isinstance(loss, torch.Tensor)
    full = linear_cross_entropy(hidden, weight, targets, bias, return_z_loss=True, return_lse=True, **options)
    assert len(full) == 3 and torch.equal(full[0], loss) and full[2].shape == targets.shape
    loss_z = linear_cross_entropy(hidden, weight, targets, bias, return_z_loss=True, **options)
    loss_lse = linear_cross_entropy(hidden, weight, targets, bias, return_lse=True, **options)
    assert all(torch.equal(a, b) for a, b in zip(loss_z, full[:2], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(loss_lse, full[::2], strict=True))
    no_z = linear_cross_entropy(hidden, weight, targets, bias, return_z_loss=True, backend=backend)
    assert no_z[1].item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_lse_alone_has_the_logsumexp_gradient(backend):
    """Only the lse used (the loss gets no upstream gradient): the gradient of the logsumexp of
    the counted positions' logits."""
    hidden, weight, targets, bias = make_inputs(bias=True)
    options = dict(backend=backend, softcap=2.0, return_lse=True, chunk_size=10)
    got, got_grads = loss_and_grads(
        lambda *a, **k: linear_cross_entropy(*a, **k)[1], hidden, weight, targets, bias, **options
    )

    def lse(hidden, weight, targets, bias):
        logits = 2.0 * torch.tanh((hidden @ weight.T + bias) / 2.0)
        return torch.where(targets != IGNORE, logits.logsumexp(-1), 0.0)

    want, want_grads = loss_and_grads(lse, hidden, weight, targets, bias)
    assert_matches(got, got_grads, want, want_grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "batch, vocab, chunk",
    [
        ((1,), 37, 10),
        ((1,), 5, 128),
        ((4, 9), 37, 37),
        ((4, 9), 37, 36),
        ((4, 9), 37, 1),
        ((2, 5), 300, None),
    ],
)
def test_odd_sizes(backend, batch, vocab, chunk):
    hidden, weight, targets, bias = make_inputs(
        batch=batch, vocab=vocab, bias=True, ignored=0.2 if batch[0] > 1 else 0
    )
    got, got_grads = loss_and_grads(
        linear_cross_entropy,
        hidden,
        weight,
        targets,
        bias,
        backend=backend,
        chunk_size=chunk,
        label_smoothing=0.1,
    )
    want, want_grads = loss_and_grads(call_expected, hidden, weight, targets, bias, label_smoothing=0.1)
    assert_matches(got, got_grads, want, want_grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["transposed", "strided_features", "sliced"])
def test_non_contiguous_hidden(backend, layout):
    hidden, weight, targets, _ = make_inputs(batch=(4, 6))
    if layout == "transposed":  # (L, B, H) storage seen as (B, L, H)
        hidden = hidden.transpose(0, 1).contiguous().transpose(0, 1)
    elif layout == "strided_features":
        hidden = torch.stack([hidden, torch.zeros_like(hidden)], dim=-1).flatten(-2)[..., ::2]
    else:  # every other sequence of a larger batch
        hidden = torch.stack([hidden, torch.randn_like(hidden)], dim=1)[:, 0]
    assert not hidden.is_contiguous()
    for shift in (False, True):
        got, got_grads = loss_and_grads(
            linear_cross_entropy, hidden, weight, targets, None, backend=backend, chunk_size=8, shift=shift
        )
        want, want_grads = loss_and_grads(call_expected, hidden, weight, targets, None, shift=shift)
        assert_matches(got, got_grads, want, want_grads)


def _storages(tree):
    return {t.untyped_storage().data_ptr() for t in tree_leaves(tree) if isinstance(t, torch.Tensor)}


class LargestOutputs(TorchDispatchMode):
    """Records the number of elements of the largest tensor any aten op builds (views and in-place
    results, which alias an input, build nothing)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = _storages((args, kwargs))
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, t.numel())
        return out


def largest_saved_and_built(backend, shift):
    n_seq, length, hidden_size, vocab, chunk = 4, 16, 16, 1000, 100
    hidden, weight, targets, bias = make_inputs(batch=(n_seq, length), hidden_size=hidden_size, vocab=vocab)
    hidden, weight, _ = leaves(hidden, weight, None)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with LargestOutputs() as built, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = linear_cross_entropy(hidden, weight, targets, backend=backend, chunk_size=chunk, shift=shift)
        loss.backward()
    return max(saved), built.largest, n_seq * length, hidden_size, vocab, chunk


@pytest.mark.parametrize("shift", [False, True])
def test_chunked_never_builds_the_logits(shift):
    largest_saved, largest_built, n, hidden_size, vocab, chunk = largest_saved_and_built("chunked", shift)
    # saved for backward: the inputs and per-position vectors only
    assert largest_saved == vocab * hidden_size
    # built: (N, chunk) blocks, the (V, H) and (N, H) gradients; never (N, V), nor a copy of hidden
    assert largest_built == max(n * chunk, vocab * hidden_size, n * hidden_size) < n * vocab


def test_the_probe_sees_the_reference_logits():
    largest_saved, largest_built, n, _, vocab, _ = largest_saved_and_built("reference", False)
    assert largest_saved >= n * vocab and largest_built >= n * vocab


def test_shift_does_not_copy_hidden():
    """With shift=True the targets move, not hidden: no op builds even the shifted slice of hidden
    in the forward, which is what shifting hidden would copy (the chunk is smaller than H, so a
    block is smaller too)."""
    hidden, weight, targets, _ = make_inputs(batch=(4, 16), hidden_size=64, vocab=50)
    with LargestOutputs() as built:
        linear_cross_entropy(hidden, weight, targets, shift=True, backend="chunked", chunk_size=8)
    assert built.largest < hidden[:, :-1].numel()


def test_chunked_is_deterministic():
    hidden, weight, targets, bias = make_inputs(batch=(6, 11), vocab=301, dtype=torch.float32, bias=True)
    runs = [
        loss_and_grads(
            linear_cross_entropy, hidden, weight, targets, bias, chunk_size=64, label_smoothing=0.1
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


# Stated tolerances for 16-bit inputs, against the float64 loss of the same (rounded) inputs:
# the logits are rounded once to the input dtype, as the model's own LM head would round them.
LOW_PRECISION = {torch.bfloat16: dict(loss=2e-2, grad=2e-2), torch.float16: dict(loss=3e-3, grad=3e-3)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_dtypes(dtype, backend):
    """Every option at once (float32 class weights, as users pass them), the loss, the z-loss
    term and the lse, and the gradients through all three."""
    hidden, weight, targets, bias = make_inputs(
        batch=(8, 16), hidden_size=32, vocab=500, dtype=dtype, bias=True
    )
    options = dict(
        label_smoothing=0.1,
        z_loss=1e-3,
        softcap=4.0,
        class_weight=class_weights(500, torch.float32),
        return_z_loss=True,
        return_lse=True,
    )
    got, got_grads = loss_and_grads(
        linear_cross_entropy, hidden, weight, targets, bias, backend=backend, chunk_size=96, **options
    )
    want, want_grads = loss_and_grads(call_expected, hidden, weight, targets, bias, **options)
    assert [t.dtype for t in got] == [torch.float32] * 3
    assert [g.dtype for g in got_grads] == [dtype] * 3
    tol = LOW_PRECISION.get(dtype, dict(loss=1e-5, grad=1e-5))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), w, rtol=tol["loss"], atol=tol["loss"])
    for g, w in zip(got_grads, want_grads, strict=True):
        w = w.double()
        torch.testing.assert_close(g.double(), w, rtol=0, atol=tol["grad"] * w.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_chunked_matches_reference_roundings(dtype):
    """Both backends round the logits the same way; only the order of float32 sums differs."""
    hidden, weight, targets, bias = make_inputs(
        batch=(8, 16), hidden_size=32, vocab=500, dtype=dtype, bias=True
    )
    options = dict(softcap=4.0)
    chunked_out = loss_and_grads(
        linear_cross_entropy, hidden, weight, targets, bias, chunk_size=96, **options
    )
    reference_out = loss_and_grads(
        linear_cross_entropy, hidden, weight, targets, bias, backend="reference", **options
    )
    torch.testing.assert_close(chunked_out[0], reference_out[0], rtol=1e-5, atol=1e-5)
    for g, w in zip(chunked_out[1], reference_out[1], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-2, atol=1e-2 * w.abs().max().item())


def test_autocast_casts_inputs_like_the_lm_head():
    hidden, weight, targets, _ = make_inputs(batch=(4, 8), hidden_size=16, vocab=100, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_grads = loss_and_grads(linear_cross_entropy, hidden, weight, targets, None, chunk_size=30)
    want, want_grads = loss_and_grads(
        linear_cross_entropy, hidden.bfloat16(), weight.bfloat16(), targets, None, chunk_size=30
    )
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert [g.dtype for g in got_grads] == [torch.float32, torch.float32]
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w.float(), rtol=0, atol=0)


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compiler):
    """fullgraph=True: no graph break, so no host synchronisation in the traced path (the value
    check is skipped under compilation)."""
    torch._dynamo.reset()
    hidden, weight, targets, bias = make_inputs(
        batch=(4, 9), hidden_size=16, vocab=200, dtype=torch.float32, bias=True
    )
    options = dict(
        label_smoothing=0.1,
        z_loss=1e-3,
        softcap=3.0,
        class_weight=class_weights(200, torch.float32),
        shift=True,
        return_lse=True,
        chunk_size=64,
    )

    def loss_fn(hidden, weight, targets, bias):
        return linear_cross_entropy(hidden, weight, targets, bias, **options)

    compiled = torch.compile(loss_fn, fullgraph=True, backend=compiler)
    got, got_grads = loss_and_grads(lambda *a: compiled(*a), hidden, weight, targets, bias)
    want, want_grads = loss_and_grads(loss_fn, hidden, weight, targets, bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_unchecked_out_of_range_target_is_nan_in_chunked():
    hidden, weight, targets, _ = make_inputs(batch=(6,), ignored=0)
    targets[2] = weight.shape[0]
    losses = linear_cross_entropy(hidden, weight, targets, reduction="none", check_inputs=False)
    assert torch.isnan(losses[2]) and torch.isfinite(losses[torch.arange(6) != 2]).all()


def test_module_matches_function_and_keeps_options():
    hidden, weight, targets, bias = make_inputs(bias=True)
    options = dict(
        label_smoothing=0.1,
        z_loss=1e-3,
        softcap=2.0,
        class_weight=class_weights(weight.shape[0]),
        reduction="sum",
        shift=True,
        return_z_loss=True,
        return_lse=True,
        chunk_size=5,
    )
    module = LinearCrossEntropy(**options)
    want = linear_cross_entropy(hidden, weight, targets, bias, **options)
    got = module(hidden, weight, targets, bias)
    assert len(got) == 3 and all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert not torch.equal(
        LinearCrossEntropy(reduction="sum", shift=True)(hidden, weight, targets, bias), want[0]
    )
    assert all(
        f in repr(module)
        for f in ("reduction='sum'", "shift=True", "softcap=2.0", "class_weight=(37,)", "return_lse=True")
    )
    # the class weights are a buffer, as nn.CrossEntropyLoss's: they follow .to() and the state dict
    assert torch.equal(module.state_dict()["class_weight"], options["class_weight"])
    assert module.to(torch.float32).class_weight.dtype == torch.float32
    assert "class_weight" not in LinearCrossEntropy().state_dict()


def test_default_chunk_size_comes_from_the_budget():
    # small problems: 1/16 of the vocabulary, at least MIN_CHUNK, at most V
    assert chunked.default_chunk_size(2048, 32000) == 2000
    assert chunked.default_chunk_size(10, 1000) == chunked.MIN_CHUNK
    assert chunked.default_chunk_size(10, 50) == 50
    # large ones: the float32 block fits the budget
    n, vocab = 8192, 256000
    chunk = chunked.default_chunk_size(n, vocab)
    assert 4 * n * chunk <= chunked.BLOCK_BUDGET_BYTES < 4 * n * (chunk + 1)
    assert chunked.default_chunk_size(10**7, vocab) == chunked.MIN_CHUNK


BAD_INPUTS = [
    ("hidden_size", dict(weight=torch.zeros(37, 9)), ValueError, r"weight has H = 9"),
    (
        "targets_shape",
        dict(targets=torch.zeros(3, 6, dtype=torch.long)),
        ValueError,
        r"targets must have hidden's shape",
    ),
    ("bias_shape", dict(bias=torch.zeros(36)), ValueError, r"bias has V = 36"),
    ("bias_rank", dict(bias=torch.zeros(37, 1)), ValueError, r"bias must have shape \(V,\)"),
    ("weight_rank", dict(weight=torch.zeros(37, 8, 1)), ValueError, r"weight must have shape \(V, H\)"),
    ("float_targets", dict(targets=torch.zeros(3, 7)), TypeError, r"targets must be an integer tensor"),
    (
        "bool_targets",
        dict(targets=torch.zeros(3, 7, dtype=torch.bool)),
        TypeError,
        r"targets must be an integer",
    ),
    (
        "int_hidden",
        dict(hidden=torch.zeros(3, 7, 8, dtype=torch.long)),
        TypeError,
        r"hidden must be a floating",
    ),
    ("weight_device", dict(weight=torch.zeros(37, 8, device="meta")), ValueError, r"weight on meta"),
    ("bias_device", dict(bias=torch.zeros(37, device="meta")), ValueError, r"bias on meta"),
    ("dtype", dict(weight=torch.zeros(37, 8, dtype=torch.float32)), TypeError, r"must share a dtype"),
    (
        "empty_batch",
        dict(hidden=torch.zeros(0, 7, 8), targets=torch.zeros(0, 7, dtype=torch.long)),
        ValueError,
        "empty",
    ),
    ("empty_vocab", dict(weight=torch.zeros(0, 8), bias=None), ValueError, r"vocabulary is empty"),
    ("not_a_tensor", dict(targets=[1, 2, 3]), TypeError, r"targets must be a torch.Tensor"),
    (
        "target_too_large",
        dict(targets=torch.full((3, 7), 37)),
        ValueError,
        r"targets\[0, 0\] = 37 is not a class",
    ),
    ("target_negative", dict(targets=torch.full((3, 7), -1)), ValueError, r"targets\[0, 0\] = -1"),
    ("reduction", dict(reduction="avg"), ValueError, r"reduction must be one of"),
    (
        "backend",
        dict(backend="triton"),
        ValueError,
        r"backend must be one of \('auto', 'chunked', 'reference'\)",
    ),
    ("label_smoothing", dict(label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0, 1\]"),
    ("z_loss", dict(z_loss=-1.0), ValueError, r"z_loss must be"),
    ("chunk_size", dict(chunk_size=0), ValueError, r"chunk_size must be a positive int"),
    ("softcap_zero", dict(softcap=0.0), ValueError, r"softcap must be a finite number > 0, or None"),
    ("softcap_negative", dict(softcap=-30.0), ValueError, r"softcap must be"),
    ("softcap_inf", dict(softcap=float("inf")), ValueError, r"softcap must be"),
    ("softcap_bool", dict(softcap=True), ValueError, r"softcap must be"),
    ("ignore_index", dict(ignore_index=1.5), TypeError, r"ignore_index must be an int"),
    ("class_weight_shape", dict(class_weight=torch.ones(36)), ValueError, r"class_weight has V = 36"),
    (
        "class_weight_rank",
        dict(class_weight=torch.ones(37, 1)),
        ValueError,
        r"class_weight must have shape \(V,\)",
    ),
    (
        "class_weight_int",
        dict(class_weight=torch.ones(37, dtype=torch.long)),
        TypeError,
        r"class_weight must be a floating",
    ),
    (
        "class_weight_device",
        dict(class_weight=torch.ones(37, device="meta")),
        ValueError,
        r"class_weight on meta",
    ),
    (
        "class_weight_grad",
        dict(class_weight=torch.ones(37, requires_grad=True)),
        ValueError,
        r"class_weight requires grad",
    ),
    ("class_weight_list", dict(class_weight=[1.0] * 37), TypeError, r"class_weight must be a torch.Tensor"),
    (
        "shift_rank",
        dict(
            hidden=torch.zeros(7, dtype=torch.float64), targets=torch.zeros((), dtype=torch.long), shift=True
        ),
        ValueError,
        r"hidden must have shape \(\.\.\., L, H\)",
    ),
]


@pytest.mark.parametrize("name, change, error, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_name_the_argument(name, change, error, message):
    hidden, weight, targets, bias = make_inputs(bias=True)
    args = dict(hidden=hidden, weight=weight, targets=targets, bias=bias)
    options = {k: v for k, v in change.items() if k not in args}
    args.update({k: v for k, v in change.items() if k in args})
    with pytest.raises(error, match=message):
        linear_cross_entropy(**args, **options)


def test_out_of_range_check_can_be_skipped():
    hidden, weight, targets, _ = make_inputs()
    targets[1, 2] = 1000
    linear_cross_entropy(hidden, weight, targets, check_inputs=False)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(reduction="avg"), "reduction"),
        (dict(backend="x"), "backend"),
        (dict(chunk_size=-3), "chunk_size"),
        (dict(softcap=0), "softcap"),
        (dict(class_weight=torch.ones(3, 1)), "class_weight"),
    ],
)
def test_module_checks_options_at_construction(options, message):
    with pytest.raises(ValueError, match=message):
        LinearCrossEntropy(**options)
