"""``python -m fsc_losses.check``: does the local HN loss work on this machine, and how fast?

Prints the environment, then for each dtype the device can check, at a small shape and at a
ViT-B/16-sized one, runs the local HN loss forward and backward with the Triton kernels and with
the reference: which backend ``backend="auto"`` picks and why, the time of each, the kernels'
largest errors against the float64 reference relative to the kernel tests' tolerances, and the
host's overhead per call (its own work, with the kernel launches replaced by no-ops, next to a
trivial autograd op's; on a GPU also the host time with the kernels). Exits 1 when the kernels
fail or miss a tolerance.

On the CPU the kernels are not used (``auto`` takes them for CUDA tensors only) and only the
reference runs; with ``TRITON_INTERPRET=1`` the kernels run under Triton's interpreter at the
small shape.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
import warnings
from importlib import metadata
from typing import NamedTuple

import torch

from . import __version__, functional

# Allowed |kernel - reference| per element: atol * max|reference| + rtol * |reference|, with the
# reference in float64 on the kernel's rounded inputs (tests/test_kernels.py). bf16 keeps 8
# significant bits to fp16's 11, so its rounding unit is 8 times fp16's: 8 x fp16's tolerance,
# the factor the GPU suite (tests/test_kernels_gpu.py) uses too.
TOLERANCES = {
    torch.float32: (2e-6, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
LOGIT_SCALE = 6.0  # the kernel tests' scale, at which their tolerances were set
OPTIONS = dict(normalizer="minmax", sparsify=False, focal_gamma=2.0, label_smoothing=0.02)
LEAVES = ("image_tokens", "text_tokens", "logit_scale")


class Shape(NamedTuple):
    name: str
    B: int
    K: int
    T: int
    P: int
    D: int


SMALL = Shape("small", B=2, K=2, T=9, P=7, D=12)


def vit_b16(device: torch.device) -> Shape:
    """ViT-B/16 at 224 px: 196 patches, width 512, 77 positions, 3 negatives; a training batch on
    a GPU, a few images on the CPU (where only the reference runs)."""
    return Shape("ViT-B/16", B=128 if device.type == "cuda" else 16, K=3, T=77, P=196, D=512)


def environment() -> list[str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (no CUDA build)"
    lines = [
        f"fsc_losses    {__version__}",
        f"python        {platform.python_version()}",
        f"torch         {torch.__version__}{cuda}",
        f"triton        {version('triton')}",
        f"open_clip     {version('open_clip_torch')}",
        f"transformers  {version('transformers')}",
    ]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        smem = getattr(props, "shared_memory_per_block_optin", None)
        smem = f", {smem // 1024} KiB shared memory per block" if smem else ""
        lines.append(f"device        {props.name}, compute capability {props.major}.{props.minor}{smem}")
    else:
        lines.append("device        CPU (no CUDA device)")
    lines.append(f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!r}")
    return lines


def make_inputs(shape: Shape, device: torch.device, seed: int = 0):
    """Float64 tokens, a mask counting positions 1..n (n in 10-20, or fewer on short captions),
    some negatives missing: a CLIP batch's layout."""
    gen = torch.Generator().manual_seed(seed)
    G = 1 + shape.K
    image = torch.randn(shape.B, shape.P, shape.D, generator=gen, dtype=torch.float64)
    text = torch.randn(shape.B, G, shape.T, shape.D, generator=gen, dtype=torch.float64)
    lengths = torch.randint(min(10, shape.T - 1), min(21, shape.T), (shape.B, G, 1), generator=gen)
    positions = torch.arange(shape.T)
    mask = (positions >= 1) & (positions <= lengths)
    neg_valid = torch.rand(shape.B, shape.K, generator=gen) < 0.9
    upstream = torch.randn((), generator=gen, dtype=torch.float64)
    return [t.to(device) for t in (image, text, mask, neg_valid, upstream)]


