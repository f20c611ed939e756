"""Cost model of the local HN kernels: the bytes each launch moves and the FLOPs it does, and the
time these bound it to, next to the HBM floor (docs/kernels.md, "Cost model").

    python benchmarks/kernel_cost.py                 # markdown tables, H100 and A100
    python benchmarks/kernel_cost.py --counted 5 40  # other caption lengths

A model, not a measurement: it follows the kernels' loops (docs/kernels.md) with the tile sizes the
plan picks, counts a tensor's first read and every write as HBM traffic and every further read as
L2 traffic (the programs of one image run side by side, so their re-reads are L2 hits), and bounds
each launch by ``max(HBM bytes / bandwidth, FLOPs / peak)``; "with L2" also takes the L2 bytes at
an assumed L2 bandwidth. Captions count a uniform ``lo..hi``
positions each; an image's rows are padded to whole row blocks.
"""

from __future__ import annotations

import argparse
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
    bandwidth: float  # HBM bytes/s
    l2_bandwidth: float  # bytes/s: an assumption (not published by NVIDIA, not measured here)
    peak: dict  # dtype name -> FLOP/s of the kernels' dots (tensor cores for 16-bit, FMA for fp32)


GPUS = (
    Gpu("H100", 90, 3.35e12, 5.5e12, {"bf16": 990e12, "fp32": 67e12}),
    Gpu("A100", 80, 2.0e12, 3.5e12, {"bf16": 312e12, "fp32": 19.5e12}),
)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class Cost:
    launch: str
    hbm: float  # bytes
    l2: float  # bytes read again after the first read
    flops: float


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


def costs(shape: bench_local_hn.Shape, dtype_name: str, gpu: Gpu) -> tuple[local_hn.Tiles, list[Cost]]:
    B, G, T, P, D = shape.batch, shape.groups, shape.length, shape.patches, shape.dim
    dtype = DTYPES[dtype_name]
    meta = dict(device="meta", dtype=dtype)
    tiles = local_hn.plan(
        torch.empty(B, P, D, **meta),
        torch.empty(B, G, T, D, **meta),
        local_hn.DeviceSpec(SHARED_LIMIT[gpu.arch]),
    )
    e = dtype.itemsize
    rows, padded = rows_per_image(G, shape.counted, tiles.rows)
    blocks = padded / tiles.rows
    n_tiles = -(-P // tiles.patches)
    padded_patches = n_tiles * tiles.patches
    image = B * P * D * e
    text_rows = B * rows * D * e
    weights = B * rows * P * e  # minmax / softmax store U in the tokens' dtype
    slots = B * G * T
    small = slots * (4 * 4 + 4) + B * G * T  # row statistics and list, the mask
    matmul = 2 * B * padded * padded_patches * D  # one rows x patches x width product
    forward = Cost(
        "forward: rows",
        hbm=image + text_rows + weights + small,
        # V again in pass 3 and per extra block; X per patch tile and once more (pass 3, which
        # also takes its norms); U fixed up, then read once per D chunk.
        l2=image * (2 * blocks - 1) + text_rows * n_tiles + weights * (1 + D / tiles.width),
        flops=2 * matmul,
    )
    combine = Cost(
        "forward: log-sum-exp, contrast",
        hbm=B * (-(-G * T // tiles.rows)) * G * 8 + B * G * 12,
        l2=0,
        flops=0,
    )
    columns = -(-D // tiles.bwd_width)
    backward = Cost(
        "backward: token gradients",
        hbm=image + weights + text_rows + B * G * T * D * e + image + small,
        # U twice per column block; X once in A and per patch tile in B; dX rows per patch tile.
        l2=weights * (2 * columns - 1) + text_rows * (n_tiles + n_tiles),
        flops=2 * matmul,
    )
    reduce = Cost("backward: logit_scale sum", hbm=B * 4, l2=0, flops=0)
    return tiles, [forward, combine, backward, reduce]


def bound_us(cost: Cost, gpu: Gpu, dtype_name: str) -> float:
    return 1e6 * max(cost.hbm / gpu.bandwidth, cost.flops / gpu.peak[dtype_name])


def report(counted: tuple[int, int]) -> str:
    lines = []
    for gpu in GPUS:
        lines += [
            f"### {gpu.name} ({gpu.bandwidth / 1e12:.2f} TB/s, {gpu.peak['bf16'] / 1e12:.0f} TFLOP/s bf16, "
            f"{gpu.peak['fp32'] / 1e12:.1f} TFLOP/s fp32 FMA; L2 assumed {gpu.l2_bandwidth / 1e12:.1f} TB/s)",
            "",
            "| shape | dtype | launch | HBM MB | L2 MB | GFLOP | bound us | L2 us |",
            "|---|---|---|---|---|---|---|---|",
        ]
        totals = []
        for shape in bench_local_hn.suite_shapes("anchors", counted):
            for dtype_name in DTYPES:
                tiles, launches = costs(shape, dtype_name, gpu)
                total = with_l2 = 0.0
                for c in launches:
                    total += bound_us(c, gpu, dtype_name)
                    with_l2 += max(bound_us(c, gpu, dtype_name), 1e6 * c.l2 / gpu.l2_bandwidth)
                    if c.flops or c.hbm > 1e6:
                        bound = bound_us(c, gpu, dtype_name)
                        lines.append(
                            f"| {shape.name} | {dtype_name} | {c.launch} | {c.hbm / 1e6:,.1f} | "
                            f"{c.l2 / 1e6:,.1f} | {c.flops / 1e9:,.2f} | {bound:,.1f} | "
                            f"{1e6 * c.l2 / gpu.l2_bandwidth:,.1f} |"
                        )
                dtype = DTYPES[dtype_name]
                positions = shape.captions * sum(counted) / 2
                padded_floor = bench_local_hn.floor_bytes(
                    shape, dtype, "fwd+bwd", shape.captions * shape.length
                )
                counted_floor = bench_local_hn.floor_bytes(shape, dtype, "fwd+bwd", positions)
                floor_us, counted_us = (1e6 * b / gpu.bandwidth for b in (padded_floor, counted_floor))
                totals.append((shape.name, dtype_name, total, with_l2, floor_us, counted_us, tiles))
        lines += [
            "",
            "| shape | dtype | tiles (rows, patches, width, bwd width) | fwd + bwd bound us | "
            "HBM floor padded us | bound / padded floor | with L2 us | with L2 / padded floor | "
            "HBM floor counted us |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, dtype_name, total, with_l2, floor_us, counted_us, tiles in totals:
            sizes = f"{tiles.rows}, {tiles.patches}, {tiles.width}, {tiles.bwd_width}"
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
