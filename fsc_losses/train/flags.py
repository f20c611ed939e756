"""The released FSC-CLIP fork's flags, read beside open_clip_train's own, and the combinations
that cannot work.

The fork (github ytaek-oh/fsc-clip, ``src/training/params.py``) adds its flags to a copy of
open_clip's parser. Here they live in a parser of their own: it takes them out of the command line
first and hands the rest to the installed ``open_clip_train.params.parse_args`` unchanged, so every
open_clip flag keeps its meaning and its default, except the two whose default or effect the fork
changed: ``--delete-previous-checkpoint`` (on, parsed here) and ``--force-context-length``
(truncating, in ``trainer``). Where one of the fork's flags is absent, the fork's default applies
(see docs/training.md for the table and for the deliberate differences).
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Sequence

from ..negatives import HN_KINDS

__all__ = [
    "UsageError",
    "build_parser",
    "draws_one_negative",
    "negative_kinds",
    "negatives_column",
    "parse_args",
    "is_training",
]
_COMP_DEFAULTS = {"comp_data_root": "~/datasets", "comp_batch_size": 64}

# The fork's ``--add-random-text-hard-negatives`` styles and the rule-based kinds of
# ``fsc_losses.negatives`` that stand in for its spaCy / WordNet generators.
HN_STYLES: dict[str, tuple[str, ...]] = {
    "fsc-clip": ("swap", "replace", "shuffle"),  # NegCLIP-like swaps, replacements, 2-gram shuffles
    "negclip": ("swap",),
    "replace": ("replace",),
    "ngram_shuffle_2": ("shuffle",),
}
_REFUSED_STYLES = {
    "svlc": "the SVLC rule-based negatives (attribute, action and state word lists) are not "
    "implemented; 'replace' is the closest kind",
}
# The fork's style that reads NegCLIP's negatives instead of making them: one negative per sample
# and step, drawn from the row's list in this column (the fork's only one).
CSV_NEGCLIP = "csv_negclip"
CSV_NEGCLIP_COLUMN = "neg_caption"
# What the fork's --caption-key means for webdataset, the only dataset type it reads it for.
_WDS_CAPTION_KEY = "caption"


class UsageError(Exception):
    """A command line that ``fsc_losses.train`` refuses; the message says why."""


def build_parser() -> argparse.ArgumentParser:
    """The fork's flags (plus ``--hard-negatives-key``), with the fork's defaults."""
    parser = argparse.ArgumentParser(
        prog="python -m fsc_losses.train",
        description="FSC-CLIP flags (every other flag is open_clip_train's, listed below)",
        add_help=False,
        allow_abbrev=False,  # never mistake an abbreviated open_clip flag for one of these
    )
    loss = parser.add_argument_group("loss")
    loss.add_argument("--loss-name", choices=("fsc-clip", "clip"), default="fsc-clip")
    loss.add_argument("--apply-global-neg-loss", action="store_true", help="add the global HN term")
    loss.add_argument("--neg-loss-weight", type=float, default=1.0, help="global HN weight")
    loss.add_argument("--neg-loss-name", choices=("cross_entropy", "focal_loss"), default="cross_entropy")
    loss.add_argument("--focal-gamma", type=float, default=1.0, help="focal gamma (focal_loss only)")
    loss.add_argument(
        "--neg-label-smoothing", type=float, default=None, help="label smoothing of both HN terms"
    )
    loss.add_argument(
        "--return-dense-tokens", action="store_true", help="encode patch and text tokens (local HN term)"
    )
    loss.add_argument("--apply-local-neg-loss", action="store_true", help="add the local HN term")
    loss.add_argument("--local-neg-weight", type=float, default=1.0, help="local HN weight")
    loss.add_argument("--sim-normalizer", choices=("minmax", "softmax"), default="minmax")
    loss.add_argument("--sim-sparsify", action="store_true", help="minmax: drop patches below 1/P")

    data = parser.add_argument_group("hard negatives and data")
    data.add_argument(
        "--add-random-text-hard-negatives",
        metavar="STYLE",
        default=None,
        help=f"generate negatives per caption in the data workers: {', '.join(HN_STYLES)}, or a "
        f"comma-separated list of the kinds {', '.join(HN_KINDS)}; or {CSV_NEGCLIP}: one negative "
        f"per sample and epoch drawn from the CSV/TSV's {CSV_NEGCLIP_COLUMN} list (the fork's)",
    )
    data.add_argument(
        "--hard-negatives-key",
        metavar="COLUMN",
        default=None,
        help="CSV/TSV column of precomputed negatives: one caption, or a JSON / Python list of them; "
        f"every one is used, or with {CSV_NEGCLIP} the column it draws from",
    )
    data.add_argument(
        "--caption-key",
        default=_WDS_CAPTION_KEY,
        help="the fork's webdataset caption field; only 'caption' (the shards' .txt) is read here",
    )

    model = parser.add_argument_group("LoRA and WiSE-FT")
    model.add_argument("--lora-rank", type=int, default=-1, help="LoRA rank (> 0 enables LoRA)")
    model.add_argument(
        "--wise-ft-alpha",
        type=float,
        default=None,
        help="evaluate (1 - alpha) * zero-shot + alpha * --pretrained weights (no training)",
    )
    model.add_argument(
        "--zeroshot-model",
        default="openai:ViT-B-32",
        metavar="PRETRAINED:MODEL",
        help="WiSE-FT's zero-shot end: open_clip pretrained tag or file, ':', model name; or a "
        "local-dir:/hf-hub: model that carries its weights",
    )

    comp = parser.add_argument_group("compositional validation (fsc_losses.eval)")
    comp.add_argument("--comp-validation-datasets", nargs="+", default=None, metavar="BENCHMARK")
    # None here tells "not given" apart: given without --comp-validation-datasets is an error.
    comp.add_argument(
        "--comp-data-root",
        default=None,
        help=f"where the benchmarks' files are ({_COMP_DEFAULTS['comp_data_root']})",
    )
    comp.add_argument(
        "--comp-batch-size", type=int, default=None, help=f"({_COMP_DEFAULTS['comp_batch_size']})"
    )

    trainer = parser.add_argument_group("open_clip flags whose default the fork changed")
    trainer.add_argument(
        "--delete-previous-checkpoint",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="delete the previous epoch's checkpoint after saving one (the fork's default; "
        "open_clip's is to keep them)",
    )
    return parser


def parse_args(argv: Sequence[str], open_clip_parse_args: Callable[[list[str]], argparse.Namespace]):
    """Parse ``argv``: the FSC-CLIP flags here, the rest with ``open_clip_parse_args``.

    Returns open_clip's namespace with the FSC-CLIP flags added, after ``check_args``.
    """
    argv = list(argv)
    parser = build_parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        print()
        open_clip_parse_args(["--help"])  # prints open_clip's flags and exits
    ours, rest = parser.parse_known_args(argv)
    args = open_clip_parse_args(rest)
    given = ["--" + name.replace("_", "-") for name in _COMP_DEFAULTS if getattr(ours, name) is not None]
    if given and not ours.comp_validation_datasets:
        raise UsageError(
            f"{' and '.join(given)} without --comp-validation-datasets would do nothing: compositional "
            "validation is off unless --comp-validation-datasets names the benchmarks (the fork "
            "validates on sugarcrepe by default: add --comp-validation-datasets sugarcrepe)"
        )
    for name, default in _COMP_DEFAULTS.items():
        if getattr(ours, name) is None:
            setattr(ours, name, default)
    for name, value in vars(ours).items():
        setattr(args, name, value)
    args.comp_data_root = os.path.expanduser(args.comp_data_root)
    check_args(args)
    return args


def is_training(args: argparse.Namespace) -> bool:
    """Whether open_clip's main builds a training set (and so trains)."""
    return bool(args.train_data) or args.dataset_type == "synthetic"


