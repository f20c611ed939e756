"""A tiny synthetic compositional world: coloured shapes, their sizes and spatial relations.

A scene holds one or two objects. Each object has a colour, a shape and a size; two objects are
placed side by side or one over the other, and the caption names both with the relation between
them::

    a small red square to the left of a big blue circle
    a tiny green ring

Captions use several words for the same size or relation ("small" / "little" / "tiny",
"above" / "over" / "on top of"), chosen at random, so that the replacements the package's
hard-negative generator makes ("small" -> "large", "above" -> "below") stay inside the world's
vocabulary.

Some colour-shape pairs (:data:`HELD_OUT`) never appear in the ``"train"`` split; the
``"unseen"`` split puts at least one of them in every scene. Everything is a pure function of the
seed: the same ``(n, split, seed)`` gives the same scenes, and a scene always renders to the same
pixels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "COLOURS",
    "HELD_OUT",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "VOCABULARY",
    "Scene",
    "WorldObject",
    "meaning",
    "parse_caption",
    "render",
    "sample_scenes",
    "shape_mask",
]

# Far enough apart that a pixel's nearest palette colour is its object's colour despite the jitter.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (45, 185, 70),
    "blue": (55, 90, 235),
    "yellow": (230, 215, 55),
    "purple": (160, 65, 205),
    "white": (235, 235, 235),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross", "ring")
# size -> the words captions use for it, and the object radius as a fraction of the image side.
SIZES: dict[str, tuple[tuple[str, ...], tuple[float, float]]] = {
    "small": (("small", "little", "tiny"), (0.10, 0.13)),
    "large": (("large", "big", "huge", "giant"), (0.17, 0.21)),
}
# relation of the first-named object to the second -> the phrases captions use for it.
RELATIONS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over", "on top of"),
    "below": ("below", "beneath", "underneath", "under"),
}
# One colour per shape and one shape per colour, so that every colour and every shape is still
# seen in training; only the pairing is new at test time.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {("red", "circle"), ("green", "triangle"), ("blue", "cross"), ("yellow", "ring"), ("purple", "square")}
)
SPLITS: tuple[str, ...] = ("train", "seen", "unseen")
VOCABULARY: frozenset[str] = frozenset(
    {"a", *COLOURS, *SHAPES}
    | {w for words, _ in SIZES.values() for phrase in words for w in phrase.split()}
    | {w for phrases in RELATIONS.values() for phrase in phrases for w in phrase.split()}
)

_SIZE_OF_WORD = {word: size for size, (words, _) in SIZES.items() for word in words}
_RELATION_OF_PHRASE = {phrase: rel for rel, phrases in RELATIONS.items() for phrase in phrases}
# relation -> (the relation it is said with in canonical form, whether the objects swap places).
_CANONICAL = {
    "left of": ("left of", False),
    "right of": ("left of", True),
    "above": ("above", False),
    "below": ("above", True),
}

_ALL_PAIRS = tuple(itertools.product(COLOURS, SHAPES))
_SEEN_PAIRS = tuple(p for p in _ALL_PAIRS if p not in HELD_OUT)
_UNSEEN_PAIRS = tuple(sorted(HELD_OUT))
_TWO_OBJECT_RATE = 0.75
# The seed stream of each split, so that the splits never share scenes for the same seed.
_SPLIT_SALT = {"train": 0, "seen": 1, "unseen": 2}


@dataclass(frozen=True)
class WorldObject:
    """One drawn object: its attributes and where it is (pixels, centre and radius)."""

    colour: str
    shape: str
    size: str
    x: float
    y: float
    radius: float
    rgb: tuple[int, int, int]  # the palette colour with this object's jitter


@dataclass(frozen=True)
class Scene:
    """One image's content and its caption.

    ``objects`` are in the order the caption names them; ``relation`` (a key of
    :data:`RELATIONS`) relates the first to the second and is ``None`` for one object.
    """

    objects: tuple[WorldObject, ...]
    relation: str | None
    caption: str
    background: tuple[int, int, int]
    noise_seed: int

    @property
    def has_unseen_pair(self) -> bool:
        return any((o.colour, o.shape) in HELD_OUT for o in self.objects)


def shape_mask(obj: WorldObject, image_size: int) -> np.ndarray:
    """``(image_size, image_size)`` bool mask of the pixels ``obj`` covers."""
    coords = np.arange(image_size) + 0.5  # pixel centres
    dx = coords[None, :] - obj.x
    dy = coords[:, None] - obj.y
    r = obj.radius
    if obj.shape == "square":
        # Shrunk so that a square and a circle of one size cover a similar area.
        return np.maximum(abs(dx), abs(dy)) <= 0.85 * r
    if obj.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if obj.shape == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (0.5 * r) ** 2)
    if obj.shape == "triangle":  # apex up
        return (dy >= -r) & (dy <= 0.8 * r) & (abs(dx) <= 0.65 * (dy + r))
    if obj.shape == "cross":
        arm = 0.35 * r
        return ((abs(dx) <= arm) & (abs(dy) <= r)) | ((abs(dy) <= arm) & (abs(dx) <= r))
    raise ValueError(f"unknown shape {obj.shape!r}")


def render(scenes: list[Scene], image_size: int) -> np.ndarray:
    """Draw scenes as a ``(N, image_size, image_size, 3)`` uint8 array.

    A flat dark background with per-pixel noise (seeded by the scene), each object filled with its
    jittered colour. Objects never overlap, so the drawing order does not matter.
    """
    images = np.empty((len(scenes), image_size, image_size, 3), dtype=np.uint8)
    for i, scene in enumerate(scenes):
        noise = np.random.default_rng(scene.noise_seed).normal(0.0, 6.0, (image_size, image_size, 3))
        canvas = np.asarray(scene.background, dtype=np.float64) + noise
        for obj in scene.objects:
            canvas[shape_mask(obj, image_size)] = obj.rgb
        images[i] = np.clip(canvas, 0, 255).round().astype(np.uint8)
    return images


def sample_scenes(
    n: int, split: str = "train", seed: int = 0, image_size: int = 32, num_objects: int | None = None
) -> list[Scene]:
    """``n`` random scenes of one split.

    Args:
        n: number of scenes.
        split: ``"train"`` (only pairs outside :data:`HELD_OUT`), ``"seen"`` (the same pairs, new
            scenes) or ``"unseen"`` (every scene has at least one held-out colour-shape pair).
        seed: scenes are a pure function of all the arguments; the first ``m`` scenes of a draw of
            ``n > m`` are the draw of ``m``.
        image_size: the side, in pixels, the scenes are laid out for.
        num_objects: 1 or 2 objects in every scene; ``None`` mixes them (a quarter with one).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_objects not in (None, 1, 2):
        raise ValueError(f"num_objects must be 1, 2 or None, got {num_objects!r}")
    rng = np.random.default_rng([seed, _SPLIT_SALT[split], num_objects or 0])
    return [_sample_scene(rng, split, image_size, num_objects) for _ in range(n)]


