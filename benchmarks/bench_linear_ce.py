"""Time and peak extra memory of the linear cross-entropy (an LM head's loss), forward + backward.

    python benchmarks/bench_linear_ce.py            # GPU: LLaVA-1.5-7B, Qwen2-VL-2B, Gemma-2-2B shapes, bf16
    python benchmarks/bench_linear_ce.py --cpu      # CPU: N = 2048, H = 256, V = 32000, fp32
    python benchmarks/bench_linear_ce.py --smoke    # tiny shape on the CPU, for CI
    python benchmarks/bench_linear_ce.py --cpu --chunk-size 500 2000 8000   # chunked's trade-off

One call is ``loss = provider(hidden (N, H), weight (V, H), targets (N,))`` then the gradients of
``hidden`` and ``weight``; every provider computes the mean cross-entropy of the logits
``hidden @ weight.T`` over all ``N`` positions. Providers:

- ``chunked``: ``linear_cross_entropy(backend="chunked")``, the default, once per ``--chunk-size``
  (default: its default chunk size);
- ``reference``: ``linear_cross_entropy(backend="reference")``, the logits materialised;
- ``compiled``: ``torch.compile(fullgraph=True, dynamic=False)`` of the reference;
- ``cce``: Apple's ``cut_cross_entropy.linear_cross_entropy``, and ``liger``: Liger-Kernel's
  fused linear cross-entropy; optional comparators, run only on a GPU where they are installed.

Peak extra memory is what the call allocates on top of what was live before it, the returned
gradients included (``outputs_mib`` says how much they are): on the GPU from
``torch.cuda.max_memory_allocated``, on the CPU from the allocations and frees PyTorch's allocator
reports to the profiler (``benchmarks.common.cpu_peak_extra_mib``).

The targets (issue 11) are ratios from one run: on the CPU suite, ``chunked``'s peak at most 15%
of ``reference``'s and its time at most 1.5x; on a GPU in bf16, at most 1.5x ``cce``'s peak and
1.3x its time, at every shape. The report prints them with the measured ratios.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):
    # Run as a script: make the repository root importable, for fsc_losses and benchmarks.common.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from fsc_losses import chunked, linear_cross_entropy  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    positions: int  # N
    hidden: int  # H
    vocab: int  # V


GPU_SHAPES = (
    Shape("LLaVA-1.5-7B", 8192, 4096, 32000),
    Shape("Qwen2-VL-2B", 8192, 1536, 151936),
    Shape("Gemma-2-2B", 8192, 2304, 256000),
)
CPU_SHAPE = Shape("cpu", 2048, 256, 32000)
SMOKE_SHAPE = Shape("smoke", 64, 32, 1000)
PROVIDERS = ("chunked", "reference", "compiled", "cce", "liger")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# (provider, baseline, max peak ratio, max time ratio) per device type
TARGETS = {"cpu": ("chunked", "reference", 0.15, 1.5), "cuda": ("chunked", "cce", 1.5, 1.3)}

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _package_loss(backend: str, chunk_size: int | None = None) -> LossFn:
    def loss(hidden, weight, targets):
        return linear_cross_entropy(
            hidden, weight, targets, backend=backend, chunk_size=chunk_size, check_inputs=False
        )

    return loss


def _cce_loss() -> LossFn:
    from cut_cross_entropy import linear_cross_entropy as cce

    return lambda hidden, weight, targets: cce(hidden, weight, targets)


def _liger_loss() -> LossFn:
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    module = LigerFusedLinearCrossEntropyLoss()
    return lambda hidden, weight, targets: module(weight, hidden, targets)


COMPARATORS = {"cce": ("cut_cross_entropy", _cce_loss), "liger": ("liger_kernel", _liger_loss)}


def build_loss(
    provider: str, device: torch.device, chunk_size: int | None = None
) -> tuple[LossFn | None, str | None]:
    """The provider's loss function (``chunked`` with ``chunk_size`` entries per block), or None
    and why it cannot run here."""
    if provider in ("chunked", "reference"):
        return _package_loss(provider, chunk_size), None
    if provider == "compiled":
        torch.compiler.reset()  # one compile per shape, not a pile-up towards the recompile limit
        return torch.compile(_package_loss("reference"), fullgraph=True, dynamic=False), None
    module, make = COMPARATORS[provider]
    if device.type != "cuda":
        return None, f"{provider} needs a GPU (its kernels are Triton)"
    try:
        importlib.import_module(module)
    except ImportError:
        return None, f"{provider} is not installed (pip install {module.replace('_', '-')})"
    return make(), None


def make_inputs(shape: Shape, dtype: torch.dtype, device: torch.device, seed: int):
    """Leaves ``hidden`` and ``weight`` scaled so that the logits have unit variance, and
    uniformly random targets."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    hidden = torch.randn(shape.positions, shape.hidden, generator=g).to(device, dtype).requires_grad_()
    weight = (torch.randn(shape.vocab, shape.hidden, generator=g) / shape.hidden**0.5).to(device, dtype)
    targets = torch.randint(0, shape.vocab, (shape.positions,), generator=g).to(device)
    return hidden, weight.requires_grad_(), targets


