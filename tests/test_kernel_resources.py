"""The kernels' static resource report (benchmarks/kernel_resources.py), checked without a GPU: every
launch of the loss, compiled ahead of time for sm_80, sm_86, sm_89 and sm_90 at the ANCHORS shapes,
fits the architecture's shared memory (and the dispatch's bound of it), hardly spills, and runs its
16-bit dots on tensor cores.

The compiles take most of this file's time, so each architecture covers a subset of the dtypes
(fp16 and bf16 compile to the same code but for the operand type); every dtype is covered on
sm_80 and sm_90.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
COVER = {80: ("bf16", "fp16", "fp32"), 86: ("bf16", "fp32"), 89: ("fp16",), 90: ("bf16", "fp16", "fp32")}
DOT_KERNELS = {"_similarity_kernel", "_pool_kernel", "_tokens_bwd_kernel"}
LOSS_KERNELS = (
    "_similarity_kernel",
    "_fixup_kernel",  # not with a single patch tile (ViT-B/32 in 16 bits)
    "_pool_kernel",
    "_finish_kernel",
    "_contrast_fwd_kernel",
    "_tokens_bwd_kernel",
)
ANCHORS = {"ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14-336"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rows():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    found = []
    for arch, dtypes in COVER.items():
        command = [sys.executable, "benchmarks/kernel_resources.py", "--json", "--suite", "anchors"]
        command += ["--ops", "loss", "--arch", str(arch), "--dtype", *dtypes]
        done = subprocess.run(
            command + ["--jobs", str(min(4, os.cpu_count() or 1))],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        found += [json.loads(line) for line in done.stdout.splitlines()]
    return found


def label(row):
    return f"{row['kernel']} {row['shape_name']} {row['dtype']} sm_{row['arch']}"


def test_every_configuration_was_compiled(rows):
    got = {(r["shape_name"], r["dtype"], r["arch"], r["kernel"]) for r in rows}
    for arch, dtypes in COVER.items():
        for dtype in dtypes:
            for shape in ANCHORS:
                one_tile = shape == "ViT-B/32" and dtype != "fp32"
                for kernel in LOSS_KERNELS:
                    launched = kernel != "_fixup_kernel" or not one_tile
                    assert ((shape, dtype, arch, kernel) in got) == launched, (shape, dtype, arch, kernel)


def test_auto_dispatches_the_kernels_at_every_anchor(rows):
    assert {r["dispatch"] for r in rows} == {"triton"}


def test_launches_fit_the_shared_memory_and_its_bound(rows):
    for row in rows:
        assert row["shared_bytes"] <= row["shared_limit"], label(row)
        # The dispatch decides from the bound without compiling: it must hold.
        assert row["shared_bytes"] <= row["shared_bound"], label(row)


def test_spills(rows):
    for row in rows:
        limit = 256 if row["dtype"] == "fp32" else 32  # a few spilled values are harmless
        assert row["spill_bytes"] <= limit, f"{label(row)}: {row['spill_bytes']} bytes"


def test_grids_fit(rows):
    for row in rows:
        assert row["grid_fits"], f"{label(row)}: grid {row['grid']}"


def test_grids_fit_a_batch_beyond_65535_images():
    """CUDA caps grid axes 1 and 2 at 65,535 blocks: 70,000 images (an evaluation set scored in
    one call) must be on axis 0. Planning the launches compiles nothing."""
    from benchmarks import kernel_resources

    for dtype in (torch.bfloat16, torch.float32):
        _, _, launches = kernel_resources.plan_launches((70_000, 4, 77, 49, 512), dtype, 90, "minmax", False)
        assert {launch.kernel for launch in launches} == set(kernel_resources.KERNEL_NAMES)
        for launch in launches:
            assert kernel_resources.grid_fits(launch.grid), f"{launch.kernel}: grid {launch.grid}"


def test_16bit_dots_run_on_tensor_cores(rows):
    dots = [r for r in rows if r["kernel"] in DOT_KERNELS and r["dtype"] != "fp32"]
    assert dots
    for row in dots:
        assert row["tensor_core_ops"] > 0, label(row)
        if row["arch"] == 90:  # 64-row tiles: Hopper's warpgroup MMA
            assert row["wgmma"], label(row)
