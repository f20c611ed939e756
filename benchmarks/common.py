"""What the benchmark scripts share: run metadata, timing, peak memory (GPU and CPU), the
fused-kernel check, CSV results and plain-text tables.

Timing runs on CUDA events when the device is a GPU and on ``time.perf_counter`` otherwise; either
way only the callable a step hands back is timed, so per-step preparation (a forward pass before a
timed backward, say) stays outside the measurement.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from fsc_losses import functional

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

MIB = 2**20

# make_call(i) does the untimed preparation of repetition i and returns what is timed.
MakeCall = Callable[[int], Callable[[], object]]

# The per-block opt-in shared-memory limit of each architecture (CUDA programming guide).
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return "CPU: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU: " + (platform.processor() or platform.machine() or "unknown")


def triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "not installed"
    return triton.__version__


def run_metadata(device: torch.device) -> dict[str, str]:
    """The columns that say where and when a measurement was taken."""
    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": triton_version(),
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class TimingPlan:
    """How long to warm up and how many repetitions to time.

    Warm-up runs at least ``min_warmup`` calls and, after the first (which may compile), until
    ``warmup_ms`` have passed; the last warm-up call sets the repetition count so that the timed
    calls take about ``rep_ms``, within ``[min_reps, max_reps]``.
    """

    min_warmup: int
    warmup_ms: float
    min_reps: int
    max_reps: int
    rep_ms: float = 0.0


@dataclass(frozen=True)
class Timing:
    median_us: float
    p20_us: float
    p80_us: float
    reps: int


def _warm_up(make_call: MakeCall, device: torch.device, plan: TimingPlan) -> float:
    """Run the warm-up calls; returns the seconds the last one took."""
    elapsed: list[float] = []
    while len(elapsed) < plan.min_warmup or 1e3 * sum(elapsed[1:]) < plan.warmup_ms:
        call = make_call(len(elapsed))
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        elapsed.append(time.perf_counter() - start)
    return elapsed[-1]


def time_calls(make_call: MakeCall, device: torch.device, plan: TimingPlan) -> Timing:
    """Median and 20/80 percentiles of the timed part of ``make_call(i)()`` over repetitions."""
    last = _warm_up(make_call, device, plan)
    reps = plan.min_reps
    if plan.rep_ms > 0 and last > 0:
        reps = math.ceil(plan.rep_ms / (1e3 * last))
    reps = min(max(reps, plan.min_reps), plan.max_reps)

    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            call = make_call(i)
            starts[i].record()
            call()
            ends[i].record()
        torch.cuda.synchronize(device)
        samples_us = [1e3 * s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]
    else:
        samples_us = []
        for i in range(reps):
            call = make_call(i)
            start = time.perf_counter()
            call()
            samples_us.append(1e6 * (time.perf_counter() - start))

    if len(samples_us) == 1:
        only = samples_us[0]
        return Timing(only, only, only, 1)
    deciles = statistics.quantiles(samples_us, n=10, method="inclusive")
    return Timing(statistics.median(samples_us), deciles[1], deciles[7], reps)


def host_time_us(make_call: MakeCall, device: torch.device, reps: int) -> float:
    """Median host time of ``make_call(i)()``: from the call to its return, the device idle at
    the start (synchronised before, not after), so on a GPU it is what the host spends issuing
    the work (Python, the dispatcher, autograd, allocations, launches), apart from what the GPU
    spends running it. On the CPU it is the whole time."""
    samples = []
    for i in range(reps):
        call = make_call(i)
        synchronize(device)
        start = time.perf_counter()
        call()
        samples.append(1e6 * (time.perf_counter() - start))
    synchronize(device)
    return statistics.median(samples)


def graph_time_us(call: Callable[[], object], device: torch.device, reps: int) -> tuple[float | None, str]:
    """Median GPU time of ``call`` captured once in a CUDA graph and replayed: no host work
    between launches. ``(None, why)`` on the CPU or when capture fails."""
    if device.type != "cuda":
        return None, "CUDA graphs need a GPU"
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    try:
        with torch.cuda.stream(side):
            for _ in range(3):
                call()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call()
    except RuntimeError as error:  # a provider that cannot be captured (a host sync, say)
        return None, f"capture failed: {str(error).splitlines()[0]}"
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends, strict=True):
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize(device)
    return statistics.median(1e3 * s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)), ""


def peak_extra_mib(make_call: MakeCall, device: torch.device) -> float | None:
    """Peak memory the timed part allocates on top of what is live before it (GPU only).

    The preparation of ``make_call`` runs first, so for a timed backward the forward's saved
    tensors count as already there, not as extra.
    """
    if device.type != "cuda":
        return None
    call = make_call(0)
    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = call()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del result
    return (peak - baseline) / MIB


def cpu_peak_extra_mib(make_call: MakeCall) -> float:
    """Peak memory the timed part allocates on top of what is live before it, on the CPU.

    PyTorch's CPU allocator reports every allocation and free to the profiler
    (``profile_memory=True``); their running sum, in time order, peaks at the answer. It counts
    every tensor storage, eager or inside compiled code, and nothing outside PyTorch's allocator
    (a BLAS library's own scratch, Python objects). As for :func:`peak_extra_mib`, the preparation
    of ``make_call`` runs first and what the call returns counts.
    """
    from torch.profiler import ProfilerActivity, profile

    call = make_call(0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = call()
    del result
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak / MIB


def fused_skip_reason(inputs: functional.LocalInputs) -> str | None:
    """Why ``backend="triton"`` would not run the fused kernels on ``inputs``, or None if it would.

    The package falls back to the reference (with a single warning) on inputs its kernels do not
    support; a benchmark must not then report the reference's time as the kernels'.
    """
    try:
        importlib.import_module("fsc_losses.kernels.local_hn")
    except ImportError as err:
        return f"the Triton kernels do not import ({err})"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            kernels = functional.select_kernels("triton", inputs)
        except (ValueError, ImportError) as err:
            return str(err)
    if kernels is None:
        said = "; ".join(str(w.message) for w in caught)
        return said or "fsc_losses falls back to the reference for these inputs"
    return None


def skip_reason(provider: str, call: Callable[[], object], device: torch.device) -> str | None:
    """Run one untimed call (it compiles, and it fails here if the provider cannot run at all);
    returns why the provider has to be skipped, or None. Only the environment's fault is a reason
    to skip: anything else is raised."""
    try:
        call()
    except Exception as err:
        if provider == "compiled" and device.type == "cpu" and compiler_missing(err):
            return f"torch.compile has no working C++ compiler here ({err})"
        raise
    return None


def compiler_missing(err: BaseException) -> bool:
    """Whether ``torch.compile`` failed for want of a working C++ toolchain (CPU inductor)."""
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (CppCompileError, InvalidCxxCompiler)):
            return True
        seen = getattr(seen, "inner_exception", None) or seen.__cause__
    return False


def int_tuple(count: int, metavar: str) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: ``count`` comma-separated integers."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {metavar}, got {text!r}")
        return values

    return parse


def results_path(requested: Path | None, smoke: bool, name: str) -> Path:
    """Where a run appends its rows: ``requested``, else a new temporary file for a smoke run
    (CPU numbers must not land among the GPU results), else ``benchmarks/results/name``."""
    if requested is not None:
        return requested
    if smoke:
        return Path(tempfile.mkdtemp(prefix="fsc_bench_")) / name
    return RESULTS_DIR / name


def append_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    """Append ``rows`` to the CSV at ``path``, writing the header if the file is new.

    An existing file with other columns is refused rather than mixed with rows it cannot hold.
    """
    if not rows:
        return
    fieldnames = list(rows[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    is_new = not path.exists() or path.stat().st_size == 0
    if not is_new:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if header != fieldnames:
            raise ValueError(f"{path} holds results with other columns; pass another --results file")
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        if is_new:
            writer.writeheader()
        writer.writerows(rows)


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table or CSV cell; None (not measured) becomes an empty cell."""
    if value is None:
        return ""
    return f"{value:.{digits}f}"


def format_table(
    rows: Sequence[dict[str, object]], columns: Sequence[tuple[str, Callable[[dict], str]]]
) -> str:
    """Aligned text table; each column is a header and a function from a row to its cell.

    Numeric cells are right-aligned, text left-aligned.
    """
    headers = [header for header, _ in columns]
    cells = [[cell(row) for _, cell in columns] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def align(text: str, width: int) -> str:
        try:
            float(text.replace(",", "").rstrip("x%"))
        except ValueError:
            return text.ljust(width)
        return text.rjust(width)

    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(align(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)
