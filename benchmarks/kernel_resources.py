"""Static resource report of the local HN kernels, without a GPU.

Compiles ahead of time, with the installed Triton, every kernel launch the host code makes for a
shape, dtype and target architecture (both custom ops, forward and backward, on meta tensors), and
reads from the compiled code what each launch needs: registers and spill stores per thread (the
bundled ``ptxas -v``), shared memory per block (Triton's launch metadata) and the count of
tensor-core instructions (``mma`` / ``wgmma`` in the PTX); and whether each launch's grid is within
CUDA's limits (``2^31 - 1`` blocks on axis 0, 65,535 on axes 1 and 2).

    python benchmarks/kernel_resources.py                       # anchors + limits, sm_80/86/89/90
    python benchmarks/kernel_resources.py --arch 90 --dtype bf16 --shape 64,4,77,576,768 --json

Shapes are ``B,G,T,P,D``. ``dispatch`` says what ``backend="auto"`` would do on a GPU of that
architecture (``"reference"`` where no tile size fits its shared memory); the launches reported
are then those of the smallest tiles. Compiled kernels are cached in memory and in Triton's cache,
so launches that share a compiled kernel are compiled once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__" and os.environ.get("TRITON_INTERPRET") == "1":
    # Interpreted kernels cannot be compiled: rerun without the interpreter.
    os.environ.pop("TRITON_INTERPRET")
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_LIMIT  # noqa: E402
from fsc_losses.kernels import local_hn  # noqa: E402

# Triton's cache is keyed by the kernels' own source, not by the file's: a kernel compiled from
# another checkout, or before an edit elsewhere in the file, would come back with that file's
# path and line numbers in its SASS, which the cost model reads. A cache of this file's own.
if "TRITON_CACHE_DIR" not in os.environ:
    _source = Path(local_hn.__file__).resolve()
    _digest = hashlib.sha256(str(_source).encode() + _source.read_bytes()).hexdigest()[:16]
    os.environ["TRITON_CACHE_DIR"] = str(Path.home() / ".triton" / "cache" / f"fsc_losses-{_digest}")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# (name, (B, G, T, P, D)): ANCHORS.md's shapes with K = 3, and the kernels' limits.
SHAPES = (
    ("ViT-B/32", (256, 4, 77, 49, 512)),
    ("ViT-B/16", (128, 4, 77, 196, 512)),
    ("ViT-L/14", (64, 4, 77, 256, 768)),
    ("ViT-L/14-336", (64, 4, 77, 576, 768)),
    ("limits", (8, 16, 256, 1024, 1280)),
)
KERNEL_NAMES = local_hn.LAUNCHED
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
NVDISASM = PTXAS.with_name("nvdisasm")
# CUDA's grid limits: blocks along axis 0, and along axes 1 and 2.
GRID_LIMITS = (2**31 - 1, 65535, 65535)


def grid_fits(grid: tuple) -> bool:
    """Whether a launch grid is within CUDA's limits on every axis."""
    return len(grid) <= 3 and all(
        1 <= size <= limit for size, limit in zip(grid, GRID_LIMITS[: len(grid)], strict=True)
    )


@dataclass(frozen=True)
class Launch:
    kernel: str
    fn: object  # the JITFunction
    grid: tuple
    args: tuple
    kwargs: dict


@contextmanager
def recorded_launches() -> Iterator[list[Launch]]:
    """Replaces the module's kernels by recorders of their launches for the duration."""
    launches: list[Launch] = []
    originals = {name: getattr(local_hn, name) for name in KERNEL_NAMES}

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            def record(*args, **kwargs):
                launches.append(Launch(self.name, originals[self.name], tuple(grid), args, kwargs))

            return record

    try:
        for name in KERNEL_NAMES:
            setattr(local_hn, name, Recorder(name))
        yield launches
    finally:
        for name, kernel in originals.items():
            setattr(local_hn, name, kernel)


OPS = ("loss", "scores")


def plan_launches(
    shape,
    dtype: torch.dtype,
    arch: int,
    normalizer: str,
    sparsify: bool,
    ops=OPS,
    max_rows: int | None = None,
):
    """``(dispatch, tiles, launches)``: every launch of the custom ops ``ops`` (``"loss"``,
    ``"scores"``), forward and backward, as the host code makes them on a device like ``arch``
    (buffers for ``max_rows`` rows an image: by default every position)."""
    B, G, T, P, D = shape
    spec = local_hn.DeviceSpec(SHARED_LIMIT[arch], divmod(arch, 10))
    meta = dict(device="meta")
    image = torch.empty(B, P, D, dtype=dtype, **meta)
    text = torch.empty(B, G, T, D, dtype=dtype, **meta)
    mask = torch.empty(B, G, T, dtype=torch.bool, **meta)
    scale = torch.empty((), dtype=torch.float32, **meta)
    dispatch = "triton" if local_hn.shape_reason(image, text, spec) is None else "reference"
    tiles = local_hn.plan(image, text, spec) or local_hn._candidates(dtype, P)[-1]
    rows = local_hn.row_capacity(G, T, max_rows)
    with recorded_launches() as launches:
        for op in ops:
            valid = torch.empty(B, G - 1, dtype=torch.bool, **meta) if op == "loss" else None
            lse, _, saved = local_hn._forward(
                image, text, mask, scale, valid, normalizer, sparsify, rows, tiles, scores=op == "scores"
            )
            if op == "loss":
                _, dlse = local_hn._contrast(lse, valid, 2.0, 0.02, dtype)
                grad = torch.empty((), dtype=dtype, **meta)
            else:
                grad, dlse = torch.empty(B, G, dtype=dtype, **meta), None
            wanted = (True, True, True)
            local_hn._backward(grad, dlse, image, text, mask, scale, valid, lse, saved, tiles, wanted)
    return dispatch, tiles, launches


