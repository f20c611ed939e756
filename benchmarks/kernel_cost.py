"""Cost model of the local HN kernels: the bytes each launch moves, the FLOPs it does, how many of
its programs have work, and the time these bound it to, next to the HBM floor (docs/kernels.md,
"Cost model").

    python benchmarks/kernel_cost.py                 # markdown tables, H100 and A100
    python benchmarks/kernel_cost.py --counted 5 40  # other caption lengths

A model, not a measurement. It follows the kernels' loops (docs/kernels.md) with the tile sizes the
plan picks. Traffic: a tensor's first read and every write go to HBM; a further read is an L2 hit
when what was streamed since the previous read fits in the L2, and an HBM read otherwise. Time: a
launch takes at least ``max(HBM bytes / bandwidth, FLOPs / peak)`` ("with L2": and its L2 bytes at an
assumed L2 bandwidth), divided by its occupancy: an SM runs at most its share of each throughput,
so a launch whose busy programs fill ``w`` waves of the SMs only ``busy / (w * SMs)`` full takes
``1 / occupancy`` times as long. Captions count a uniform ``lo..hi`` positions each; an image's rows
are padded to whole row blocks. Launch overheads (about a microsecond each) are not counted.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_local_hn  # noqa: E402
from benchmarks.common import SHARED_LIMIT  # noqa: E402
from fsc_losses.kernels import local_hn  # noqa: E402


@dataclass(frozen=True)
class Gpu:
    name: str
    arch: int
    sms: int
    bandwidth: float  # HBM bytes/s
    l2_bandwidth: float  # bytes/s: an assumption (not published by NVIDIA, not measured here)
    l2_size: float  # bytes
    peak: dict  # dtype name -> FLOP/s of the kernels' dots (tensor cores for 16-bit, FMA for fp32)


GPUS = (
    Gpu("H100", 90, 132, 3.35e12, 5.5e12, 50e6, {"bf16": 990e12, "fp32": 67e12}),
    Gpu("A100", 80, 108, 2.0e12, 3.5e12, 40e6, {"bf16": 312e12, "fp32": 19.5e12}),
)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class Cost:
    launch: str
    kernel: str
    hbm: float  # bytes
    l2: float  # bytes read again from L2
    flops: float
    busy: float  # programs with work (expected)


def rows_per_image(groups: int, counted: tuple[int, int], block: int) -> tuple[float, float]:
    """Expected rows of an image and expected rows after padding to whole blocks, for captions
    of a uniform ``lo..hi`` counted positions each."""
    lo, hi = counted
    dist = {0: 1.0}
    for _ in range(groups):
        step = {}
        for total, p in dist.items():
            for n in range(lo, hi + 1):
                step[total + n] = step.get(total + n, 0.0) + p / (hi - lo + 1)
        dist = step
    rows = sum(r * p for r, p in dist.items())
    padded = sum(-(-r // block) * block * p for r, p in dist.items())
    return rows, padded


def cached(streamed: float, gpu: Gpu) -> float:
    """The fraction of a re-read that hits L2 when ``streamed`` bytes (the re-read ones included)
    went through it since the first read, the most recent ones kept."""
    return min(1.0, gpu.l2_size / streamed)


def costs(shape: bench_local_hn.Shape, dtype_name: str, gpu: Gpu) -> tuple[local_hn.Tiles, list[Cost]]:
    B, G, T, P, D = shape.batch, shape.groups, shape.length, shape.patches, shape.dim
    dtype = DTYPES[dtype_name]
    meta = dict(device="meta", dtype=dtype)
    tiles = local_hn.plan(
        torch.empty(B, P, D, **meta),
        torch.empty(B, G, T, D, **meta),
        local_hn.DeviceSpec(SHARED_LIMIT[gpu.arch], divmod(gpu.arch, 10)),
    )
    e = dtype.itemsize
    rows, padded = rows_per_image(G, shape.counted, tiles.rows)
    blocks = padded / tiles.rows
    n_tiles = -(-P // tiles.patches)
    columns = -(-D // tiles.columns)
    padded_patches = n_tiles * tiles.patches
    image = B * P * D * e
    text_rows = B * rows * D * e
    weights = B * rows * P * e  # minmax / softmax store U in the tokens' dtype
    tile_stats = 2 * B * n_tiles * rows * 4
    parts = 3 * columns * B * rows * 4
    row_stats = 6 * B * rows * 4
    small = B * G * T * (4 + 1)  # the row list, the mask
    matmul = 2 * B * padded * padded_patches * D  # one rows x patches x width product
    similarity = Cost(
        "forward: similarity",
        "_similarity_kernel",
        hbm=image + text_rows + weights + tile_stats + small,
        # An image's rows again per patch tile; its patches again per extra row block.
        l2=text_rows * (n_tiles - 1) + image * (blocks - 1),
        flops=matmul,
        busy=B * n_tiles,
    )
    # The pooling reads what the similarity launch streamed, last image first: the most recent
    # bytes, the ones the L2 still holds.
    again = image + text_rows + weights
    hit = cached(again, gpu)
    pooling = Cost(
        "forward: pooling",
        "_pool_kernel",
        hbm=(1 - hit) * again + tile_stats + parts + row_stats,
        # U again per extra column block, V per extra row block.
        l2=hit * again + weights * (columns - 1) + image * (blocks - 1),
        flops=matmul,
        busy=B * columns,
    )
    finish = Cost(
        "forward: weights' fix-up, row statistics",
        "_finish_kernel",
        hbm=weights + tile_stats + row_stats + B * G * 4,
        l2=weights + parts,
        flops=0,
        busy=B * n_tiles,
    )
    contrast = Cost("forward: contrast", "_contrast_fwd_kernel", hbm=B * G * 12, l2=0, flops=0, busy=1)
    backward = Cost(
        "backward: token gradients",
        "_tokens_bwd_kernel",
        hbm=image + weights + text_rows + B * G * T * D * e + image + row_stats + small,
        # U twice per column block; X once in A and per patch tile in B; dX rows per patch tile.
        l2=weights * (2 * columns - 1) + text_rows * (n_tiles + n_tiles),
        flops=2 * matmul,
        busy=B * columns,
    )
    reduce = Cost("backward: logit_scale sum", "_sum_kernel", hbm=B * 4, l2=0, flops=0, busy=1)
    return tiles, [similarity, pooling, finish, contrast, backward, reduce]


def occupancy(busy: float, gpu: Gpu) -> float:
    """``busy / (waves * SMs)``: how full the SMs are, on average, over the waves of programs."""
    return busy / (math.ceil(busy / gpu.sms) * gpu.sms)


def bound_us(cost: Cost, gpu: Gpu, dtype_name: str, with_l2: bool = False) -> float:
    """The least time of a launch: its HBM traffic or its FLOPs (and with ``with_l2`` its L2
    traffic) at the machine's rate, over its occupancy."""
    seconds = max(cost.hbm / gpu.bandwidth, cost.flops / gpu.peak[dtype_name])
    if with_l2:
        seconds = max(seconds, cost.l2 / gpu.l2_bandwidth)
    return 1e6 * seconds / occupancy(cost.busy, gpu)


