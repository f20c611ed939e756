"""``python -m fsc_losses.demo``: pre-train, fine-tune four ways, evaluate, report.

python -m fsc_losses.demo                 # the full run, under 10 minutes on a 2-core CPU
python -m fsc_losses.demo --quick         # about a minute: checks the pipeline, not a result
python -m fsc_losses.demo --device cuda --out runs/demo --seed 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # honours taskset and container CPU sets; Linux only
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fsc_losses.demo",
        description="FSC-CLIP in miniature: a tiny CLIP on a synthetic world of coloured shapes, "
        "fine-tuned with the CLIP loss, a global hard-negative loss and FSC-CLIP.",
    )
    parser.add_argument("--device", default="cpu", help='torch device, e.g. "cpu" (default) or "cuda"')
    parser.add_argument("--quick", action="store_true", help="a small run of about a minute")
    parser.add_argument("--out", type=Path, default=Path("fsc_demo_out"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world, model and data order")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="override the pre-training steps")
    parser.add_argument("--finetune-steps", type=int, default=None, help="override the fine-tuning steps")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: the CPUs this process may use, at most 4)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    # The models are so small that more threads mostly add synchronisation.
    threads = args.threads or min(4, _usable_cpus())
    torch.set_num_threads(threads)

    # Imported here so that `--help` answers without loading open_clip.
    import open_clip

    from fsc_losses import __version__

    from . import experiment, report
    from .progress import Progress

    overrides = {"seed": args.seed}
    if args.pretrain_steps is not None:
        overrides["pretrain_steps"] = args.pretrain_steps
    if args.finetune_steps is not None:
        overrides["finetune_steps"] = args.finetune_steps
    config = experiment.DemoConfig.quick(**overrides) if args.quick else experiment.DemoConfig(**overrides)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    tokenizer = experiment.Tokenizer()
    print(
        f"fsc_losses demo: seed {config.seed}, {'quick' if args.quick else 'full'} run on {device} "
        f"({threads} CPU threads)",
        file=sys.stderr,
    )
    bench = experiment.make_benchmark(config, tokenizer)
    finetune_set = experiment.make_finetune_set(config, tokenizer)

    # Measured on a CPU: a step with hard negatives, which encodes 1 + K captions per image, costs
    # about twice a CLIP-loss step.
    cost = {method.name: 2.0 if method.uses_negatives else 1.0 for method in experiment.METHODS}
    progress = Progress(config.pretrain_steps + config.finetune_steps * sum(cost.values()))

    def step_reporter(work: float):
        return lambda terms: progress.step(work, f"loss {sum(terms.values()):.3f}")

    progress.set_phase("pre-training (CLIP loss)")
    pretrained = experiment.pretrain(config, tokenizer, device, step_reporter(1.0))
    results = {experiment.PRETRAINED: experiment.evaluate(pretrained, bench, device)}
    for method in experiment.METHODS:
        progress.set_phase(f"fine-tuning: {method.label}")
        model = experiment.finetune(
            pretrained, method, finetune_set, config, device, step_reporter(cost[method.name])
        )
        results[method.name] = experiment.evaluate(model, bench, device)
    progress.close()
    elapsed = time.monotonic() - started

    labels = {
        experiment.PRETRAINED: experiment.PRETRAINED_LABEL,
        **{m.name: m.label for m in experiment.METHODS},
    }
    table = report.format_table(results, labels)
    print(table)
    print(f"\n{elapsed:.0f} s on {device}; results in {args.out}/")

    report.write_json(
        args.out / "results.json",
        {
            "command": "python -m fsc_losses.demo " + " ".join(sys.argv[1:] if argv is None else argv),
            "config": {**config.as_dict(), "quick": args.quick},
            "device": str(device),
            "torch_threads": threads,
            "run_time_s": round(elapsed, 1),
            "versions": {
                "fsc_losses": __version__,
                "torch": torch.__version__,
                "open_clip": open_clip.__version__,
                "python": platform.python_version(),
            },
            "metrics": experiment.METRICS,
            "counts": experiment.counts(bench),
            "methods": {
                experiment.PRETRAINED: {"label": experiment.PRETRAINED_LABEL, "fsc_loss": None},
                **{m.name: {"label": m.label, "fsc_loss": m.describe()} for m in experiment.METHODS},
            },
            "results": results,
        },
    )
    report.draw_chart(
        args.out / "results.png",
        results,
        labels,
        title=f"fsc_losses demo, seed {config.seed}{' (quick run)' if args.quick else ''}: "
        "held-out scenes of the synthetic world",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
