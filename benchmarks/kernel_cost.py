"""Cost model of the local HN kernels: per launch, the bytes it moves, the FLOPs it does, the
instructions it issues (read from its ahead-of-time SASS) and how many of its programs fit on an
SM, and the time these bound it to, next to the HBM floor and the targets (docs/kernels.md,
"Cost model").

    python benchmarks/kernel_cost.py                    # markdown tables, H100 and A100, bf16 and fp32
    python benchmarks/kernel_cost.py --gpu H100 --dtype bf16 --counted 5 40

A model, not a measurement. Per launch, with the tiles the plan picks and the grids the host code
plans (``kernel_resources.plan_launches``):

- **bytes**: a tensor's first read and every write go to HBM; a further read is an L2 hit when
  what was streamed since fits in the L2 (the most recent bytes kept), an HBM read otherwise.
- **issue**: instructions per warp per program from the SASS (``kernel_sass``: each loop body
  times its trips, with captions of ``lo..hi`` counted positions and rows in whole blocks), times
  the program's warps, over the SM's four schedulers issuing one instruction a cycle each.
- **residency**: blocks an SM holds at once, from registers (allocated per warp in units of 256)
  and shared memory (plus 1 KiB a block); an SM pulls at most ``resident x in flight / latency``
  bytes a second (Little's law, ``in flight`` the block's shared memory: its pipelined operand
  copies, 8 KiB at least), the GPU at most its HBM bandwidth.
- **time**: ``max(HBM bytes / bandwidth, L2 bytes / L2 bandwidth, FLOPs / peak, issue)`` divided
  by the launch's balance (``programs / (ceil(programs / SMs) x SMs)``: the busiest SM has the most
  programs), plus a launch gap between launches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__" and os.environ.get("TRITON_INTERPRET") == "1":
    # Interpreted kernels cannot be compiled: rerun without the interpreter.
    os.environ.pop("TRITON_INTERPRET")
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_local_hn, kernel_resources, kernel_sass  # noqa: E402


@dataclass(frozen=True)
class Gpu:
    name: str
    arch: int
    sms: int
    bandwidth: float  # HBM bytes/s
    l2_bandwidth: float  # bytes/s: an assumption (not published by NVIDIA, not measured here)
    l2_size: float  # bytes
    peak: dict  # dtype name -> FLOP/s of the kernels' dots (tensor cores for 16-bit, FMA for fp32)
    clock: float  # Hz, sustained under load (not the boost maximum)
    shared_per_sm: int  # bytes
    latency: float = 800e-9  # s, an HBM load under load
    registers_per_sm: int = 65536
    warps_per_sm: int = 64
    blocks_per_sm: int = 32
    schedulers: int = 4
    launch_gap: float = 1.0e-6  # s between dependent launches on a stream


GPUS = (
    Gpu("H100", 90, 132, 3.35e12, 5.5e12, 50e6, {"bf16": 990e12, "fp32": 67e12}, 1.755e9, 233472),
    Gpu("A100", 80, 108, 2.0e12, 3.5e12, 40e6, {"bf16": 312e12, "fp32": 19.5e12}, 1.41e9, 167936),
)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# The v4 target (issue 25): the H100's bf16 forward + backward at or under these, us.
TARGETS_US = {"ViT-B/32": 155, "ViT-B/16": 123, "ViT-L/14": 111, "ViT-L/14-336": 174}


@dataclass
class Cost:
    launch: str
    kernel: str
    hbm: float  # bytes
    l2: float  # bytes read again from L2
    flops: float
    programs: int = 0
    warps: int = 0
    registers: int = 0
    shared: int = 0
    instructions: float = 0.0  # per warp per program, expected


def rows_per_image(groups: int, counted: tuple[int, int], block: int) -> tuple[float, float, float]:
    """Expected rows of an image, expected row blocks of ``block`` rows, and the expected blocks
    past the first, for captions of a uniform ``lo..hi`` counted positions each."""
    lo, hi = counted
    dist = {0: 1.0}
    for _ in range(groups):
        step = {}
        for total, p in dist.items():
            for n in range(lo, hi + 1):
                step[total + n] = step.get(total + n, 0.0) + p / (hi - lo + 1)
        dist = step
    rows = sum(r * p for r, p in dist.items())
    blocks = sum(-(-r // block) * p for r, p in dist.items())
    return rows, blocks, sum(max(-(-r // block) - 1, 0) * p for r, p in dist.items())


def cached(streamed: float, gpu: Gpu) -> float:
    """The fraction of a re-read that hits L2 when ``streamed`` bytes (the re-read ones included)
    went through it since the first read, the most recent ones kept."""
    return min(1.0, gpu.l2_size / streamed)


def traffic(shape: bench_local_hn.Shape, dtype_name: str, gpu: Gpu, tiles) -> dict[str, Cost]:
    """Bytes and FLOPs of each launch of the loss, forward and backward, by kernel name."""
    B, G, T, P, D = shape.batch, shape.groups, shape.length, shape.patches, shape.dim
    e = DTYPES[dtype_name].itemsize
    split = dtype_name != "fp32"
    rows, blocks, _ = rows_per_image(G, shape.counted, tiles.rows)
    n_tiles = -(-P // tiles.patches)
    columns = -(-D // tiles.columns)
    pitch = n_tiles * tiles.patches
    image = B * P * D * e
    text_rows = B * rows * D * e
    weights32 = B * rows * pitch * 4  # fp32, or its two 16-bit halves
    weights = B * rows * pitch * e  # the normalised weights the backward reads
    row_lists = B * n_tiles * rows * 4
    small = B * G * T  # the mask
    padded = blocks * tiles.rows
    matmul = 2 * B * padded * pitch * D  # one rows x patches x width product
    costs = {
        "_similarity_kernel": Cost(
            "forward: similarity (rows numbered)",
            "_similarity_kernel",
            hbm=image + text_rows + weights32 + row_lists + small + 2 * B * n_tiles * rows * 4,
            # An image's rows again per patch tile; its patches again per extra row block.
            l2=text_rows * (n_tiles - 1) + image * (blocks - 1) + small * (n_tiles - 1),
            flops=matmul,
        )
    }
    if n_tiles > 1:
        costs["_fixup_kernel"] = Cost(
            "forward: weights' fix-up",
            "_fixup_kernel",
            hbm=weights32 + B * n_tiles * rows * 4,
            l2=weights32 + 2 * B * n_tiles * n_tiles * rows * 4,
            flops=0,
        )
    # The pooling reads what the similarity launch streamed, last image first: the most recent
    # bytes, the ones the L2 still holds.
    again = image + text_rows + weights32
    hit = cached(again, gpu)
    costs["_pool_kernel"] = Cost(
        "forward: pooling",
        "_pool_kernel",
        hbm=(1 - hit) * again + weights + 3 * columns * B * rows * 4 + B * rows * 4,
        # The weights again per extra column block, the patches per extra row block.
        l2=hit * again + weights32 * (columns - 1) + image * (blocks - 1) + B * n_tiles * rows * 4 * columns,
        flops=matmul * (2 if split else 1),
    )
    costs["_finish_kernel"] = Cost(
        "forward: row statistics, scores",
        "_finish_kernel",
        hbm=3 * B * rows * 4 + 2 * B * G * 4,
        l2=3 * columns * B * rows * 4 + B * rows * 4,
        flops=0,
    )
    costs["_contrast_fwd_kernel"] = Cost(
        "forward: contrast", "_contrast_fwd_kernel", hbm=B * G * 12, l2=0, flops=0
    )
    costs["_tokens_bwd_kernel"] = Cost(
        "backward: token gradients",
        "_tokens_bwd_kernel",
        # Reads the patches, the weights, the rows' text tokens, the statistics; writes the
        # patches' gradient and every text position's (zeros at the padding).
        hbm=image + weights + text_rows + 4 * B * rows * 4 + small + image + B * G * T * D * e,
        # The weights twice per column block (Z, then dV), the patches per extra row block; past
        # an image's first block, X and dX again per patch tile.
        l2=weights * (2 * columns - 1)
        + image * (blocks - 1)
        + 2 * text_rows * (blocks - 1) / blocks * n_tiles,
        flops=2 * matmul,
    )
    return costs


def residency(cost: Cost, gpu: Gpu) -> int:
    """Blocks of the launch an SM holds at once."""
    per_warp = math.ceil(max(cost.registers, 1) * 32 / 256) * 256
    by_registers = gpu.registers_per_sm // (per_warp * cost.warps)
    by_shared = gpu.shared_per_sm // (cost.shared + 1024)
    return max(0, min(by_registers, by_shared, gpu.warps_per_sm // cost.warps, gpu.blocks_per_sm))


def balance(programs: int, gpu: Gpu) -> float:
    """``programs / (ceil(programs / SMs) x SMs)``: how evenly the programs load the SMs."""
    return programs / (math.ceil(programs / gpu.sms) * gpu.sms)


def bounds_us(cost: Cost, gpu: Gpu, dtype_name: str) -> dict[str, float]:
    """The launch's time bounds, us: HBM bytes (at the bandwidth its residency can draw), L2 bytes,
    FLOPs and instruction issue, each over the launch's balance, and their maximum."""
    in_flight = max(cost.shared, 8192) * max(residency(cost, gpu), 1)
    bandwidth = min(gpu.bandwidth, gpu.sms * in_flight / gpu.latency)
    issue = cost.programs * cost.warps * cost.instructions / (gpu.sms * gpu.schedulers * gpu.clock)
    found = {
        "hbm": cost.hbm / bandwidth,
        "l2": cost.l2 / gpu.l2_bandwidth,
        "flops": cost.flops / gpu.peak[dtype_name],
        "issue": issue,
    }
    found = {name: 1e6 * seconds / balance(cost.programs, gpu) for name, seconds in found.items()}
    found["bound"] = max(found.values())
    return found


