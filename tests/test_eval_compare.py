"""The published tables shipped with ``fsc_losses.eval`` and the comparison of results with them
(``python -m fsc_losses.eval report``, ``--compare``)."""

import hashlib
import json
import sys
from importlib import resources

import pytest

from fsc_losses.eval import BENCHMARKS, compare, published
from fsc_losses.eval.__main__ import main

SHA256 = {  # as fsc_losses/eval/published/README.md gives them, for the files of the commits it names
    "vl_compo_results.csv": "7802dfff78e90f6b6754fb91268c52ac04c1827526456a4e7b0a0b482156a137",
    "vl_compo_individual_results.csv": "732af73af35f7e0b10c7cd58709b54504f95d2778b74193f8be58d13bafc5da5",
    "fsc_clip_extended_results.csv": "1e08a26d854c541794e1a50e5ca04bc57833ccea09374bd14b5c08183a85d9e3",
}
TWELVE = (
    "aro",
    "colorswap",
    "crepe",
    "eqben",
    "imagecode",
    "mmvp_vlm",
    "sugarcrepe",
    "svo_probes",
    "valse",
    "vl_checklist",
    "whatsup",
    "winoground",
)


def test_the_shipped_tables_are_the_published_files():
    folder = resources.files("fsc_losses.eval").joinpath("published")
    readme = folder.joinpath("README.md").read_text()
    for name, digest in SHA256.items():
        assert hashlib.sha256(folder.joinpath(name).read_bytes()).hexdigest() == digest
        assert digest in readme
    rows = published.rows()
    assert sum(r.table == published.VL_COMPO for r in rows) == 202
    assert sum(r.table == published.FSC_CLIP for r in rows) == 12
    assert len({r.name for r in rows}) == len(rows)


def test_the_rules_reproduce_every_published_column():
    """Each benchmark column of vl_compo's results.csv, its comp_avg, retrieval and zero-shot
    columns, from the same row's individual keys (the files have 10 significant digits)."""
    for row in published.rows():
        if row.table == published.FSC_CLIP:
            eleven = [row.columns[b] for b in TWELVE if b not in ("colorswap", "mmvp_vlm")] + [
                row.columns["spec"]
            ]
            assert row.columns["comp_avg_11"] == pytest.approx(sum(eleven) / 11, abs=1e-12)
            continue
        for bench, rule in published.SUMMARIES.items():
            value = rule.value(row.keys, published.POOLED_ITEMS.get(bench))
            assert value == pytest.approx(row.columns[bench], abs=1e-9), (row.name, bench)
        assert sum(row.columns[b] for b in TWELVE) / 12 == pytest.approx(row.columns["comp_avg"], abs=1e-9)
        for column, key in published.RETRIEVAL.items():
            assert row.keys[key] == pytest.approx(row.columns[column], abs=1e-9)
        zero_shot = [v for k, v in row.keys.items() if k.startswith("elevator::")]
        assert len(zero_shot) == 21
        assert sum(zero_shot) / 21 == pytest.approx(row.columns["21_tasks_avg"], abs=1e-9)
    assert set(published.SUMMARIES) == set(TWELVE)


def test_rows_are_found_by_name():
    assert [r.name for r in published.find(published.DEFAULT_ROWS)] == list(published.DEFAULT_ROWS)
    assert published.find(["SynthCLIP:CLIP_ViT-B-16/cc12m"])[0].family == "SynthCLIP"
    assert published.find(["ALIP/yfcc15m"])[0].keys  # the two tables give ALIP different families
    with pytest.raises(
        ValueError, match=r"'CLIP_ViT-B-16/cc12m' matches several rows; rows like it: LaCLIP:"
    ):
        published.find(["CLIP_ViT-B-16/cc12m"])
    with pytest.raises(ValueError, match=r"'ViT-B-99/openai' is not a published row"):
        published.find(["ViT-B-99/openai"])


def as_run(row_name: str, label: str, drop=()) -> compare.Run:
    """A run holding a vl_compo row's keys that this package computes, as ``--out`` writes them."""
    row = published.find([row_name])[0]
    results = {
        k: v
        for k, v in row.keys.items()
        if k.split("::")[0] in BENCHMARKS and k not in compare.NOT_COMPUTED and k not in drop
    }
    counts = {k: n for items in published.POOLED_ITEMS.values() for k, n in items.items()}
    return compare.Run(label, results, counts)


