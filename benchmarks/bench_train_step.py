"""Time of a whole open_clip training step with the FSC-CLIP losses, against the CLIP loss alone.

    python benchmarks/bench_train_step.py                             # ViT-B-32, B = 256, K = 3
    python benchmarks/bench_train_step.py --model ViT-B-16 --batch 128
    TRITON_INTERPRET=1 python benchmarks/bench_train_step.py --smoke  # tiny model on the CPU, for CI

A step is what open_clip's trainer does: zero the gradients, encode and compute the loss under
bf16 autocast, backward, AdamW step, clamp ``logit_scale`` at 100. Each provider trains its own
copy of one randomly initialised model (``open_clip.create_model(name, pretrained=None)``) on the
same batches: ``B`` random images and ``B * (1 + K)`` captions of random word ids, 10 to 20 of
them, between the start- and end-of-text tokens and followed by padding, as the tokenizer lays
them out (the ``B`` true captions first, then ``K`` blocks of ``B`` negatives).

Providers:

- ``clip``: open_clip's ``ClipLoss`` on the true captions, with the model encoding all
  ``B * (1 + K)`` captions (``encode_image`` / ``encode_text``). The baseline: encoding the
  negatives is the cost of the data, which any hard-negative method pays, not of the loss.
- ``clip-true``: ``ClipLoss`` with only the ``B`` true captions encoded, a run without negatives.
- ``fsc-reference``: ``FSCLoss(backend="reference")`` on ``encode_dense``'s outputs.
- ``fsc-fused``: ``FSCLoss(backend="triton")``, the fused local HN kernels.

The overhead of a provider is its median step time minus ``clip``'s, in ms and in percent of it;
for the FSC providers it covers the loss and the token projections ``encode_dense`` adds.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

if __package__ in (None, ""):
    # Run as a script: make the repository root importable, for fsc_losses and benchmarks.common.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import open_clip  # noqa: E402
from open_clip.model import CLIP  # noqa: E402

from benchmarks import common  # noqa: E402
from fsc_losses import FSCLoss, functional  # noqa: E402
from fsc_losses.integrations.open_clip import DEFAULT_EOT_ID, DEFAULT_SOT_ID, encode_dense  # noqa: E402

PROVIDERS = ("clip", "clip-true", "fsc-reference", "fsc-fused")
BASELINE = "clip"
WORDS = (10, 20)
AMP_DTYPE = torch.bfloat16
N_BATCHES = 3  # distinct batches the steps cycle through

# A ViT-B/32-shaped CLIP shrunk to run a step in well under a second on a CPU; it keeps the
# default tokenizer's vocabulary, whose special ids the captions use.
SMOKE_MODEL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
SMOKE_WORDS = (4, 12)

Loss = Callable[[CLIP, torch.Tensor, torch.Tensor], torch.Tensor]


def random_captions(
    count: int, context: int, words: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """``(count, context)`` token ids: start of text, ``words[0]..words[1]`` random word ids,
    end of text, zero padding."""
    lo, hi = words
    if not 1 <= lo <= hi <= context - 2:
        raise ValueError(f"captions of {lo}..{hi} words do not fit a context of {context} tokens")
    lengths = torch.randint(lo, hi + 1, (count, 1), generator=generator)
    positions = torch.arange(context)
    # Word ids lie between the padding id 0 and the two special ids at the top of the vocabulary.
    ids = torch.randint(1, DEFAULT_SOT_ID, (count, context), generator=generator)
    ids = torch.where((positions >= 1) & (positions <= lengths), ids, 0)
    ids[:, 0] = DEFAULT_SOT_ID
    return ids.scatter_(1, lengths + 1, DEFAULT_EOT_ID)


def make_batches(
    model: CLIP, batch: int, negatives: int, words: tuple[int, int], device: torch.device, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    height, width = model.visual.image_size
    batches = []
    for _ in range(N_BATCHES):
        images = torch.randn(batch, 3, height, width, generator=generator)
        texts = random_captions(batch * (1 + negatives), model.context_length, words, generator)
        batches.append((images.to(device), texts.to(device)))
    return batches


def provider_loss(provider: str, batch: int, check_inputs: bool) -> Loss:
    """The loss of one provider as ``loss(model, images, texts) -> scalar``."""
    if provider in ("clip", "clip-true"):
        clip_loss = open_clip.ClipLoss()

        def clip(model: CLIP, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
            if provider == "clip-true":
                texts = texts[:batch]
            image_features = model.encode_image(images, normalize=True)
            text_features = model.encode_text(texts, normalize=True)
            return clip_loss(image_features, text_features[:batch], model.logit_scale.exp())

        return clip

    backend = "triton" if provider == "fsc-fused" else "reference"
    fsc_loss = FSCLoss(backend=backend, check_inputs=check_inputs)

    def fsc(model: CLIP, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        return fsc_loss(**encode_dense(model, images, texts))

    return fsc


def train_step(
    model: CLIP, optimizer: torch.optim.Optimizer, loss: Loss, images: torch.Tensor, texts: torch.Tensor
) -> None:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=AMP_DTYPE):
        value = loss(model, images, texts)
    value.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))


def fused_skip_reason(model: CLIP, images: torch.Tensor, texts: torch.Tensor) -> str | None:
    """Whether ``FSCLoss(backend="triton")`` would run the kernels on this model's tokens."""
    with torch.no_grad(), torch.autocast(images.device.type, dtype=AMP_DTYPE):
        out = encode_dense(model, images, texts)
    inputs = functional.prepare_local_inputs(
        out["image_tokens"], out["text_tokens"], out["text_mask"], out["logit_scale"], None
    )
    return common.fused_skip_reason(inputs)


