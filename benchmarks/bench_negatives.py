"""``fsc_losses.negatives`` on real captions: how many captions get each kind of negative, how
many negatives keep the caption's meaning, and how fast.

    python benchmarks/bench_negatives.py                         # the held-out COCO captions
    python benchmarks/bench_negatives.py --captions valid_neg_clip.tsv --column title
    python benchmarks/bench_negatives.py --captions sugar-crepe/data --show 5

``--captions`` takes a text file (one caption a line), a SugarCrepe JSON file or its ``data``
folder (every item's ``caption``, each caption once), or a CSV/TSV file with ``--column``.

What it reports, per kind (``--seeds`` seeds, averaged):

* ``valid``: the share of captions the kind made a negative for; ``all kinds``: the share that got
  every kind.
* ``same as caption``: valid negatives equal to their caption (case, spacing and the spacing of
  punctuation ignored): must be 0. ``same across kinds``: captions two of whose kinds made the
  same negative.
* ``coordination swaps``: swaps that only exchange the sides of a coordination ("a red and white
  room" -> "a white and red room"); ``symmetric swaps``: the two ends of a symmetric relation ("a
  dog next to a cat" -> "a cat next to a dog"); ``synonym replacements``: a word replaced by a
  synonym ("in" -> "inside", "big" -> "large"). All three keep the caption's meaning. They are
  recognised here from the caption and the negative alone, with word lists of this script, not
  with the generator's rules.
* throughput: the default kinds for every caption, best of ``--repeats`` runs, as captions per
  second and seconds per 2,000 captions.

``--make-split DIR`` writes the committed caption files from SugarCrepe's ``data`` folder
(benchmarks/data/README.md).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fsc_losses.negatives import HN_KINDS, make_hard_negatives  # noqa: E402

HELD_OUT = REPO_ROOT / "benchmarks" / "data" / "coco_captions_heldout.txt"
TEST_SAMPLE = REPO_ROOT / "tests" / "data" / "coco_captions_sample.txt"
HELD_OUT_SIZE, TEST_SAMPLE_SIZE = 2000, 300

_TOKEN = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")
_DETERMINERS = frozenset("a an the some his her their its this that these those".split())
_COORDINATION = frozenset({"and", "or", ",", "&"})
_SYMMETRIC = ("next to", "beside", "near", "by", "close to", "across from", "opposite", "alongside")
# Words that say the same in a caption, as people write them (not the generator's lists).
_SYNONYMS = [
    {"in", "inside", "inside of", "within"},
    {"on", "on top of", "atop", "upon"},
    {"next to", "beside", "by", "near", "close to", "alongside"},
    {"under", "beneath", "underneath", "below"},
    {"above", "over"},
    {"big", "large", "huge", "giant"},
    {"small", "little", "tiny"},
    {"couch", "sofa"},
    {"bike", "bicycle"},
    {"plane", "airplane", "jet", "aircraft", "airliner", "jetliner"},
    {"tv", "television"},
    {"phone", "cellphone", "cell phone", "smartphone", "telephone"},
    {"man", "guy", "gentleman"},
    {"woman", "lady"},
    {"kid", "child"},
    {"road", "street"},
    {"picture", "photo", "photograph", "image"},
    {"dog", "puppy"},
    {"cat", "kitten"},
    {"cup", "mug"},
    {"plate", "dish"},
    {"rock", "stone"},
    {"hill", "hillside"},
    {"gray", "grey"},
    {"laptop", "computer"},
    {"motorcycle", "motorbike"},
    {"fridge", "refrigerator"},
    {"donut", "doughnut"},
    {"taxi", "cab"},
    {"ocean", "sea"},
    {"shirt", "t-shirt", "tee"},
    {"lying", "laying"},
    {"sitting", "seated"},
]


def read_captions(path: str | Path, column: str | None = None) -> list[str]:
    """Captions from a text file, a SugarCrepe JSON file or folder, or a CSV/TSV ``column``;
    stripped, empty ones dropped, each distinct caption once in first-seen order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise SystemExit(f"--captions {path}: no *.json files (SugarCrepe's data folder?)")
        captions = [c for f in files for c in _json_captions(f)]
    elif path.suffix == ".json":
        captions = _json_captions(path)
    elif path.suffix in (".csv", ".tsv"):
        if column is None:
            raise SystemExit(f"--captions {path}: name the caption column with --column")
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            if column not in (rows.fieldnames or []):
                raise SystemExit(f"--column {column}: {path} has the columns {rows.fieldnames}")
            captions = [row[column] for row in rows]
    else:
        captions = path.read_text(encoding="utf-8").splitlines()
    return list(dict.fromkeys(c.strip() for c in captions if c.strip()))