def forward_backward(backend, image, text, mask, neg_valid, upstream, dtype):
    """The loss and the gradients of the tokens and the scale, with ``backend``, inputs cast to
    ``dtype`` (the scale in float32 below float64, as under autocast)."""
    scale_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    leaves = [
        image.to(dtype).requires_grad_(),
        text.to(dtype).requires_grad_(),
        torch.tensor(LOGIT_SCALE, dtype=scale_dtype, device=image.device, requires_grad=True),
    ]
    loss = functional.local_hn_loss(
        *leaves[:2], mask, leaves[2], neg_valid, backend=backend, check_inputs=False, **OPTIONS
    )
    grads = torch.autograd.grad(loss, leaves, upstream.to(loss.dtype))
    return [loss, *grads]


def timed(fn, device: torch.device, reps: int, wait_after: bool = True):
    """``fn()``'s last result and its median time in ms over ``reps`` runs after one warm-up run
    (which also compiles the kernels). The device is idle at each run's start; with
    ``wait_after`` False the run's end does not wait for it, so that the time is what the host
    spends issuing the work."""
    result = fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if wait_after and device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return result, statistics.median(times) if times else float("nan")


@contextlib.contextmanager
def _no_op_kernels():
    """Every kernel launch of the local HN kernels does nothing while this lasts."""
    from .kernels import local_hn

    kernels = {name: getattr(local_hn, name) for name in local_hn.LAUNCHED}

    class NoOp:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: None

    try:
        for name in kernels:
            setattr(local_hn, name, NoOp())
        yield
    finally:
        for name, kernel in kernels.items():
            setattr(local_hn, name, kernel)