def test_a_run_of_a_rows_own_keys_lands_on_that_row():
    """The two sides are summarised by the same rules over the same keys, so a run holding a row's
    keys equals that row on every benchmark, average and key, and sits on it in the chart."""
    rows = published.find([*published.DEFAULT_ROWS, "CE-CLIP/coco-ft"])
    comparison = compare.compare([as_run("CE-CLIP/coco-ft", "ce")], rows)
    assert [line.name for line in comparison.benchmarks] == [
        "aro",
        "imagecode",
        "mmvp_vlm",
        "sugarcrepe",
        "valse",
        "whatsup",
        "winoground",
    ]
    for line in [*comparison.benchmarks, *comparison.averages[:2], *comparison.keys]:
        assert line.runs[0] == pytest.approx(line.rows[3], abs=1e-12), line.name
    x, y, exact = comparison.axes(rows[3])
    assert exact and (x, y) == pytest.approx((comparison.averages[1].runs[0], comparison.averages[0].runs[0]))
    # FSC-CLIP's row: a benchmark column where the run has all of its keys, none for ARO (2 of 4)
    fsc = {line.name: line.rows[2] for line in comparison.benchmarks}
    assert fsc["aro"] is None and fsc["sugarcrepe"] == rows[2].columns["sugarcrepe"]
    assert {2} == comparison.averages[0].approximate == comparison.averages[1].approximate


def test_the_chart_puts_every_point_on_the_same_averages():
    """The chart's data, without matplotlib: the runs at their two averages, a run holding a row's
    keys on that row, FSC-CLIP's row hollow, and every vl_compo model behind them."""
    rows = published.find([*published.DEFAULT_ROWS, "CE-CLIP/coco-ft"])
    runs = [as_run("CE-CLIP/coco-ft", "ce"), as_run("GNM-CLIP/coco-ft", "gnm")]
    comparison = compare.compare(runs, rows)
    data = compare.chart(comparison)
    averages = {line.name: line for line in comparison.averages}
    for i, point in enumerate(data.runs):
        assert (point.x, point.y) == (
            averages["multi-modal avg."].runs[i],
            averages["compositional avg."].runs[i],
        )
    assert [p.label for p in data.rows] == [r.name for r in rows]
    assert [p.exact for p in data.rows] == [True, True, False, True]
    assert (data.rows[3].x, data.rows[3].y) == pytest.approx((data.runs[0].x, data.runs[0].y), abs=1e-12)
    ce_clip = next(p for p in data.background["fine-tuned"] if p.label == "CE-CLIP/coco-ft")
    assert (ce_clip.x, ce_clip.y) == (data.rows[3].x, data.rows[3].y)
    assert len(data.background["pre-trained"]) + len(data.background["fine-tuned"]) == 202
    assert len(data.background["fine-tuned"]) == 8  # NegCLIP, CE-CLIP, GNM-CLIP, TSVLC x2, DAC x2, CLoVe
    assert data.y_label == "Compositional avg. over 7 benchmarks (%)"
    assert "aro (2/4)" in data.caption and "flickr30k::t2i/R@1" in data.caption
    no_retrieval = compare.compare(
        [as_run("CE-CLIP/coco-ft", "ce", drop=set(published.RETRIEVAL.values()))], rows
    )
    with pytest.raises(ValueError, match="the chart needs a compositional benchmark and a retrieval R@1 key"):
        compare.chart(no_retrieval)


