"""``python -m fsc_losses.eval``: score a CLIP model on benchmarks read from their own files.

python -m fsc_losses.eval --model ViT-B-32 --pretrained openai --data-root data/ \\
    --benchmarks sugarcrepe aro winoground whatsup valse --out results.json
python -m fsc_losses.eval --model local-dir:runs/ft --data-root data/ --benchmarks coco_karpathy
python -m fsc_losses.eval --model ViT-B-32 --pretrained runs/ft/checkpoints/epoch_5.pt ...
python -m fsc_losses.eval --hf runs/hf_clip --data-root data/ --benchmarks winoground
python -m fsc_losses.eval report runs/ft/epoch_1.json runs/ft/epoch_5.json --chart compare.png

Prints a table of the results (fractions in [0, 1]) and the files that were not found, and writes
``{"results", "model", "versions", "counts", "missing", "skipped", ...}`` to ``--out``. Nothing is
downloaded for the benchmarks; model weights load as open_clip or transformers load them.
``--compare``, and the ``report`` subcommand on saved result files, print the results beside the
FSC-CLIP authors' published tables and draw the trade-off chart (``compare.py``), offline.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch

from .._cpus import usable_cpus


def parse_args(argv=None) -> argparse.Namespace:
    from .benchmarks import BENCHMARKS

    parser = argparse.ArgumentParser(
        prog="python -m fsc_losses.eval",
        description="Compositional (SugarCrepe, SugarCrepe++, ARO, Winoground, What'sUp, VALSE, ...) and "
        "multi-modal (retrieval, zero-shot) evaluation of a CLIP model from the benchmarks' own files. "
        "'python -m fsc_losses.eval report RESULTS...' compares saved results with published tables.",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="open_clip model name (ViT-B-32) or local-dir:FOLDER")
    model.add_argument("--hf", type=Path, metavar="DIR", help="a transformers CLIPModel / SiglipModel folder")
    parser.add_argument(
        "--pretrained",
        help="open_clip pretrained tag or checkpoint file with --model NAME; a checkpoint file with "
        "--model local-dir:FOLDER",
    )
    parser.add_argument(
        "--data-root", type=Path, required=True, help="the folder with one folder per benchmark"
    )
    parser.add_argument(
        "--benchmarks",
        nargs="+",
        required=True,
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"one or more of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images or texts per forward pass (64)")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument("--out", type=Path, help="write the results and their context to this JSON file")
    parser.add_argument(
        "--image-root",
        action="append",
        default=[],
        metavar="NAME[::SUBSET]=DIR",
        help="an image folder replacing the default layout's, for a benchmark or one subset (repeatable)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, usable_cpus()),
        help="image-loading processes (default: CPUs, at most 8)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out the items whose image is absent or cannot be read (listed under missing, "
        "counted under skipped) instead of stopping",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="print the results beside published rows of the FSC-CLIP authors' tables and draw the "
        "chart (to --chart, or beside --out)",
    )
    _comparison_arguments(parser)
    args = parser.parse_args(argv)
    if args.pretrained and args.hf:
        parser.error("--pretrained goes with --model; an --hf folder holds its weights")
    args.image_roots = {}
    for setting in args.image_root:
        key, sep, folder = setting.partition("=")
        if not sep or key.split("::")[0] not in BENCHMARKS or not folder:
            parser.error(
                f"--image-root takes NAME=DIR or NAME::SUBSET=DIR with a known NAME, got {setting!r}"
            )
        args.image_roots[key] = folder
    return args


def _comparison_arguments(parser: argparse.ArgumentParser) -> None:
    from .published import DEFAULT_ROWS

    parser.add_argument(
        "--published",
        nargs="+",
        default=list(DEFAULT_ROWS),
        metavar="ROW",
        help=f"the published rows to compare with (default: {' '.join(DEFAULT_ROWS)}; see --list-published)",
    )
    parser.add_argument(
        "--chart", type=Path, metavar="PATH", help="write the trade-off chart here (needs matplotlib)"
    )


def parse_report_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fsc_losses.eval report",
        description="Print saved results beside rows of the FSC-CLIP authors' published tables "
        "(vl_compo, FSC-CLIP), benchmark by benchmark and key by key, and draw the trade-off chart "
        "(compositional against multi-modal average). Offline: the tables ship with the package.",
    )
    parser.add_argument(
        "results",
        nargs="*",
        type=Path,
        help="result files: --out JSONs of python -m fsc_losses.eval, JSON objects of results, or a "
        "trainer's results.jsonl (one run per line)",
    )
    _comparison_arguments(parser)
    parser.add_argument(
        "--no-chart",
        action="store_true",
        help="no chart (default: <first result>_vs_published.png beside it)",
    )
    parser.add_argument("--list-published", action="store_true", help="list the published rows and exit")
    args = parser.parse_args(argv)
    if not args.results and not args.list_published:
        parser.error("give one or more result files (or --list-published)")
    if args.chart is not None and args.no_chart:
        parser.error("--chart and --no-chart exclude each other")
    return args


def report_main(argv) -> int:
    """``python -m fsc_losses.eval report``."""
    from . import compare, published

    args = parse_report_args(argv)
    if args.list_published:
        for row in published.rows():
            print(f"{row.name}\t{row.family}\t{published.TABLES[row.table]}")
        return 0
    try:
        runs = compare.read_runs(args.results)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    default = None if args.no_chart else args.results[0].with_name(f"{args.results[0].stem}_vs_published.png")
    return _print_comparison(runs, args.published, args.chart, default)


def _print_comparison(runs, rows: list[str], chart: Path | None, default_chart: Path | None) -> int:
    """Print the comparison and draw the chart to ``chart`` (an error when it cannot be drawn) or to
    ``default_chart`` (a note when it cannot); returns the exit status."""
    from . import compare, published

    try:
        comparison = compare.compare(runs, published.find(rows))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(compare.format_comparison(comparison))
    path = chart or default_chart
    if path is None:
        print("no chart: pass --chart PATH (or --out) to draw it", file=sys.stderr)
        return 0
    try:
        print(f"wrote {compare.draw_chart(comparison, path)}", file=sys.stderr)
    except (ImportError, ValueError) as error:
        if chart is not None:
            print(f"error: --chart {chart}: {error}", file=sys.stderr)
            return 1
        print(f"no chart: {error}", file=sys.stderr)
    return 0


def load_model(args, device: torch.device) -> tuple[object, dict, dict]:
    """The model, the keyword arguments ``evaluate`` needs for it, and what to record of it."""
    if args.hf is not None:
        from transformers import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained(args.hf).to(device)
        processor = AutoProcessor.from_pretrained(args.hf)
        return model, {"processor": processor}, {"hf": str(args.hf), "class": type(model).__name__}
    import open_clip

    from ..integrations.open_clip import create_model_and_transforms

    model, _, preprocess = create_model_and_transforms(args.model, args.pretrained, device=device)
    helpers = {"tokenizer": open_clip.get_tokenizer(args.model), "preprocess": preprocess}
    return model, helpers, {"open_clip": args.model, "pretrained": args.pretrained}


def versions(hf: bool) -> dict[str, str]:
    from fsc_losses import __version__

    library = "transformers" if hf else "open_clip_torch"
    return {
        "fsc_losses": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        library: metadata.version(library),
    }


def format_table(report) -> str:
    """One row per result: the key, the value, and the items it was computed on."""
    rows = [("key", "value", "items")]
    for key, value in report.results.items():
        prefix = max((p for p in report.counts if key == p or key.startswith(p + "::")), key=len)
        rows.append((key, f"{value:.4f}", str(report.counts[prefix])))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{k:<{widths[0]}}  {v:>{widths[1]}}  {n:>{widths[2]}}" for k, v, n in rows]
    lines.insert(1, "-" * len(lines[0]))
    for name, files in report.missing.items():
        lines.append(f"{name}: not found or unreadable, not scored: {', '.join(files)}")
    for prefix, count in report.skipped.items():
        lines.append(f"{prefix}: {count} item(s) skipped for an absent or unreadable image")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2

    from . import evaluate_report

    try:
        model, helpers, described = load_model(args, device)
        report = evaluate_report(
            model,
            args.benchmarks,
            args.data_root,
            batch_size=args.batch_size,
            device=device,
            image_roots=args.image_roots,
            progress=not args.no_progress,
            num_workers=args.workers,
            skip_bad_images=args.skip_bad_images,
            **helpers,
        )
    except (FileNotFoundError, ValueError) as error:  # a bad checkpoint, missing or malformed files
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_table(report))
    if args.out is not None:
        payload = {
            "results": report.results,
            "model": described,
            "versions": versions(args.hf is not None),
            "counts": report.counts,
            "missing": report.missing,
            "skipped": report.skipped,
            "benchmarks": args.benchmarks,
            "data_root": str(args.data_root),
            "device": str(device),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    if args.compare:
        from .compare import Run

        label = args.out.name if args.out is not None else "this run"
        run = Run(label, report.results, report.counts, report.missing, report.skipped)
        default = None if args.out is None else args.out.with_name(f"{args.out.stem}_vs_published.png")
        print()
        return _print_comparison([run], args.published, args.chart, default)
    return 0


if __name__ == "__main__":
    sys.exit(main())
