"""The local HN Triton kernels on a CUDA device, at the ANCHORS shapes (skipped without CUDA).

Accuracy is a three-way comparison: the kernel's error against the float64 reference (on the
same rounded inputs) must stay within twice the error of the reference run in the kernel's
dtype, plus a small atol (``ATOL``). Where that reference is not finite (fp16's sums overflow at
large shapes) the float32 one takes its place: no bound rests on a non-finite reference.
"""

import pytest
import torch

from fsc_losses import functional, reference

from .test_kernels import assert_within_ulps_per_image

local_hn = pytest.importorskip("fsc_losses.kernels.local_hn")

pytestmark = pytest.mark.gpu

SHAPES = {  # (B, P, D), with K = 3 negatives and T = 77 positions of which 10-20 count
    "B32": (256, 49, 512),
    "B16": (128, 196, 512),
    "L14": (64, 256, 768),
    "L14_336": (64, 576, 768),
}
K, T = 3, 77
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# The atol of the three-way check, relative to the magnitude of what is compared: about 2-4 ulps
# of the 16-bit dtypes; for fp32 about 100, because logit_scale = 100 multiplies the cosines'
# rounding (a = scale * cos) before exp, for the kernel and the fp32 reference alike.
ATOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
LEAVES = ("image_tokens", "text_tokens", "logit_scale")


