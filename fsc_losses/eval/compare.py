"""Your results beside the published ones: benchmark by benchmark, key by key, and as a chart.

::

    from fsc_losses.eval import compare, published

    runs = compare.read_runs(["runs/ft/epoch_1.json", "runs/ft/epoch_5.json"])
    comparison = compare.compare(runs, published.find(published.DEFAULT_ROWS))
    print(compare.format_comparison(comparison))
    compare.draw_chart(comparison, "compare.png")  # needs matplotlib

A benchmark is compared as vl_compo's ``results.csv`` makes its column (``published.SUMMARIES``), but
over the keys that every run has: a vl_compo row is summarised again from its own keys over those
same keys, so the two sides always average the same things. FSC-CLIP's table has benchmark columns
only; one is shown where the runs have all of the benchmark's keys. Where a definition differs
(keys this package does not compute, tie rules, item counts, averages over other sets) the output
says so in its notes instead of comparing silently. Values are printed in percent, as the
published tables are; the package's results are fractions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import published
from .published import FSC_CLIP, POOLED_ITEMS, RETRIEVAL, SUMMARIES, VL_COMPO, Row

# Keys of vl_compo's table this package does not compute, and why.
_SPACY = "ARO makes its negatives at run time with spaCy's en_core_web_sm tagger"
_CREPE = (
    "this package's CREPE keys are per complexity (crepe::atom::complexity_4, ...); the table folds "
    "the nine together by a rule it does not publish (not the pooled rows)"
)
NOT_COMPUTED = {
    "aro::COCO_Order": _SPACY,
    "aro::Flickr30k_Order": _SPACY,
    "crepe::atom": _CREPE,
    "crepe::swap": _CREPE,
    "crepe::negate": _CREPE,
}
# Benchmarks whose own scoring code counts a tie between the right answer and a wrong one as right;
# this package counts it as wrong, and vl_compo's code is not public.
TIE_RULES = {
    "mmvp_vlm": "MMVP's evaluate_vlm.py compares a softmax with 0.5",
    "whatsup": "What'sUp's own code takes np.argmax over the captions, the true one first",
    "winoground": "CLIP_benchmark's Winoground takes argmax over the 2 x 2 scores",
}
# Result keys of this package (by benchmark) that the published tables do not have, and why.
NOT_IN_TABLES = {
    "crepe": "the tables have one number per type (crepe::atom, ::swap, ::negate) and do not say how "
    "they fold the nine complexities together (not the pooled rows); compare the per-complexity "
    "numbers with CREPE's paper",
    "spec": "vl_compo has no SPEC; FSC-CLIP's table has a spec column whose rule is not published",
    "sugarcrepe_pp": "the tables have no SugarCrepe++",
    "zeroshot": "your ImageFolder datasets are not the tables' zero-shot tasks (ELEVATER's toolkit, "
    "class names, templates and metrics: elevator::...)",
}


@dataclass
class Run:
    """One set of your results: a result file of ``python -m fsc_losses.eval --out``, or one line
    of a trainer's ``results.jsonl``. Values are fractions."""

    label: str
    results: dict[str, float]
    counts: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


def read_runs(paths) -> list[Run]:
    """The runs in ``paths``.

    Each path is a JSON file written by ``python -m fsc_losses.eval --out`` (``{"results", "counts",
    "missing", "skipped", ...}``), a JSON object of results (what ``evaluate`` returns), or a JSON-lines
    file with one object of results per checkpoint (the trainer's ``checkpoints/results.jsonl``: an
    ``"epoch"`` field labels its line, and the lines of open_clip's own metrics, which have no
    ``"<benchmark>::..."`` key, are passed over). Runs are labelled by file name, with the epoch or
    line. Only the ``"<benchmark>::..."`` keys are read.

    Raises:
        ValueError: a file that is none of these, or whose results are not fractions (named).
    """
    runs = []
    for path in map(Path, paths):
        if path.suffix == ".jsonl":
            before = len(runs)
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                record = _json(path, line, f"line {number}") if line.strip() else {}
                if any("::" in key for key in record):
                    label = (
                        f"{path.name} epoch {record['epoch']}"
                        if "epoch" in record
                        else f"{path.name}:{number}"
                    )
                    runs.append(Run(label, _results(path, record, f"line {number}")))
            if len(runs) == before:
                raise ValueError(f'{path}: no line has results (keys "<benchmark>::...")')
            continue
        data = _json(path, path.read_text(encoding="utf-8"))
        if "results" in data:
            counts, missing, skipped = (dict(data.get(k) or {}) for k in ("counts", "missing", "skipped"))
            runs.append(Run(path.name, _results(path, data["results"]), counts, missing, skipped))
        else:
            runs.append(Run(path.name, _results(path, data)))
    labels = [run.label for run in runs]
    for index, run in enumerate(runs):
        if labels.count(run.label) > 1:  # the same file name in two folders, say: number them
            run.label = f"{run.label} ({index + 1})"
    return runs


