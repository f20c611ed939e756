"""``fsc_losses.eval`` on tiny fixtures of every benchmark format (tests/eval_fixtures.py), scored
by ``BagOfColours``, whose scores (ties included) are known, against a plain per-item loop
(tests/eval_reference.py)."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsc_losses.eval import BENCHMARKS, ImageError, evaluate, evaluate_report
from fsc_losses.eval.aro import EXCLUDED_RELATIONS
from fsc_losses.eval.items import ImageRef, Item
from fsc_losses.eval.scoring import item_scores

from .eval_fixtures import (
    RELATIONS,
    SUGARCREPE_SUBSETS,
    WRITERS,
    BagOfColours,
    solid,
    write_all,
    write_aro,
    write_sugarcrepe,
)
from .eval_reference import ARO_EXCLUDED_IN_FIXTURES, Reference, open_image

NAMES = list(WRITERS)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    write_all(root)
    return root


def bag_reference(**switches) -> Reference:
    """The reference loop with ``BagOfColours``' embeddings, computed here one item at a time."""
    model = BagOfColours()

    def image(path, box):
        return F.normalize(
            model.encode_image(model.preprocess(open_image(path, box))[None])[0].double(), dim=0
        )

    def text(caption):
        return F.normalize(BagOfColours.text_vector(caption).double(), dim=0)

    return Reference(image, text, **switches)


def run(root, names=NAMES, model=None, **kwargs):
    model = model or BagOfColours()
    kwargs.setdefault("progress", False)
    return evaluate_report(
        model, names, root, tokenizer=model.tokenize, preprocess=model.preprocess, **kwargs
    )


def test_every_benchmark_matches_the_per_item_loop(root):
    report = run(root, batch_size=7)  # batches that split items and subsets
    expected = bag_reference().results(root, NAMES)
    assert set(report.results) == set(expected) == set(write_all(root / "again"))
    for key, value in expected.items():
        assert report.results[key] == pytest.approx(value, abs=1e-12), key
        assert 0.0 <= report.results[key] <= 1.0
    assert report.missing == {}


def test_the_fixtures_exercise_ties_crops_and_aros_macro_rules(root):
    """Each rule the package must follow changes some result on these fixtures, so the test above
    fails when the package gets one wrong."""
    strict = bag_reference()
    expected = strict.results(root, NAMES)
    assert strict.ties > 10
    lenient = bag_reference(ties_win=True).results(root, NAMES)
    changed = {k.split("::")[0] for k in expected if lenient[k] != expected[k]}
    assert {
        "sugarcrepe",
        "sugarcrepe_pp",
        "winoground",
        "whatsup",
        "valse",
        "coco_karpathy",
        "flickr30k",
    } <= (changed)

    for switch in ({"crop": False}, {"aro_excluded": set()}, {"aro_min_pair": 1}, {"aro_min_pair": 26}):
        other = bag_reference(**switch).results(root, ["aro"])
        assert other != {k: v for k, v in expected.items() if k.startswith("aro::")}, switch
    uncropped = bag_reference(crop=False).results(root, ["crepe"])
    assert uncropped != {k: v for k, v in expected.items() if k.startswith("crepe::")}
    # the macro average is not the share of right items
    micro = run(root, ["aro"]).counts
    assert micro == {"aro::VG_Relation": 14, "aro::VG_Attribute": 75}


def test_aro_excludes_the_notebooks_relations():
    assert len(EXCLUDED_RELATIONS) == 157
    assert {r for r in RELATIONS if r in EXCLUDED_RELATIONS} == ARO_EXCLUDED_IN_FIXTURES
    assert {"near", "next to", "with", "of", "wrapped in"} <= EXCLUDED_RELATIONS
    assert not {"on", "under", "riding", "behind", "in front of"} & EXCLUDED_RELATIONS