def make_inputs(B, P, D, seed=0, logit_scale=100.0):
    """Float64 inputs like a CLIP batch: caption positions 1..n count (n in 10-20), some
    negatives missing."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    G = 1 + K
    image = torch.randn(B, P, D, generator=gen, device="cuda", dtype=torch.float64)
    text = torch.randn(B, G, T, D, generator=gen, device="cuda", dtype=torch.float64)
    lengths = torch.randint(10, 21, (B, G, 1), generator=gen, device="cuda")
    positions = torch.arange(T, device="cuda")
    mask = (positions >= 1) & (positions <= lengths)
    neg_valid = torch.rand(B, K, generator=gen, device="cuda") < 0.9
    scale = torch.tensor(logit_scale, device="cuda", dtype=torch.float64)
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


def evaluate(fn, image, text, mask, scale, neg_valid, dtype, upstream):
    """Output and gradients of ``fn`` on the inputs cast to ``dtype`` (scale stays float32 for
    the low precisions, as under autocast), by name: ``value`` and ``LEAVES``."""
    leaves = [
        image.to(dtype).requires_grad_(),
        text.to(dtype).requires_grad_(),
        scale.to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_(),
    ]
    out = fn(*leaves[:2], mask, leaves[2], neg_valid)
    grads = torch.autograd.grad(out, leaves, upstream.to(out.dtype))
    return dict(value=out, **dict(zip(LEAVES, grads, strict=True)))


def finite_where(reference, exact):
    """Whether every output of ``reference`` is finite wherever the float64 one is."""
    return all(torch.isfinite(reference[name][torch.isfinite(exact[name])]).all() for name in exact)


def bound_reference(evaluate_in, dtype, exact):
    """``(its dtype, outputs)`` of the reference a three-way bound rests on: the reference run in
    the kernel's dtype, or in float32 where that one is not finite wherever float64 is (fp16's
    sums of hundreds of weights pass 65,504). ``evaluate_in(dtype)`` runs the reference."""
    for candidate in dict.fromkeys((dtype, torch.float32)):
        outputs = evaluate_in(candidate)
        if finite_where(outputs, exact):
            return candidate, outputs
    raise AssertionError(f"the reference in {dtype} and in float32 is not finite where float64 is")


def assert_three_way(kernel, low, exact, dtype, name, magnitude=None):
    """``|kernel - exact| <= 2 |low - exact| + ATOL[dtype] * magnitude``, the largest of each,
    where ``low`` is a reference in a lower precision than ``exact``; a non-finite ``low`` where
    ``exact`` is finite fails instead of making the bound infinite."""
    finite = torch.isfinite(exact)
    assert torch.equal(torch.isfinite(kernel), finite), f"{name}: non-finite pattern differs"
    assert torch.isfinite(low[finite]).all(), f"{name}: the lower-precision reference is not finite"
    kernel, low, exact = (t.double()[finite] for t in (kernel, low, exact))
    if magnitude is None:
        magnitude = exact.abs().max().item()
    kernel_err = (kernel - exact).abs().max().item()
    low_err = (low - exact).abs().max().item()
    atol = ATOL[dtype] * magnitude
    assert kernel_err <= 2 * low_err + atol, (
        f"{name}: kernel error {kernel_err:.3g} > 2 x reference error {low_err:.3g} + {atol:.3g}"
    )


def check_three_way(fn_of, shape, dtype, seed=0):
    """``fn_of(impl)`` is the loss or the scores of ``impl``, ``"kernel"`` or ``"reference"``."""
    inputs = make_inputs(*SHAPES[shape], seed=seed)
    out_shape = () if fn_of is not scores_fn else inputs[2].shape[:2]
    gen = torch.Generator(device="cuda").manual_seed(seed + 1)
    upstream = torch.randn(out_shape, generator=gen, device="cuda", dtype=torch.float64)
    kernel = evaluate(fn_of("kernel"), *inputs, dtype, upstream)
    rounded = [inputs[0].to(dtype).double(), inputs[1].to(dtype).double(), *inputs[2:]]
    exact = evaluate(fn_of("reference"), *rounded, torch.float64, upstream)
    low_dtype, low = bound_reference(
        lambda ref_dtype: evaluate(fn_of("reference"), *rounded, ref_dtype, upstream), dtype, exact
    )
    for name in ("value", *LEAVES[:2]):
        assert kernel[name].dtype == dtype
        label = f"{name} (reference in {low_dtype})"
        assert_three_way(kernel[name], low[name], exact[name], dtype, label)
    assert kernel["logit_scale"].dtype == torch.float32
    assert_three_way(
        kernel["logit_scale"],
        low["logit_scale"],
        exact["logit_scale"],
        dtype,
        f"logit_scale (reference in {low_dtype})",
        magnitude=upstream.abs().sum().item(),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_loss_three_way(shape, dtype):
    check_three_way(loss_fn, shape, dtype)


@pytest.mark.parametrize("normalizer, sparsify", [("minmax", True), ("softmax", False)])
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_loss_three_way_other_normalizers(shape, dtype, normalizer, sparsify):
    """minmax with sparsify and softmax in 16 bits at the anchor shapes, which the interpreter
    suite only runs at tiny ones."""
    check_three_way(lambda impl: loss_fn(impl, normalizer, sparsify), shape, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ["B32", "L14_336"])
def test_scores_three_way(shape, dtype):
    check_three_way(scores_fn, shape, dtype)


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
    upstream = torch.ones((), device="cuda", dtype=torch.float64)
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
    args = leaves_of(make_inputs(*SHAPES[shape], seed=3), torch.bfloat16)
    runs = []
    for _ in range(2):
        loss = step(*args)
        runs.append((loss, *torch.autograd.grad(loss, (args[0], args[1], args[3]))))
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)


def test_grouped_and_expanded_views():
    B, P, D = SHAPES["B32"]
    image, _, mask, scale, neg_valid = make_inputs(B, P, D, seed=5)
    gen = torch.Generator(device="cuda").manual_seed(6)
    flat = torch.randn(B * (1 + K), T, D, generator=gen, device="cuda", dtype=torch.float64)
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
                atol=ATOL[torch.float32] * want.abs().max().item(),
                msg=lambda m, n=name, lay=layout: f"{lay} {n}: {m}",
            )


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


def test_no_host_synchronisation():
    args = leaves_of(make_inputs(*SHAPES["B32"], seed=11), torch.float16)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = step(*args)
        torch.autograd.grad(loss, (args[0], args[1], args[3]))
    finally:
        torch.cuda.set_sync_debug_mode("default")


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
    assert len(forward) == 4, forward
    assert len(backward) == 2, backward


def loss_and_grads(args):
    """``step``'s loss and its gradients w.r.t. the image tokens, text tokens and scale."""
    loss = step(*args)
    return (loss, *torch.autograd.grad(loss, (args[0], args[1], args[3])))


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