def _json(path: Path, text: str, where: str = "") -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}{', ' + where if where else ''}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}{', ' + where if where else ''}: expected a JSON object of results")
    return data


def _results(path: Path, data, where: str = "") -> dict[str, float]:
    """The ``"<benchmark>::..."`` keys of ``data``, which must be fractions."""
    place = f"{path}{', ' + where if where else ''}"
    if not isinstance(data, dict):
        raise ValueError(f"{place}: expected a JSON object of results, got {type(data).__name__}")
    results = {k: v for k, v in data.items() if "::" in k}
    bad = [
        k
        for k, v in results.items()
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1
    ]
    if not results or bad:
        raise ValueError(
            f'{place}: expected results "<benchmark>::..." as fractions in [0, 1]'
            + (f", got {bad[0]!r}: {results[bad[0]]!r}" if bad else ", found none")
            + ' (python -m fsc_losses.eval --out writes them under "results")'
        )
    return {k: float(v) for k, v in results.items()}


@dataclass
class Line:
    """One line of the comparison: a value per run and per published row (None: not available).

    ``approximate`` holds the published rows' indices whose value is over another set than the runs'
    (shown with ``~`` and drawn hollow); ``marks`` the footnote marks of the line."""

    name: str
    runs: list[float | None]
    rows: list[float | None]
    detail: str = ""
    marks: str = ""
    approximate: set[int] = field(default_factory=set)


@dataclass
class Comparison:
    """What ``compare`` found. ``benchmarks`` and ``keys`` hold the lines compared, ``averages`` the
    chart's two axes (``"compositional"``, ``"multi-modal"``) and, for context, the published rows'
    own averages; ``not_compared`` the keys of the runs left out, by benchmark; ``notes`` what
    differs between the two sides."""

    runs: list[Run]
    rows: list[Row]
    benchmarks: list[Line]
    averages: list[Line]
    keys: list[Line]
    not_compared: dict[str, list[str]]
    notes: list[str]
    subsets: dict[str, list[str]]  # each benchmark compared: the keys it is compared over
    multimodal: list[str]  # the keys the multi-modal average is over

    def axes(self, row: Row) -> tuple[float | None, float | None, bool]:
        """``(multi-modal, compositional, exact)`` averages of any published row over this
        comparison's benchmarks and keys; ``exact`` is False where a value is over another set
        (FSC-CLIP's), a value None where the row has none."""
        comp, comp_exact = _compositional(row, self.subsets)
        mm, mm_exact = _multimodal(row, self.multimodal)
        return mm, comp, comp_exact and mm_exact


