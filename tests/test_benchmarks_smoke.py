"""The benchmark scripts keep working: their ``--smoke`` runs (tiny shapes on the CPU, the fused
kernels under Triton's interpreter) end cleanly, print their table and write one CSV row per
measurement; and the HBM floor reproduces the floors of ANCHORS.md."""

import csv
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_linear_ce, bench_local_hn, common
from fsc_losses import chunked

ROOT = Path(__file__).resolve().parents[1]
MODES = ["fwd", "bwd", "fwd+bwd"]
META_COLUMNS = ["date_utc", "commit", "device", "torch", "triton"]
LOCAL_HN_COLUMNS = META_COLUMNS + [
    "suite",
    "shape",
    "B",
    "K",
    "T",
    "P",
    "D",
    "counted_min",
    "counted_max",
    "counted_per_caption",
    "layout",
    "input_sets",
    "provider",
    "mode",
    "dtype",
    "normalizer",
    "reps",
    "median_us",
    "p20_us",
    "p80_us",
    "host_us",
    "graph_us",
    "peak_extra_mib",
    "outputs_mib",
    "hbm_floor_padded_us",
    "hbm_floor_counted_us",
    "matmul_floor_us",
    "x_floor",
    "bandwidth_gbps",
    "matmul_tflops",
]
TRAIN_STEP_COLUMNS = META_COLUMNS + [
    "open_clip",
    "model",
    "batch",
    "negatives",
    "captions",
    "context",
    "amp",
    "check_inputs",
    "provider",
    "steps",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "peak_extra_mib",
    "overhead_ms",
    "overhead_pct",
]


LINEAR_CE_COLUMNS = META_COLUMNS + [
    "shape",
    "N",
    "H",
    "V",
    "dtype",
    "provider",
    "chunk",
    "reps",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "peak_extra_mib",
    "outputs_mib",
    "logits_mib",
]


def kernels_import() -> bool:
    try:
        importlib.import_module("fsc_losses.kernels.local_hn")
    except ImportError:
        return False
    return True


def run_smoke(script: str, results: Path) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["TRITON_INTERPRET"] = "1"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--results", str(results)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def test_local_hn_smoke(tmp_path):
    results = tmp_path / "local_hn.csv"
    out = run_smoke("bench_local_hn.py", results)

    expected = ["reference"]
    if "compiled skipped: torch.compile has no working C++ compiler" not in out:
        expected.append("compiled")
    if kernels_import():
        expected.append("fused")
    header, rows = read_csv(results)
    assert header == LOCAL_HN_COLUMNS
    assert sorted((r["provider"], r["mode"]) for r in rows) == sorted((p, m) for p in expected for m in MODES)
    for row in rows:
        assert row["device"].startswith("CPU") and row["dtype"] == "fp32"
        assert row["peak_extra_mib"] == row["graph_us"] == ""  # only measured on a GPU
        assert float(row["host_us"]) > 0 and row["layout"] == "flat"
        # smoke shape B=2, K=3, T=12, P=4, D=16 in fp32: the loss, or the three gradients
        outputs = 4 if row["mode"] == "fwd" else 4 * (2 * 4 * 16 + 2 * 4 * 12 * 16 + 1)
        assert float(row["outputs_mib"]) == pytest.approx(outputs / 2**20, abs=5e-5)
        assert 0 < float(row["p20_us"]) <= float(row["median_us"]) <= float(row["p80_us"])
        floors = [float(row[k]) for k in ("hbm_floor_padded_us", "hbm_floor_counted_us", "matmul_floor_us")]
        assert floors[0] > floors[1] > 0 and floors[2] > 0
        assert float(row["x_floor"]) == pytest.approx(float(row["median_us"]) / max(floors[1:]), rel=0.02)

    table = out[out.index("Measurements") :]
    for row in rows:
        assert any(
            line.split()[:6] == ["smoke", "fp32", "minmax", "flat", row["mode"], row["provider"]]
            for line in table.splitlines()
        )
    assert f"{len(rows)} rows appended to {results}" in out