def _json_captions(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    items = data.values() if isinstance(data, dict) else data
    return [item["caption"] for item in items]


def _words(text: str) -> list[str]:
    return ["a" if w == "an" else w for w in (t.lower() for t in _TOKEN.findall(text))]


def _changed(caption: str, negative: str) -> tuple[list[str], list[str]] | None:
    """The spans of words where a negative of the same length differs from its caption."""
    a, b = _words(caption), _words(negative)
    if len(a) != len(b) or a == b:
        return None
    first = next(i for i in range(len(a)) if a[i] != b[i])
    last = next(i for i in range(len(a) - 1, -1, -1) if a[i] != b[i])
    return a[first : last + 1], b[first : last + 1]


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)]
    return word


def _sides(words: list[str], separators: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """``words`` cut at each separator phrase: (the sides, without determiners and plural endings;
    the separators), or None without a separator."""
    text = " " + " ".join(words) + " "
    pattern = "|".join(re.escape(f" {s} ") for s in sorted(separators, key=len, reverse=True))
    parts = re.split(f"({pattern})", text)
    if len(parts) < 3:
        return None
    sides = [" ".join(_stem(w) for w in p.split() if w not in _DETERMINERS) for p in parts[0::2]]
    return sides, [p.strip() for p in parts[1::2]]


def exchanges_sides(caption: str, negative: str, separators: Sequence[str]) -> bool:
    """Whether ``negative`` is ``caption`` with the sides around ``separators`` reordered and
    nothing else changed ("red and white" -> "white and red")."""
    changed = _changed(caption, negative)
    if changed is None:
        return False
    before, after = (_sides(span, separators) for span in changed)
    if before is None or after is None or before[1] != after[1]:
        return False
    return before[0] != after[0] and sorted(before[0]) == sorted(after[0])


def is_coordination_swap(caption: str, negative: str) -> bool:
    return exchanges_sides(caption, negative, sorted(_COORDINATION))


def is_symmetric_swap(caption: str, negative: str) -> bool:
    return exchanges_sides(caption, negative, _SYMMETRIC)


def replaced_pair(caption: str, negative: str) -> tuple[str, str] | None:
    """(old, new) where a negative changes one run of words, else None."""
    a, b = _words(caption), _words(negative)
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a, end_b = end_a - 1, end_b - 1
    if start == end_a and start == end_b:
        return None
    return " ".join(a[start:end_a]), " ".join(b[start:end_b])


def is_synonym_replacement(caption: str, negative: str) -> bool:
    pair = replaced_pair(caption, negative)
    if pair is None:
        return False
    old, new = (" ".join(_stem(w) for w in side.split()) for side in pair)
    return any(
        old in group and new in group
        for group in ({" ".join(map(_stem, w.split())) for w in g} for g in _SYNONYMS)
    )


def _same(a: str, b: str) -> bool:
    return " ".join(t.lower() for t in _TOKEN.findall(a)) == " ".join(t.lower() for t in _TOKEN.findall(b))


def measure(captions: list[str], seeds: Sequence[int] = (0,), repeats: int = 3) -> dict:
    """The report's figures for ``captions`` (see the module docstring)."""
    n, kinds = len(captions), HN_KINDS
    totals: Counter = Counter()
    examples: dict[str, list[tuple[str, str]]] = {k: [] for k in kinds}
    for seed in seeds:
        negatives, valid = make_hard_negatives(captions, kinds, seed=seed)
        totals["all kinds"] += int(valid.all(1).sum())
        for b in range(n):
            made = [negatives[k * n + b] for k in range(len(kinds)) if valid[b, k]]
            totals["same across kinds"] += len({m.lower() for m in made}) < len(made)
        for k, kind in enumerate(kinds):
            for b, caption in enumerate(captions):
                if not valid[b, k]:
                    continue
                negative = negatives[k * n + b]
                totals[kind, "valid"] += 1
                totals[kind, "same as caption"] += _same(caption, negative)
                if kind == "swap":
                    totals[kind, "coordination"] += is_coordination_swap(caption, negative)
                    totals[kind, "symmetric"] += is_symmetric_swap(caption, negative)
                if kind == "replace":
                    totals[kind, "synonym"] += is_synonym_replacement(caption, negative)
                if seed == seeds[0]:
                    examples[kind].append((caption, negative))
    runs = len(seeds)
    report: dict = {"captions": n, "seeds": list(seeds), "kinds": {}}
    for kind in kinds:
        made = totals[kind, "valid"]
        row = {
            "valid": made / (n * runs),
            "same_as_caption": totals[kind, "same as caption"],
        }
        if kind == "swap":
            row["coordination_swaps"] = totals[kind, "coordination"] / max(made, 1)
            row["symmetric_swaps"] = totals[kind, "symmetric"] / max(made, 1)
        if kind == "replace":
            row["synonym_replacements"] = totals[kind, "synonym"] / max(made, 1)
        report["kinds"][kind] = row
    report["all_kinds"] = totals["all kinds"] / (n * runs)
    report["same_across_kinds"] = totals["same across kinds"] / (n * runs)
    best = min(_timed(captions, seeds[0]) for _ in range(repeats))
    report["seconds"] = best
    report["captions_per_second"] = n / best
    report["seconds_per_2000"] = 2000 * best / n
    report["examples"] = examples
    return report


def _timed(captions: list[str], seed: int) -> float:
    start = time.perf_counter()
    make_hard_negatives(captions, seed=seed)
    return time.perf_counter() - start


def print_report(report: dict, show: int = 0) -> None:
    print(f"{report['captions']} captions, seeds {report['seeds']}")
    print(f"{'kind':<8} {'valid':>7} {'same as caption':>16}  meaning kept")
    for kind, row in report["kinds"].items():
        kept = ", ".join(
            f"{name.replace('_', ' ')} {row[name]:.2%}"
            for name in ("coordination_swaps", "symmetric_swaps", "synonym_replacements")
            if name in row
        )
        print(f"{kind:<8} {row['valid']:>7.2%} {row['same_as_caption']:>16}  {kept or '-'}")
    print(f"all kinds: {report['all_kinds']:.2%}; two kinds alike: {report['same_across_kinds']:.2%}")
    print(
        f"throughput: {report['captions_per_second']:.0f} captions/s, "
        f"{report['seconds_per_2000']:.2f} s per 2,000 captions (kinds {', '.join(HN_KINDS)})"
    )
    for kind, pairs in report["examples"].items():
        for caption, negative in pairs[:show]:
            print(f"  {kind:<8} {caption}\n  {'':<8} -> {negative}")


def make_split(sugarcrepe_data: Path) -> None:
    """Write the held-out captions and the tests' sample from SugarCrepe's data folder: its
    distinct captions ordered by SHA-256, the first 2,000 held out, the next 300 for the tests."""
    captions = sorted(read_captions(sugarcrepe_data), key=lambda c: hashlib.sha256(c.encode()).hexdigest())
    held_out = captions[:HELD_OUT_SIZE]
    sample = captions[HELD_OUT_SIZE : HELD_OUT_SIZE + TEST_SAMPLE_SIZE]
    HELD_OUT.parent.mkdir(parents=True, exist_ok=True)
    HELD_OUT.write_text("\n".join(held_out) + "\n", encoding="utf-8")
    TEST_SAMPLE.write_text("\n".join(sample) + "\n", encoding="utf-8")
    print(f"wrote {len(held_out)} captions to {HELD_OUT} and {len(sample)} to {TEST_SAMPLE}")


def main(argv: Sequence[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--captions", default=str(HELD_OUT), help="text, SugarCrepe JSON (file or folder), CSV/TSV"
    )
    parser.add_argument("--column", default=None, help="the caption column of a CSV/TSV")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0 .. N-1, averaged")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
    parser.add_argument("--show", type=int, default=0, help="print this many examples per kind")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--make-split", metavar="SUGARCREPE_DATA", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_split:
        make_split(Path(args.make_split))
        return None
    captions = read_captions(args.captions, args.column)
    report = measure(captions, seeds=range(args.seeds), repeats=args.repeats)
    print_report(report, args.show)
    if args.json:
        figures = {k: v for k, v in report.items() if k != "examples"}
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