Attributes = tuple[str, str, str]  # (size, colour, shape): a key of SIZES, of COLOURS, a shape


def parse_caption(text: str) -> tuple[tuple[Attributes, ...], str | None] | None:
    """What a sentence of the world's grammar says, or ``None`` if it is not one.

    Returns the named objects' ``(size, colour, shape)`` in caption order (sizes as keys of
    :data:`SIZES`, whatever word names them) and the relation (a key of :data:`RELATIONS`), or
    ``None`` for one object. Any text a caption, a swap or a replace of a caption can be parses;
    a shuffled caption usually does not.
    """
    words = text.split()
    objects, relation = [], None
    while True:
        if len(words) < 4 or words[0] != "a" or words[1] not in _SIZE_OF_WORD:
            return None
        if words[2] not in COLOURS or words[3] not in SHAPES:
            return None
        objects.append((_SIZE_OF_WORD[words[1]], words[2], words[3]))
        words = words[4:]
        if not words:
            return tuple(objects), relation
        if relation is not None:
            return None
        for length in (4, 3, 2, 1):  # the longest phrase first: "to the left of" before "left of"
            phrase = " ".join(words[:length])
            if phrase in _RELATION_OF_PHRASE:
                relation = _RELATION_OF_PHRASE[phrase]
                words = words[length:]
                break
        else:
            return None


def meaning(objects: tuple[Attributes, ...], relation: str | None) -> tuple:
    """A form of what :func:`parse_caption` returns that two captions share exactly when they
    describe the same scenes: "X right of Y" becomes "Y left of X", "X below Y" "Y above X"."""
    if relation is None:
        return objects
    canonical, flip = _CANONICAL[relation]
    first, second = objects
    return (second, canonical, first) if flip else (first, canonical, second)


def _pick(rng: np.random.Generator, options):
    return options[rng.integers(len(options))]