def test_train_step_smoke(tmp_path):
    pytest.importorskip("open_clip")
    results = tmp_path / "train_step.csv"
    out = run_smoke("bench_train_step.py", results)

    expected = ["clip", "clip-true", "fsc-reference"] + (["fsc-fused"] if kernels_import() else [])
    header, rows = read_csv(results)
    assert header == TRAIN_STEP_COLUMNS
    assert [r["provider"] for r in rows] == expected
    baseline = float(rows[0]["median_ms"])
    assert rows[0]["overhead_ms"] == rows[0]["overhead_pct"] == ""
    for row in rows:
        assert row["captions"] == "16" and row["steps"] == "2" and float(row["median_ms"]) > 0
        if row["provider"] != "clip":
            extra = float(row["median_ms"]) - baseline
            assert float(row["overhead_ms"]) == pytest.approx(extra, abs=2e-3)
            # The CSV rounds times to 3 decimals (half-unit 5e-4 ms), so the percentage recomputed
            # from them may differ by that rounding carried through extra / baseline.
            rounding = 100 * (1e-3 / baseline + abs(extra) * 5e-4 / baseline**2) + 0.005
            assert float(row["overhead_pct"]) == pytest.approx(100 * extra / baseline, abs=rounding)
        assert any(line.split()[:1] == [row["provider"]] for line in out.splitlines())
    assert f"{len(rows)} rows appended to {results}" in out


# ANCHORS.md, section 1: HBM floors (us) at about 3 TB/s, padded and counted, for fp32 and bf16.
# Its counted floors come from random caption lengths of about 16 positions (16.1 to 17.1 by
# row), hence the 5% tolerance.
ANCHOR_FLOORS = {
    ("ViT-B/32", "fp32"): (125, 41),
    ("ViT-B/32", "bf16"): (62, 20),
    ("ViT-B/16", "fp32"): (88, 46),
    ("ViT-B/16", "bf16"): (44, 23),
    ("ViT-L/14", "fp32"): (74, 42),
    ("ViT-L/14", "bf16"): (37, 21),
    ("ViT-L/14-336", "fp32"): (116, 84),
    ("ViT-L/14-336", "bf16"): (58, 42),
}