_compiled: dict[tuple, dict] = {}


def compile_launch(launch: Launch, arch: int) -> dict:
    """Resources of one launch compiled for ``sm_<arch>``, as the JIT would compile it."""
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    fn = launch.fn
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, launch.kwargs, bound, specialization, options
    )
    key = (launch.kernel, arch, repr(signature), repr(sorted(constexprs.items())), repr(attrs), repr(options))
    if key not in _compiled:
        compiled = triton.compile(
            ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__
        )
        ptx = compiled.asm["ptx"]
        _compiled[key] = dict(
            **ptxas_usage(ptx, arch),
            shared_bytes=int(compiled.metadata.shared),
            num_warps=int(compiled.metadata.num_warps),
            tensor_core_ops=len(re.findall(r"\b(?:wgmma\.mma_async|mma\.sync)\b", ptx)),
            wgmma=len(re.findall(r"\bwgmma\.mma_async\b", ptx)) > 0,
            mma_sync=len(re.findall(r"\bmma\.sync\b", ptx)),
        )
        _cubins[id(_compiled[key])] = compiled.asm["cubin"]
    return _compiled[key]


_cubins: dict[int, bytes] = {}


def sass(launch: Launch, arch: int) -> str:
    """The launch's SASS for ``sm_<arch>`` with source lines (the bundled ``nvdisasm -c -gi``:
    each instruction under the ``//## File ..., line N [inlined at ..., line M]`` it comes from)."""
    cubin = _cubins[id(compile_launch(launch, arch))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        done = subprocess.run(
            [str(NVDISASM), "-c", "-gi", str(path)], capture_output=True, text=True, check=True
        )
    return done.stdout


def ptxas_usage(ptx: str, arch: int) -> dict:
    """Registers and spill stores per thread, from the bundled ptxas run as Triton runs it."""
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        done = subprocess.run(
            [
                str(PTXAS),
                "-v",
                "--regAllocOptLevel=2",
                f"--gpu-name={gpu}",
                str(src),
                "-o",
                str(src.with_suffix(".o")),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    log = done.stdout + done.stderr
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    return dict(registers=int(registers[1]), spill_bytes=int(spills[1]) if spills else 0)


def report_one(job) -> list[dict]:
    """The rows of one ``(name, shape, dtype name, arch, normalizer, sparsify, ops)``: one per
    distinct compiled kernel."""
    name, shape, dtype_name, arch, normalizer, sparsify, ops = job
    dtype = DTYPES[dtype_name]
    dispatch, tiles, launches = plan_launches(shape, dtype, arch, normalizer, sparsify, ops)
    rows, seen = [], set()
    for launch in launches:
        usage = compile_launch(launch, arch)
        if (launch.kernel, id(usage)) in seen:  # the same compiled kernel launched again
            continue
        seen.add((launch.kernel, id(usage)))
        rows.append(
            dict(
                kernel=launch.kernel,
                shape=list(shape),
                shape_name=name,
                dtype=dtype_name,
                arch=arch,
                normalizer=normalizer,
                sparsify=sparsify,
                tiles=tiles._asdict(),
                grid=list(launch.grid),
                grid_fits=grid_fits(launch.grid),
                **usage,
                shared_limit=SHARED_LIMIT[arch],
                shared_bound=local_hn.shared_bytes(tiles, dtype, shape[1], shape[2]),
                dispatch=dispatch,
            )
        )
    return rows


def report(jobs, workers: int) -> Iterator[dict]:
    """Rows of every job, in order; with ``workers > 1`` the compiles run in parallel processes."""
    if workers <= 1:
        for job in jobs:
            yield from report_one(job)
        return
    with ProcessPoolExecutor(workers) as pool:
        for rows in pool.map(report_one, jobs):
            yield from rows


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    sizes = tuple(int(v) for v in text.split(","))
    if len(sizes) != 5 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--shape takes B,G,T,P,D (five positive integers), got {text!r}")
    return "custom", sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch", type=int, nargs="+", choices=sorted(SHARED_LIMIT), default=sorted(SHARED_LIMIT)
    )
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument(
        "--shape", type=parse_shape, action="append", help="B,G,T,P,D; adds a shape (repeatable)"
    )
    parser.add_argument(
        "--suite", choices=["all", "anchors", "none"], default="all", help="default shapes: anchors + limits"
    )
    parser.add_argument("--normalizer", nargs="+", choices=["minmax", "softmax"], default=["minmax"])
    parser.add_argument("--sparsify", action="store_true", help="minmax with sparsify")
    parser.add_argument(
        "--ops", nargs="+", choices=OPS, default=list(OPS), help="custom ops whose launches to compile"
    )
    parser.add_argument("--jobs", type=int, default=1, help="compile in this many processes")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = parser.parse_args(argv)
    suite = {"all": SHAPES, "anchors": SHAPES[:4], "none": ()}[args.suite]
    shapes = list(suite) + (args.shape or [])
    jobs = [
        (name, shape, dtype, arch, normalizer, args.sparsify, tuple(args.ops))
        for name, shape in shapes
        for dtype in args.dtype
        for arch in args.arch
        for normalizer in args.normalizer
    ]
    columns = (
        "kernel",
        "shape_name",
        "dtype",
        "arch",
        "registers",
        "spill_bytes",
        "shared_bytes",
        "shared_limit",
        "dispatch",
        "tensor_core_ops",
        "wgmma",
        "grid_fits",
    )
    if not args.json:
        print(" | ".join(columns))
    for row in report(jobs, args.jobs):
        print(json.dumps(row) if args.json else " | ".join(str(row[c]) for c in columns), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
