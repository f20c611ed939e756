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


def json_lines(command: list[str]) -> list[dict]:
    """What a benchmarks/ script run with ``--json`` prints, one JSON object a line; it compiles for
    the GPU ahead of time, so Triton's interpreter is off."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def rows():
    found = []
    for arch, dtypes in COVER.items():
        command = ["benchmarks/kernel_resources.py", "--json", "--suite", "anchors", "--ops", "loss"]
        command += ["--arch", str(arch), "--dtype", *dtypes, "--jobs", str(min(4, os.cpu_count() or 1))]
        found += json_lines(command)
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
        one_tile = dtype != torch.float32  # 49 patches: one tile of 64, no fix-up launch
        expected = set(kernel_resources.KERNEL_NAMES) - ({"_fixup_kernel"} if one_tile else set())
        assert {launch.kernel for launch in launches} == expected
        for launch in launches:
            assert kernel_resources.grid_fits(launch.grid), f"{launch.kernel}: grid {launch.grid}"


def test_16bit_dots_run_on_tensor_cores(rows):
    dots = [r for r in rows if r["kernel"] in DOT_KERNELS and r["dtype"] != "fp32"]
    assert dots
    for row in dots:
        assert row["tensor_core_ops"] > 0, label(row)
        if row["arch"] == 90:  # 64-row dots: Hopper's warpgroup MMA, every one of them (v3's dV
            # dot at ViT-B/16 had the 32-patch tile as M and compiled to mma.sync)
            assert row["wgmma"] and row["mma_sync"] == 0, label(row)


def test_sass_loops_are_counted_with_their_trips():
    """The SASS reading of the cost model on a made-up listing: a loop nest (the fix-up's row
    blocks around _row_range's tiles, inlined), straight code, and a branch one column block in
    NC takes."""
    from benchmarks import kernel_sass

    loops, rare = kernel_sass.source_structure()
    outer = next(loop for loop in loops if (loop.function, loop.variable) == ("_fixup_kernel", "first"))
    inner = next(loop for loop in loops if (loop.function, loop.variable) == ("_row_range", "j"))
    column = next(lines for lines, kind in rare if kind == "column")
    where = f'//## File "{kernel_sass.SOURCE}", line'
    listing = "\n".join(
        [
            f"{where} {outer.line - 1}",
            "        /*0000*/                   MOV R1, R2 ;",
            ".L_x_0:",
            f"{where} {outer.body[0]}",
            "        /*0010*/                   IADD3 R1, R1, 0x1, RZ ;",
            ".L_x_1:",
            f'{where} {inner.body[0]} inlined at "{kernel_sass.SOURCE}", line {outer.body[1]}',
            f"{where} {outer.body[1]}",
            "        /*0020*/                   FADD R3, R3, R4 ;",
            "        /*0030*/                   FMUL R3, R3, R4 ;",
            f'{where} {inner.line} inlined at "{kernel_sass.SOURCE}", line {outer.body[1]}',
            "        /*0040*/              @P0 BRA `(.L_x_1) ;",
            f"{where} {column[0]}",
            "        /*0050*/                   STG.E [R2.64], R3 ;",
            f"{where} {outer.line}",
            "        /*0060*/              @P1 BRA `(.L_x_0) ;",
            "        /*0070*/                   EXIT ;",
            ".L_x_2:",
            "        /*0080*/                   BRA `(.L_x_2) ;",
        ]
    )
    instructions, found = kernel_sass.parse(listing)
    assert len(instructions) == 9 and sorted(found) == [(1, 6), (2, 4)]
    assert instructions[2].chain == (inner.body[0], outer.body[1])
    trips = {("_fixup_kernel", "first"): 2.0, ("_row_range", "j"): 5.0}
    total, split = kernel_sass.instructions_per_program(listing, trips, programs=100, columns=4)
    # straight: MOV, EXIT, BRA; outer: IADD3, its BRA (x2) and the column store (x2 / 4); inner:
    # FADD, FMUL, BRA (x2 x5).
    assert split == {"straight": 3.0, "_fixup_kernel.first": 4.5, "_row_range.j": 30.0}
    assert total == 37.5
    with pytest.raises(KeyError, match="_row_range"):
        kernel_sass.instructions_per_program(listing, {("_fixup_kernel", "first"): 1.0}, 1)


def test_the_instruction_aware_model_meets_the_targets(rows):
    """The cost model with every launch's SASS instruction bound and its residency (the resource
    run compiled the launches first, into the same cache): the H100's bf16 forward + backward at
    or under the v4 targets (155 / 123 / 111 / 174 us), the A100's within 3x the padded HBM floor;
    every launch that computes keeps at least 75% of the SMs busy with the grids the host code
    plans."""
    summaries = json_lines(["benchmarks/kernel_cost.py", "--json", "--dtype", "bf16"])
    assert {(s["gpu"], s["shape"]) for s in summaries} == {(g, a) for g in ("H100", "A100") for a in ANCHORS}
    for summary in summaries:
        where = (summary["gpu"], summary["shape"], round(summary["total_us"], 1))
        assert all(launch["instructions"] > 0 for launch in summary["launches"]), where
        if summary["target_us"] is not None:
            assert summary["total_us"] <= summary["target_us"], where
        assert summary["total_us"] <= 3 * summary["floor_us"], where
        for launch in summary["launches"]:
            if launch["flops"]:
                assert launch["balance"] >= 0.75, (*where, launch["kernel"])