def host_us(fn, device: torch.device, reps: int, no_op_kernels: bool) -> float:
    """Median host time of one ``fn()`` in us (:func:`timed` without waiting at the end). With
    ``no_op_kernels`` the local HN kernels' launches do nothing, so that on any machine (the CPU
    interpreter included) what is left is the host's own work: Python, the dispatcher, autograd,
    allocations."""
    with _no_op_kernels() if no_op_kernels else contextlib.nullcontext():
        _, ms = timed(fn, device, reps, wait_after=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1e3 * ms


def trivial_autograd_us(device: torch.device, reps: int) -> float:
    """Median host time of a trivial op's forward and backward, for scale."""
    x = torch.ones(8, device=device, requires_grad=True)
    return host_us(lambda: torch.autograd.grad((x * 2.0).sum(), x), device, reps, no_op_kernels=False)


def error_ratios(got, expected, dtype, upstream) -> list[float]:
    """Largest ``|got - expected| / allowed`` of the loss and each gradient; inf where either is
    not finite (a tolerance scaled by a non-finite reference would pass anything)."""
    atol, rtol = TOLERANCES[dtype]
    ratios = []
    for name, g, e in zip(("value", *LEAVES), got, expected, strict=True):
        g, e = g.detach().double(), e.detach().double()
        if not (torch.isfinite(g).all() and torch.isfinite(e).all()):
            ratios.append(float("inf"))
            continue
        # d/d(scale) sums a cancelling product over every position: measured against |upstream|
        magnitude = upstream.abs() if name == "logit_scale" else e.abs().max()
        allowed = atol * magnitude + rtol * e.abs()
        ratios.append(((g - e).abs() / allowed).max().item())
    return ratios


def kernels_or_reason(image_tokens: torch.Tensor, text_tokens: torch.Tensor):
    """The kernel module, or why it cannot take these tokens."""
    try:
        from .kernels import local_hn
    except ImportError as error:
        return None, f"Triton does not import ({error})"
    return local_hn, local_hn.unsupported_reason(image_tokens, text_tokens)


def auto_choice(image_tokens: torch.Tensor, text_tokens: torch.Tensor) -> str:
    """Which backend ``auto`` takes for these tokens, and why."""
    inputs = functional.LocalInputs(image_tokens, text_tokens, None, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning; the reason is read below
        picked = functional.select_kernels("auto", inputs)
    if picked is not None:
        return "triton (CUDA tensors, Triton imports, and the kernels support this shape and dtype)"
    if not image_tokens.is_cuda:
        return f"reference (tensors on {image_tokens.device}: auto takes the kernels for CUDA tensors only)"
    return f"reference ({kernels_or_reason(image_tokens, text_tokens)[1]})"


def check_kernels(image, text, mask, neg_valid, upstream, dtype, device, reps) -> bool:
    """Run, time and compare the kernels on one case; print the outcome; returns whether it passed."""
    kernels, reason = kernels_or_reason(image.to(dtype), text.to(dtype))
    if kernels is None:
        print(f"  kernels:   FAILED: {reason}")
        return False
    if reason is not None:  # auto falls back to the reference here, which is not a failure
        print(f"  kernels:   not run: they do not support {reason}")
        return True
    try:
        got, ms = timed(
            lambda: forward_backward("triton", image, text, mask, neg_valid, upstream, dtype), device, reps
        )
    except Exception as error:  # a kernel that fails to compile or run is what this check reports
        print(f"  kernels:   FAILED: {type(error).__name__}: {error}")
        return False
    rounded = image.to(dtype).double(), text.to(dtype).double()
    exact = forward_backward("reference", *rounded, mask, neg_valid, upstream, torch.float64)
    ratios = error_ratios(got, exact, dtype, upstream)
    passed = max(ratios) <= 1
    listing = ", ".join(f"{name} {ratio:.3g}" for name, ratio in zip(("value", *LEAVES), ratios, strict=True))
    print(
        f"  kernels:   {ms:9.3f} ms; largest error / tolerance: {listing} -> {'ok' if passed else 'MISMATCH'}"
    )
    call = lambda: forward_backward("triton", image, text, mask, neg_valid, upstream, dtype)  # noqa: E731
    overhead = host_us(call, device, 20, no_op_kernels=True)
    trivial = trivial_autograd_us(device, 20)
    issued = (
        f"; with the kernels, {host_us(call, device, reps, False):,.1f} us" if device.type == "cuda" else ""
    )
    print(
        f"  host:      {overhead:9,.1f} us per call with no-op kernels ({overhead / trivial:.1f}x a trivial "
        f"autograd op's {trivial:,.1f} us){issued}"
    )
    return passed


def check_case(shape: Shape, dtype: torch.dtype, device: torch.device, run_kernels: bool, reps: int) -> bool:
    """Print one case; returns whether it passed."""
    image, text, mask, neg_valid, upstream = make_inputs(shape, device)
    print(
        f"\n[{shape.name}: B={shape.B} G={1 + shape.K} T={shape.T} P={shape.P} D={shape.D}, {str(dtype)[6:]}]"
    )
    print(f"  auto picks: {auto_choice(image.to(dtype), text.to(dtype))}")
    passed = not run_kernels or check_kernels(image, text, mask, neg_valid, upstream, dtype, device, reps)
    _, ms = timed(
        lambda: forward_backward("reference", image, text, mask, neg_valid, upstream, dtype), device, reps
    )
    print(f"  reference: {ms:9.3f} ms")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsc_losses.check", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small shape only")
    args = parser.parse_args(argv)

    print("\n".join(environment()))
    cuda = torch.cuda.is_available()
    interpret = not cuda and os.environ.get("TRITON_INTERPRET") == "1"
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        dtypes = [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_bf16_supported() else [])
        kernels_note = "the kernels run on this GPU"
    elif interpret:
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton.runtime.interpreter")
        dtypes = [torch.float32, torch.float16]
        kernels_note = (
            "no CUDA device: the kernels run under Triton's interpreter (TRITON_INTERPRET=1), at the small "
            "shape only, in fp32 and fp16 (the interpreter gets bf16 wrong); times are the interpreter's"
        )
    else:
        dtypes = [torch.float32]
        kernels_note = (
            "no CUDA device: the Triton kernels are not used on the CPU (backend='auto' runs the reference "
            "there); only the reference runs. TRITON_INTERPRET=1 runs the kernels under Triton's interpreter"
        )
    print(f"\n{kernels_note}.")
    print(
        f"local HN loss, forward + backward: {OPTIONS}, logit_scale {LOGIT_SCALE}; errors against the "
        "float64 reference, relative to the kernel tests' tolerances (<= 1 passes)"
    )

    shapes = [SMALL] if args.quick else [SMALL, vit_b16(device)]
    failures = 0
    for shape in shapes:
        run_kernels = cuda or (interpret and shape == SMALL)
        reps = 5 if cuda else 1
        for dtype in dtypes if run_kernels else [torch.float32]:
            failures += not check_case(shape, dtype, device, run_kernels, reps)
    print(f"\n{'all checks passed' if failures == 0 else f'{failures} check(s) FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