def test_each_image_and_crop_is_encoded_once_and_texts_in_batches(root):
    model = BagOfColours()
    report = run(root, model=model, batch_size=16)
    assert report.results
    refs, texts = set(), set()
    for loaded in _loaded(root).values():
        for part in loaded.parts.values():
            refs |= {ref for item in part.items for ref in item.images}
            texts |= {t for item in part.items for t in item.texts} | {
                p for c in part.class_prompts or () for p in c
            }
    # the fixtures reuse images across SugarCrepe's files and crop ARO's images to several boxes
    assert len({r.path for r in refs}) < len(refs)
    assert model.images_encoded == len(refs)
    assert sum(model.text_batches) == len(texts) and max(model.text_batches) <= 16


def _loaded(root):
    from fsc_losses.eval import benchmarks

    return {name: benchmarks.load(BENCHMARKS[name], root) for name in NAMES}


def test_the_model_is_scored_in_eval_mode_and_given_its_modes_back(root):
    model = BagOfColours()
    frozen = nn.Linear(1, 1).eval()  # e.g. a locked tower kept in eval mode by the trainer
    model.frozen = frozen
    model.train()
    frozen.eval()
    run(root, ["winoground"], model=model)
    assert model.modes_seen == {False}
    assert model.training and not frozen.training


def test_evaluate_returns_the_results_and_prints_nothing(root, capsys):
    model = BagOfColours()
    results = evaluate(
        model,
        ["sugarcrepe", "winoground"],
        root,
        tokenizer=model.tokenize,
        preprocess=model.preprocess,
        batch_size=64,
        device=None,
        image_roots=None,
        progress=False,
    )
    assert results == run(root, ["sugarcrepe", "winoground"]).results
    assert capsys.readouterr() == ("", "")
    evaluate(model, "winoground", root, tokenizer=model.tokenize, preprocess=model.preprocess, progress=True)
    assert capsys.readouterr().out == ""  # the bar goes to stderr


def test_a_wrapped_model_is_unwrapped(root):
    inner = BagOfColours()
    results = evaluate(
        nn.DataParallel(inner),
        ["winoground"],
        root,
        tokenizer=inner.tokenize,
        preprocess=inner.preprocess,
        progress=False,
    )
    assert results == run(root, ["winoground"]).results


def test_missing_files_are_reported_and_the_rest_scored(tmp_path):
    write_sugarcrepe(tmp_path)
    (tmp_path / "sugarcrepe" / "add_att.json").unlink()
    (tmp_path / "sugarcrepe" / "swap_obj.json").unlink()
    report = run(tmp_path, ["sugarcrepe"])
    assert report.missing == {"sugarcrepe": ["sugarcrepe/swap_obj.json", "sugarcrepe/add_att.json"]}
    expected = bag_reference().results(tmp_path, ["sugarcrepe"])
    assert report.results == pytest.approx(expected, abs=1e-12)
    assert set(report.results) == {
        f"sugarcrepe::{s}" for s in ("replace_obj", "replace_att", "replace_rel", "swap_att", "add_obj")
    }


def test_a_benchmark_without_its_files_shows_the_layout(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"no folder .*sugarcrepe(.|\n)*sugarcrepe/val2017/<filename>"
    ):
        run(tmp_path, ["sugarcrepe"])
    (tmp_path / "aro").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"aro: none of its files(.|\n)*aro/visual_genome_relation.json"
    ):
        run(tmp_path, ["aro"])


def test_a_missing_image_is_named_with_the_layout(tmp_path):
    write_aro(tmp_path)
    (tmp_path / "aro" / "images" / "2331201.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2331201\.jpg \(item \d+\)(.|\n)*aro/images/<image_path>"):
        run(tmp_path, ["aro"])


def _changed(edit):
    """An edit of a loaded JSON file that changes it in place and returns it."""

    def apply(data):
        edit(data)
        return data

    return apply