def test_a_benchmark_is_summarised_over_the_keys_both_sides_have():
    """Worked by hand for OpenAI's ViT-B/32 row: VALSE without foil-it is the mean of the six other
    groups' means; ARO is the mean of VG-Relation and VG-Attribute; SugarCrepe pools each group by
    the run's own item counts."""
    row = published.find(["ViT-B-32/openai"])[0]
    k = row.keys
    run = as_run("ViT-B-32/openai", "mine", drop={"valse::foil-it"})
    run.counts["sugarcrepe::swap_obj"] = 200  # other files: a note, and the run's own weights
    comparison = compare.compare([run], [row])
    lines = {line.name: line for line in comparison.benchmarks}
    valse = (
        k["valse::existence"]
        + k["valse::plurals"]
        + (k["valse::counting-hard"] + k["valse::counting-small-quant"] + k["valse::counting-adversarial"])
        / 3
        + k["valse::relations"]
        + (k["valse::action-replacement"] + k["valse::actant-swap"]) / 2
        + (k["valse::coreference-standard"] + k["valse::coreference-hard"]) / 2
    ) / 6
    assert lines["valse"].rows[0] == pytest.approx(valse) and lines["valse"].detail == "10/11"
    assert lines["valse"].marks == "*"
    assert lines["aro"].rows[0] == pytest.approx((k["aro::VG_Relation"] + k["aro::VG_Attribute"]) / 2)
    swap = (k["sugarcrepe::swap_obj"] * 200 + k["sugarcrepe::swap_att"] * 666) / 866
    replace = (
        k["sugarcrepe::replace_obj"] * 1652
        + k["sugarcrepe::replace_att"] * 788
        + k["sugarcrepe::replace_rel"] * 1406
    ) / 3846
    add = (k["sugarcrepe::add_obj"] * 2062 + k["sugarcrepe::add_att"] * 692) / 2754
    assert lines["sugarcrepe"].runs[0] == pytest.approx((replace + swap + add) / 3)
    assert lines["sugarcrepe"].rows[0] == pytest.approx(row.columns["sugarcrepe"])
    text = compare.format_comparison(comparison)
    assert "mine: sugarcrepe::swap_obj has 200 items, the table's weights 245" in text
    assert "* valse: over " in text and "left out: valse::foil-it (not in every run's results)" in text
    assert "* aro: over aro::VG_Relation, aro::VG_Attribute only" in text
    assert "aro::COCO_Order, aro::Flickr30k_Order (ARO makes its negatives at run time with spaCy" in text
    assert (
        "t mmvp_vlm, whatsup, winoground: a tie between the right answer and a wrong one is wrong here"
        in text
    )
    assert "What'sUp's own code takes np.argmax over the captions, the true one first" in text


def test_keys_outside_the_tables_and_skipped_items_are_said():
    run = as_run("NegCLIP/coco-ft", "x")
    run.results.update({"crepe::atom::complexity_4": 0.5, "spec::count::i2t": 0.4, "zeroshot::pets": 0.8})
    run.results.update({f"sugarcrepe_pp::swap_obj::{m}": 0.5 for m in ("itt", "tot")})
    run.skipped = {"sugarcrepe::add_att": 3}
    comparison = compare.compare([run], published.find(["NegCLIP/coco-ft"]))
    assert comparison.not_compared == {
        "crepe": ["crepe::atom::complexity_4"],
        "spec": ["spec::count::i2t"],
        "zeroshot": ["zeroshot::pets"],
        "sugarcrepe_pp": ["sugarcrepe_pp::swap_obj::itt", "sugarcrepe_pp::swap_obj::tot"],
    }
    text = compare.format_comparison(comparison)
    assert "not compared: 1 crepe key(s): the tables have one number per type" in text
    assert "not compared: 2 sugarcrepe_pp key(s): the tables have no SugarCrepe++" in text
    assert "x: 3 items of sugarcrepe::add_att were skipped (absent or unreadable images)" in text
    assert "crepe" not in {line.name for line in comparison.benchmarks}


def test_several_runs_share_one_set_of_keys():
    """Checkpoints of one run, one of them without VALSE's foil-it: the benchmark is compared over the
    keys every run has, for all of them."""
    runs = [as_run("CE-CLIP/coco-ft", "a"), as_run("GNM-CLIP/coco-ft", "b", drop={"valse::foil-it"})]
    comparison = compare.compare(runs, published.find(["GNM-CLIP/coco-ft"]))
    valse = next(line for line in comparison.benchmarks if line.name == "valse")
    assert valse.detail == "10/11" and valse.runs[1] == pytest.approx(valse.rows[0])
    assert comparison.subsets["valse"] == [
        k for k in published.SUMMARIES["valse"].keys if k != "valse::foil-it"
    ]


def write_runs(folder):
    """The three formats ``read_runs`` takes: an --out file, a bare results object, a trainer's
    results.jsonl."""
    first, second = as_run("CE-CLIP/coco-ft", "a"), as_run("NegCLIP/coco-ft", "b")
    out = folder / "epoch_5.json"
    out.write_text(
        json.dumps({"results": first.results, "counts": first.counts, "missing": {}, "skipped": {}})
    )
    bare = folder / "bare.json"
    bare.write_text(json.dumps(second.results))
    lines = folder / "results.jsonl"  # as the trainer appends them, open_clip's own metrics between
    open_clip_metrics = {"image_to_text_mean_rank": 12.5, "val_loss": 1.9, "epoch": 1, "num_samples": 5000}
    records = [open_clip_metrics, {**first.results, "epoch": 1}, {**second.results, "epoch": 2}]
    lines.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return out, bare, lines