def total_us(launches: list[Cost], gpu: Gpu, dtype_name: str, with_l2: bool = False) -> float:
    return sum(bound_us(c, gpu, dtype_name, with_l2) for c in launches)


def padded_floor_us(shape: bench_local_hn.Shape, dtype_name: str, gpu: Gpu) -> float:
    """ANCHORS.md's padded HBM floor of forward + backward at this GPU's bandwidth."""
    floor = bench_local_hn.floor_bytes(shape, DTYPES[dtype_name], "fwd+bwd", shape.captions * shape.length)
    return 1e6 * floor / gpu.bandwidth


def report(counted: tuple[int, int]) -> str:
    lines = []
    for gpu in GPUS:
        lines += [
            f"#### {gpu.name} ({gpu.sms} SMs, {gpu.bandwidth / 1e12:.2f} TB/s, "
            f"{gpu.peak['bf16'] / 1e12:.0f} TFLOP/s bf16, {gpu.peak['fp32'] / 1e12:.1f} TFLOP/s fp32 FMA; "
            f"L2 {gpu.l2_size / 1e6:.0f} MB, assumed {gpu.l2_bandwidth / 1e12:.1f} TB/s)",
            "",
            "| shape | dtype | launch | HBM MB | L2 MB | GFLOP | busy programs | occupancy | bound us "
            "| L2 us |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        totals = []
        for shape in bench_local_hn.suite_shapes("anchors", counted):
            for dtype_name in DTYPES:
                tiles, launches = costs(shape, dtype_name, gpu)
                for c in launches:
                    if c.flops or c.hbm > 1e6:
                        lines.append(
                            f"| {shape.name} | {dtype_name} | {c.launch} | {c.hbm / 1e6:,.1f} | "
                            f"{c.l2 / 1e6:,.1f} | {c.flops / 1e9:,.2f} | {c.busy:,.0f} | "
                            f"{occupancy(c.busy, gpu):.2f} | {bound_us(c, gpu, dtype_name):,.1f} | "
                            f"{1e6 * c.l2 / gpu.l2_bandwidth / occupancy(c.busy, gpu):,.1f} |"
                        )
                dtype = DTYPES[dtype_name]
                positions = shape.captions * sum(counted) / 2
                counted_floor = bench_local_hn.floor_bytes(shape, dtype, "fwd+bwd", positions)
                totals.append(
                    (
                        shape.name,
                        dtype_name,
                        total_us(launches, gpu, dtype_name),
                        total_us(launches, gpu, dtype_name, with_l2=True),
                        padded_floor_us(shape, dtype_name, gpu),
                        1e6 * counted_floor / gpu.bandwidth,
                        tiles,
                    )
                )
        lines += [
            "",
            "| shape | dtype | tiles (rows, patches, width, columns) | fwd + bwd bound us | "
            "HBM floor padded us | bound / padded floor | with L2 us | with L2 / padded floor | "
            "HBM floor counted us |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, dtype_name, total, with_l2, floor_us, counted_us, tiles in totals:
            sizes = f"{tiles.rows}, {tiles.patches}, {tiles.width}, {tiles.columns}"
            lines.append(
                f"| {name} | {dtype_name} | {sizes} | {total:,.1f} | {floor_us:,.1f} | "
                f"{total / floor_us:.2f} | {with_l2:,.1f} | {with_l2 / floor_us:.2f} | {counted_us:,.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counted", type=int, nargs=2, default=bench_local_hn.COUNTED, metavar=("LO", "HI"))
    args = parser.parse_args(argv)
    print(report(tuple(args.counted)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
