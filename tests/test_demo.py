"""The demo: its synthetic world, and one quick end-to-end run of ``python -m fsc_losses.demo``."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("open_clip")

from fsc_losses.demo import world  # noqa: E402
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


def test_quick_run(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO)) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "fsc_losses.demo", "--quick", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    payload = json.loads((tmp_path / "results.json").read_text())
    methods = ["pretrained", "clip", "global_hn", "global_hn_scr", "fsc_clip"]
    metrics = ["swap", "replace", "shuffle", "unseen_comp", "zero_shot", "i2t_r1", "t2i_r1"]
    assert list(payload["results"]) == methods == list(payload["methods"])
    assert list(payload["metrics"]) == metrics
    for method in methods:
        row = payload["results"][method]
        assert list(row) == metrics
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in row.values()), row
    assert all(payload["counts"][m] > 0 for m in metrics)
    assert payload["config"]["quick"] is True
    for method in methods:
        assert payload["methods"][method]["label"] in proc.stdout

    png = tmp_path / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 200