def draws_one_negative(args: argparse.Namespace) -> bool:
    """Whether the run draws one negative per sample from a CSV column (the fork's csv_negclip)."""
    return args.add_random_text_hard_negatives == CSV_NEGCLIP


def negatives_column(args: argparse.Namespace) -> str | None:
    """The CSV/TSV column the run reads negatives from, or None."""
    if draws_one_negative(args):
        return args.hard_negatives_key or CSV_NEGCLIP_COLUMN
    return args.hard_negatives_key


def negative_kinds(style: str | None) -> tuple[str, ...]:
    """``fsc_losses.negatives`` kinds for an ``--add-random-text-hard-negatives`` style."""
    if style is None or style == CSV_NEGCLIP:
        return ()
    if style in HN_STYLES:
        return HN_STYLES[style]
    if style in _REFUSED_STYLES:
        raise UsageError(f"--add-random-text-hard-negatives {style}: {_REFUSED_STYLES[style]}")
    if style.startswith("ngram_shuffle_"):
        raise UsageError(
            f"--add-random-text-hard-negatives {style}: the shuffle kind permutes word pairs, as "
            "the fork's ngram_shuffle_2; other n-gram sizes are not implemented"
        )
    kinds = tuple(k.strip() for k in style.split(","))
    unknown = [k for k in kinds if k not in HN_KINDS]
    if unknown or len(set(kinds)) != len(kinds):
        raise UsageError(
            f"--add-random-text-hard-negatives {style!r}: expected one of {sorted(HN_STYLES)} or a "
            f"comma-separated list of distinct kinds from {HN_KINDS}"
        )
    return kinds


