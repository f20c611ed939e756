"""``python -m fsc_losses.demo``: pre-train, fine-tune four ways, evaluate, report.

python -m fsc_losses.demo                 # the default recipe, one seed
python -m fsc_losses.demo --seeds 3       # seeds 0, 1, 2: mean ± std and error bars
python -m fsc_losses.demo --quick         # about a minute: checks the pipeline, not a result
python -m fsc_losses.demo --set finetune_lr=1e-4 --set text_layers=4   # any DemoConfig field
python -m fsc_losses.demo --device cuda --out runs/demo --seed 1
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import torch

from .._cpus import usable_cpus


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fsc_losses.demo",
        description="FSC-CLIP in miniature: a tiny CLIP on a synthetic world of coloured shapes, "
        "fine-tuned with the CLIP loss, a global hard-negative loss and FSC-CLIP.",
    )
    parser.add_argument("--device", default="cpu", help='torch device, e.g. "cpu" (default) or "cuda"')
    parser.add_argument("--quick", action="store_true", help="a small run of about a minute")
    parser.add_argument("--out", type=Path, default=Path("fsc_demo_out"), help="output folder")
    parser.add_argument(
        "--seed", type=int, default=0, help="the first seed of the world, model and data order"
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="how many seeds to run: --seed, --seed + 1, ... (default 1)"
    )
    parser.add_argument("--pretrain-steps", type=int, default=None, help="override the pre-training steps")
    parser.add_argument("--finetune-steps", type=int, default=None, help="override the fine-tuning steps")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any field of the run's DemoConfig (repeatable), e.g. --set finetune_lr=1e-4",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: the CPUs this process may use, at most 4)",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    return args


def config_overrides(args: argparse.Namespace, config_class) -> dict:
    """The ``DemoConfig`` fields the command line sets, converted to the fields' types."""
    types = {f.name: f.type for f in dataclasses.fields(config_class)}
    converters = {"int": int, "float": float}
    overrides = {}
    for setting in args.settings:
        name, sep, value = setting.partition("=")
        if not sep or name not in types or name == "seed":
            fields = ", ".join(n for n in types if n != "seed")
            raise SystemExit(f"error: --set takes FIELD=VALUE with FIELD one of {fields}; got {setting!r}")
        try:
            overrides[name] = converters[types[name]](value)
        except ValueError:
            raise SystemExit(f"error: --set {name} needs a {types[name]}, got {value!r}") from None
    if args.pretrain_steps is not None:
        overrides["pretrain_steps"] = args.pretrain_steps
    if args.finetune_steps is not None:
        overrides["finetune_steps"] = args.finetune_steps
    return overrides


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    # The models are so small that more threads mostly add synchronisation.
    threads = args.threads or min(4, usable_cpus())
    torch.set_num_threads(threads)

    # Imported here so that `--help` answers without loading open_clip.
    import open_clip
    from tqdm import tqdm

    from fsc_losses import __version__

    from . import experiment, report

    overrides = config_overrides(args, experiment.DemoConfig)
    make_config = experiment.DemoConfig.quick if args.quick else experiment.DemoConfig
    seeds = list(range(args.seed, args.seed + args.seeds))
    configs = [make_config(seed=seed, **overrides) for seed in seeds]
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"fsc_losses demo: {'quick' if args.quick else 'full'} run of seed{'s' * (len(seeds) > 1)} "
        f"{', '.join(map(str, seeds))} on {device} ({threads} CPU threads)",
        file=sys.stderr,
    )

    # Measured on a CPU: a step with hard negatives, which encodes 1 + K captions per image, costs
    # about twice a CLIP-loss step.
    cost = {method.name: 2.0 if method.uses_negatives else 1.0 for method in experiment.METHODS}
    per_seed_work = configs[0].pretrain_steps + configs[0].finetune_steps * sum(cost.values())
    # On a terminal the bar redraws in place; in a log file every redraw adds a line, so rarely.
    bar = tqdm(
        total=per_seed_work * len(seeds),
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
        bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}",
    )

    def step_reporter(work: float):
        def report_step(terms: dict[str, float]) -> None:
            bar.set_postfix_str(f"loss {sum(terms.values()):.3f}", refresh=False)
            bar.update(work)

        return report_step

    started = time.monotonic()
    tokenizer = experiment.Tokenizer()
    per_seed, counts, seed_times = [], {}, {}
    for config in configs:
        seed_started = time.monotonic()
        tag = f"seed {config.seed}"
        bench = experiment.make_benchmark(config, tokenizer)
        finetune_set = experiment.make_finetune_set(config, tokenizer)
        bar.set_description(f"{tag}: pre-training (CLIP loss)", refresh=False)
        pretrained = experiment.pretrain(config, tokenizer, device, step_reporter(1.0))
        results = {experiment.PRETRAINED: experiment.evaluate(pretrained, bench, device)}
        for method in experiment.METHODS:
            bar.set_description(f"{tag}: fine-tuning {method.label}", refresh=False)
            model = experiment.finetune(
                pretrained, method, finetune_set, config, tokenizer, device, step_reporter(cost[method.name])
            )
            results[method.name] = experiment.evaluate(model, bench, device)
        per_seed.append(results)
        counts[str(config.seed)] = experiment.counts(bench)
        seed_times[str(config.seed)] = round(time.monotonic() - seed_started, 1)
    bar.close()
    elapsed = time.monotonic() - started

    labels = {
        experiment.PRETRAINED: experiment.PRETRAINED_LABEL,
        **{m.name: m.label for m in experiment.METHODS},
    }
    summary = report.summarize(per_seed)
    differences = report.differences(per_seed, baseline="clip")
    for seed, results in zip(seeds, per_seed, strict=True):
        print(f"\nseed {seed} ({seed_times[str(seed)]:.0f} s)\n{report.format_table(results, labels)}")
    if len(seeds) > 1:
        print(f"\nmean ± std over {len(seeds)} seeds\n{report.format_summary(summary, labels)}")
        print(
            "\ndifference from CLIP fine-tuning within each seed, mean ± std\n"
            + report.format_summary(differences, labels, signed=True)
        )
    print(f"\n{elapsed:.0f} s on {device}; results in {args.out}/")

    report.write_json(
        args.out / "results.json",
        {
            "command": "python -m fsc_losses.demo " + " ".join(sys.argv[1:] if argv is None else argv),
            "config": {**{k: v for k, v in configs[0].as_dict().items() if k != "seed"}, "quick": args.quick},
            "seeds": seeds,
            "device": str(device),
            "torch_threads": threads,
            "run_time_s": round(elapsed, 1),
            "seed_run_time_s": seed_times,
            "versions": {
                "fsc_losses": __version__,
                "torch": torch.__version__,
                "open_clip": open_clip.__version__,
                "python": platform.python_version(),
            },
            "metrics": experiment.METRICS,
            "counts": counts,
            "methods": {
                experiment.PRETRAINED: {"label": experiment.PRETRAINED_LABEL, "fsc_loss": None},
                **{m.name: {"label": m.label, "fsc_loss": m.describe()} for m in experiment.METHODS},
            },
            "results": dict(zip(map(str, seeds), per_seed, strict=True)),
            "summary": summary,
            "differences_from_clip": differences,
        },
    )
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}, mean ± std"
    report.draw_chart(
        args.out / "results.png",
        summary,
        labels,
        title=f"fsc_losses demo, {seed_text}{' (quick run)' if args.quick else ''}: "
        "held-out scenes of the synthetic world",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