def make_call(loss_fn: LossFn, hidden, weight, targets) -> common.MakeCall:
    return lambda i: lambda: torch.autograd.grad(loss_fn(hidden, weight, targets), (hidden, weight))


def runs(providers: Sequence[str], chunk_sizes: Sequence[int], shape: Shape) -> list[tuple[str, int | None]]:
    """``(provider, chunk)`` pairs to measure: ``chunked`` once per chunk size (its default when
    none is given), the others once with no chunk."""
    default = [chunked.default_chunk_size(shape.positions, shape.vocab)]
    return [
        (provider, chunk)
        for provider in providers
        for chunk in ((chunk_sizes or default) if provider == "chunked" else [None])
    ]


def measure(shape, dtype_name, providers, chunk_sizes, device, plan, seed, notes) -> list[dict[str, object]]:
    dtype = DTYPES[dtype_name]
    hidden, weight, targets = make_inputs(shape, dtype, device, seed)
    outputs = (hidden.numel() + weight.numel()) * hidden.element_size() / common.MIB
    rows = []
    for provider, chunk in runs(providers, chunk_sizes, shape):
        loss_fn, reason = build_loss(provider, device, chunk)
        calls = None if loss_fn is None else make_call(loss_fn, hidden, weight, targets)
        reason = reason or common.skip_reason(provider, calls(0), device)
        if reason is not None:
            notes.append(f"{provider} skipped at {shape.name}: {reason}")
            print(f"note: {notes[-1]}", flush=True)
            continue
        timing = common.time_calls(calls, device, plan)
        if device.type == "cuda":
            peak = common.peak_extra_mib(calls, device)
            torch.cuda.empty_cache()
        else:
            peak = common.cpu_peak_extra_mib(calls)
        rows.append(
            {
                "shape": shape.name,
                "N": shape.positions,
                "H": shape.hidden,
                "V": shape.vocab,
                "dtype": dtype_name,
                "provider": provider,
                "chunk": "" if chunk is None else chunk,
                "reps": timing.reps,
                "median_ms": timing.median_us / 1e3,
                "p20_ms": timing.p20_us / 1e3,
                "p80_ms": timing.p80_us / 1e3,
                "peak_extra_mib": peak,
                "outputs_mib": outputs,
                "logits_mib": shape.positions * shape.vocab * 4 / common.MIB,
            }
        )
        label = provider if chunk is None else f"{provider} (chunk {chunk})"
        print(
            f"{shape.name} {dtype_name} {label}: {timing.median_us / 1e3:,.2f} ms, {peak:,.1f} MiB",
            flush=True,
        )
    return rows


def target_checks(rows: Sequence[dict], device_type: str) -> list[dict[str, object]]:
    """The issue's targets, per shape, where both providers ran (``chunked`` at its default chunk
    size)."""
    provider, baseline, max_peak, max_time = TARGETS[device_type]
    checks = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        default = chunked.default_chunk_size(*next((r["N"], r["V"]) for r in rows if r["shape"] == shape))
        mine = next(
            (r for r in rows if r["shape"] == shape and r["provider"] == provider and r["chunk"] == default),
            None,
        )
        base = next((r for r in rows if r["shape"] == shape and r["provider"] == baseline), None)
        if mine is None or base is None:
            continue
        peak_ratio = mine["peak_extra_mib"] / base["peak_extra_mib"]
        time_ratio = mine["median_ms"] / base["median_ms"]
        checks.append(
            {
                "shape": shape,
                "vs": baseline,
                "peak_ratio": peak_ratio,
                "peak_target": max_peak,
                "time_ratio": time_ratio,
                "time_target": max_time,
                "met": peak_ratio <= max_peak and time_ratio <= max_time,
            }
        )
    return checks