def compare(runs: list[Run], rows: list[Row]) -> Comparison:
    """Compare ``runs`` with the published ``rows`` (see the module's docstring).

    Raises:
        ValueError: no runs.
    """
    if not runs:
        raise ValueError("no results to compare")
    common = set.intersection(*(set(run.results) for run in runs))
    notes: list[str] = []
    benchmarks, subsets = [], {}
    for bench, rule in SUMMARIES.items():
        present = [k for k in rule.keys if k in common]
        if not present:
            partly = sorted({k for run in runs for k in run.results if k in rule.keys})
            if partly:
                notes.append(
                    f"{bench}: not compared, no key of it is in every run (some have {', '.join(partly)})"
                )
            continue
        shared = rule.restricted(present)
        subsets[bench] = present
        line = Line(bench, [], [], detail=f"{len(present)}/{len(rule.keys)}")
        for run in runs:
            line.runs.append(shared.value(run.results, _run_items(bench, run, present, notes)))
        for row in rows:
            line.rows.append(_row_value(row, bench, shared, present))
        if len(present) < len(rule.keys):
            line.marks += "*"
            left_out = [k for k in rule.keys if k not in present]
            reasons = sorted({NOT_COMPUTED.get(k, "not in every run's results") for k in left_out})
            table_values = ", ".join(
                f"{r.name} {_percent(r.columns[bench])}" for r in rows if bench in r.columns
            )
            notes.append(
                f"* {bench}: over {', '.join(present)} only, as the table's rule applied to them; left "
                f"out: {', '.join(left_out)} ({'; '.join(reasons)}). The tables' own {bench} column, over "
                f"all {len(rule.keys)}: {table_values or 'none of the rows chosen'}"
            )
        if bench in TIE_RULES:
            line.marks += "t"
        benchmarks.append(line)
    multimodal = [key for key in RETRIEVAL.values() if key in common]
    compared = [key for keys in subsets.values() for key in keys] + multimodal
    for run in runs:
        for prefix, count in run.skipped.items():
            if any(key == prefix or key.startswith(prefix + "::") for key in compared):
                notes.append(
                    f"{run.label}: {count} items of {prefix} were skipped (absent or unreadable images); "
                    "the tables scored all of them"
                )
    ties = [bench for bench in TIE_RULES if bench in subsets]
    if ties:
        notes.append(
            f"t {', '.join(ties)}: a tie between the right answer and a wrong one is wrong here, right "
            f"in the benchmark's own code ({'; '.join(TIE_RULES[b] for b in ties)}); vl_compo's code is "
            "not public. Ties need identical embeddings (e.g. captions the same after truncation), "
            "which real models rarely give."
        )

    averages = []
    if subsets:
        line = Line("compositional avg.", [], [], detail=f"{len(subsets)} benchmarks")
        line.runs = [sum(b.runs[i] for b in benchmarks) / len(benchmarks) for i in range(len(runs))]
        for index in range(len(rows)):
            value, exact = _mean_of_known([b.rows[index] for b in benchmarks])
            line.rows.append(value)
            if value is not None and not exact:
                line.approximate.add(index)
        averages.append(line)
    if multimodal:
        line = Line("multi-modal avg.", [], [], detail=f"{len(multimodal)} R@1 keys")
        line.runs = [sum(run.results[k] for k in multimodal) / len(multimodal) for run in runs]
        for index, row in enumerate(rows):
            value, exact = _multimodal(row, multimodal)
            line.rows.append(value)
            if value is not None and not exact:
                line.approximate.add(index)
        averages.append(line)
    if any(row.table == FSC_CLIP for row in rows):
        notes.append(
            "~ FSC-CLIP rows: its table (same authors, same vl_compo evaluation, assumed to make each "
            "benchmark column by the same rule) has benchmark columns only; its retrieval averages are "
            "over COCO, Flickr30k and COCO-Counterfactuals (3 sets, not the 2 here), and a compositional "
            "average is over the benchmarks it has of yours: such values are marked ~ and drawn hollow"
        )
    for column, label in (
        ("comp_avg", "table's comp_avg (12 benchmarks)"),
        ("comp_avg_11", "table's Comp (11 benchmarks, FSC-CLIP)"),
        ("21_tasks_avg", "table's zero-shot avg. (21 ELEVATER tasks)"),
    ):
        if any(column in row.columns for row in rows):
            averages.append(Line(label, [None] * len(runs), [row.columns.get(column) for row in rows]))

    keys, not_compared = [], {}
    table_keys = next((row.keys for row in published.rows() if row.table == VL_COMPO), {})
    for key in dict.fromkeys(k for run in runs for k in run.results):
        if key in table_keys:
            marks = "t" if key.split("::")[0] in TIE_RULES else ""
            values = [run.results.get(key) for run in runs]
            keys.append(Line(key, values, [row.keys.get(key) for row in rows], marks=marks))
        else:
            not_compared.setdefault(key.split("::")[0], []).append(key)
    for bench, bench_keys in not_compared.items():
        why = NOT_IN_TABLES.get(bench, "not a key of the published tables")
        notes.append(f"not compared: {len(bench_keys)} {bench} key(s): {why}")
    return Comparison(runs, rows, benchmarks, averages, keys, not_compared, notes, subsets, multimodal)


def _run_items(bench: str, run: Run, keys: list[str], notes: list[str]) -> dict[str, int] | None:
    """The item counts that weigh a pooled benchmark's keys for a run: its own, where its result
    file has them (a note where they differ from the table's)."""
    if bench not in POOLED_ITEMS:
        return None
    table = POOLED_ITEMS[bench]
    items = {}
    for key in keys:
        own = run.counts.get(key)
        if own is None:
            notes.append(f"{run.label}: no item count for {key}; weighted by the table's {table[key]}")
            own = table[key]
        elif own != table[key]:
            notes.append(
                f"{run.label}: {key} has {own} items, the table's weights {table[key]} (other files?)"
            )
        items[key] = own
    return items


