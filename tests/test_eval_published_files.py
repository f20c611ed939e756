"""``fsc_losses.eval`` on excerpts of the benchmarks' real published files (tests/data/, sources in
tests/data/README.md), with stand-in images under the names they give: CREPE's CSVs with their set
literals, SugarCrepe++'s JSON with its exact ties."""

import ast
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from PIL import Image

from fsc_losses.eval import BENCHMARKS, benchmarks, evaluate_report

from .eval_fixtures import HashedWords
from .eval_reference import Reference, open_image

DATA = Path(__file__).parent / "data"
CREPE_FILES = {
    kind: f"crepe/prod_hard_negatives/{kind}/prod_vg_hard_negs_{kind}_complexity_4.csv"
    for kind in ("atom", "swap", "negate")
}


def words_reference(**switches) -> Reference:
    model = HashedWords()

    def image(path, box):
        return F.normalize(
            model.encode_image(model.preprocess(open_image(path, box))[None])[0].double(), dim=0
        )

    def text(caption):
        return F.normalize(HashedWords.text_vector(caption).double(), dim=0)

    return Reference(image, text, **switches)


def run(root, names, **kwargs):
    model = HashedWords()
    return evaluate_report(
        model, names, root, tokenizer=model.tokenize, preprocess=model.preprocess, progress=False, **kwargs
    )


def stand_in(path: Path, seed: int, size=(800, 600)) -> None:
    """A four-colour image big enough for the published boxes (up to 639 x 599 here)."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    for k, colour in enumerate(rng.integers(0, 256, (4, 3))):
        pixels[(k // 2) * size[1] // 2 : (k // 2 + 1) * size[1] // 2, (k % 2) * size[0] // 2 :][
            :, : size[0] // 2
        ] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def crepe_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    shutil.copytree(DATA / "crepe", root / "crepe")
    ids = set()
    for file in CREPE_FILES.values():
        with open(DATA / file, newline="") as f:
            ids |= {row["image_id"] for row in csv.DictReader(f)}
    for k, image_id in enumerate(sorted(ids)):  # both of Visual Genome's folders, as CREPE looks in both
        stand_in(root / "crepe" / ("VG_100K" if k % 2 else "VG_100K_2") / f"{image_id}.jpg", k)
    return root


def test_crepe_set_literals_are_read_as_crepes_loader_reads_them(crepe_root):
    """CREPE's loader: ``pd.read_csv``, then ``list(ast.literal_eval(cell))`` for ``hard_negs`` (a
    list in most rows, a set in some), the caption first, the image cropped with
    ``TF.crop(image, y, x, height, width)``; the same rows, captions and boxes here."""
    pd = pytest.importorskip("pandas")
    loaded = benchmarks.load(BENCHMARKS["crepe"], crepe_root)
    sets = 0
    for kind, file in CREPE_FILES.items():
        frame = pd.read_csv(DATA / file)
        part = loaded.parts[f"{kind}::complexity_4"]
        assert len(part.items) == len(frame)
        for item, (_, row) in zip(part.items, frame.iterrows(), strict=True):
            negatives = list(ast.literal_eval(row["hard_negs"]))
            sets += row["hard_negs"].startswith("{")
            assert item.texts[0] == str(row["caption"])
            assert sorted(item.texts[1:]) == sorted(negatives)  # a set's order is the interpreter's
            x, y = row["x"], row["y"]
            assert item.images[0].box == (x, y, x + row["width"], y + row["height"])
            assert item.images[0].path.name == f"{row['image_id']}.jpg"
    assert sets == 3
    assert len(loaded.missing) == 24  # the other complexities, which the excerpt does not have


def test_crepe_real_rows_score_as_the_per_item_loop(crepe_root, tmp_path):
    report = run(crepe_root, ["crepe"])
    expected = {
        k: v for k, v in words_reference().results(crepe_root, ["crepe"]).items() if k in report.results
    }
    assert set(report.results) == set(expected) == {f"crepe::{k}::complexity_4" for k in CREPE_FILES}
    for key, value in expected.items():
        assert report.results[key] == pytest.approx(value, abs=1e-12), key
    assert report.counts == {
        "crepe::atom::complexity_4": 3,
        "crepe::swap::complexity_4": 3,
        "crepe::negate::complexity_4": 4,
    }


@pytest.fixture(scope="module")
def scpp_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    shutil.copytree(DATA / "sugarcrepe_pp", root / "sugarcrepe_pp")
    names = {
        item["filename"]
        for file in (root / "sugarcrepe_pp").glob("*.json")
        for item in json.loads(file.read_text())
    }
    for k, name in enumerate(sorted(names)):
        stand_in(root / "sugarcrepe_pp" / "val2017" / name, 100 + k, size=(64, 48))
    return root


def test_sugarcrepe_pp_real_items_score_as_its_scripts(scpp_root):
    """ITT, TOT and the two single-caption scores per subset equal the loop of SugarCrepe++'s
    scripts, ties included: ``swap_obj`` items 2 and 8 have the caption itself as their negative,
    so the image scores the two the same, and the item loses ``itt_p1`` (and ``itt``); their TOT is
    lost without a tie (the caption is closer to itself than to its paraphrase)."""
    report = run(scpp_root, ["sugarcrepe_pp"])
    reference = words_reference()
    expected = reference.results(scpp_root, ["sugarcrepe_pp"])
    assert set(report.results) == set(expected) and len(expected) == 20
    for key, value in expected.items():
        assert report.results[key] == pytest.approx(value, abs=1e-12), key
    assert reference.ties >= 2  # items 2 and 8: the image against the caption and the negative
    assert report.counts == {
        "sugarcrepe_pp::replace_obj": 3,
        "sugarcrepe_pp::replace_att": 4,
        "sugarcrepe_pp::replace_rel": 3,
        "sugarcrepe_pp::swap_obj": 4,
        "sugarcrepe_pp::swap_att": 3,
    }
    # the ties decide: counted as right, swap_obj's scores change
    lenient = words_reference(ties_win=True).results(scpp_root, ["sugarcrepe_pp"])
    assert lenient["sugarcrepe_pp::swap_obj::itt_p1"] == pytest.approx(
        expected["sugarcrepe_pp::swap_obj::itt_p1"] + 2 / 4
    )


def test_sugarcrepe_pp_items_keep_the_captions_in_their_roles(scpp_root):
    loaded = benchmarks.load(BENCHMARKS["sugarcrepe_pp"], scpp_root)
    items = loaded.parts["swap_obj"].items
    published = json.loads((DATA / "sugarcrepe_pp" / "swap_obj.json").read_text())
    assert [item.texts for item in items] == [
        (p["caption"], p["caption2"], p["negative_caption"]) for p in published
    ]
    assert items[2].texts[0] == items[2].texts[2] and items[3].texts[0] == items[3].texts[2]