def _is_csv(args: argparse.Namespace) -> bool:
    if args.dataset_type == "csv":
        return True
    return args.dataset_type == "auto" and str(args.train_data).rsplit(".", 1)[-1] in ("csv", "tsv")


def check_args(args: argparse.Namespace) -> None:
    """Raise ``UsageError`` for a combination of flags that cannot work, saying why."""
    distill = [
        flag
        for flag, value in (
            ("--distill-model", args.distill_model),
            ("--distill-pretrained", args.distill_pretrained),
        )
        if value is not None
    ]
    if distill:
        raise UsageError(
            f"distillation ({' / '.join(distill)}) is not supported: the FSC-CLIP loss has no "
            "distillation term"
        )
    if "coca" in args.model.lower():
        raise UsageError(
            f"CoCa models are not supported (--model {args.model}): the FSC-CLIP terms need a "
            "two-tower CLIP, and CoCa's captioning loss is not part of them"
        )
    kinds = negative_kinds(args.add_random_text_hard_negatives)
    training = is_training(args)
    if args.force_context_length is not None and args.force_context_length < 2:
        raise UsageError(
            "--force-context-length must hold the start and end tokens (>= 2), got "
            f"{args.force_context_length}"
        )
    if training and args.loss_name == "clip":
        _check_clip(args)
    elif training:  # without training data no loss runs, so its flags do not matter
        _check_fsc_clip(args, kinds)
    if args.caption_key != _WDS_CAPTION_KEY:
        where = (
            "for a CSV, name the caption column with open_clip's --csv-caption-key"
            if _is_csv(args)
            else "open_clip's webdataset pipeline reads each sample's .txt: write these captions "
            "into the shards' .txt (docs/training.md, 'Datasets')"
        )
        raise UsageError(f"--caption-key {args.caption_key}: {where}")
    if args.lora_rank > 0:
        _check_lora(args, training)
    if args.wise_ft_alpha is not None:
        if not 0 < args.wise_ft_alpha < 1:
            raise UsageError(f"--wise-ft-alpha must be in (0, 1), got {args.wise_ft_alpha}")
        if training:
            raise UsageError(
                "--wise-ft-alpha evaluates interpolated weights, as the fork does: run it without "
                "--train-data, with the fine-tuned checkpoint as --pretrained (or use "
                "fsc_losses.train.wise_ft on two state dicts)"
            )
    if args.comp_validation_datasets:
        _check_comp_validation(args)
    _check_loggers(args)


def _check_loggers(args: argparse.Namespace) -> None:
    """open_clip asserts a logger's package only after building the model; say it at start."""
    wanted = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb"}
    for name, module in wanted.items():
        if name in args.report_to or "all" in args.report_to:
            try:
                importlib.import_module(module)
            except ImportError as e:
                extra = (
                    ' (the train extra has it: pip install -e ".[train]")' if name == "tensorboard" else ""
                )
                raise UsageError(
                    f"--report-to {args.report_to} needs {name}, which does not import ({e}): "
                    f"pip install {name}{extra}"
                ) from None


def _check_clip(args: argparse.Namespace) -> None:
    fsc_only = [
        flag
        for flag, on in (
            ("--add-random-text-hard-negatives", args.add_random_text_hard_negatives is not None),
            ("--hard-negatives-key", args.hard_negatives_key is not None),
            ("--apply-global-neg-loss", args.apply_global_neg_loss),
            ("--apply-local-neg-loss", args.apply_local_neg_loss),
            ("--return-dense-tokens", args.return_dense_tokens),
        )
        if on
    ]
    if fsc_only:
        raise UsageError(
            f"--loss-name clip is open_clip's own contrastive loss and uses none of {fsc_only}. The "
            "fork's clip loss with negatives puts them into the in-batch softmax (NegCLIP), which "
            "is not implemented here: use --loss-name fsc-clip --apply-global-neg-loss for the "
            "negatives, or drop these flags"
        )