def _row_value(row: Row, bench: str, shared: published.Summary, present: list[str]) -> float | None:
    if row.table == VL_COMPO:
        return shared.value(row.keys, POOLED_ITEMS.get(bench))
    if len(present) == len(SUMMARIES[bench].keys):
        return row.columns.get(bench)
    return None


def _compositional(row: Row, subsets: dict[str, list[str]]) -> tuple[float | None, bool]:
    return _mean_of_known(
        [
            _row_value(row, bench, SUMMARIES[bench].restricted(present), present)
            for bench, present in subsets.items()
        ]
    )


def _mean_of_known(values: list[float | None]) -> tuple[float | None, bool]:
    """The mean of the values that are not None (None if none is), and whether all of them are."""
    known = [v for v in values if v is not None]
    if not known:
        return None, False
    return sum(known) / len(known), len(known) == len(values)


def _multimodal(row: Row, keys: list[str]) -> tuple[float | None, bool]:
    if not keys:
        return None, False
    if row.table == VL_COMPO:
        return sum(row.keys[k] for k in keys) / len(keys), True
    if "i2t_avg_3" in row.columns and "t2i_avg_3" in row.columns:
        return (row.columns["i2t_avg_3"] + row.columns["t2i_avg_3"]) / 2, False
    return None, False


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_comparison(comparison: Comparison) -> str:
    """The comparison as text: who is who, the benchmarks, the averages, the keys, the notes."""
    c = comparison
    out = ["Your results beside published ones, in percent (the tables' unit; this package's are fractions)."]
    letters = [chr(ord("A") + i) if i < 26 else f"P{i + 1}" for i in range(len(c.rows))]
    names = [f"you{i + 1}" for i in range(len(c.runs))] + letters
    for name, run in zip(names, c.runs, strict=False):
        out.append(f"  {name:>5}: {run.label}")
    for name, row in zip(names[len(c.runs) :], c.rows, strict=True):
        out.append(f"  {name:>5}: {row.name}  ({row.family}, {published.TABLES[row.table]})")

    def table(title: str, lines: list[Line], with_detail: bool) -> None:
        if not lines:
            return
        header = [title] + (["keys"] if with_detail else []) + names
        body = []
        for line in lines:
            cells = [line.name + (f" {line.marks}" if line.marks else "")]
            if with_detail:
                cells.append(line.detail)
            cells += [_percent(v) for v in line.runs]
            cells += [_percent(v) + ("~" if i in line.approximate else "") for i, v in enumerate(line.rows)]
            body.append(cells)
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        out.append("")
        out.append(
            "  ".join(
                h.ljust(w) if i == 0 else h.rjust(w)
                for i, (h, w) in enumerate(zip(header, widths, strict=True))
            )
        )
        for cells in body:
            out.append(
                "  ".join(
                    v.ljust(w) if i == 0 else v.rjust(w)
                    for i, (v, w) in enumerate(zip(cells, widths, strict=True))
                )
            )

    table("benchmark", c.benchmarks, True)
    table("average", [line for line in c.averages if line.detail], True)
    table(
        "published averages (each over its own table's set)",
        [line for line in c.averages if not line.detail],
        False,
    )
    table("key", c.keys, False)
    out += ["", "Notes"] + [f"- {note}" for note in c.notes]
    for source in dict.fromkeys(row.table for row in c.rows):
        out.append(f"- {published.TABLES[source]}: {published.SOURCES[source]}")
    return "\n".join(out)


@dataclass(frozen=True)
class Point:
    """A point of the chart: ``x`` the multi-modal average, ``y`` the compositional one (fractions);
    ``exact`` False where either is over another set than the runs' (drawn hollow)."""

    label: str
    x: float
    y: float
    exact: bool = True


@dataclass
class Chart:
    """What ``draw_chart`` draws, computed without matplotlib: the runs (in order), the chosen
    published rows that have both averages, every vl_compo row by kind (``"pre-trained"``,
    ``"fine-tuned"``: vl_compo's StructuredCLIP family), and the axes' labels."""

    runs: list[Point]
    rows: list[Point]
    background: dict[str, list[Point]]
    x_label: str
    y_label: str
    caption: str


