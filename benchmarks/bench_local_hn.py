"""Speed and memory of the local hard-negative loss: the fused Triton kernels against the
PyTorch reference, eager and under ``torch.compile``, next to the floors the hardware sets.

    python benchmarks/bench_local_hn.py                          # the four ANCHORS.md shapes
    python benchmarks/bench_local_hn.py --suite anchors batch length --plot
    python benchmarks/bench_local_hn.py --shape 96,3,77,196,512 --dtype bf16 --mode fwd+bwd
    TRITON_INTERPRET=1 python benchmarks/bench_local_hn.py --smoke   # CPU, tiny, for CI

Providers (all with ``check_inputs=False``, so none of them synchronises with the host):
``fused`` is ``LocalHNLoss(backend="triton")``, ``reference`` is ``LocalHNLoss(backend="reference")``
run eagerly, ``compiled`` is ``torch.compile`` of a function calling the reference module.

Modes: ``fwd`` is the training forward (inputs require grad, so it saves what backward needs);
``bwd`` is the backward alone: each repetition runs a fresh forward outside the timed region (a
retained graph cannot be replayed through compiled code, whose backward donates its buffers);
``fwd+bwd`` is both. Gradients are taken with ``torch.autograd.grad`` with respect to the image
tokens, text tokens and ``logit_scale``.

See docs/benchmarks.md for the floors and the columns of the results file.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch

if __package__ in (None, ""):
    # Run as a script: make the repository root importable, for fsc_losses and benchmarks.common.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from fsc_losses import LocalHNLoss, functional  # noqa: E402
from fsc_losses.layout import group_captions  # noqa: E402

PROVIDERS = ("fused", "compiled", "reference")
MODES = ("fwd", "bwd", "fwd+bwd")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NORMALIZERS = ("minmax", "softmax")
SUITES = ("anchors", "batch", "length")
LOGIT_SCALE = 100.0
COUNTED = (10, 20)  # counted positions per caption, as real captions of 10 to 20 tokens give
MIN_INPUT_SETS = 4
# GEMMs of N x P x D (N counted caption positions) each mode must do at least: forward
# S = X V^T and Z = W V; backward dV = W^T dZ plus Z once more, which dZ needs through Z / |Z|.
# Rebuilding W as well (a third backward GEMM) is avoidable by keeping it (N * P values), so it
# is left out: the floor stays a lower bound for every design.
GEMMS = {"fwd": 2, "bwd": 2, "fwd+bwd": 4}


@dataclass(frozen=True)
class Shape:
    """One benchmark shape: ``G = 1 + negatives`` captions per image of ``length`` positions,
    of which ``counted[0]..counted[1]`` (uniform, per caption) count."""

    name: str
    suite: str
    batch: int
    negatives: int
    length: int
    patches: int
    dim: int
    counted: tuple[int, int] = COUNTED

    def __post_init__(self):
        sizes = (self.batch, self.negatives, self.length, self.patches, self.dim)
        if min(sizes) < 1:
            raise ValueError(f"{self.name}: B, K, T, P, D must all be positive, got {sizes}")
        lo, hi = self.counted
        if not 1 <= lo <= hi <= self.length - 1:
            raise ValueError(
                f"{self.name}: counted positions {lo}..{hi} must lie in 1..T-1 = {self.length - 1} "
                "(position 0 is the start-of-text token, never counted)"
            )

    @property
    def groups(self) -> int:
        return 1 + self.negatives

    @property
    def captions(self) -> int:
        return self.batch * self.groups


ANCHOR_SHAPES = (
    Shape("ViT-B/32", "anchors", 256, 3, 77, 49, 512),
    Shape("ViT-B/16", "anchors", 128, 3, 77, 196, 512),
    Shape("ViT-L/14", "anchors", 64, 3, 77, 256, 768),
    Shape("ViT-L/14-336", "anchors", 64, 3, 77, 576, 768),
)
SWEEP_BASE = ANCHOR_SHAPES[1]
BATCH_SWEEP = (32, 64, 128, 256, 512)
LENGTH_SWEEP = (5, 10, 20, 40, 76)  # counted positions; 76 = every position after start-of-text
# Small enough for the Triton interpreter, which runs each kernel program in numpy.
SMOKE_SHAPE = Shape("smoke", "smoke", 2, 3, 12, 4, 16, counted=(3, 8))


def suite_shapes(suite: str, counted: tuple[int, int]) -> list[Shape]:
    if suite == "anchors":
        return [replace(s, counted=counted) for s in ANCHOR_SHAPES]
    base = replace(SWEEP_BASE, suite=suite, counted=counted)
    if suite == "batch":
        return [replace(base, name=f"{base.name} B={b}", batch=b) for b in BATCH_SWEEP]
    return [replace(base, name=f"{base.name} L={n}", counted=(n, n)) for n in LENGTH_SWEEP]


# ----------------------------------------------------------------------------------------------
# Inputs and floors


def caption_masks(shape: Shape, generator: torch.Generator) -> torch.Tensor:
    """``(B*G, T)`` prefix masks as a tokenizer's output gives them: position 0 (start of text)
    excluded, then ``n`` counted positions (words and end of text), then padding."""
    lo, hi = shape.counted
    counts = torch.randint(lo, hi + 1, (shape.captions, 1), generator=generator)
    positions = torch.arange(shape.length)
    return (positions >= 1) & (positions <= counts)


class Inputs(NamedTuple):
    image_tokens: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    logit_scale: torch.Tensor

    @property
    def leaves(self) -> tuple[torch.Tensor, ...]:
        return self.image_tokens, self.text_tokens, self.logit_scale


def make_inputs(shape: Shape, dtype: torch.dtype, device: torch.device, grouped: bool, seed: int) -> Inputs:
    """Random tokens of ``shape``; text in the trainers' flat layout (``B`` true captions, then
    ``K`` blocks of ``B`` negatives), or grouped ``(B, G, T, D)`` and contiguous."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(shape.batch, shape.patches, shape.dim, generator=generator)
    text = torch.randn(shape.captions, shape.length, shape.dim, generator=generator)
    mask = caption_masks(shape, generator)
    if grouped:
        text = group_captions(text, shape.batch).contiguous()
        mask = group_captions(mask, shape.batch).contiguous()
    return Inputs(
        image.to(device, dtype).requires_grad_(),
        text.to(device, dtype).requires_grad_(),
        mask.to(device),
        torch.tensor(LOGIT_SCALE, device=device, requires_grad=True),
    )


