"""benchmarks/bench_negatives.py: its detectors of negatives that keep the caption's meaning, the
caption formats it reads, the split that made the committed caption files, and a run."""

import json

import pytest

from benchmarks import bench_negatives as bench


@pytest.mark.parametrize(
    "caption, negative, coordination, symmetric",
    [
        ("a red and white room", "a white and red room", True, False),
        ("A toilet and a sink.", "A sink and a toilet.", True, False),
        ("red, white and blue flags", "blue, white and red flags", True, False),
        ("two dogs and a cat", "two cats and a dog", True, False),  # plural endings aside
        ("a dog next to a cat", "a cat next to a dog", False, True),
        ("a red car and a blue truck", "a red truck and a blue car", False, False),  # rebinding
        ("a man riding a horse", "a horse riding a man", False, False),
        ("a dog on a bed", "a bed on a dog", False, False),
        ("a red and white room", "a red and white room", False, False),  # unchanged
    ],
)
def test_detectors(caption, negative, coordination, symmetric):
    assert bench.is_coordination_swap(caption, negative) is coordination
    assert bench.is_symmetric_swap(caption, negative) is symmetric


def test_synonym_replacements():
    assert bench.is_synonym_replacement("a cat in a box", "a cat inside a box")
    assert bench.is_synonym_replacement("a big dog", "a large dog")
    assert bench.is_synonym_replacement("two couches", "two sofas")
    assert not bench.is_synonym_replacement("a cat in a box", "a cat on a box")
    assert not bench.is_synonym_replacement("a big dog", "a small dog")


def test_caption_formats(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"0": {"caption": "a dog"}, "1": {"caption": "a cat "}}))
    (tmp_path / "b.json").write_text(json.dumps([{"caption": "a dog"}, {"caption": "a cow"}]))
    assert bench.read_captions(tmp_path) == ["a dog", "a cat", "a cow"]  # each once, stripped
    assert bench.read_captions(tmp_path / "b.json") == ["a dog", "a cow"]
    (tmp_path / "c.tsv").write_text("title\tfilepath\na bird\tx.jpg\n\t y.jpg\n")
    assert bench.read_captions(tmp_path / "c.tsv", "title") == ["a bird"]
    with pytest.raises(SystemExit, match="--column caption: .* has the columns"):
        bench.read_captions(tmp_path / "c.tsv", "caption")
    (tmp_path / "d.txt").write_text("a fox\n\na fox\na hen\n")
    assert bench.read_captions(tmp_path / "d.txt") == ["a fox", "a hen"]


def test_split_is_disjoint_and_by_hash(tmp_path, monkeypatch):
    captions = [f"caption number {i}" for i in range(50)]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.json").write_text(json.dumps([{"caption": c} for c in captions]))
    monkeypatch.setattr(bench, "HELD_OUT", tmp_path / "held_out.txt")
    monkeypatch.setattr(bench, "TEST_SAMPLE", tmp_path / "sample.txt")
    monkeypatch.setattr(bench, "HELD_OUT_SIZE", 20)
    monkeypatch.setattr(bench, "TEST_SAMPLE_SIZE", 10)
    bench.make_split(tmp_path / "data")
    held_out = (tmp_path / "held_out.txt").read_text().splitlines()
    sample = (tmp_path / "sample.txt").read_text().splitlines()
    assert len(held_out) == 20 and len(sample) == 10 and not set(held_out) & set(sample)
    assert set(held_out) | set(sample) < set(captions)


def test_committed_caption_files_are_disjoint():
    held_out = set(bench.HELD_OUT.read_text(encoding="utf-8").splitlines())
    sample = set(bench.TEST_SAMPLE.read_text(encoding="utf-8").splitlines())
    assert len(held_out) == bench.HELD_OUT_SIZE and len(sample) == bench.TEST_SAMPLE_SIZE
    assert not held_out & sample


def test_run_on_the_tests_sample(tmp_path, capsys):
    out = tmp_path / "figures.json"
    bench.main(["--captions", str(bench.TEST_SAMPLE), "--repeats", "1", "--show", "1", "--json", str(out)])
    figures = json.loads(out.read_text())
    assert figures["captions"] == 300 and figures["seeds"] == [0]
    assert set(figures["kinds"]) == {"swap", "replace", "shuffle"}
    for row in figures["kinds"].values():
        assert 0.9 <= row["valid"] <= 1 and row["same_as_caption"] == 0
    assert figures["kinds"]["swap"]["coordination_swaps"] == 0
    assert figures["captions_per_second"] > 0
    printed = capsys.readouterr().out
    assert "coordination swaps" in printed and "captions/s" in printed