def chart(comparison: Comparison) -> Chart:
    """The points and labels of the trade-off chart, every value averaged over the comparison's
    benchmarks and retrieval keys.

    Raises:
        ValueError: the runs share no compositional benchmark or no retrieval key with the tables.
    """
    c = comparison
    if not c.subsets or not c.multimodal:
        raise ValueError(
            "the chart needs a compositional benchmark and a retrieval R@1 key (coco_karpathy or "
            "flickr30k) that every run shares with the published tables; the runs have "
            f"{', '.join(c.subsets) or 'no such benchmark'} and {', '.join(c.multimodal) or 'no such key'}"
        )
    averages = {line.name: line for line in c.averages}
    runs = [
        Point(run.label, x, y)
        for run, x, y in zip(
            c.runs, averages["multi-modal avg."].runs, averages["compositional avg."].runs, strict=True
        )
    ]
    rows = []
    for row in c.rows:
        x, y, exact = c.axes(row)
        if x is not None and y is not None:
            rows.append(Point(row.name, x, y, exact))
    background = {"pre-trained": [], "fine-tuned": []}
    for row in published.rows():
        if row.table == VL_COMPO:
            x, y, _ = c.axes(row)
            background["fine-tuned" if row.family == "StructuredCLIP" else "pre-trained"].append(
                Point(row.name, x, y)
            )
    benchmarks = ", ".join(f"{line.name} ({line.detail})" for line in c.benchmarks)
    return Chart(
        runs,
        rows,
        background,
        f"Multi-modal avg.: retrieval R@1 over {len(c.multimodal)} keys (%)",
        f"Compositional avg. over {len(c.subsets)} benchmarks (%)",
        f"benchmarks (keys used/all): {benchmarks}\nretrieval: {', '.join(c.multimodal)}",
    )


# the chosen published rows' colours: none of them the runs' red or the background's blue and orange
_ROW_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#e377c2", "#1f3a93")
_BACKGROUND_COLOURS = {"pre-trained": "#4c72b0", "fine-tuned": "#dd8452"}
_RUN_COLOUR = "#c44e52"


def draw_chart(comparison: Comparison, path: str | Path, background: bool = True) -> Path:
    """Draw ``chart(comparison)`` to ``path`` (any format matplotlib writes: .png, .svg, .pdf), in
    the manner of vl_compo's Figure 1: compositional average (y) against multi-modal average (x),
    the runs as stars joined in order, the chosen published rows labelled (hollow where an average
    is over another set) and, with ``background``, every vl_compo row (pre-trained blue, fine-tuned
    orange).

    Raises:
        ImportError: matplotlib is not installed (the text comparison does not need it).
        ValueError: see ``chart``.
    """
    data = chart(comparison)  # first: what no install can mend is said first
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "the chart needs matplotlib (pip install matplotlib); the text comparison does not"
        ) from None
    figure = Figure(figsize=(8, 6.5), layout="constrained")
    axes = figure.add_subplot()
    for kind, points in data.background.items() if background else ():
        axes.scatter(
            [100 * p.x for p in points],
            [100 * p.y for p in points],
            s=18,
            color=_BACKGROUND_COLOURS[kind],
            alpha=0.45,
            label=f"{kind} (vl_compo)",
            linewidths=0,
        )
    for index, point in enumerate(data.rows):
        colour = _ROW_COLOURS[index % len(_ROW_COLOURS)]
        axes.scatter(
            [100 * point.x],
            [100 * point.y],
            s=90,
            marker="D",
            edgecolors=colour,
            linewidths=1.8,
            facecolors=colour if point.exact else "none",
            label=point.label + ("" if point.exact else " (~ other sets)"),
            zorder=3,
        )
        axes.annotate(
            point.label, (100 * point.x, 100 * point.y), textcoords="offset points", xytext=(6, 6), fontsize=8
        )
    xs, ys = [100 * p.x for p in data.runs], [100 * p.y for p in data.runs]
    if len(xs) > 1:
        axes.plot(xs, ys, color=_RUN_COLOUR, linewidth=1, zorder=4)
    axes.scatter(
        xs,
        ys,
        s=160,
        marker="*",
        color=_RUN_COLOUR,
        edgecolors="black",
        linewidths=0.6,
        zorder=5,
        label="your results",
    )
    for point, x, y in zip(data.runs, xs, ys, strict=True):
        axes.annotate(
            point.label, (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8, color=_RUN_COLOUR
        )
    axes.set_xlabel(data.x_label)
    axes.set_ylabel(data.y_label)
    axes.margins(x=0.12, y=0.06)  # room for the labels
    axes.grid(True, linestyle="--", alpha=0.5)
    axes.legend(fontsize=8, loc="best")
    figure.suptitle("Compositionality vs multi-modal skill, averaged over what both sides have", fontsize=11)
    axes.set_title(data.caption, fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    return path