def input_set_count(shape: Shape, dtype: torch.dtype, device: torch.device) -> int:
    """Enough input sets that cycling through them overflows the L2 cache twice, so a small shape
    is not timed on inputs that stay cached from one repetition to the next."""
    if device.type != "cuda":
        return MIN_INPUT_SETS
    tokens = (shape.batch * shape.patches + shape.captions * shape.length) * shape.dim * dtype.itemsize
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    return max(MIN_INPUT_SETS, math.ceil(2 * l2 / (tokens + shape.captions * shape.length)))


def output_bytes(inputs: Inputs, mode: str) -> int:
    """What the timed call hands back: the gradients (one per leaf, of its size and dtype) when
    the mode has a backward, else the scalar loss. Every provider must allocate this, so it is a
    part of each one's peak extra memory that no implementation can avoid."""
    if mode == "fwd":
        return inputs.image_tokens.element_size()
    return sum(leaf.numel() * leaf.element_size() for leaf in inputs.leaves)


class Machine(NamedTuple):
    """Throughputs measured in this run: copy bandwidth (bytes/s, read + written) and matmul rate
    per dtype name (FLOP/s)."""

    bandwidth: float
    matmul: dict[str, float]


def measure_machine(device: torch.device, dtype_names: Sequence[str], plan: common.TimingPlan) -> Machine:
    """Copy bandwidth, and the rate of a large square matmul per dtype. fp32 runs with TF32 off:
    IEEE fp32 is what every provider computes in (PyTorch's default, and the kernels' fp32 dots),
    and a TF32 rate would set a floor that none of them is built to reach."""
    numel = (1 << 30) if device.type == "cuda" else (32 << 20)
    src = torch.empty(numel, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy = common.time_calls(lambda i: functools.partial(dst.copy_, src), device, plan)
    n = 8192 if device.type == "cuda" else 512
    rates = {}
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for name in dtype_names:
            a, b = (torch.randn(n, n, device=device).to(DTYPES[name]) for _ in range(2))
            matmul = functools.partial(torch.matmul, a, b, out=torch.empty_like(a))
            timing = common.time_calls(lambda i, matmul=matmul: matmul, device, plan)
            rates[name] = 2 * n**3 / (timing.median_us * 1e-6)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    return Machine(2 * numel / (copy.median_us * 1e-6), rates)


def floor_bytes(shape: Shape, dtype: torch.dtype, mode: str, text_positions: float) -> float:
    """Every input read once and, when the mode has a backward, every gradient written once.

    ``text_positions`` is ``B*G*T`` for the padded floor, or the counted positions for the floor
    of a kernel that touches nothing else; the mask is read whole either way.
    """
    tokens = (shape.batch * shape.patches + text_positions) * shape.dim * dtype.itemsize
    mask = shape.captions * shape.length
    return tokens + mask + (tokens if mode != "fwd" else 0)


class Floors(NamedTuple):
    hbm_padded_us: float
    hbm_counted_us: float
    matmul_us: float

    @property
    def floor_us(self) -> float:
        """The larger of the two lower bounds that a kernel skipping padding must respect."""
        return max(self.hbm_counted_us, self.matmul_us)


def floors(shape: Shape, dtype_name: str, mode: str, counted_positions: float, machine: Machine) -> Floors:
    dtype = DTYPES[dtype_name]
    padded = floor_bytes(shape, dtype, mode, shape.captions * shape.length)
    counted = floor_bytes(shape, dtype, mode, counted_positions)
    flops = GEMMS[mode] * 2 * counted_positions * shape.patches * shape.dim
    return Floors(
        1e6 * padded / machine.bandwidth,
        1e6 * counted / machine.bandwidth,
        1e6 * flops / machine.matmul[dtype_name],
    )


# ----------------------------------------------------------------------------------------------
# Providers and measurements


def build_loss(provider: str, normalizer: str):
    module = LocalHNLoss(
        normalizer=normalizer, backend="triton" if provider == "fused" else "reference", check_inputs=False
    )
    if provider != "compiled":
        return module
    # Every closure below shares one code object, so without a reset its compilations for earlier
    # shapes would pile up until dynamo's recompile limit sends it back to eager, silently.
    torch.compiler.reset()

    def local_hn(image_tokens, text_tokens, text_mask, logit_scale):
        return module(image_tokens, text_tokens, text_mask, logit_scale)

    # Static shapes: a training run sees one shape, and a compile per shape is what it gets.
    return torch.compile(local_hn, fullgraph=True, dynamic=False)


def make_call(loss_fn, sets: Sequence[Inputs], mode: str) -> common.MakeCall:
    """Repetition ``i`` runs on input set ``i mod len(sets)``."""

    def call(i: int):
        inputs = sets[i % len(sets)]
        if mode == "fwd":
            return lambda: loss_fn(*inputs)
        if mode == "bwd":
            loss = loss_fn(*inputs)
            return lambda: torch.autograd.grad(loss, inputs.leaves)
        return lambda: torch.autograd.grad(loss_fn(*inputs), inputs.leaves)

    return call


def measure(
    shape: Shape, dtype_name: str, args, device, plan, machine: Machine, notes: list[str]
) -> list[dict]:
    """Rows of every (normaliser, provider, mode) of ``args`` at one shape and dtype; providers
    that cannot run here are skipped, with the reason in ``notes``."""
    dtype = DTYPES[dtype_name]
    rows = []

    def note(text: str) -> None:
        if text not in notes:
            notes.append(text)
            print(f"note: {text}", flush=True)

    for layout in args.layout:
        sets = [
            make_inputs(shape, dtype, device, layout == "grouped", args.seed + i)
            for i in range(input_set_count(shape, dtype, device))
        ]
        counted = sum(int(s.text_mask.sum()) for s in sets) / len(sets)
        for normalizer in args.normalizer:  # the inputs do not depend on it
            # The layouts differ only in the fused kernels' text gradient (written in the caller's
            # strides): the other providers run on the first layout only.
            providers = [p for p in args.provider if layout == args.layout[0] or p == "fused"]
            for provider in providers:
                if provider == "fused":
                    reason = common.fused_skip_reason(functional.prepare_local_inputs(*sets[0], None))
                    if reason is not None:
                        note(f"fused skipped for {shape.name} {dtype_name}: {reason}")
                        continue
                loss_fn = build_loss(provider, normalizer)
                reason = common.skip_reason(provider, make_call(loss_fn, sets, "fwd+bwd")(0), device)
                if reason is not None:
                    note(f"{provider} skipped: {reason}")
                    continue
                for mode in args.mode:
                    calls = make_call(loss_fn, sets, mode)
                    timing = common.time_calls(calls, device, plan)
                    host_us = common.host_time_us(calls, device, min(timing.reps, 50))
                    graph_us = None
                    if provider == "fused" and mode == "fwd+bwd":
                        graph_us, why = common.graph_time_us(calls(0), device, min(timing.reps, 50))
                        if graph_us is None:
                            note(f"no CUDA-graph timing: {why}")
                    peak = common.peak_extra_mib(calls, device)
                    floor = floors(shape, dtype_name, mode, counted, machine)
                    rows.append(
                        {
                            "suite": shape.suite,
                            "shape": shape.name,
                            "B": shape.batch,
                            "K": shape.negatives,
                            "T": shape.length,
                            "P": shape.patches,
                            "D": shape.dim,
                            "counted_min": shape.counted[0],
                            "counted_max": shape.counted[1],
                            "counted_per_caption": common.fmt(counted / shape.captions, 2),
                            "layout": layout,
                            "input_sets": len(sets),
                            "provider": provider,
                            "mode": mode,
                            "dtype": dtype_name,
                            "normalizer": normalizer,
                            "reps": timing.reps,
                            "median_us": common.fmt(timing.median_us, 2),
                            "p20_us": common.fmt(timing.p20_us, 2),
                            "p80_us": common.fmt(timing.p80_us, 2),
                            "host_us": common.fmt(host_us, 2),
                            "graph_us": common.fmt(graph_us, 2),
                            "peak_extra_mib": common.fmt(peak, 2),
                            "outputs_mib": common.fmt(output_bytes(sets[0], mode) / common.MIB, 4),
                            "hbm_floor_padded_us": common.fmt(floor.hbm_padded_us, 4),
                            "hbm_floor_counted_us": common.fmt(floor.hbm_counted_us, 4),
                            "matmul_floor_us": common.fmt(floor.matmul_us, 4),
                            "x_floor": common.fmt(timing.median_us / floor.floor_us, 2),
                            "bandwidth_gbps": common.fmt(machine.bandwidth / 1e9, 1),
                            "matmul_tflops": common.fmt(machine.matmul[dtype_name] / 1e12, 2),
                        }
                    )
                    print(
                        f"{shape.name} {dtype_name} {normalizer} {layout} {mode} {provider}: "
                        f"{timing.median_us:,.1f} us (host {host_us:,.1f} us)",
                        flush=True,
                    )
    return rows


# ----------------------------------------------------------------------------------------------
# Report


def floors_table(rows: Sequence[dict]) -> str:
    first: dict[tuple, dict] = {}
    for row in rows:
        first.setdefault((row["suite"], row["shape"], row["dtype"], row["mode"]), row)
    return common.format_table(
        list(first.values()),
        [
            ("shape", lambda r: r["shape"]),
            ("dtype", lambda r: r["dtype"]),
            ("mode", lambda r: r["mode"]),
            ("counted/caption", lambda r: r["counted_per_caption"]),
            ("HBM padded us", lambda r: f"{float(r['hbm_floor_padded_us']):,.2f}"),
            ("HBM counted us", lambda r: f"{float(r['hbm_floor_counted_us']):,.2f}"),
            ("matmul us", lambda r: f"{float(r['matmul_floor_us']):,.2f}"),
            ("input sets", lambda r: str(r["input_sets"])),
        ],
    )


def results_table(rows: Sequence[dict]) -> str:
    return common.format_table(
        rows,
        [
            *(
                (key, lambda r, key=key: r[key])
                for key in ("shape", "dtype", "normalizer", "layout", "mode", "provider")
            ),
            ("median us", lambda r: f"{float(r['median_us']):,.1f}"),
            ("host us", lambda r: f"{float(r['host_us']):,.1f}"),
            ("graph us", lambda r: f"{float(r['graph_us']):,.1f}" if r["graph_us"] else ""),
            ("p20 us", lambda r: f"{float(r['p20_us']):,.1f}"),
            ("p80 us", lambda r: f"{float(r['p80_us']):,.1f}"),
            ("peak extra MiB", lambda r: r["peak_extra_mib"]),
            ("of it outputs MiB", lambda r: f"{float(r['outputs_mib']):,.1f}"),
            ("x floor", lambda r: f"{float(r['x_floor']):,.1f}x"),
        ],
    )


def speedups(rows: Sequence[dict]) -> list[dict]:
    """Per configuration: each provider's median and the fused kernels' speed-ups."""
    by_config: dict[tuple, dict] = {}
    for row in rows:
        config = {k: row[k] for k in ("suite", "shape", "B", "dtype", "normalizer", "layout", "mode")}
        by_config.setdefault(tuple(config.values()), config)[row["provider"]] = float(row["median_us"])
    for entry in by_config.values():
        for base in ("compiled", "reference"):
            if "fused" in entry and base in entry:
                entry[f"vs_{base}"] = entry[base] / entry["fused"]
    return list(by_config.values())


def speedup_table(entries: Sequence[dict]) -> str:
    def cell(name, text):
        return lambda e: text.format(e[name]) if name in e else ""

    return common.format_table(
        entries,
        [
            *((key, lambda e, key=key: e[key]) for key in ("shape", "dtype", "normalizer", "layout", "mode")),
            *((f"{p} us", cell(p, "{:,.1f}")) for p in PROVIDERS),
            ("fused vs compiled", cell("vs_compiled", "{:.3g}x")),
            ("fused vs reference", cell("vs_reference", "{:.3g}x")),
        ],
    )


def plot_results(rows: Sequence[dict], plot_dir: Path) -> list[Path]:
    """PNG charts per dtype and normaliser: time against batch size per provider (batch sweep
    rows), and the fused kernels' speed-up over compiled and reference per shape. Returns the
    files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(entries, name, draw, tag):
        modes = list(dict.fromkeys(e["mode"] for e in entries))
        fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
        for ax, mode in zip(axes[0], modes, strict=True):
            draw(ax, [e for e in entries if e["mode"] == mode])
            ax.set_title(f"{mode}, {tag}")
            ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(plot_dir / name, dpi=120)
        plt.close(fig)
        written.append(plot_dir / name)

    def time_vs_batch(ax, entries):
        points = sorted(entries, key=lambda e: e["B"])
        for provider in PROVIDERS:
            xy = [(e["B"], e[provider]) for e in points if provider in e]
            if xy:
                ax.plot(*zip(*xy, strict=True), marker="o", label=provider)
        ax.set(xscale="log", yscale="log", xlabel=f"batch size B ({SWEEP_BASE.name})", ylabel="median us")
        ax.set_xticks([e["B"] for e in points], [str(e["B"]) for e in points], minor=False)
        ax.set_xticks([], minor=True)

    def speedup(ax, entries):
        for offset, base in ((-0.2, "compiled"), (0.2, "reference")):
            bars = [e.get(f"vs_{base}", math.nan) for e in entries]
            ax.bar([x + offset for x in range(len(entries))], bars, width=0.4, label=f"over {base}")
        ax.axhline(1, color="gray", linewidth=0.8)
        ax.set_xticks(range(len(entries)), [e["shape"] for e in entries], rotation=30, ha="right")
        ax.set(yscale="log", ylabel="speed-up of fused (x)")

    # One layout: the first measured (the providers other than fused ran on it alone).
    entries = [e for e in speedups(rows) if e["layout"] == rows[0]["layout"]]
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        for normalizer in dict.fromkeys(r["normalizer"] for r in rows):
            picked = [e for e in entries if e["dtype"] == dtype and e["normalizer"] == normalizer]
            sweep = [e for e in picked if e["suite"] == "batch"]
            compared = [e for e in picked if "vs_compiled" in e or "vs_reference" in e]
            tag = f"{dtype}, {normalizer}"
            if sweep:
                save(sweep, f"time_vs_batch_{dtype}_{normalizer}.png", time_vs_batch, tag)
            if compared:
                save(compared, f"speedup_{dtype}_{normalizer}.png", speedup, tag)
    return written


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--suite",
        nargs="+",
        choices=SUITES,
        help="shape sets: anchors (the four ANCHORS.md models), batch (ViT-B/16, B = 32..512), length "
        "(ViT-B/16, 5..76 counted positions); default anchors unless --shape is given",
    )
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="B,K,T,P,D",
        type=common.int_tuple(5, "B,K,T,P,D"),
        help="an extra shape (repeatable)",
    )
    parser.add_argument(
        "--counted",
        type=common.int_tuple(2, "LO,HI"),
        metavar="LO,HI",
        help=f"counted positions per caption, uniform (default {COUNTED[0]},{COUNTED[1]}; the length suite "
        "sets its own)",
    )
    parser.add_argument("--provider", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--dtype", nargs="+", choices=list(DTYPES), help="default bf16 fp32 (fp32 with --smoke)"
    )
    parser.add_argument(
        "--normalizer", nargs="+", choices=NORMALIZERS, help="default minmax softmax (minmax with --smoke)"
    )
    parser.add_argument(
        "--layout",
        nargs="+",
        choices=("flat", "grouped"),
        help="text inputs flat (B*G, T, D) as trainers produce them, or grouped (B, G, T, D) contiguous; "
        "the providers other than fused run on the first only (default flat grouped, flat with --smoke)",
    )
    parser.add_argument(
        "--rep-ms",
        type=float,
        default=300.0,
        help="GPU: time each measurement for about this long (default 300)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--results",
        type=Path,
        help="CSV to append to (default benchmarks/results/local_hn.csv; with --smoke a new temporary file)",
    )
    parser.add_argument("--plot", action="store_true", help="write PNG charts (needs matplotlib)")
    parser.add_argument("--plot-dir", type=Path, default=common.RESULTS_DIR / "plots")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shape on the CPU in seconds, to keep this script working; the fused kernels run only "
        "under TRITON_INTERPRET=1",
    )
    args = parser.parse_args(argv)
    args.dtype = args.dtype or (["fp32"] if args.smoke else ["bf16", "fp32"])
    args.normalizer = args.normalizer or (["minmax"] if args.smoke else list(NORMALIZERS))
    args.layout = args.layout or (["flat"] if args.smoke else ["flat", "grouped"])
    return args


def shapes_of(args: argparse.Namespace) -> list[Shape]:
    counted = args.counted or COUNTED
    shapes = [
        Shape(f"B={b},K={k},T={t},P={p},D={d}", "custom", b, k, t, p, d, counted)
        for b, k, t, p, d in args.shape
    ]
    for suite in args.suite or ([] if shapes or args.smoke else ["anchors"]):
        shapes += suite_shapes(suite, counted)
    return shapes or [replace(SMOKE_SHAPE, counted=args.counted or SMOKE_SHAPE.counted)]  # --smoke alone


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    args = parse_args(argv)
    try:
        shapes = shapes_of(args)
    except ValueError as err:  # a shape that cannot be built from the options
        sys.exit(f"bench_local_hn.py: error: {err}")
    if args.smoke:
        # Smoke numbers mean nothing; one thread keeps tiny ops from stalling in OpenMP
        # contention with whatever else shares the CPU (tens of times slower on a busy CI runner),
        # and scalar C++ halves the time inductor's first, uncached compile takes there.
        import torch._inductor.config as inductor_config

        torch.set_num_threads(1)
        inductor_config.cpp.vec_isa_ok = False
        device = torch.device("cpu")
        plan = common.TimingPlan(min_warmup=1, warmup_ms=0, min_reps=3, max_reps=3)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        plan = common.TimingPlan(min_warmup=3, warmup_ms=100, min_reps=30, max_reps=2000, rep_ms=args.rep_ms)
        if device.type != "cuda":
            print("note: no CUDA device; timing on the CPU, which says nothing about GPU speed")

    meta = common.run_metadata(device)
    machine = measure_machine(device, args.dtype, plan)
    notes: list[str] = []
    rows = []
    for shape in shapes:
        for dtype_name in args.dtype:
            rows += [
                {**meta, **row} for row in measure(shape, dtype_name, args, device, plan, machine, notes)
            ]
            if device.type == "cuda":  # free this shape's inputs before the next one allocates its own
                torch.cuda.empty_cache()

    print(f"\nlocal HN loss on {meta['device']}, torch {torch.__version__}, triton {common.triton_version()}")
    print(
        "\nFloors (HBM: inputs read + gradients written once at the measured copy bandwidth; "
        "matmul: GEMM flops on counted positions at the measured matmul rate)\n"
    )
    print(floors_table(rows))
    print("\nMeasurements (x floor: median over the larger of HBM counted and matmul floor)\n")
    print(results_table(rows))
    entries = speedups(rows)
    if any("vs_compiled" in e or "vs_reference" in e for e in entries):
        print("\nSpeed-ups of the fused kernels\n")
        print(speedup_table(entries))
    for text in notes:
        print(f"note: {text}")

    path = common.results_path(args.results, args.smoke, "local_hn.csv")
    common.append_csv(path, rows)
    print(f"\n{len(rows)} rows appended to {path}")
    if args.plot:
        for written in plot_results(rows, args.plot_dir):
            print(f"wrote {written}")
    return rows


if __name__ == "__main__":
    main()