@pytest.mark.parametrize("shape", bench_local_hn.ANCHOR_SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_hbm_floor_matches_anchors(shape, dtype):
    machine = bench_local_hn.Machine(bandwidth=3e12, matmul={dtype: 1e15})
    counted = 16 * shape.captions
    floors = bench_local_hn.floors(shape, dtype, "fwd+bwd", counted, machine)
    padded, counted_floor = ANCHOR_FLOORS[shape.name, dtype]
    assert floors.hbm_padded_us == pytest.approx(padded, abs=1)
    assert floors.hbm_counted_us == pytest.approx(counted_floor, rel=0.05)


def test_floors_by_mode():
    shape = bench_local_hn.ANCHOR_SHAPES[0]
    machine = bench_local_hn.Machine(bandwidth=1e12, matmul={"bf16": 1e15})
    counted = 15 * shape.captions
    fwd, bwd, both = (bench_local_hn.floors(shape, "bf16", m, counted, machine) for m in MODES)
    # Forward reads the inputs; with a backward the gradients are written once on top.
    assert bwd.hbm_padded_us == both.hbm_padded_us > 1.9 * fwd.hbm_padded_us
    gemm = 2 * counted * shape.patches * shape.dim / 1e15 * 1e6
    assert (fwd.matmul_us, bwd.matmul_us, both.matmul_us) == pytest.approx((2 * gemm, 2 * gemm, 4 * gemm))


def test_caption_masks_are_prefixes():
    shape = bench_local_hn.Shape("t", "custom", 8, 3, 20, 4, 16, counted=(3, 9))
    mask = bench_local_hn.caption_masks(shape, torch.Generator().manual_seed(0))
    counts = mask.sum(dim=1)
    assert mask.shape == (32, 20) and not mask[:, 0].any()
    assert counts.min() >= 3 and counts.max() <= 9 and len(set(counts.tolist())) > 1
    assert torch.equal(mask, (torch.arange(20) >= 1) & (torch.arange(20) <= counts[:, None]))


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [
        {
            "suite": suite,
            "shape": f"s{b}",
            "B": b,
            "dtype": "bf16",
            "normalizer": "minmax",
            "layout": "flat",
            "mode": mode,
            "provider": provider,
            "median_us": str(us * b),
        }
        for suite in ("batch", "anchors")
        for b in (32, 64)
        for mode in MODES
        for provider, us in (("fused", 1.0), ("compiled", 8.0), ("reference", 30.0))
    ]
    written = bench_local_hn.plot_results(rows, tmp_path)
    assert sorted(p.name for p in written) == ["speedup_bf16_minmax.png", "time_vs_batch_bf16_minmax.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_linear_ce_runs_chunked_once_per_chunk_size():
    shape = bench_linear_ce.SMOKE_SHAPE
    providers = ["chunked", "reference"]
    assert bench_linear_ce.runs(providers, [100, 500], shape) == [
        ("chunked", 100),
        ("chunked", 500),
        ("reference", None),
    ]
    default = chunked.default_chunk_size(shape.positions, shape.vocab)
    assert bench_linear_ce.runs(providers, [], shape) == [("chunked", default), ("reference", None)]
    assert bench_linear_ce.parse_args(["--chunk-size", "64", "128"]).chunk_size == [64, 128]


def test_linear_ce_smoke(tmp_path):
    results = tmp_path / "linear_ce.csv"
    out = run_smoke("bench_linear_ce.py", results)

    expected = ["chunked", "reference"]
    if "compiled skipped at smoke: torch.compile has no working C++ compiler" not in out:
        expected.append("compiled")
    header, rows = read_csv(results)
    assert header == LINEAR_CE_COLUMNS
    assert [r["provider"] for r in rows] == expected
    assert (
        "cce skipped at smoke: cce needs a GPU" in out and "liger skipped at smoke: liger needs a GPU" in out
    )
    n, h, v = (
        bench_linear_ce.SMOKE_SHAPE.positions,
        bench_linear_ce.SMOKE_SHAPE.hidden,
        bench_linear_ce.SMOKE_SHAPE.vocab,
    )
    peaks = {}
    for row in rows:
        assert row["device"].startswith("CPU") and row["dtype"] == "fp32" and row["reps"] == "2"
        assert (int(row["N"]), int(row["H"]), int(row["V"])) == (n, h, v)
        assert 0 < float(row["p20_ms"]) <= float(row["median_ms"]) <= float(row["p80_ms"])
        assert float(row["outputs_mib"]) == pytest.approx((n * h + v * h) * 4 / 2**20, abs=0.05)
        assert float(row["logits_mib"]) == pytest.approx(n * v * 4 / 2**20, abs=0.05)
        peaks[row["provider"]] = float(row["peak_extra_mib"])
        # measured on the CPU too, and at least the gradients it returns
        assert peaks[row["provider"]] >= float(row["outputs_mib"]) - 0.05
        assert any(line.split()[:3] == ["smoke", "fp32", row["provider"]] for line in out.splitlines())
        # chunked at its default chunk size, the others with none
        default_chunk = str(chunked.default_chunk_size(n, v))
        assert row["chunk"] == (default_chunk if row["provider"] == "chunked" else "")
    # the reference holds the logits, their log-softmax and its gradient; chunked a few blocks
    assert peaks["reference"] > 2 * n * v * 4 / 2**20 > peaks["chunked"]
    assert "Targets" not in out  # smoke numbers are not compared with the targets
    assert f"{len(rows)} rows appended to {results}" in out


def test_cpu_peak_extra_mib_follows_allocations_and_frees():
    def make_call(i):
        def call():
            scratch = torch.empty(2**20)  # 4 MiB, freed before the result is made
            scratch.fill_(1)
            del scratch
            first = torch.ones(2**20)  # 4 MiB
            second = torch.ones(2**21)  # 8 MiB
            return first + 1, second  # + 4 MiB; ``first`` dies on return

        return call

    assert common.cpu_peak_extra_mib(make_call) == pytest.approx(16, abs=0.01)


def test_linear_ce_targets_from_rows():
    size = dict(N=64, V=1000)  # default chunk 128
    rows = [
        {"shape": "s", "provider": "reference", "chunk": "", "median_ms": 10.0, "peak_extra_mib": 100.0},
        {"shape": "s", "provider": "chunked", "chunk": 128, "median_ms": 14.0, "peak_extra_mib": 15.0},
        # another chunk size is not what the targets are about
        {"shape": "s", "provider": "chunked", "chunk": 500, "median_ms": 9.0, "peak_extra_mib": 50.0},
        {"shape": "t", "provider": "reference", "chunk": "", "median_ms": 10.0, "peak_extra_mib": 100.0},
        {"shape": "t", "provider": "chunked", "chunk": 128, "median_ms": 16.0, "peak_extra_mib": 10.0},
        {"shape": "u", "provider": "chunked", "chunk": 128, "median_ms": 1.0, "peak_extra_mib": 1.0},
    ]
    rows = [dict(r, **size) for r in rows]
    checks = bench_linear_ce.target_checks(rows, "cpu")
    assert [(c["shape"], c["met"]) for c in checks] == [("s", True), ("t", False)]
    assert checks[1]["time_ratio"] == pytest.approx(1.6) and checks[0]["peak_ratio"] == pytest.approx(0.15)
    gpu_rows = [dict(r, provider="cce" if r["provider"] == "reference" else r["provider"]) for r in rows]
    assert [c["vs"] for c in bench_linear_ce.target_checks(gpu_rows, "cuda")] == ["cce", "cce"]