def test_result_files_are_read_in_every_format(tmp_path):
    out, bare, lines = write_runs(tmp_path)
    runs = compare.read_runs([out, bare, lines])
    assert [r.label for r in runs] == [
        "epoch_5.json",
        "bare.json",
        "results.jsonl epoch 1",
        "results.jsonl epoch 2",
    ]
    assert runs[0].counts["sugarcrepe::add_obj"] == 2062 and runs[1].counts == {}
    assert runs[2].results == runs[0].results
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"bad\.json: expected a JSON object of results"):
        compare.read_runs([tmp_path / "bad.json"])
    (tmp_path / "percent.json").write_text(json.dumps({"sugarcrepe::add_obj": 85.3}))
    with pytest.raises(
        ValueError, match=r"percent\.json: expected results .* in \[0, 1\], got 'sugarcrepe::add_obj': 85\.3"
    ):
        compare.read_runs([tmp_path / "percent.json"])
    (tmp_path / "other.jsonl").write_text(json.dumps({"val_loss": 1.2, "epoch": 1}) + "\n")
    with pytest.raises(ValueError, match=r"other\.jsonl: no line has results"):
        compare.read_runs([tmp_path / "other.jsonl"])
    (tmp_path / "nested.json").write_text(json.dumps({"results": [0.5]}))
    with pytest.raises(ValueError, match=r"nested\.json: expected a JSON object of results, got list"):
        compare.read_runs([tmp_path / "nested.json"])


def test_report_prints_the_comparison_and_draws_the_chart(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, _, lines = write_runs(tmp_path)
    assert main(["report", str(out), str(lines), "--published", "ViT-B-32/openai", "NegCLIP/coco-ft"]) == 0
    printed = capsys.readouterr()
    assert (
        "you1: epoch_5.json" in printed.out
        and "A: ViT-B-32/openai  (OpenCLIP, vl_compo table)" in printed.out
    )
    assert "compositional avg." in printed.out and "multi-modal avg." in printed.out
    chart = tmp_path / "epoch_5_vs_published.png"
    assert f"wrote {chart}" in printed.err
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 20_000
    assert main(["report", str(out), "--chart", str(tmp_path / "c.svg")]) == 0
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    assert main(["report", "--list-published"]) == 0
    assert "fsc-clip-ViT-B-32/openai_coco\tFSC-CLIP\tFSC-CLIP table" in capsys.readouterr().out


def test_report_without_matplotlib_still_compares(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out, _, _ = write_runs(tmp_path)
    assert main(["report", str(out)]) == 0  # the default chart: a note
    printed = capsys.readouterr()
    assert "compositional avg." in printed.out
    assert (
        "no chart: the chart needs matplotlib (pip install matplotlib); the text comparison does not"
        in printed.err
    )
    assert main(["report", str(out), "--chart", str(tmp_path / "c.png")]) == 1  # asked for: an error
    printed = capsys.readouterr()
    assert "compositional avg." in printed.out
    assert printed.err.startswith(f"error: --chart {tmp_path / 'c.png'}: the chart needs matplotlib")
    assert not (tmp_path / "c.png").exists()


def test_report_errors_are_one_line(tmp_path, capsys):
    out, _, _ = write_runs(tmp_path)
    assert main(["report", str(out), "--published", "ViT-B-99/openai", "--no-chart"]) == 1
    assert (
        capsys.readouterr().err
        == "error: 'ViT-B-99/openai' is not a published row; list them with --list-published\n"
    )
    assert main(["report", str(tmp_path / "none.json")]) == 1
    assert "none.json" in capsys.readouterr().err
    only_text = tmp_path / "text_only.json"
    only_text.write_text(json.dumps({"sugarcrepe_pp::swap_obj::itt": 0.5}))
    assert main(["report", str(only_text), "--chart", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err
    assert "the chart needs a compositional benchmark and a retrieval R@1 key" in err
    with pytest.raises(SystemExit):
        main(["report"])