def build_model(name: str, smoke: bool, device: torch.device, seed: int) -> CLIP:
    torch.manual_seed(seed)
    if smoke:
        return CLIP(**SMOKE_MODEL).to(device)
    return open_clip.create_model(name, pretrained=None, device=device)


def measure(
    provider: str,
    template: CLIP,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    args: argparse.Namespace,
    device: torch.device,
    plan: common.TimingPlan,
) -> tuple[common.Timing, float | None]:
    """Step time and peak extra memory of one provider, on its own copy of the model (freed on
    return, before the next provider's copy is made)."""
    model = copy.deepcopy(template).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
    loss = provider_loss(provider, args.batch, args.check_inputs)

    def make_call(i: int):
        return functools.partial(train_step, model, optimizer, loss, *batches[i % len(batches)])

    timing = common.time_calls(make_call, device, plan)
    return timing, common.peak_extra_mib(make_call, device)


def run(args: argparse.Namespace, device: torch.device, notes: list[str]) -> list[dict[str, object]]:
    """Time every provider's step; returns one row per provider that ran."""
    template = build_model(args.model, args.smoke, device, args.seed)
    batches = make_batches(template, args.batch, args.negatives, args.words, device, args.seed)
    if args.smoke:
        plan = common.TimingPlan(min_warmup=1, warmup_ms=0, min_reps=2, max_reps=2)
    else:
        plan = common.TimingPlan(
            min_warmup=args.warmup, warmup_ms=0, min_reps=args.steps, max_reps=args.steps
        )
    meta = {**common.run_metadata(device), "open_clip": open_clip.__version__}
    rows: list[dict[str, object]] = []
    for provider in args.provider:
        if provider == "fsc-fused":
            reason = fused_skip_reason(template, *batches[0])
            if reason is not None:
                notes.append(f"fsc-fused skipped: {reason}")
                print(f"note: {notes[-1]}", flush=True)
                continue
        timing, peak = measure(provider, template, batches, args, device, plan)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(
            {
                **meta,
                "model": "smoke" if args.smoke else args.model,
                "batch": args.batch,
                "negatives": args.negatives,
                "captions": args.batch * (1 + args.negatives),
                "context": template.context_length,
                "amp": "bf16",
                "check_inputs": args.check_inputs,
                "provider": provider,
                "steps": timing.reps,
                "median_ms": timing.median_us / 1e3,
                "p20_ms": timing.p20_us / 1e3,
                "p80_ms": timing.p80_us / 1e3,
                "peak_extra_mib": peak,
            }
        )
        print(f"{provider}: {timing.median_us / 1e3:,.2f} ms per step", flush=True)
    return finish_rows(rows)


