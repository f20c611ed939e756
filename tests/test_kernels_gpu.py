"""The local HN Triton kernels on a CUDA device, at the ANCHORS shapes (skipped without CUDA).

Accuracy: the kernel's error against the float64 reference on the same rounded inputs, at most
``TOLERANCE[dtype]`` times the largest element (per image for the 16-bit gradients: ``HALF_ULPS``).
The 16-bit tolerances are 4 ulps, set from the kernels' emulated arithmetic
(tests/test_kernel_emulation.py), whose errors are under 2: a gradient 10% off fails. (v3 compared
with twice the error of the reference run in the kernels' dtype, 5-11% in bf16: a gradient 10% off
everywhere would have passed.)

Rehearsal without a GPU: ``FSC_GPU_DRY_RUN=1`` runs the tests that need no CUDA machinery
(streams, graphs, the profiler, inductor, two devices) on the CPU, under Triton's interpreter, at
small stand-in shapes, and fp16 for bf16 (which the interpreter gets wrong), so that
``scripts/gpu_check.sh``'s rehearsal exercises their logic.
"""

import os
import subprocess
import sys

import pytest
import torch

from fsc_losses import functional, reference

from .test_kernels import assert_within_ulps_per_image

local_hn = pytest.importorskip("fsc_losses.kernels.local_hn")

pytestmark = pytest.mark.gpu

GPU_DRY_RUN = os.environ.get("FSC_GPU_DRY_RUN") == "1" and not torch.cuda.is_available()
DEVICE = "cpu" if GPU_DRY_RUN else "cuda"
cuda_only = pytest.mark.skipif(GPU_DRY_RUN, reason="needs CUDA itself")
SHAPES = {  # (B, P, D), with K = 3 negatives and T = 77 positions of which 10-20 count
    "B32": (256, 49, 512),
    "B16": (128, 196, 512),
    "L14": (64, 256, 768),
    "L14_336": (64, 576, 768),
}
if GPU_DRY_RUN:  # the same kinds of shapes, small: one patch tile, a partial one, several
    SHAPES = {"B32": (3, 7, 24), "B16": (2, 40, 24), "L14": (2, 64, 40), "L14_336": (2, 72, 40)}