def results_table(rows: Sequence[dict]) -> str:
    return common.format_table(
        rows,
        [
            ("shape", lambda r: r["shape"]),
            ("dtype", lambda r: r["dtype"]),
            ("provider", lambda r: r["provider"]),
            ("chunk", lambda r: str(r["chunk"])),
            ("median ms", lambda r: common.fmt(r["median_ms"], 2)),
            ("p20 ms", lambda r: common.fmt(r["p20_ms"], 2)),
            ("p80 ms", lambda r: common.fmt(r["p80_ms"], 2)),
            ("peak extra MiB", lambda r: common.fmt(r["peak_extra_mib"], 1)),
            ("outputs MiB", lambda r: common.fmt(r["outputs_mib"], 1)),
            ("fp32 logits MiB", lambda r: common.fmt(r["logits_mib"], 1)),
        ],
    )


def targets_table(checks: Sequence[dict]) -> str:
    return common.format_table(
        checks,
        [
            ("shape", lambda c: c["shape"]),
            ("vs", lambda c: c["vs"]),
            ("peak ratio", lambda c: f"{c['peak_ratio']:.3f}"),
            ("target", lambda c: f"<= {c['peak_target']}"),
            ("time ratio", lambda c: f"{c['time_ratio']:.3f}"),
            ("target ", lambda c: f"<= {c['time_target']}"),
            ("met", lambda c: "yes" if c["met"] else "NO"),
        ],
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    suite = parser.add_mutually_exclusive_group()
    suite.add_argument("--cpu", action="store_true", help=f"the CPU suite: {CPU_SHAPE}, fp32, on the CPU")
    suite.add_argument(
        "--smoke", action="store_true", help="a tiny shape on the CPU, to keep the script working"
    )
    parser.add_argument(
        "--shape", type=common.int_tuple(3, "N,H,V"), action="append", default=[], metavar="N,H,V"
    )
    parser.add_argument("--provider", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument(
        "--chunk-size",
        type=int,
        nargs="+",
        default=[],
        metavar="C",
        help="chunked's vocabulary entries per block, one run each (default: its default)",
    )
    parser.add_argument("--dtype", choices=DTYPES, help="default bf16 on the GPU, fp32 on the CPU")
    parser.add_argument(
        "--reps", type=int, help="timed repetitions (default 20 on the GPU, 5 on the CPU, 2 smoke)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1; see docs/benchmarks.md)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--results",
        type=Path,
        help="CSV to append to (default benchmarks/results/linear_ce.csv; smoke: a temp file)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    args = parse_args(argv)
    on_cpu = args.cpu or args.smoke or not torch.cuda.is_available()
    device = torch.device("cpu" if on_cpu else "cuda")
    if on_cpu:
        torch.set_num_threads(args.threads)
    if not (args.cpu or args.smoke) and device.type == "cpu":
        print("note: no CUDA device; the GPU shapes need tens of GB, pass --cpu or --shape")
    shapes = [Shape("custom", *sizes) for sizes in args.shape]
    if not shapes:
        shapes = [SMOKE_SHAPE] if args.smoke else [CPU_SHAPE] if on_cpu else list(GPU_SHAPES)
    dtype_name = args.dtype or ("fp32" if on_cpu else "bf16")
    reps = args.reps or (2 if args.smoke else 5 if on_cpu else 20)
    plan = common.TimingPlan(min_warmup=1 if on_cpu else 3, warmup_ms=0, min_reps=reps, max_reps=reps)

    notes: list[str] = []
    meta = common.run_metadata(device)
    rows = []
    for shape in shapes:
        rows += [
            {**meta, **row}
            for row in measure(
                shape, dtype_name, args.provider, args.chunk_size, device, plan, args.seed, notes
            )
        ]
    threads = f", {torch.get_num_threads()} thread(s)" if on_cpu else ""
    where = f"{meta['device']}{threads}, torch {torch.__version__}"
    print(f"\nlinear cross-entropy, forward + backward, on {where}\n")
    print(results_table(rows))
    checks = [] if args.smoke else target_checks(rows, device.type)  # smoke numbers mean nothing
    if checks:
        print("\nTargets (ratios of chunked to the baseline, this run)\n")
        print(targets_table(checks))
    for text in notes:
        print(f"note: {text}")

    for row in rows:
        for key in ("median_ms", "p20_ms", "p80_ms"):
            row[key] = common.fmt(row[key], 3)
        for key in ("peak_extra_mib", "outputs_mib", "logits_mib"):
            row[key] = common.fmt(row[key], 1)
    path = common.results_path(args.results, args.smoke, "linear_ce.csv")
    common.append_csv(path, rows)
    print(f"\n{len(rows)} rows appended to {path}")
    return rows


if __name__ == "__main__":
    main()
