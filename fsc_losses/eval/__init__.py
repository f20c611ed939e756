"""Compositional and multi-modal evaluation of CLIP-style models from the benchmarks' own files.

::

    from fsc_losses.eval import evaluate

    results = evaluate(model, ["sugarcrepe", "aro", "winoground", "whatsup", "valse"], "data/",
                       tokenizer=tokenizer, preprocess=preprocess)
    # {"sugarcrepe::replace_obj": 0.81, ..., "winoground::group": 0.08, ...}

The model is an open_clip model (or any object with ``encode_image`` / ``encode_text``) with its
tokenizer and preprocess, or a transformers ``CLIPModel`` / ``SiglipModel`` with
``processor=``. Each benchmark is read from the files it publishes, in one folder per benchmark
under the data root (``BENCHMARKS`` holds each one's layout); nothing is ever downloaded. The
result keys are those of vl_compo's ``individual_results.csv`` (github ytaek-oh/vl_compo), but
as fractions in [0, 1] where that table has percent. A tie between the right answer and a wrong
one counts as wrong. docs/evaluation.md has every benchmark's source, layout and scoring.

``python -m fsc_losses.eval`` is the command-line version.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import benchmarks as _benchmarks
from . import scoring
from .benchmarks import BENCHMARKS
from .encoders import make_encoder, scoring_mode
from .images import ImageError

__all__ = ["BENCHMARKS", "ImageError", "Report", "evaluate", "evaluate_report"]


@dataclass
class Report:
    """What ``evaluate_report`` measured.

    Attributes:
        results: ``"<benchmark>::<subset>[::<metric>]"`` -> accuracy or recall, a fraction.
        counts: ``"<benchmark>[::<subset>]"`` -> the items scored (VALSE: the validated ones;
            retrieval: the images; zero-shot: the images of the dataset).
        missing: benchmark -> its files that were not found, relative to the data root; the
            subsets they hold have no result. With ``skip_bad_images``, also the images that are
            absent or cannot be read.
        skipped: ``"<benchmark>[::<subset>]"`` -> the items left out because an image of theirs is
            absent or unreadable (``skip_bad_images`` only); a subset that lost all of its items
            has no result.
    """

    results: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


def evaluate_report(
    model,
    benchmarks: Sequence[str] | str,
    data_root: str | Path,
    *,
    tokenizer=None,
    preprocess=None,
    processor=None,
    batch_size: int = 64,
    device=None,
    image_roots: Mapping[str, str | Path] | None = None,
    progress: bool = True,
    num_workers: int = 0,
    skip_bad_images: bool = False,
) -> Report:
    """Score ``model`` on ``benchmarks``; see ``evaluate`` for the arguments.

    Args:
        num_workers: processes that read and preprocess images (the data loader's); they also
            decode every image once before the first forward pass (``images.unreadable``).

    Returns:
        A ``Report``: the results, the item counts, the files not found and the items skipped.
    """
    names = [benchmarks] if isinstance(benchmarks, str) else list(dict.fromkeys(benchmarks))
    if not names:
        raise ValueError("benchmarks is empty; choose from " + ", ".join(BENCHMARKS))
    specs = [_benchmarks.get(name) for name in names]
    encoder = make_encoder(model, tokenizer, preprocess, processor, device)
    # Every file is read and every image checked before the first forward pass, so that a bad
    # layout or a truncated image fails in seconds, not after the benchmarks before it.
    loaded = [_benchmarks.load(spec, Path(data_root), image_roots) for spec in specs]
    _benchmarks.check_images(loaded, Path(data_root), num_workers, skip_bad_images)

    report = Report(missing={b.benchmark.name: b.missing for b in loaded if b.missing})
    for bench in loaded:
        for subset, count in bench.skipped.items():
            report.skipped[f"{bench.benchmark.name}::{subset}" if subset else bench.benchmark.name] = count
    inputs = {b.benchmark.name: [scoring.inputs(part) for part in b.parts.values()] for b in loaded}
    bar = _progress_bar(inputs) if progress else None
    features = scoring.Features(encoder, batch_size, num_workers, bar)
    try:
        with scoring_mode(model, encoder.device):
            for bench in loaded:
                name = bench.benchmark.name
                refs = [ref for part_refs, _ in inputs[name] for ref in part_refs]
                features.add(refs, [text for _, texts in inputs[name] for text in texts], name)
                for subset, part in bench.parts.items():
                    prefix = f"{name}::{subset}" if subset else name
                    report.counts[prefix] = len(part.items)
                    report.results.update(_score(bench.benchmark, subset, prefix, part, features))
    finally:
        if bar is not None:
            bar.close()
    return report


def evaluate(
    model,
    benchmarks: Sequence[str] | str,
    data_root: str | Path,
    *,
    tokenizer=None,
    preprocess=None,
    processor=None,
    batch_size: int = 64,
    device=None,
    image_roots: Mapping[str, str | Path] | None = None,
    progress: bool = True,
    skip_bad_images: bool = False,
) -> dict[str, float]:
    """Score ``model`` on ``benchmarks`` read from ``data_root``.

    The model is put in eval mode for the scoring and every submodule gets its previous mode
    back afterwards; the forward passes run under ``torch.inference_mode`` and, on CUDA,
    autocast. Each distinct image (file and crop) and each distinct text is encoded once per call.

    Args:
        model: an open_clip model or any object with ``encode_image(pixels)`` and
            ``encode_text(tokens)``, or a transformers ``CLIPModel`` / ``SiglipModel``.
            ``DistributedDataParallel`` / ``DataParallel`` wrappers are looked through.
        benchmarks: names from ``BENCHMARKS`` (``"sugarcrepe"``, ``"aro"``, ``"winoground"``,
            ``"whatsup"``, ``"valse"``, ``"crepe"``, ``"spec"``, ``"imagecode"``, ``"mmvp_vlm"``,
            ``"sugarcrepe_pp"``, ``"coco_karpathy"``, ``"flickr30k"``, ``"zeroshot"``): the
            prefixes of the result keys.
        data_root: the folder holding one folder per benchmark.
        tokenizer: ``tokenizer(list of str) -> (N, T)`` token ids, for an ``encode_text`` model.
        preprocess: ``preprocess(PIL image) -> (3, H, W)`` tensor, for an ``encode_image`` model.
        processor: the transformers processor (``AutoProcessor``), for a transformers model,
            instead of ``tokenizer`` and ``preprocess``.
        batch_size: images or texts per forward pass.
        device: where the inputs go; default: the model's. The model is not moved.
        image_roots: image folders that replace the default layout's: ``{"sugarcrepe":
            "/data/coco/val2017"}`` for every subset of a benchmark, ``"<name>::<subset>"`` for one.
        progress: show a progress bar (tqdm, on stderr) while encoding.
        skip_bad_images: leave out the items whose image is absent or cannot be read (a directory,
            an empty, truncated or corrupt file) instead of raising; ``evaluate_report`` lists
            those images in ``missing`` and counts the items in ``skipped``.

    Returns:
        ``{"<benchmark>::<subset>": fraction}``, e.g. ``"sugarcrepe::replace_obj"``,
        ``"winoground::group"``, ``"coco_karpathy::i2t/R@1"``. Subsets whose files are missing
        have no key (``evaluate_report`` says which).

    Raises:
        FileNotFoundError: a benchmark folder with none of its files, or a missing image; the
            message shows the expected layout.
        ValueError: an unknown benchmark, a malformed file or item (the message names both), a
            directory where a benchmark's file belongs; ``ImageError`` (a ``ValueError``): an image
            that cannot be read. Every file is read and every image decoded before the first
            forward pass, so these come in seconds.
        TypeError: a model without the helpers it needs.
    """
    return evaluate_report(
        model,
        benchmarks,
        data_root,
        tokenizer=tokenizer,
        preprocess=preprocess,
        processor=processor,
        batch_size=batch_size,
        device=device,
        image_roots=image_roots,
        progress=progress,
        skip_bad_images=skip_bad_images,
    ).results


def _score(bench, subset: str, prefix: str, part, features: scoring.Features) -> dict[str, float]:
    if bench.task == "choice":
        correct = scoring.choice(features, part.items)
        aggregate = bench.aggregate or (lambda subset, items, correct: scoring.mean(correct))
        return {prefix: aggregate(subset, part.items, correct)}
    if bench.task == "pairs":
        return {f"{prefix}::{m}": scoring.mean(c) for m, c in scoring.pairs(features, part.items).items()}
    if bench.task == "triplet":
        return {f"{prefix}::{m}": scoring.mean(c) for m, c in scoring.triplets(features, part.items).items()}
    if bench.task == "retrieval":
        return {f"{prefix}::{m}": value for m, value in scoring.retrieval(features, part).items()}
    return {prefix: scoring.mean(scoring.classification(features, part))}


def _progress_bar(inputs: dict[str, list[tuple[list, list[str]]]]):
    """One bar for the run, counting the distinct images and texts it will encode."""
    from tqdm import tqdm

    refs = {ref for parts in inputs.values() for part_refs, _ in parts for ref in part_refs}
    texts = {text for parts in inputs.values() for _, part_texts in parts for text in part_texts}
    # On a terminal the bar redraws in place; in a log file every redraw adds a line, so rarely.
    return tqdm(
        total=len(refs) + len(texts),
        unit="input",
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
    )