K, T = 3, 77
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Largest |kernel - exact| allowed, relative to the largest |exact| (for logit_scale's gradient,
# to sum |upstream|). 16-bit: 4 ulps at the largest element (the emulation: under 2 per image).
# fp32: 2e-5, five times the interpreter's largest at ViT-L/14 with logit_scale = 100, which
# multiplies the cosines' rounding before exp (4e-6).
TOLERANCE = {torch.float32: 2e-5, torch.float16: 4 * 2.0**-10, torch.bfloat16: 4 * 2.0**-7}
LEAVES = ("image_tokens", "text_tokens", "logit_scale")


def kernel_dtype(dtype):
    """The dtype a test runs the kernels in: bf16 is fp16 in the rehearsal."""
    return torch.float16 if GPU_DRY_RUN and dtype == torch.bfloat16 else dtype


def make_inputs(B, P, D, seed=0, logit_scale=100.0, groups=1 + K, positions=T, counted=(10, 20)):
    """Float64 inputs like a CLIP batch: caption positions 1..n count (n in 10-20), some
    negatives missing."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    image = torch.randn(B, P, D, generator=gen, device=DEVICE, dtype=torch.float64)
    text = torch.randn(B, groups, positions, D, generator=gen, device=DEVICE, dtype=torch.float64)
    lengths = torch.randint(counted[0], counted[1] + 1, (B, groups, 1), generator=gen, device=DEVICE)
    where = torch.arange(positions, device=DEVICE)
    mask = (where >= 1) & (where <= lengths)
    neg_valid = torch.rand(B, groups - 1, generator=gen, device=DEVICE) < 0.9
    scale = torch.tensor(logit_scale, device=DEVICE, dtype=torch.float64)
    return image, text, mask, scale, neg_valid


def loss_fn(impl, normalizer="minmax", sparsify=False):
    def fn(image, text, mask, scale, neg_valid):
        if impl == "kernel":
            return local_hn.local_hn_loss(
                image, text, mask, scale, neg_valid, normalizer, sparsify, 2.0, 0.02
            )
        scores = reference.local_hn_scores(image, text, mask, scale, normalizer, sparsify)
        return reference.hn_contrast_loss(scores, neg_valid, 2.0, 0.02)

    return fn


def scores_fn(impl):
    def fn(image, text, mask, scale, neg_valid):
        if impl == "kernel":
            return local_hn.local_hn_scores(image, text, mask, scale, "softmax", False)
        return reference.local_hn_scores(image, text, mask, scale, "softmax", False)

    return fn


def evaluate(fn, image, text, mask, scale, neg_valid, dtype, upstream, wanted=LEAVES):
    """Output and gradients of ``fn`` on the inputs cast to ``dtype`` (scale stays float32 for
    the low precisions, as under autocast), by name: ``value`` and the ``wanted`` of ``LEAVES``
    (the others do not require grad: a frozen tower)."""
    leaves = [
        image.to(dtype).detach(),
        text.to(dtype).detach(),
        scale.to(torch.float64 if dtype == torch.float64 else torch.float32).detach(),
    ]
    for name, leaf in zip(LEAVES, leaves, strict=True):
        leaf.requires_grad_(name in wanted)
    out = fn(*leaves[:2], mask, leaves[2], neg_valid)
    asked = [leaf for name, leaf in zip(LEAVES, leaves, strict=True) if name in wanted]
    grads = torch.autograd.grad(out, asked, upstream.to(out.dtype))
    return dict(value=out, **dict(zip([n for n in LEAVES if n in wanted], grads, strict=True)))


def assert_within_tolerance(got, exact, dtype, name, magnitude=None):
    """``|got - exact| <= TOLERANCE[dtype] * magnitude`` everywhere (default magnitude: the
    largest finite ``|exact|``); the same non-finite pattern."""
    got, exact = got.detach().double(), exact.detach().double()
    finite = torch.isfinite(exact)
    assert torch.equal(torch.isfinite(got), finite), f"{name}: non-finite pattern differs"
    if not finite.any():
        return
    if magnitude is None:
        magnitude = exact[finite].abs().max().item()
    err = (got[finite] - exact[finite]).abs().max().item()
    allowed = TOLERANCE[dtype] * magnitude
    assert err <= allowed, f"{name}: error {err:.3g} > {TOLERANCE[dtype]:.3g} x {magnitude:.3g}"


def check_accuracy(fn_of, inputs, dtype, upstream, names=LEAVES):
    """``fn_of(impl)`` (``"kernel"`` or ``"reference"``) on ``inputs`` in ``dtype`` against the
    float64 reference on the same rounded inputs: the value and the gradients ``names``."""
    dtype = kernel_dtype(dtype)
    kernel = evaluate(fn_of("kernel"), *inputs, dtype, upstream)
    rounded = [inputs[0].to(dtype).double(), inputs[1].to(dtype).double(), *inputs[2:]]
    exact = evaluate(fn_of("reference"), *rounded, torch.float64, upstream)
    for name in ("value", *names):
        if name == "logit_scale":
            assert kernel[name].dtype == torch.float32
            assert_within_tolerance(kernel[name], exact[name], dtype, name, upstream.abs().sum().item())
        else:
            assert kernel[name].dtype == dtype
            assert_within_tolerance(kernel[name], exact[name], dtype, name)
    return kernel


def check_at_shape(fn_of, shape, dtype, seed=0):
    """``check_accuracy`` at an anchor shape with a random upstream gradient."""
    inputs = make_inputs(*SHAPES[shape], seed=seed)
    out_shape = () if fn_of is not scores_fn else inputs[2].shape[:2]
    gen = torch.Generator(device=DEVICE).manual_seed(seed + 1)
    upstream = torch.randn(out_shape, generator=gen, device=DEVICE, dtype=torch.float64)
    check_accuracy(fn_of, inputs, dtype, upstream)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_loss_accuracy(shape, dtype):
    check_at_shape(loss_fn, shape, dtype)


@pytest.mark.parametrize("normalizer, sparsify", [("minmax", True), ("softmax", False)])
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_loss_accuracy_other_normalizers(shape, dtype, normalizer, sparsify):
    """minmax with sparsify and softmax in 16 bits at the anchor shapes, which the interpreter
    suite only runs at tiny ones."""
    check_at_shape(lambda impl: loss_fn(impl, normalizer, sparsify), shape, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ["B32", "L14_336"])
def test_scores_accuracy(shape, dtype):
    check_at_shape(scores_fn, shape, dtype)


# Per image, ulps at the largest element, for bf16 and fp16 alike. Set from the kernels' emulated
# 16-bit arithmetic (tests/test_kernel_emulation.py, which holds it to these bounds), over this
# test's whole batches at the anchor shapes: image tokens at most 1.6 / 1.8 / 1.6 / 1.8 ulps at
# B/32, B/16, L/14, L/14-336 in bf16 (1.7 / 1.6 / 1.6 / 1.4 in fp16), text tokens at most 0.9;
# the emulation matches the fp16 kernels under the interpreter within an ulp. v3, whose weights
# were 16-bit, was at 14.5 / 22.4 / 23.2 / 12.9 in bf16.
HALF_ULPS = {"image_tokens": 4, "text_tokens": 4}


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_half_gradients_per_image(shape, dtype):
    """Each image's 16-bit gradients within a few ulps (at its largest element) of float64, with
    the upstream gradient of the batch's mean loss: the image gradient must not lose what its
    output dtype can hold (test_kernels.py's interpreter test, at every anchor shape)."""
    image, text, mask, scale, neg_valid = make_inputs(*SHAPES[shape], seed=17)
    upstream = torch.ones((), device=DEVICE, dtype=torch.float64)
    dtype = kernel_dtype(dtype)
    kernel = evaluate(loss_fn("kernel"), image, text, mask, scale, neg_valid, dtype, upstream)
    rounded = [image.to(dtype).double(), text.to(dtype).double(), mask, scale, neg_valid]
    exact = evaluate(loss_fn("reference"), *rounded, torch.float64, upstream)
    for name in LEAVES[:2]:
        assert_within_ulps_per_image(kernel[name], exact[name], dtype, name, HALF_ULPS[name])


def leaves_of(inputs, dtype):
    image, text, mask, scale, neg_valid = inputs
    return (
        image.to(dtype).requires_grad_(),
        text.to(dtype).requires_grad_(),
        mask,
        scale.float().requires_grad_(),
        neg_valid,
    )


def step(image, text, mask, scale, neg_valid):
    return local_hn.local_hn_loss(image, text, mask, scale, neg_valid, "minmax", False, 2.0, 0.02)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_deterministic(shape):
    args = leaves_of(make_inputs(*SHAPES[shape], seed=3), kernel_dtype(torch.bfloat16))
    runs = []
    for _ in range(2):
        loss = step(*args)
        runs.append((loss, *torch.autograd.grad(loss, (args[0], args[1], args[3]))))
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)


def test_grouped_and_expanded_views():
    B, P, D = SHAPES["B32"]
    image, _, mask, scale, neg_valid = make_inputs(B, P, D, seed=5)
    gen = torch.Generator(device=DEVICE).manual_seed(6)
    flat = torch.randn(B * (1 + K), T, D, generator=gen, device=DEVICE, dtype=torch.float64)
    layouts = {
        "grouped": lambda im, fl: (im, fl.view(1 + K, B, T, D).transpose(0, 1)),
        "expanded": lambda im, fl: (im[:1].expand(B, P, D), fl[: 1 + K].unsqueeze(0).expand(B, 1 + K, T, D)),
    }
    for layout, views in layouts.items():
        results = []
        for impl, dtype in (("kernel", torch.float32), ("reference", torch.float64)):
            im = image.to(dtype).requires_grad_()
            fl = flat.to(dtype).requires_grad_()
            sc = scale.to(dtype).requires_grad_()
            loss = loss_fn(impl)(*views(im, fl), mask, sc, neg_valid)
            results.append((loss, *torch.autograd.grad(loss, (im, fl, sc))))
        for name, got, want in zip(("loss", "image", "text", "scale"), *results, strict=True):
            torch.testing.assert_close(
                got.detach().double(),
                want.detach(),
                rtol=1e-4,
                atol=TOLERANCE[torch.float32] * want.abs().max().item(),
                msg=lambda m, n=name, lay=layout: f"{lay} {n}: {m}",
            )


@cuda_only
def test_torch_compile_inductor_fullgraph():
    torch._dynamo.reset()
    inputs = make_inputs(*SHAPES["B16"], seed=7)
    compiled = torch.compile(step, fullgraph=True)
    results = []
    for fn in (step, compiled):
        args = leaves_of(inputs, torch.bfloat16)
        loss = fn(*args) * 1.5
        results.append((loss, *torch.autograd.grad(loss, (args[0], args[1], args[3]))))
    for eager, traced in zip(*results, strict=True):
        torch.testing.assert_close(traced, eager, rtol=1e-2, atol=1e-3)


@cuda_only
def test_cuda_graph_capture_and_replay_of_forward_and_backward():
    args = leaves_of(make_inputs(*SHAPES["B32"], seed=9), torch.bfloat16)
    wrt = (args[0], args[1], args[3])

    def fwd_bwd():
        loss = step(*args)
        return (loss, *torch.autograd.grad(loss, wrt))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fwd_bwd()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = fwd_bwd()
    with torch.no_grad():  # new values in the same buffers, then replay
        for tensor in wrt:
            tensor.mul_(0.5)
    graph.replay()
    torch.cuda.synchronize()
    for got, want in zip(captured, fwd_bwd(), strict=True):
        assert torch.equal(got, want)


@cuda_only
def test_no_host_synchronisation():
    args = leaves_of(make_inputs(*SHAPES["B32"], seed=11), torch.float16)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = step(*args)
        torch.autograd.grad(loss, (args[0], args[1], args[3]))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda_only
def test_launch_counts():
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    args = leaves_of(make_inputs(*SHAPES["B32"], seed=13), torch.bfloat16)
    step(*args)  # compile the kernels outside the profile
    grad = torch.ones((), device="cuda", dtype=torch.bfloat16)

    def kernels(fn):
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            result = fn()
            torch.cuda.synchronize()
        return result, [e.name for e in prof.events() if e.device_type == DeviceType.CUDA]

    loss, forward = kernels(lambda: step(*args))
    _, backward = kernels(lambda: torch.autograd.grad(loss, (args[0], args[1], args[3]), grad))
    # ViT-B/32's 49 patches are one tile in 16 bits: no fix-up launch.
    assert len(forward) == 4, forward
    assert len(backward) == 1, backward


def loss_and_grads(args):
    """``step``'s loss and its gradients w.r.t. the image tokens, text tokens and scale."""
    loss = step(*args)
    return (loss, *torch.autograd.grad(loss, (args[0], args[1], args[3])))


@cuda_only
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_inputs_on_another_device_than_the_current_one():
    """Tensors on cuda:1 while device 0 is current (DDP without set_device, device_map="auto"):
    the kernels launch on cuda:1, on its stream, and give what they give with cuda:1 current."""
    args = leaves_of([t.to("cuda:1") for t in make_inputs(*SHAPES["B32"], seed=15)], torch.bfloat16)
    with torch.cuda.device(1):
        want = loss_and_grads(args)
    assert torch.cuda.current_device() == 0
    got = loss_and_grads(args)
    torch.cuda.synchronize(1)
    for g, w in zip(got, want, strict=True):
        assert g.device == torch.device("cuda:1") and torch.equal(g, w)


@cuda_only
def test_side_stream_equals_default_stream():
    """Inputs made on the default stream, the loss on a side stream: the kernels run on the
    current stream (the side one), in order with what it waits for; the results are bitwise
    those of the default stream."""
    args = leaves_of(make_inputs(*SHAPES["B32"], seed=19), torch.bfloat16)
    want = loss_and_grads(args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = loss_and_grads(args)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


@cuda_only
def test_a_view_past_2_31_elements():
    """A bf16 (P, B, D) layout permuted to (B, P, D) with (P - 1) * B * D > 2^31 (ViT-L/14-336's
    577 tokens, width 1024, 3,640 images: 4.3 GB), three of its images through the kernels:
    bitwise what a compact copy of them gives, and close to the float64 reference."""
    P, D, batch = 577, 1024, 3640
    assert (P - 1) * batch * D >= 2**31
    gen = torch.Generator(device="cuda").manual_seed(23)
    layout = torch.empty(P, batch, D, device="cuda", dtype=torch.bfloat16)
    image = layout.permute(1, 0, 2)[-3:]
    image.copy_(torch.randn(image.shape, generator=gen, device="cuda"))
    text = torch.randn(3, 1 + K, T, D, generator=gen, device="cuda").to(torch.bfloat16)
    mask = torch.arange(T, device="cuda") < 16
    mask = mask.expand(3, 1 + K, T)
    scale = torch.tensor(100.0, device="cuda")
    results = []
    for tokens in (image, image.contiguous()):
        leaves = [
            tokens.detach().requires_grad_(),
            text.detach().requires_grad_(),
            scale.clone().requires_grad_(),
        ]
        loss = local_hn.local_hn_loss(leaves[0], leaves[1], mask, leaves[2], None, "minmax", False, 2.0, 0.02)
        results.append((loss, *torch.autograd.grad(loss, leaves)))
    for got, want in zip(*results, strict=True):
        assert torch.equal(got, want)
    exact = reference.hn_contrast_loss(
        reference.local_hn_scores(image.double(), text.double(), mask, scale.double(), "minmax", False),
        None,
        2.0,
        0.02,
    )
    torch.testing.assert_close(results[0][0].double(), exact, rtol=2e-2, atol=2e-2)


@cuda_only
def test_scores_of_70000_images():
    """70,000 tiny images in one call (an evaluation set): more than the 65,535 blocks CUDA allows
    on grid axes 1 and 2."""
    B, P, D = 70_000, 4, 16
    gen = torch.Generator(device="cuda").manual_seed(29)
    image = torch.randn(B, P, D, generator=gen, device="cuda", requires_grad=True)
    text = torch.randn(B, 2, 8, D, generator=gen, device="cuda", requires_grad=True)
    mask = (torch.arange(8, device="cuda") < 5).expand(B, 2, 8)
    scale = torch.tensor(10.0, device="cuda", requires_grad=True)
    upstream = torch.randn(B, 2, generator=gen, device="cuda")
    results = []
    for scores_of in (local_hn.local_hn_scores, reference.local_hn_scores):
        scores = scores_of(image, text, mask, scale, "minmax", False)
        results.append((scores, *torch.autograd.grad(scores, (image, text, scale), upstream)))
    for name, got, want in zip(("scores", *LEAVES), *results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@cuda_only
def test_a_python_float_scale_neither_syncs_nor_breaks_graph_capture():
    """``logit_scale=100.0`` through the public function: its tensor is made once, so a later call
    does not synchronise and a CUDA graph can capture it."""
    image, text, mask, _, neg_valid = leaves_of(make_inputs(*SHAPES["B32"], seed=31), torch.bfloat16)

    def fwd_bwd():
        loss = functional.local_hn_loss(
            image, text, mask, 100.0, neg_valid, backend="triton", check_inputs=False
        )
        return (loss, *torch.autograd.grad(loss, (image, text)))

    want = fwd_bwd()  # makes the scale's tensor, and compiles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fwd_bwd()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fwd_bwd()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = fwd_bwd()
    graph.replay()
    torch.cuda.synchronize()
    for got, expected in zip(captured, want, strict=True):
        assert torch.equal(got, expected)


# Paths the anchor shapes do not take.


def upstream_of(seed):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    return torch.randn((), generator=gen, device=DEVICE, dtype=torch.float64)


@pytest.mark.parametrize(
    "wanted",
    [("text_tokens", "logit_scale"), ("image_tokens",), ("text_tokens",), ("image_tokens", "text_tokens")],
    ids=["frozen_image_tower", "image_only", "text_only", "no_scale_gradient"],
)
def test_partial_gradients(wanted):
    """The gradients asked for alone (ctx.needs_input_grad): bitwise what the whole backward
    gives, and accurate."""
    dtype = kernel_dtype(torch.bfloat16)
    inputs = make_inputs(*SHAPES["B16"], seed=33)
    upstream = upstream_of(34)
    every = check_accuracy(loss_fn, inputs, dtype, upstream)
    some = evaluate(loss_fn("kernel"), *inputs, dtype, upstream, wanted)
    for name in wanted:
        assert torch.equal(some[name], every[name]), name


def test_fresh_buffers_full_of_nan():
    """Every buffer the host code allocates filled with NaN first (on the GPU, an unwritten
    element is whatever memory held): the results are bitwise the usual ones."""
    inputs = make_inputs(*SHAPES["L14_336"], seed=35)
    upstream = upstream_of(36)
    dtype = kernel_dtype(torch.bfloat16)
    usual = evaluate(loss_fn("kernel"), *inputs, dtype, upstream)
    real = local_hn._empty

    def poisoned(shape, dtype, device, strides=None):
        return real(shape, dtype, device, strides).fill_(float("nan") if dtype.is_floating_point else 2**30)

    try:
        local_hn._empty = poisoned
        again = evaluate(loss_fn("kernel"), *inputs, dtype, upstream)
    finally:
        local_hn._empty = real
    for name, value in usual.items():
        assert torch.equal(again[name], value), name


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
def test_the_second_tile_candidate(dtype):
    """A device with just the shared memory of the smallest tiles: the plan takes them."""
    image, text = (
        torch.empty(s, dtype=kernel_dtype(dtype), device="meta") for s in ((2, 196, 8), (2, 4, 77, 8))
    )
    last = local_hn._candidates(kernel_dtype(dtype), 196)[-1]
    spec = local_hn.DeviceSpec(local_hn.shared_bytes(last, kernel_dtype(dtype), 4, 77), (9, 0))
    assert local_hn.plan(image, text, spec) == last
    real = local_hn.device_spec
    try:
        local_hn.device_spec = lambda device: spec
        check_at_shape(loss_fn, "B16", dtype, seed=37)
    finally:
        local_hn.device_spec = real


def test_inputs_not_aligned_to_16_bytes():
    """Tokens that start one element past an aligned address (a slice of a larger buffer)."""
    B, P, D = SHAPES["B16"]
    image, text, mask, scale, neg_valid = make_inputs(B, P, D, seed=39)
    dtype = kernel_dtype(torch.bfloat16)

    def misaligned(t):
        buffer = torch.empty(t.numel() + 1, dtype=dtype, device=DEVICE)
        view = buffer[1:].view(t.shape)
        view.copy_(t)
        assert view.data_ptr() % 16 != 0
        return view

    kernel_image, kernel_text = misaligned(image), misaligned(text)
    upstream = upstream_of(40)
    leaves = [kernel_image.requires_grad_(), kernel_text.requires_grad_(), scale.float().requires_grad_()]
    loss = local_hn.local_hn_loss(
        leaves[0], leaves[1], mask, leaves[2], neg_valid, "minmax", False, 2.0, 0.02
    )
    got = dict(
        value=loss,
        **dict(zip(LEAVES, torch.autograd.grad(loss, leaves, upstream.to(loss.dtype)), strict=True)),
    )
    exact = evaluate(
        loss_fn("reference"),
        image.to(dtype).double(),
        text.to(dtype).double(),
        mask,
        scale,
        neg_valid,
        torch.float64,
        upstream,
    )
    for name in ("value", "image_tokens", "text_tokens"):
        assert_within_tolerance(got[name], exact[name], dtype, name)


def test_a_width_that_is_not_a_multiple_of_64():
    """D = 200: the last column block and the last D chunk are partial."""
    B, P, _ = SHAPES["B16"]
    D = 40 if GPU_DRY_RUN else 200
    check_accuracy(loss_fn, make_inputs(B, P, D, seed=41), torch.bfloat16, upstream_of(42))


def test_long_captions_and_many_negatives():
    """T = 160 > 128 positions, G = 6 > 4 captions and captions of 20 to 40 counted positions:
    images of 2 to 4 row blocks, so the backward rebuilds dZ past the first."""
    B, P, D = SHAPES["L14"]
    inputs = make_inputs(B, P, D, seed=43, groups=6, positions=160, counted=(20, 40))
    check_accuracy(loss_fn, inputs, torch.bfloat16, upstream_of(44))


SM80_CHILD = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from tests import test_kernels_gpu as t
inputs = t.make_inputs(*t.SHAPES["B16"], seed=45)
out = t.evaluate(t.loss_fn("kernel"), *inputs, t.kernel_dtype(torch.bfloat16), t.upstream_of(46))
torch.save({k: v.cpu() for k, v in out.items()}, sys.argv[2])
"""


def test_the_sm80_path(tmp_path):
    """The kernels compiled for sm_80 (mma.sync, no wgmma; TRITON_OVERRIDE_ARCH in a child
    process, whose compiles are cached apart) run on this newer GPU, and are accurate."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_OVERRIDE_ARCH="sm80")
    done = subprocess.run(
        [sys.executable, "-c", SM80_CHILD, root, str(tmp_path / "out.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    image, text, mask, scale, neg_valid = make_inputs(*SHAPES["B16"], seed=45)
    dtype = kernel_dtype(torch.bfloat16)
    rounded = [image.to(dtype).double(), text.to(dtype).double(), mask, scale, neg_valid]
    exact = evaluate(loss_fn("reference"), *rounded, torch.float64, upstream_of(46))
    for name in ("value", "image_tokens", "text_tokens"):
        assert_within_tolerance(got[name], exact[name].cpu(), dtype, name)