@pytest.mark.parametrize(
    "name, file, edit, message",
    [
        (
            "sugarcrepe",
            "swap_att.json",
            _changed(lambda d: d["3"].pop("negative_caption")),
            r"swap_att\.json, item 3: missing field 'negative_caption'",
        ),
        (
            "aro",
            "visual_genome_relation.json",
            _changed(lambda d: d[2].update(bbox_w="wide")),
            r"visual_genome_relation\.json, item 2: field 'bbox_w' must be int or float",
        ),
        (
            "aro",
            "visual_genome_relation.json",
            _changed(lambda d: d[4].update(bbox_h=0)),
            r"visual_genome_relation\.json, item 4: the box has no area",
        ),
        (
            "aro",
            "visual_genome_attribution.json",
            _changed(lambda d: d[0].update(attributes=["red"])),
            r"visual_genome_attribution\.json, item 0: 'attributes' must be two strings",
        ),
        (
            "whatsup",
            "coco_qa_two_obj.json",
            _changed(lambda d: d.__setitem__(1, {"id": 3})),
            r"coco_qa_two_obj\.json, item 1: expected a list with an entry 0",
        ),
        (
            "whatsup",
            "vg_qa_one_obj.json",
            _changed(lambda d: d[0].__setitem__(0, "img7")),
            r"vg_qa_one_obj\.json, item 0: the image id must be a number",
        ),
        (
            "whatsup",
            "controlled_clevr_dataset.json",
            _changed(lambda d: d[0].update(caption_options=["one"])),
            r"controlled_clevr_dataset\.json, item 0: 'caption_options' must be 2\+ captions",
        ),
        (
            "valse",
            "plurals.json",
            _changed(lambda d: d["plurals_1"].update(foil="")),
            r"plurals\.json, item plurals_1: field 'foil' is empty",
        ),
        (
            "valse",
            "foil-it.json",
            _changed(lambda d: d["foil-it_0"].pop("mturk")),
            r"foil-it\.json, item foil-it_0: missing field 'mturk'",
        ),
        ("sugarcrepe", "add_obj.json", list, r"add_obj\.json: expected a JSON object, got list"),
        (
            "spec",
            "count/text2image.json",
            _changed(lambda d: d[1].update(label=4)),
            r"text2image\.json, item 1: 'label' 4 is not an index of its 4 keys",
        ),
        (
            "spec",
            "existence/image2text.json",
            _changed(lambda d: d[0].update(keys=["one caption"])),
            r"image2text\.json, item 0: 'keys' must be 2\+ captions",
        ),
        (
            "imagecode",
            "valid_data.json",
            _changed(lambda d: d["open-images-1815_f91d6f546e63f20d"].update({"x": "y"})),
            r"valid_data\.json, item open-images-1815_f91d6f546e63f20d/x: 'x' is not an index of the set's "
            r"10 images",
        ),
        (
            "coco_karpathy",
            "coco_karpathy_test.json",
            _changed(lambda d: d[5].update(caption=[])),
            r"coco_karpathy_test\.json, item 5: the image has no captions",
        ),
        (
            "flickr30k",
            "dataset_flickr30k.json",
            _changed(lambda d: d["images"][2]["sentences"][1].pop("raw")),
            r"dataset_flickr30k\.json, item 2, sentence 1: missing field 'raw'",
        ),
    ],
)
def test_a_malformed_item_is_named(root, tmp_path, name, file, edit, message):
    shutil.copytree(root / name, tmp_path / name)
    path = tmp_path / name / file
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(ValueError, match=message):
        run(tmp_path, [name])


def test_a_malformed_winoground_line_is_named(root, tmp_path):
    shutil.copytree(root / "winoground", tmp_path / "winoground")
    path = tmp_path / "winoground" / "examples.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:-1]
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"examples\.jsonl, line 2: not valid JSON"):
        run(tmp_path, ["winoground"])
    lines[1] = json.dumps({"id": 1, "caption_0": "a", "caption_1": "b", "image_0": "ex_1_img_0"})
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"examples\.jsonl, item 1 \(line 2\): missing field 'image_1'"):
        run(tmp_path, ["winoground"])