def finish_rows(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Add each provider's overhead over the baseline, and format the numbers for the CSV."""
    base = next((r["median_ms"] for r in rows if r["provider"] == BASELINE), None)
    for row in rows:
        extra = None if base is None or row["provider"] == BASELINE else row["median_ms"] - base
        row["overhead_ms"] = common.fmt(extra, 3)
        row["overhead_pct"] = common.fmt(None if extra is None else 100 * extra / base, 2)
        for key in ("median_ms", "p20_ms", "p80_ms"):
            row[key] = common.fmt(row[key], 3)
        row["peak_extra_mib"] = common.fmt(row["peak_extra_mib"], 1)
    return rows


def results_table(rows: Sequence[dict]) -> str:
    return common.format_table(
        rows,
        [
            ("provider", lambda r: r["provider"]),
            ("median ms", lambda r: r["median_ms"]),
            ("p20 ms", lambda r: r["p20_ms"]),
            ("p80 ms", lambda r: r["p80_ms"]),
            ("peak extra MiB", lambda r: r["peak_extra_mib"]),
            (f"overhead over {BASELINE} ms", lambda r: r["overhead_ms"]),
            ("overhead %", lambda r: r["overhead_pct"] and f"{r['overhead_pct']}%"),
        ],
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model name (a ViT)")
    parser.add_argument("--batch", type=int, help="images per step (default 256; 4 with --smoke)")
    parser.add_argument("--negatives", type=int, default=3, help="hard negatives per image (K)")
    parser.add_argument(
        "--words",
        type=common.int_tuple(2, "LO,HI"),
        metavar="LO,HI",
        help=f"words per caption, uniform (default {WORDS[0]},{WORDS[1]}; "
        f"{SMOKE_WORDS[0]},{SMOKE_WORDS[1]} with --smoke)",
    )
    parser.add_argument("--provider", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument(
        "--check-inputs",
        action="store_true",
        help="keep FSCLoss's value check (one host synchronisation per step)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--results",
        type=Path,
        help="CSV to append to (default benchmarks/results/train_step.csv; with "
        "--smoke a new temporary file)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny model on the CPU for 2 steps, to keep this script working; "
        "fsc-fused runs only under TRITON_INTERPRET=1",
    )
    args = parser.parse_args(argv)
    if args.batch is None:
        args.batch = 4 if args.smoke else 256
    if args.words is None:
        args.words = SMOKE_WORDS if args.smoke else WORDS
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    args = parse_args(argv)
    if args.smoke:
        # Smoke numbers mean nothing; one thread keeps tiny ops from stalling in OpenMP
        # contention with whatever else shares the CPU (tens of times slower on a busy CI runner).
        torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type != "cuda" and not args.smoke:
        print("note: no CUDA device; timing on the CPU, which says nothing about GPU speed")

    notes: list[str] = []
    rows = run(args, device, notes)
    model = "smoke model" if args.smoke else args.model
    captions = args.batch * (1 + args.negatives)
    print(
        f"\nTraining step of {model}, B = {args.batch} images, {captions} captions, AMP bf16, "
        f"AdamW, on {common.device_name(device)}, torch {torch.__version__}, "
        f"triton {common.triton_version()}, open_clip {open_clip.__version__}\n"
    )
    print(results_table(rows))
    for text in notes:
        print(f"note: {text}")

    path = common.results_path(args.results, args.smoke, "train_step.csv")
    common.append_csv(path, rows)
    print(f"\n{len(rows)} rows appended to {path}")
    return rows


if __name__ == "__main__":
    main()
