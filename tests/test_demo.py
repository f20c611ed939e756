"""The demo: its synthetic world, its evaluation, its reports, and one quick end-to-end run of
``python -m fsc_losses.demo`` with two seeds."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("open_clip")

from fsc_losses.demo import experiment, report, world  # noqa: E402
from fsc_losses.demo.__main__ import config_overrides, parse_args  # noqa: E402
from fsc_losses.negatives import make_hard_negatives  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
_SIZE_OF_WORD = {w: size for size, (words, _) in world.SIZES.items() for w in words}
_REL_OF_PHRASE = {p: rel for rel, phrases in world.RELATIONS.items() for p in phrases}
_OBJECT = r"a (\w+) (\w+) (\w+)"
_CAPTION = re.compile(rf"^{_OBJECT}(?: ({'|'.join(_REL_OF_PHRASE)}) {_OBJECT})?$")


def _nearest_colour(rgb) -> str:
    return min(world.COLOURS, key=lambda c: np.sum((np.asarray(world.COLOURS[c]) - rgb) ** 2))


def test_scenes_are_deterministic():
    a = world.sample_scenes(40, "train", seed=3, image_size=SIZE)
    b = world.sample_scenes(40, "train", seed=3, image_size=SIZE)
    assert a == b
    np.testing.assert_array_equal(world.render(a, SIZE), world.render(b, SIZE))
    assert world.sample_scenes(10, "train", seed=3, image_size=SIZE) == a[:10]
    assert world.sample_scenes(40, "train", seed=4, image_size=SIZE) != a
    assert world.sample_scenes(40, "seen", seed=3, image_size=SIZE) != a


def test_held_out_pairs_never_in_training():
    pairs = lambda scenes: {(o.colour, o.shape) for s in scenes for o in s.objects}  # noqa: E731
    train = world.sample_scenes(2000, "train", seed=0, image_size=SIZE)
    assert not pairs(train) & world.HELD_OUT
    # Every other pair is trained, and every colour and shape on its own.
    assert pairs(train) == {(c, s) for c in world.COLOURS for s in world.SHAPES} - world.HELD_OUT
    assert not pairs(world.sample_scenes(500, "seen", seed=0, image_size=SIZE)) & world.HELD_OUT
    unseen = world.sample_scenes(500, "unseen", seed=0, image_size=SIZE)
    assert all(s.has_unseen_pair for s in unseen)
    assert pairs(unseen) >= world.HELD_OUT


@pytest.mark.parametrize("split", world.SPLITS)
def test_captions_describe_the_drawn_scene(split):
    scenes = world.sample_scenes(300, split, seed=1, image_size=SIZE)
    images = world.render(scenes, SIZE).astype(int)
    assert {len(s.objects) for s in scenes} == {1, 2}
    for scene, image in zip(scenes, images, strict=True):
        match = _CAPTION.match(scene.caption)
        assert match, scene.caption
        words = match.groups()
        named = [words[0:3]] if words[3] is None else [words[0:3], words[4:7]]
        assert len(named) == len(scene.objects)
        covered = np.zeros((SIZE, SIZE), dtype=bool)
        for (size_word, colour, shape), obj in zip(named, scene.objects, strict=True):
            assert (_SIZE_OF_WORD[size_word], colour, shape) == (obj.size, obj.colour, obj.shape)
            mask = world.shape_mask(obj, SIZE)
            assert mask.sum() >= 9 and not (mask & covered).any()
            covered |= mask
            # Every pixel of the object reads as the caption's colour, the background as none.
            assert {_nearest_colour(px) for px in image[mask]} == {colour}
            if shape != "ring":  # a ring's centre is background
                assert _nearest_colour(image[int(obj.y), int(obj.x)]) == colour
        assert np.abs(image[~covered] - np.asarray(scene.background)).max() < 40
        if words[3] is not None:
            first, second = scene.objects
            dx, dy = second.x - first.x, second.y - first.y  # image y grows downwards
            if abs(dx) > abs(dy):
                expected = "left of" if dx > 0 else "right of"
            else:
                expected = "above" if dy > 0 else "below"
            assert _REL_OF_PHRASE[words[3]] == scene.relation == expected


def test_world_vocabulary_and_package_negatives():
    captions = [s.caption for s in world.sample_scenes(500, "train", seed=2, image_size=SIZE)]
    assert all(set(c.split()) <= world.VOCABULARY for c in captions)
    negatives, valid = make_hard_negatives(captions, seed=0)
    swap, replace, shuffle = (negatives[k * len(captions) : (k + 1) * len(captions)] for k in range(3))
    # Swaps and shuffles reuse the caption's words; a swap exists whenever two objects differ.
    for kind in (swap, shuffle):
        assert all(set(n.split()) <= world.VOCABULARY for n in kind if n)
    assert valid[:, 2].all() and valid[:, 1].all()
    # Sizes and relations are replaced by their opposites, which the world also uses.
    in_world = sum(set(n.split()) <= world.VOCABULARY for n in replace)
    assert in_world > 0.3 * len(captions)


def test_parse_caption_reads_every_caption_and_rejects_other_text():
    for split in world.SPLITS:
        for scene in world.sample_scenes(300, split, seed=5, image_size=SIZE):
            objects = tuple((o.size, o.colour, o.shape) for o in scene.objects)
            assert world.parse_caption(scene.caption) == (objects, scene.relation), scene.caption
    for text in (
        "",
        "a small red",
        "small red square a",
        "a small red square a big blue circle",
        "a small red square left of",
        "a small red square on a big blue circle",  # "on" alone is not a world relation
        "a small turquoise square",
        "a small red square left of a big blue circle left of a small red ring",
        "red square a small",
    ):
        assert world.parse_caption(text) is None, text


def test_meaning_is_shared_by_exactly_the_paraphrases():
    def m(text):
        return world.meaning(*world.parse_caption(text))

    assert m("a small red square to the left of a big blue circle") == m(
        "a huge blue circle right of a tiny red square"
    )
    assert m("a tiny red ring on top of a big blue cross") == m(
        "a giant blue cross underneath a small red ring"
    )
    assert m("a small red square left of a big blue circle") != m(
        "a small red square right of a big blue circle"
    )
    assert m("a small red square above a big blue circle") != m(
        "a small red square left of a big blue circle"
    )
    assert m("a small red square left of a big blue circle") != m(
        "a small blue square left of a big red circle"
    )
    assert m("a little green ring") == m("a tiny green ring") != m("a big green ring")


def _scene(caption: str) -> world.Scene:
    objects, relation = world.parse_caption(caption)
    return world.Scene(
        tuple(world.WorldObject(c, s, size, 0.0, 0.0, 1.0, (0, 0, 0)) for size, c, s in objects),
        relation,
        caption,
        (0, 0, 0),
        0,
    )


@pytest.mark.parametrize(
    "caption, negative, test",
    [
        # binding: the same sizes, colours and shapes, on the wrong objects
        (
            "a small red square left of a big blue circle",
            "a small blue square left of a big red circle",
            "binding",
        ),
        (
            "a small red square left of a big blue circle",
            "a big red square left of a small blue circle",
            "binding",
        ),
        (
            "a small red square left of a big blue circle",
            "a small red circle left of a big blue square",
            "binding",
        ),
        # relation: the same objects, the other way round (a swap between objects that differ in
        # one attribute only is one, too)
        (
            "a small red square left of a big blue circle",
            "a small red square right of a big blue circle",
            "relation",
        ),
        (
            "a small red square above a small blue square",
            "a small blue square above a small red square",
            "relation",
        ),
        (
            "a small red square over a big blue circle",
            "a small red square under a big blue circle",
            "relation",
        ),
        # attribute: a value the scene does not have
        (
            "a small red square left of a big blue circle",
            "a small green square left of a big blue circle",
            "attribute",
        ),
        (
            "a small red square left of a big blue circle",
            "a small red square left of a small blue circle",
            "attribute",
        ),
        ("a tiny red square", "a tiny red ring", "attribute"),
        # shuffle: the same words outside the grammar
        (
            "a small red square left of a big blue circle",
            "left of a big a small red square blue circle",
            "shuffle",
        ),
        ("a tiny red square", "red square a tiny", "shuffle"),
        # not counted: an unknown word, a phrase outside the grammar, a true description
        (
            "a small red square left of a big blue circle",
            "a small turquoise square left of a big blue circle",
            None,
        ),
        ("a small red square under a big blue circle", "a small red square on a big blue circle", None),
        ("a big red ring left of a big red ring", "a big red ring right of a big red ring", None),
        (
            "a small red square left of a big blue circle",
            "a big blue circle right of a small red square",
            None,
        ),
    ],
)
def test_negative_test_names_what_a_negative_gets_wrong(caption, negative, test):
    assert experiment.negative_test(_scene(caption), negative) == test


def test_benchmark_counts_every_test_and_only_valid_negatives():
    config = experiment.DemoConfig.quick(eval_scenes=400)
    tokenizer = experiment.Tokenizer()
    bench = experiment.make_benchmark(config, tokenizer)
    counts = experiment.counts(bench)
    assert all(counts[test] > 20 for test in experiment.TESTS), counts
    captions = [s.caption for s in bench.data.scenes]
    _, valid = make_hard_negatives(captions, seed=config.seed + 1)
    assert not ((bench.neg_test >= 0) & ~valid).any()
    # swaps test binding or relations, replaces relations or attributes, shuffles are shuffles
    swap, replace, shuffle = bench.neg_test.T
    names = list(experiment.TESTS)
    assert set(swap[swap >= 0].tolist()) == {names.index("binding"), names.index("relation")}
    assert set(replace[replace >= 0].tolist()) == {names.index("relation"), names.index("attribute")}
    assert names.index("shuffle") in shuffle.tolist()


def test_finetune_negatives_never_name_a_held_out_pair():
    config = experiment.DemoConfig.quick(finetune_scenes=600)
    finetune_set = experiment.make_finetune_set(config, experiment.Tokenizer())
    captions = [s.caption for s in finetune_set.data.scenes]
    negatives, valid = make_hard_negatives(captions, seed=config.seed)
    n = len(captions)
    dropped = 0
    for k in range(valid.shape[1]):
        for b in range(n):
            names_pair = any(f" {c} {s}" in f" {negatives[k * n + b]}" for c, s in world.HELD_OUT)
            assert bool(finetune_set.neg_valid[b, k]) == (bool(valid[b, k]) and not names_pair)
            dropped += bool(valid[b, k]) and names_pair
    assert dropped > 0.05 * n  # swaps make them often


def test_tokenizer_renumbers_bpe_ids_one_to_one():
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = experiment.Tokenizer()
    bpe = SimpleTokenizer(context_length=experiment.CONTEXT_LENGTH)
    captions = [s.caption for s in world.sample_scenes(300, "unseen", seed=0, image_size=SIZE)]
    negatives, _ = make_hard_negatives(captions, seed=0)
    texts = captions + [n for n in negatives if n]
    ids, bpe_ids = tokenizer(texts), bpe(texts)
    assert ids.shape == bpe_ids.shape and (ids < tokenizer.vocab_size).all() and (ids >= 0).all()
    assert ((ids == 0) == (bpe_ids == 0)).all()
    pairs = set(zip(ids.flatten().tolist(), bpe_ids.flatten().tolist(), strict=True))
    assert len({i for i, _ in pairs}) == len(pairs) == len({b for _, b in pairs})  # a bijection
    # open_clip pools the text tower at the largest id: it must be end-of-text.
    assert (ids.argmax(1) == (bpe_ids == bpe.eot_token_id).int().argmax(1)).all()
    assert ids.max() == tokenizer.eot_id == tokenizer.vocab_size - 1
    with pytest.raises(ValueError, match="outside the demo's vocabulary"):
        tokenizer(["a small red dog"])
    with pytest.raises(ValueError, match="more than"):
        tokenizer([" ".join(["a small red square"] * 5)])


def test_summary_and_differences_over_seeds():
    rng = np.random.default_rng(0)
    methods, metrics = ["clip", "global_hn", "fsc_clip"], ["binding", "zero_shot"]
    per_seed = [{m: {k: float(rng.random()) for k in metrics} for m in methods} for _ in range(3)]
    summary = report.summarize(per_seed)
    differences = report.differences(per_seed, baseline="clip")
    assert list(summary) == methods and list(differences) == methods[1:]
    for m in methods:
        for k in metrics:
            values = np.array([run[m][k] for run in per_seed])
            assert summary[m][k]["mean"] == pytest.approx(values.mean())
            assert summary[m][k]["std"] == pytest.approx(values.std(ddof=1))
            if m != "clip":
                delta = values - np.array([run["clip"][k] for run in per_seed])
                assert differences[m][k]["mean"] == pytest.approx(delta.mean())
                assert differences[m][k]["std"] == pytest.approx(delta.std(ddof=1))
    one = report.summarize(per_seed[:1])
    assert one["clip"]["binding"] == {"mean": per_seed[0]["clip"]["binding"], "std": None}
    with pytest.raises(ValueError, match="per_seed"):
        report.summarize([])


def test_summary_table_and_chart_error_bars(tmp_path):
    labels = {"clip": "CLIP", "fsc_clip": "FSC-CLIP"}
    summary = {
        "clip": {"binding": {"mean": 0.8, "std": 0.05}, "zero_shot": {"mean": 0.4, "std": 0.02}},
        "fsc_clip": {"binding": {"mean": 0.85, "std": 0.1}, "zero_shot": {"mean": 0.38, "std": 0.01}},
    }
    table = report.format_summary(summary, labels)
    assert "0.800 ± 0.050" in table and "0.380 ± 0.010" in table
    assert "+0.800 ± 0.050" in report.format_summary(summary, labels, signed=True)
    without = {m: {k: {"mean": v["mean"], "std": None} for k, v in row.items()} for m, row in summary.items()}
    assert "±" not in report.format_summary(without, labels)

    from PIL import Image

    report.draw_chart(tmp_path / "bars.png", summary, labels, "t")
    report.draw_chart(tmp_path / "plain.png", without, labels, "t")
    with Image.open(tmp_path / "bars.png") as a, Image.open(tmp_path / "plain.png") as b:
        bars, plain = (np.asarray(im, dtype=int).sum(-1) for im in (a, b))

    # The chart's layout: the plot spans x 60..1180 and y 90..510 (value 1 to 0); two metric groups
    # of 560 px, bars 224 px wide from 10 % into the group. The first bar (CLIP, binding, 0.8 ±
    # 0.05) has its centre at x = 60 + 56 + 112 = 228; its error bar is black from 0.85 to 0.75.
    def rows(high, low):  # the pixel rows strictly inside the span
        return slice(math.ceil(90 + 420 * (1 - high)), math.floor(90 + 420 * (1 - low)) + 1)

    assert (bars[rows(0.85, 0.75), 228] == 0).all()
    assert (plain[rows(0.85, 0.75), 228] != 0).any()
    # The second group's second bar (FSC-CLIP, zero-shot, 0.38 ± 0.01), centre x = 60 + 560 + 56 + 336.
    assert (bars[rows(0.39, 0.37), 1012] == 0).all()


def test_command_line_overrides():
    args = parse_args(["--set", "finetune_lr=3e-4", "--set", "text_layers=4", "--finetune-steps", "50"])
    overrides = config_overrides(args, experiment.DemoConfig)
    assert overrides == {"finetune_lr": 3e-4, "text_layers": 4, "finetune_steps": 50}
    assert experiment.DemoConfig(**overrides).text_layers == 4
    for bad in (
        ["--set", "nonsense=1"],
        ["--set", "finetune_lr"],
        ["--set", "text_layers=2.5"],
        ["--set", "seed=3"],
    ):
        with pytest.raises(SystemExit):
            config_overrides(parse_args(bad), experiment.DemoConfig)
    with pytest.raises(SystemExit):
        parse_args(["--seeds", "0"])


@pytest.mark.slow
def test_quick_run(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO)) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "fsc_losses.demo", "--quick", "--seeds", "2", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    payload = json.loads((tmp_path / "results.json").read_text())
    methods = ["pretrained", "clip", "global_hn", "global_hn_scr", "fsc_clip"]
    metrics = [*experiment.TESTS, "unseen_comp", "zero_shot", "i2t_r1", "t2i_r1"]
    assert payload["seeds"] == [0, 1]
    assert list(payload["results"]) == ["0", "1"]
    assert list(payload["methods"]) == methods
    assert list(payload["metrics"]) == metrics
    for seed in ("0", "1"):
        assert list(payload["results"][seed]) == methods
        for method in methods:
            row = payload["results"][seed][method]
            assert list(row) == metrics
            assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in row.values()), row
        assert all(payload["counts"][seed][m] > 0 for m in metrics)
    # The two seeds are different runs, and the summary is their mean and spread.
    assert payload["results"]["0"] != payload["results"]["1"]
    for method in methods:
        for metric in metrics:
            values = [payload["results"][seed][method][metric] for seed in ("0", "1")]
            stats = payload["summary"][method][metric]
            assert stats["mean"] == pytest.approx(np.mean(values))
            assert stats["std"] == pytest.approx(np.std(values, ddof=1))
    assert list(payload["differences_from_clip"]) == [m for m in methods if m != "clip"]
    assert payload["config"]["quick"] is True
    for method in methods:
        assert payload["methods"][method]["label"] in proc.stdout
    assert "mean ± std over 2 seeds" in proc.stdout

    png = tmp_path / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 200