def costs(shape: bench_local_hn.Shape, dtype_name: str, gpu: Gpu):
    """``(tiles, [Cost])``: every launch of the loss, forward and backward, with its traffic,
    grid, compiled resources and instructions."""
    sizes = (shape.batch, shape.groups, shape.length, shape.patches, shape.dim)
    dtype = DTYPES[dtype_name]
    _, tiles, launches = kernel_resources.plan_launches(sizes, dtype, gpu.arch, "minmax", False, ("loss",))
    found = traffic(shape, dtype_name, gpu, tiles)
    _, blocks, further = rows_per_image(shape.groups, shape.counted, tiles.rows)
    n_tiles = -(-shape.patches // tiles.patches)
    columns = -(-shape.dim // tiles.columns)
    constants = {launch.kernel: launch.kwargs for launch in launches}  # as the host code set them
    trips = {
        ("_similarity_kernel", "first"): blocks,
        ("_similarity_kernel", "d0"): -(-shape.dim // tiles.width),
        ("_fixup_kernel", "first"): blocks,
        ("_row_range", "j"): n_tiles,
        ("_pool_kernel", "first"): blocks,
        ("_pool_kernel", "j"): n_tiles,
        ("_finish_kernel", "first"): blocks,
        ("_finish_kernel", "c"): columns,
        ("_contrast_fwd_kernel", "b0"): -(-shape.batch // constants["_contrast_fwd_kernel"]["BB"]),
        ("_tokens_bwd_kernel", "g"): shape.groups,
        ("_tokens_bwd_kernel", "z0"): -(-tiles.columns // constants["_tokens_bwd_kernel"]["ZD"]),
        ("_tokens_bwd_kernel", "first"): further,
        ("_tokens_bwd_kernel", "j"): n_tiles,
        ("_pooled", "j"): n_tiles,
        ("_scale_grad", "b0"): -(-shape.batch // 128),
    }
    result = []
    for launch in launches:
        cost = found[launch.kernel]
        usage = kernel_resources.compile_launch(launch, gpu.arch)
        cost.programs = launch.grid[0]
        cost.warps = usage["num_warps"]
        cost.registers = usage["registers"]
        cost.shared = usage["shared_bytes"]
        cost.instructions, _ = kernel_sass.instructions_per_program(
            kernel_resources.sass(launch, gpu.arch), trips, cost.programs, columns
        )
        result.append(cost)
    return tiles, result


def total_us(launches: list[Cost], gpu: Gpu, dtype_name: str) -> float:
    """Forward + backward: every launch's bound, and a gap between consecutive launches."""
    return sum(bounds_us(c, gpu, dtype_name)["bound"] for c in launches) + 1e6 * gpu.launch_gap * (
        len(launches) - 1
    )


def padded_floor_us(shape: bench_local_hn.Shape, dtype_name: str, gpu: Gpu) -> float:
    """ANCHORS.md's padded HBM floor of forward + backward at this GPU's bandwidth."""
    floor = bench_local_hn.floor_bytes(shape, DTYPES[dtype_name], "fwd+bwd", shape.captions * shape.length)
    return 1e6 * floor / gpu.bandwidth


def _evaluated(counted: tuple[int, int], gpus, dtypes):
    """``(gpu, shape, dtype name, tiles, [Cost])`` for each GPU, anchor shape and dtype."""
    for gpu in gpus:
        for shape in bench_local_hn.suite_shapes("anchors", counted):
            for dtype_name in dtypes:
                tiles, launches = costs(shape, dtype_name, gpu)
                yield gpu, shape, dtype_name, tiles, launches


def issue_us(launches: list[Cost], gpu: Gpu, dtype_name: str) -> float:
    """The launches' issue bounds summed, us."""
    return sum(bounds_us(c, gpu, dtype_name)["issue"] for c in launches)


def target_us(shape: bench_local_hn.Shape, dtype_name: str, gpu: Gpu) -> float | None:
    """The v4 target, where there is one (the H100 in bf16)."""
    return TARGETS_US[shape.name] if gpu.name == "H100" and dtype_name == "bf16" else None


def report(counted: tuple[int, int], gpus=GPUS, dtypes=tuple(DTYPES)) -> str:
    lines = []
    for gpu in gpus:
        lines += [
            f"#### {gpu.name} ({gpu.sms} SMs at {gpu.clock / 1e9:.2f} GHz, {gpu.bandwidth / 1e12:.2f} TB/s, "
            f"{gpu.peak['bf16'] / 1e12:.0f} TFLOP/s bf16, {gpu.peak['fp32'] / 1e12:.1f} TFLOP/s fp32 FMA; "
            f"L2 {gpu.l2_size / 1e6:.0f} MB, assumed {gpu.l2_bandwidth / 1e12:.1f} TB/s)",
            "",
            "| shape | dtype | launch | programs | regs / smem KiB / blocks per SM | instr per warp | "
            "HBM MB | L2 MB | GFLOP | HBM us | L2 us | FLOP us | issue us | bound us |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        totals = []
        for _, shape, dtype_name, tiles, launches in _evaluated(counted, (gpu,), dtypes):
            for c in launches:
                b = bounds_us(c, gpu, dtype_name)
                lines.append(
                    f"| {shape.name} | {dtype_name} | {c.launch} | {c.programs:,} | {c.registers} / "
                    f"{c.shared / 1024:.0f} / {residency(c, gpu)} | {c.instructions:,.0f} | "
                    f"{c.hbm / 1e6:,.1f} | {c.l2 / 1e6:,.1f} | {c.flops / 1e9:,.2f} | {b['hbm']:,.1f} | "
                    f"{b['l2']:,.1f} | {b['flops']:,.1f} | {b['issue']:,.1f} | {b['bound']:,.1f} |"
                )
            totals.append((shape, dtype_name, tiles, launches))
        lines += [
            "",
            "| shape | dtype | tiles (rows, patches, width, columns) | launches | issue us | "
            "fwd + bwd bound us (with gaps) | HBM floor padded us | bound / floor | target us |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for shape, dtype_name, tiles, launches in totals:
            total = total_us(launches, gpu, dtype_name)
            floor = padded_floor_us(shape, dtype_name, gpu)
            target = target_us(shape, dtype_name, gpu)
            sizes = f"{tiles.rows}, {tiles.patches}, {tiles.width}, {tiles.columns}"
            lines.append(
                f"| {shape.name} | {dtype_name} | {sizes} | {len(launches)} | "
                f"{issue_us(launches, gpu, dtype_name):,.1f} | {total:,.1f} | {floor:,.1f} | "
                f"{total / floor:.2f} | {'' if target is None else target} |"
            )
        lines.append("")
    return "\n".join(lines)


def summaries(counted: tuple[int, int], gpus=GPUS, dtypes=tuple(DTYPES)):
    """One dict per GPU, anchor shape and dtype: the forward + backward bound, its issue part, the
    padded HBM floor, the target, and per launch its kernel, programs, balance, FLOPs and
    instructions per warp."""
    for gpu, shape, dtype_name, _, launches in _evaluated(counted, gpus, dtypes):
        yield dict(
            gpu=gpu.name,
            shape=shape.name,
            dtype=dtype_name,
            total_us=total_us(launches, gpu, dtype_name),
            issue_us=issue_us(launches, gpu, dtype_name),
            floor_us=padded_floor_us(shape, dtype_name, gpu),
            target_us=target_us(shape, dtype_name, gpu),
            launches=[
                dict(
                    kernel=c.kernel,
                    programs=c.programs,
                    balance=balance(c.programs, gpu),
                    flops=c.flops,
                    instructions=c.instructions,
                )
                for c in launches
            ],
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counted", type=int, nargs=2, default=bench_local_hn.COUNTED, metavar=("LO", "HI"))
    parser.add_argument("--gpu", nargs="+", choices=[g.name for g in GPUS], default=[g.name for g in GPUS])
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--json", action="store_true", help="one JSON summary per GPU, shape and dtype")
    args = parser.parse_args(argv)
    gpus = [g for g in GPUS if g.name in args.gpu]
    if args.json:
        for summary in summaries(tuple(args.counted), gpus, tuple(args.dtype)):
            print(json.dumps(summary), flush=True)
    else:
        print(report(tuple(args.counted), gpus, tuple(args.dtype)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