def _sample_scene(rng: np.random.Generator, split: str, image_size: int, num_objects: int | None) -> Scene:
    count = num_objects or (2 if rng.random() < _TWO_OBJECT_RATE else 1)
    pairs = [_pick(rng, _UNSEEN_PAIRS if split == "unseen" else _SEEN_PAIRS)]
    if count == 2:
        pairs.append(_pick(rng, _ALL_PAIRS if split == "unseen" else _SEEN_PAIRS))
        pairs = [pairs[i] for i in rng.permutation(2)]  # the held-out pair is not always named first
    sizes = [_pick(rng, tuple(SIZES)) for _ in pairs]
    radii = [image_size * rng.uniform(*SIZES[s][1]) for s in sizes]
    if count == 1:
        relation = None
        centres = [tuple(rng.uniform(radii[0] + 1, image_size - radii[0] - 1, size=2))]
    else:
        relation = _pick(rng, tuple(RELATIONS))
        centres = _place_pair(rng, relation, radii, image_size)
    objects = tuple(
        WorldObject(
            colour,
            shape,
            size,
            float(x),
            float(y),
            float(r),
            tuple(int(c) for c in np.clip(np.add(COLOURS[colour], rng.integers(-20, 21, 3)), 0, 255)),
        )
        for (colour, shape), size, r, (x, y) in zip(pairs, sizes, radii, centres, strict=True)
    )
    # One word per size within a caption: two different words for one size would let the swap
    # negative exchange synonyms ("a small X ... a tiny Y" -> "a tiny X ... a small Y"), which
    # describes the same scene.
    size_words = {s: _pick(rng, SIZES[s][0]) for s in SIZES}
    phrases = [f"a {size_words[o.size]} {o.colour} {o.shape}" for o in objects]
    if relation is not None:
        phrases.insert(1, _pick(rng, RELATIONS[relation]))
    caption = " ".join(phrases)
    background = tuple(int(v) for v in rng.integers(25, 70, 3))
    return Scene(objects, relation, caption, background, int(rng.integers(2**31)))


def _place_pair(rng, relation: str, radii: list[float], image_size: int) -> list[tuple[float, float]]:
    """Centres of the first- and second-named object such that ``first <relation> second``.

    The objects sit in opposite halves of the image along the relation's axis, so they never
    overlap, and their offset across that axis stays smaller than along it, so the relation is
    unambiguous.
    """
    half = image_size / 2
    # Coordinates along the relation's axis: the object on the left (or at the top) in the first
    # half of the image, the other one in the second half.
    first_is_low = relation in ("left of", "above")
    low, high = (radii[0], radii[1]) if first_is_low else (radii[1], radii[0])
    low_pos = rng.uniform(low + 1, half - low - 0.5)
    high_pos = rng.uniform(half + high + 0.5, image_size - high - 1)
    along = (low_pos, high_pos) if first_is_low else (high_pos, low_pos)
    # Across the axis: a shared line with a small jitter for each object.
    big = max(radii)
    line = rng.uniform(big + 1 + 0.05 * image_size, image_size - big - 1 - 0.05 * image_size)
    across = line + rng.uniform(-0.05, 0.05, 2) * image_size
    if relation in ("left of", "right of"):
        return [(along[0], across[0]), (along[1], across[1])]
    return [(across[0], along[0]), (across[1], along[1])]


_COLUMNS = ("left", "centre", "right")
_ROWS = ("top", "middle", "bottom")


def _region(obj: WorldObject, image_size: int) -> str:
    """Where ``obj``'s centre lies on a 3 x 3 grid of the image, e.g. ``"the top left"``."""
    column = _COLUMNS[min(int(3 * obj.x / image_size), 2)]
    row = _ROWS[min(int(3 * obj.y / image_size), 2)]
    if (row, column) == ("middle", "centre"):
        return "the centre"
    return f"the {row} {column}"


def long_caption(scene: Scene, image_size: int = 32) -> str:
    """A detailed description of ``scene``: every object's size (its size word and its extent in
    pixels), colour, shape and position on a 3 x 3 grid, then the relation between two objects::

        Two objects. A small red square, about 7 pixels across, in the top left of the image.
        A large blue circle, about 12 pixels across, in the middle right of the image. The small
        red square is left of the large blue circle.

    ``image_size`` is the side the scene was laid out for (``sample_scenes``'s). Deterministic:
    one wording per scene, objects in the order the short caption names them.
    """
    sentences = ["Two objects." if len(scene.objects) == 2 else "One object."]
    for obj in scene.objects:
        sentences.append(
            f"A {obj.size} {obj.colour} {obj.shape}, about {round(2 * obj.radius)} pixels across, "
            f"in {_region(obj, image_size)} of the image."
        )
    if scene.relation is not None:
        first, second = scene.objects
        sentences.append(
            f"The {first.size} {first.colour} {first.shape} is {scene.relation} "
            f"the {second.size} {second.colour} {second.shape}."
        )
    return " ".join(sentences)