def _check_fsc_clip(args: argparse.Namespace, kinds: tuple[str, ...]) -> None:
    if not (args.apply_global_neg_loss or args.apply_local_neg_loss):
        raise UsageError(
            "--loss-name fsc-clip (the default, as in the fork) needs a hard-negative term: "
            "--apply-global-neg-loss and/or --apply-local-neg-loss (for CLIP alone: --loss-name clip)"
        )
    if args.apply_local_neg_loss and not args.return_dense_tokens:
        raise UsageError(
            "--apply-local-neg-loss pools the image patches per caption token: it needs --return-dense-tokens"
        )
    if args.return_dense_tokens and not args.apply_local_neg_loss:
        raise UsageError(
            "--return-dense-tokens without --apply-local-neg-loss: only the local HN term uses the "
            "tokens, so they would be computed for nothing"
        )
    column = negatives_column(args)
    if not kinds and column is None:
        raise UsageError(
            "the hard-negative terms need negatives: generate them with "
            "--add-random-text-hard-negatives STYLE and/or read them with --hard-negatives-key COLUMN"
        )
    if column is not None and not _is_csv(args):
        flag = (
            f"--add-random-text-hard-negatives {CSV_NEGCLIP}"
            if draws_one_negative(args)
            else f"--hard-negatives-key {column}"
        )
        raise UsageError(
            f"{flag} reads the column {column} of a CSV/TSV training file; the training data is "
            f"{args.train_data!r} (--dataset-type {args.dataset_type})"
        )
    if args.sim_sparsify and args.sim_normalizer != "minmax":
        raise UsageError(
            "--sim-sparsify drops patches by their min-max weight: it needs --sim-normalizer minmax"
        )
    if not args.focal_gamma >= 0:
        raise UsageError(f"--focal-gamma must be >= 0, got {args.focal_gamma}")
    if args.neg_label_smoothing is not None and not 0 <= args.neg_label_smoothing < 1:
        raise UsageError(f"--neg-label-smoothing must be in [0, 1), got {args.neg_label_smoothing}")
    if args.horovod:
        raise UsageError(
            "--horovod: the FSC-CLIP contrastive term gathers features with torch.distributed; "
            "launch the processes with torchrun instead"
        )
    if args.torchscript:
        raise UsageError("--torchscript: the grouped-caption forward of the FSC-CLIP loss is not scriptable")
    if args.loss_dist_impl is not None:
        raise UsageError(
            f"--loss-dist-impl {args.loss_dist_impl} selects an open_clip SigLIP loss; the FSC-CLIP "
            "loss gathers as docs/integration.md says"
        )


def _check_lora(args: argparse.Namespace, training: bool) -> None:
    if not training:
        raise UsageError(
            "--lora-rank trains LoRA adapters, and there is no training data; checkpoints of LoRA "
            "runs hold merged open_clip weights, so evaluating them needs no --lora-rank"
        )
    if args.resume is not None:
        raise UsageError(
            "--resume with --lora-rank: the checkpoints hold merged weights (that is what lets plain "
            "open_clip load them), so the LoRA factors and their optimizer state cannot be restored; "
            "continue from the checkpoint with --pretrained instead"
        )


def _check_comp_validation(args: argparse.Namespace) -> None:
    """Refuse at start what would otherwise fail only at the first validation, after an epoch."""
    try:
        from fsc_losses.eval import BENCHMARKS
    except ImportError as e:
        raise UsageError(
            f"--comp-validation-datasets needs fsc_losses.eval, which does not import: {e}"
        ) from e
    unknown = [name for name in args.comp_validation_datasets if name not in BENCHMARKS]
    if unknown:
        raise UsageError(
            f"--comp-validation-datasets: unknown benchmark {', '.join(unknown)}; "
            f"known: {', '.join(BENCHMARKS)}"
        )
    if not any((args.val_data, args.imagenet_val, args.imagenet_v2)):
        raise UsageError(
            "--comp-validation-datasets runs at the end of open_clip's validation, which runs only "
            "with --val-data, --imagenet-val or --imagenet-v2; add one (or evaluate a checkpoint "
            "with python -m fsc_losses.eval)"
        )
    if not os.path.isdir(args.comp_data_root):
        raise UsageError(f"--comp-data-root {args.comp_data_root} is not a directory")