def test_image_roots_override_the_layout(root, tmp_path):
    shutil.copytree(root / "sugarcrepe", tmp_path / "sugarcrepe")
    shutil.move(tmp_path / "sugarcrepe" / "val2017", tmp_path / "coco_val2017")
    shutil.copytree(root / "whatsup", tmp_path / "whatsup")
    shutil.move(tmp_path / "whatsup" / "vg_images", tmp_path / "vg")
    image_roots = {
        "sugarcrepe": tmp_path / "coco_val2017",
        "whatsup::VG_QA_ONE": str(tmp_path / "vg"),
        "whatsup::VG_QA_TWO": tmp_path / "vg",
    }
    report = run(tmp_path, ["sugarcrepe", "whatsup"], image_roots=image_roots)
    assert report.results == run(root, ["sugarcrepe", "whatsup"]).results
    with pytest.raises(FileNotFoundError, match="vg_images"):
        run(tmp_path, ["whatsup"], image_roots={"whatsup::VG_QA_ONE": tmp_path / "vg"})


def test_zeroshot_classnames_must_match_the_class_folders(root, tmp_path):
    shutil.copytree(root / "zeroshot", tmp_path / "zeroshot")
    (tmp_path / "zeroshot" / "colours" / "classnames.txt").write_text("blue\ngreen\n")
    with pytest.raises(ValueError, match=r"classnames\.txt: 2 class names for 3 class folders"):
        run(tmp_path, ["zeroshot"])
    (tmp_path / "zeroshot" / "colours" / "classnames.txt").write_text("blue\ngreen\nred\n")
    (tmp_path / "zeroshot" / "colours" / "templates.txt").write_text("a photo\n")
    with pytest.raises(ValueError, match=r"templates\.txt, line 1: the template 'a photo' has no \{\}"):
        run(tmp_path, ["zeroshot"])


def test_bad_arguments(root):
    model = BagOfColours()
    with pytest.raises(ValueError, match="unknown benchmark 'eqben'; known: sugarcrepe, aro"):
        run(root, ["eqben"])
    with pytest.raises(TypeError, match="needs tokenizer= and preprocess="):
        evaluate(model, ["winoground"], root, tokenizer=model.tokenize)
    with pytest.raises(TypeError, match="has no encode_image / encode_text"):
        evaluate(nn.Linear(2, 2), ["winoground"], root, tokenizer=model.tokenize, preprocess=model.preprocess)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        run(root, ["winoground"], batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device=cuda but the model's parameters are on cpu"):
            run(root, ["winoground"], device="cuda")


def test_a_processor_needs_a_transformers_model(root):
    pytest.importorskip("transformers")
    with pytest.raises(
        TypeError, match="processor= is for a transformers CLIPModel or SiglipModel, got BagOfColours"
    ):
        evaluate(BagOfColours(), ["winoground"], root, processor=object())
    with pytest.raises(
        TypeError, match="pass processor= for a transformers model, or tokenizer= and preprocess="
    ):
        evaluate(BagOfColours(), ["winoground"], root, processor=object(), tokenizer=len)


def test_ties_count_as_wrong_and_class_embeddings_are_normalised(tmp_path):
    """Results worked out by hand for ``BagOfColours``:

    * Winoground: example 0 has two identical images and two captions naming the same colours, so
      every comparison ties; example 1 is plainly right. Text, image and group: 1/2.
    * Retrieval: two identical red images, each with a red caption, and a blue one: the red
      captions and images tie, so R@1 is 1/3 both ways.
    * Zero-shot ``ties``: two classes with the same name tie for their images: top-1 1/3.
    * Zero-shot ``norms``: with these templates the brown image scores 0.974 for "brown" and
      0.979 for "red" once each class's mean prompt embedding is normalised (0.962 and 0.944
      without): top-1 1/2.
    """
    wino = tmp_path / "winoground"
    for name, colour in (
        ("ex_0_img_0", "red"),
        ("ex_0_img_1", "red"),
        ("ex_1_img_0", "red"),
        ("ex_1_img_1", "blue"),
    ):
        solid(wino / "images" / f"{name}.png", colour)
    examples = [("a red cat on a blue dog", "a blue cat on a red dog"), ("a red cat", "a blue dog")]
    lines = [
        json.dumps(
            {
                "id": i,
                "caption_0": c0,
                "caption_1": c1,
                "image_0": f"ex_{i}_img_0",
                "image_1": f"ex_{i}_img_1",
            }
        )
        for i, (c0, c1) in enumerate(examples)
    ]
    (wino / "examples.jsonl").write_text("\n".join(lines))

    coco = tmp_path / "coco_karpathy"
    for name, colour in (("a.jpg", "red"), ("b.jpg", "red"), ("c.jpg", "blue")):
        solid(coco / name, colour)
    captions = {"a.jpg": ["a red cat"], "b.jpg": ["a red dog"], "c.jpg": ["a blue car"]}
    (coco / "coco_karpathy_test.json").write_text(
        json.dumps([{"image": k, "caption": v} for k, v in captions.items()])
    )

    zeroshot = tmp_path / "zeroshot"
    for cls, colour in (("a", "red"), ("b", "red"), ("c", "blue")):
        solid(zeroshot / "ties" / cls / "0.png", colour)
    (zeroshot / "ties" / "classnames.txt").write_text("red\nred\nblue\n")
    for cls in ("brown", "red"):
        solid(zeroshot / "norms" / cls / "0.png", cls)
    (zeroshot / "norms" / "templates.txt").write_text("a photo of a {}.\n{} paint\na {} and white swatch\n")

    results = run(tmp_path, ["winoground", "coco_karpathy", "zeroshot"]).results
    half, third = pytest.approx(1 / 2, abs=1e-12), pytest.approx(1 / 3, abs=1e-12)
    assert results == {
        "winoground::text": half,
        "winoground::image": half,
        "winoground::group": half,
        "coco_karpathy::i2t/R@1": third,
        "coco_karpathy::i2t/R@5": 1.0,
        "coco_karpathy::i2t/R@10": 1.0,
        "coco_karpathy::t2i/R@1": third,
        "coco_karpathy::t2i/R@5": 1.0,
        "coco_karpathy::t2i/R@10": 1.0,
        "zeroshot::norms": half,
        "zeroshot::ties": third,
    }


def test_item_scores_pad_with_minus_infinity():
    """Items with fewer images or texts than the longest get -inf there, which never wins."""

    class Lookup:  # Features' interface over fixed vectors
        def images(self, refs):
            return F.normalize(
                torch.tensor([[1.0, 0.0], [0.0, 1.0]])[[int(r.path.name) for r in refs]], dim=-1
            )

        def texts(self, texts):
            return F.normalize(torch.tensor([[float(t), 1.0] for t in texts]), dim=-1)

    items = [
        Item((ImageRef(Path("0")),), ("1", "2", "3"), "three captions"),
        Item((ImageRef(Path("0")), ImageRef(Path("1"))), ("4",), "two images"),
    ]
    scores = item_scores(Lookup(), items)
    assert scores.shape == (2, 2, 3)
    assert torch.isinf(scores[0, 1]).all() and torch.isinf(scores[1, :, 1:]).all()
    assert torch.isfinite(scores[0, 0]).all() and torch.isfinite(scores[1, :, 0]).all()


def test_a_missing_image_set_or_mmvp_row_is_named(root, tmp_path):
    shutil.copytree(root / "imagecode", tmp_path / "imagecode")
    shutil.rmtree(tmp_path / "imagecode" / "image-sets" / "MSR-VTT-videoTrainValVideo_video2044-shot1_0")
    with pytest.raises(
        FileNotFoundError,
        match=r"MSR-VTT-videoTrainValVideo_video2044-shot1_0: the image set(.|\n)*"
        r"imagecode/image-sets/<image set>/img<k>\.jpg",
    ):
        run(tmp_path, ["imagecode"])
    shutil.copytree(root / "mmvp_vlm", tmp_path / "mmvp_vlm")
    questions = tmp_path / "mmvp_vlm" / "Questions.csv"
    lines = questions.read_text().splitlines()
    questions.write_text("\n".join(lines[:-1]))
    with pytest.raises(
        ValueError, match=r"Questions\.csv: 269 statements; MMVP-VLM has 15 pairs for each of its 9"
    ):
        run(tmp_path, ["mmvp_vlm"])
    lines[40] = "39,Presence"
    questions.write_text("\n".join(lines))
    with pytest.raises(
        ValueError, match=r"Questions\.csv, item on lines 40-41: expected a row 'question id,type,statement'"
    ):
        run(tmp_path, ["mmvp_vlm"])


def test_a_malformed_crepe_row_is_named(root, tmp_path):
    shutil.copytree(root / "crepe", tmp_path / "crepe")
    path = tmp_path / "crepe" / "prod_hard_negatives" / "swap" / "prod_vg_hard_negs_swap_complexity_7.csv"
    rows = list(csv.DictReader(path.open()))

    def write_with(**changes):
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows([rows[0], {**rows[1], **changes}, *rows[2:]])

    write_with(hard_negs="not a list")
    with pytest.raises(
        ValueError, match=r"complexity_7\.csv, item on line 3: 'hard_negs' must be a list \(or set\) of"
    ):
        run(tmp_path, ["crepe"])
    write_with(hard_negs="{'a red cat', 2}")  # a set, as CREPE publishes some, but not of captions
    with pytest.raises(ValueError, match=r"line 3: 'hard_negs' must be a list \(or set\) of captions"):
        run(tmp_path, ["crepe"])
    write_with(width="0")
    with pytest.raises(ValueError, match=r"complexity_7\.csv, item on line 3: the box has no area"):
        run(tmp_path, ["crepe"])
    write_with(x="left")
    with pytest.raises(ValueError, match=r"complexity_7\.csv, item on line 3: 'x' must be a number"):
        run(tmp_path, ["crepe"])


def test_images_load_in_worker_processes(root):
    names = ["aro", "winoground"]
    assert run(root, names, num_workers=2, batch_size=8).results == run(root, names).results


def _break(path: Path, how: str) -> None:
    """Make the image file at ``path`` unreadable the ways downloads and unzips do."""
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":  # a partial download: PIL opens it, and fails to decode it
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:  # a folder where the file belongs
        path.unlink()
        path.mkdir()


@pytest.mark.parametrize(
    "how, reason",
    [
        ("empty", "UnidentifiedImageError: cannot identify image file"),
        ("truncated", "OSError: image file is truncated"),
        ("directory", "a directory, not an image file"),
    ],
)
def test_an_unreadable_image_is_named_before_the_first_forward_pass(root, tmp_path, how, reason):
    """The bad image is in the last benchmark scored, and nothing has been encoded when the error
    comes; the message is one line naming the file, the item and the flag that skips it."""
    for name in ("winoground", "sugarcrepe"):
        shutil.copytree(root / name, tmp_path / name)
    big = tmp_path / "sugarcrepe" / "val2017" / "000000000285.jpg"
    solid(big, "red", size=(320, 240))  # a JPEG long enough that half of it is a truncated image
    _break(big, how)
    model = BagOfColours()
    for workers in (0, 2):
        with pytest.raises(ImageError) as error:
            run(tmp_path, ["winoground", "sugarcrepe"], model=model, num_workers=workers)
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(f"sugarcrepe: cannot read the image {big} (item ")
        assert reason in message and "1 unreadable image(s) in all" in message
        assert "--skip-bad-images" in message
        assert model.images_encoded == 0 and model.text_batches == []


def test_bad_images_can_be_skipped_and_are_reported(root, tmp_path):
    """With ``skip_bad_images``, the items of an absent or unreadable image are left out, their
    images listed in ``missing`` and the items counted in ``skipped``; the rest scores as the loop
    does on the files without those items."""
    shutil.copytree(root / "sugarcrepe", tmp_path / "sugarcrepe")
    shutil.copytree(root / "winoground", tmp_path / "winoground")
    folder = tmp_path / "sugarcrepe"
    _break(folder / "val2017" / "000000000285.jpg", "empty")
    (folder / "val2017" / "000000000632.jpg").unlink()
    _break(tmp_path / "winoground" / "images" / "ex_3_img_1.png", "directory")
    report = run(tmp_path, ["sugarcrepe", "winoground"], skip_bad_images=True)

    assert report.missing == {
        "sugarcrepe": ["sugarcrepe/val2017/000000000285.jpg", "sugarcrepe/val2017/000000000632.jpg"],
        "winoground": ["winoground/images/ex_3_img_1.png"],
    }
    bad = {"000000000285.jpg", "000000000632.jpg"}
    expected_skipped = {}
    for subset in SUGARCREPE_SUBSETS:  # the loop's files: the same, less the skipped items
        path = folder / f"{subset}.json"
        data = json.loads(path.read_text())
        kept = {k: v for k, v in data.items() if v["filename"] not in bad}
        if len(kept) < len(data):
            expected_skipped[f"sugarcrepe::{subset}"] = len(data) - len(kept)
        if kept:
            path.write_text(json.dumps(kept))
        else:
            path.unlink()
    assert report.skipped == {**expected_skipped, "winoground": 1}
    assert report.counts["winoground"] == 5
    examples = tmp_path / "winoground" / "examples.jsonl"
    examples.write_text(
        "\n".join(line for line in examples.read_text().splitlines() if '"id": 3,' not in line)
    )
    (tmp_path / "winoground" / "images" / "ex_3_img_1.png").rmdir()
    expected = bag_reference().results(tmp_path, ["sugarcrepe", "winoground"])
    assert set(report.results) == set(expected)
    for key, value in expected.items():
        assert report.results[key] == pytest.approx(value, abs=1e-12), key


def test_a_directory_in_a_files_place_is_named(root, tmp_path):
    shutil.copytree(root / "sugarcrepe", tmp_path / "sugarcrepe")
    (tmp_path / "sugarcrepe" / "swap_obj.json").unlink()
    (tmp_path / "sugarcrepe" / "swap_obj.json").mkdir()  # e.g. what an unzip left
    with pytest.raises(ValueError) as error:
        run(tmp_path, ["sugarcrepe"])
    assert str(error.value) == (
        f"{tmp_path / 'sugarcrepe' / 'swap_obj.json'}: a directory where sugarcrepe expects its file "
        "swap_obj.json"
    )
    (tmp_path / "aro").write_text("")  # a file where a benchmark's folder belongs
    with pytest.raises(FileNotFoundError, match=r"aro: a file where its folder belongs"):
        run(tmp_path, ["aro"])


def test_each_image_file_is_decoded_once_per_process(root, tmp_path, monkeypatch):
    """A trainer scores the same files every epoch: a file that decoded is not decoded again
    while its size and modification time stay the same."""
    from fsc_losses.eval import images

    shutil.copytree(root / "sugarcrepe", tmp_path / "sugarcrepe")
    decoded = []
    check = images._Decode.__getitem__
    monkeypatch.setattr(images._Decode, "__getitem__", lambda self, i: decoded.append(i) or check(self, i))
    run(tmp_path, ["sugarcrepe"])
    assert len(decoded) == 5  # the five images SugarCrepe's seven files share
    run(tmp_path, ["sugarcrepe"])
    assert len(decoded) == 5
    solid(tmp_path / "sugarcrepe" / "val2017" / "000000000285.jpg", "blue", size=(20, 10))
    run(tmp_path, ["sugarcrepe"])
    assert len(decoded) == 6
