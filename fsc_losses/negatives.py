"""Rule-based hard-negative captions for FSC-CLIP style training.

FSC-CLIP (Oh et al., EMNLP 2024) trains on image-text pairs plus K hard-negative
captions per positive.  This module produces them with a small built-in lexicon
and a few rules -- no parser, no downloads -- so it works anywhere torch does.

Kinds (see ``docs/negatives.md``):

* ``swap``    -- exchange two words/phrases of the same class (two colours, two
  nouns, two relations, two numbers, ...).
* ``replace`` -- change one lexicon word/phrase to a contrasting one of the same
  category ("left of" -> "right of", "red" -> "blue", "two" -> "five").
* ``shuffle`` -- cut the caption into word pairs and permute the pairs.

The generator only knows the words in :data:`LEXICON`; it never guarantees
grammaticality, only that a valid negative differs from its caption.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import NamedTuple

import torch

__all__ = ["HN_KINDS", "LEXICON", "make_hard_negatives"]

HN_KINDS: tuple[str, ...] = ("swap", "replace", "shuffle")

# category -> groups; "," separates groups, "/" separates synonyms inside one.
# Replacements come from a *different* group so "big" never becomes "large".
_RAW_LEXICON = {
    "colour": "red, blue, green, yellow, orange, purple/violet, pink, brown, black, white, "
    "gray/grey, silver, gold, cyan, magenta, beige, navy, turquoise",
    "size": "small/little/tiny, large/big/huge/giant, tall, short, long, wide, narrow, thin, thick, fat",
    "material": "wooden, metal/metallic, plastic, glass, rubber, stone, paper, leather, "
    "ceramic, cotton, wool, concrete, steel, brick",
    "shape": "cube, sphere, ball, circle, square, triangle, star, cross, ring, cylinder, "
    "cone, box, block, heart, pyramid, rectangle, disk, hexagon",
    "object": "man, woman, boy, girl, child, person, dog, cat, horse, cow, sheep, bird, "
    "elephant, giraffe, zebra, bear, car, bus, truck, train, bicycle/bike, motorcycle, "
    "boat, airplane/plane, table, chair, bed, couch/sofa, bench, tree, flower, house, "
    "street/road, beach, park, field, kitchen, window, door, wall, plate, bowl, cup, "
    "bottle, pizza, cake, sandwich, apple, banana, frisbee, kite, umbrella, hat, shirt, "
    "bag, phone, laptop, book, clock, fence, mountain, river, surfboard, skateboard",
    "relation": "left of, right of, to the left of, to the right of, above, below, "
    "beneath, underneath, under, over, on top of, on, in, inside, into, outside, "
    "outside of, out of, in front of, behind, next to, beside, near, close to, far from, "
    "far away from, across from, around, between",
    "action": "riding, playing, holding, eating, drinking, walking, running, sitting, "
    "standing, lying, sleeping, jumping, throwing, catching, carrying, pushing, pulling, "
    "reading, watching, cutting, cooking, flying, swimming, driving, kicking, chasing, "
    "feeding, wearing, climbing, painting",
    "action_s": "rides, plays, holds, eats, drinks, walks, runs, sits, stands, sleeps, "
    "jumps, throws, catches, carries, pushes, pulls, reads, watches, cuts, flies, "
    "swims, drives, kicks, chases, feeds, wears",
    "number": "one, two, three, four, five, six, seven, eight, nine, ten",
}
# "A > B": every phrase in A contrasts with every phrase in B (and vice versa).
# Words listed here are replaced only by their contrasts: a true opposite makes a
# harder, unambiguous negative than an arbitrary sibling.
_RAW_CONTRASTS = (
    "small/little/tiny > large/big/huge/giant; tall > short; long > short; "
    "wide > narrow; thin > thick/fat; left of > right of; to the left of > to the right of; "
    "above/over/on top of > below/beneath/underneath/under; on > under/beneath; "
    "in/inside/into > outside/outside of/out of; in front of > behind; "
    "next to/beside/near/close to > far from/far away from; sitting > standing; "
    "sits > stands; pushing > pulling; pushes > pulls; throwing > catching; "
    "throws > catches"
)
_IRREGULAR = {
    "man": "men",
    "woman": "women",
    "child": "children",
    "person": "people",
    "sheep": "sheep",
    "mouse": "mice",
    "foot": "feet",
}

LEXICON: dict[str, tuple[tuple[str, ...], ...]] = {
    cat: tuple(tuple(w.strip() for w in g.split("/")) for g in raw.split(","))
    for cat, raw in _RAW_LEXICON.items()
}
# phrase -> (category, group index); a phrase lives in exactly one category.
_INDEX = {w: (cat, gi) for cat, groups in LEXICON.items() for gi, g in enumerate(groups) for w in g}
_MAX_LEN = max(len(w.split()) for w in _INDEX)
_CONTRASTS: dict[str, set[str]] = {}
for _rule in _RAW_CONTRASTS.split(";"):
    _lhs, _rhs = (side.split("/") for side in _rule.split(">"))
    for _a in map(str.strip, _lhs):
        for _b in map(str.strip, _rhs):
            _CONTRASTS.setdefault(_a, set()).add(_b)
            _CONTRASTS.setdefault(_b, set()).add(_a)
_NOUNS = ("shape", "object")
# Shapes and everyday objects are interchangeable for swapping ("a dog on a cube").
_SWAP_CLASS = {"shape": "noun", "object": "noun"}
_SING = {p: s for s, p in _IRREGULAR.items()}
_TOKEN_RE = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = set(",.;:!?)]}'’%")

Token = tuple[str, str]  # (whitespace before the token, token text)


class _Match(NamedTuple):
    start: int  # token span [start, end)
    end: int
    category: str
    lemma: str  # lower-case phrase; singular form for nouns
    plural: bool


def _tokenize(text: str) -> list[Token]:
    toks, pos = [], 0
    for m in _TOKEN_RE.finditer(text):
        toks.append((text[pos : m.start()], m.group()))
        pos = m.end()
    return toks


def _render(toks: list[Token]) -> str:
    return "".join(gap + tok for gap, tok in toks).strip()


def _norm(text: str) -> str:
    # Token-level so that whitespace, case and spacing around punctuation never
    # make a copy of the caption look like a new caption.
    return " ".join(t.lower() for _, t in _tokenize(text))


def _pluralize(noun: str, plural: bool) -> str:
    if not plural:
        return noun
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"
    return noun + "s"


def _as_noun(word: str) -> tuple[str, bool] | None:
    """Map a (possibly plural) word to (singular lexicon noun, is_plural)."""
    cands = [(word, False), (_SING.get(word, ""), True)]
    if word.endswith("s"):
        cands += [(word[:-3] + "y", True), (word[:-2], True), (word[:-1], True)]
    for lemma, plural in cands:
        if _INDEX.get(lemma, ("",))[0] in _NOUNS and _pluralize(lemma, plural) == word:
            return lemma, plural
    return None


def _find(toks: list[Token]) -> list[_Match]:
    words = [t.lower() for _, t in toks]
    found, i = [], 0
    while i < len(words):
        for n in range(min(_MAX_LEN, len(words) - i), 0, -1):  # longest phrase wins
            phrase = " ".join(words[i : i + n])
            if phrase in _INDEX and _INDEX[phrase][0] not in _NOUNS:
                found.append(_Match(i, i + n, _INDEX[phrase][0], phrase, False))
                i += n
                break
        else:
            noun = _as_noun(words[i])
            if noun:
                found.append(_Match(i, i + 1, _INDEX[noun[0]][0], *noun))
            i += 1
    return found


def _match_case(src: str, word: str) -> str:
    if len(src) > 1 and src.isupper():
        return word.upper()
    return word[:1].upper() + word[1:] if src[:1].isupper() else word


def _apply(toks: list[Token], edits: list[tuple[int, int, str]]) -> str:
    """Replace token spans [start, end) by phrases, keeping spacing and casing."""
    out: list[Token] = []
    pos = 0
    for start, end, phrase in sorted(set(edits)):  # two swapped numbers may re-inflect one noun
        out.extend(toks[pos:start])
        words = phrase.split()
        if out and out[-1][1].lower() in ("a", "an"):  # keep "a"/"an" agreeing
            art = "an" if words[0][0] in "aeiou" else "a"
            out[-1] = (out[-1][0], _match_case(out[-1][1], art))
        out.append((toks[start][0], _match_case(toks[start][1], words[0])))
        out.extend((" ", w) for w in words[1:])
        pos = end
    out.extend(toks[pos:])
    return _render(out)


def _put(m: _Match, lemma: str, matches: list[_Match]) -> list[tuple[int, int, str]]:
    """Edits that write ``lemma`` into slot ``m``, keeping number agreement."""
    if m.category in _NOUNS:
        return [(m.start, m.end, _pluralize(lemma, m.plural))]
    edits = [(m.start, m.end, lemma)]
    if m.category == "number":
        # Re-inflect the counted noun ("one dog" -> "three dogs"); look a few
        # tokens ahead to skip adjectives ("two small red cubes").
        noun = next((n for n in matches if n.category in _NOUNS and m.end <= n.start <= m.end + 3), None)
        if noun is not None and noun.plural != (lemma != "one"):
            edits.append((noun.start, noun.end, _pluralize(noun.lemma, lemma != "one")))
    return edits


def _swap(caption: str, toks: list[Token], rng: random.Random) -> str | None:
    matches = _find(toks)
    pairs = [
        (a, b)
        for i, a in enumerate(matches)
        for b in matches[i + 1 :]
        if _SWAP_CLASS.get(a.category, a.category) == _SWAP_CLASS.get(b.category, b.category)
        and _INDEX[a.lemma] != _INDEX[b.lemma]
    ]  # synonyms would only paraphrase
    rng.shuffle(pairs)
    for a, b in pairs:
        neg = _apply(toks, _put(a, b.lemma, matches) + _put(b, a.lemma, matches))
        if _norm(neg) != _norm(caption):
            return neg
    return None


def _replace(caption: str, toks: list[Token], rng: random.Random) -> str | None:
    matches = _find(toks)
    order = list(matches)
    rng.shuffle(order)
    for m in order:
        options = sorted(
            _CONTRASTS.get(m.lemma)
            or {w for gi, g in enumerate(LEXICON[m.category]) if gi != _INDEX[m.lemma][1] for w in g}
        )
        neg = _apply(toks, _put(m, rng.choice(options), matches))
        if _norm(neg) != _norm(caption):
            return neg
    return None


def _shuffle(caption: str, toks: list[Token], rng: random.Random) -> str | None:
    words = [t for _, t in toks]
    tail = []
    while words and words[-1] in ".!?":  # the final full stop stays last
        tail.insert(0, words.pop())
    capital = bool(words) and words[0].istitle() and words[0] != "I"
    if capital:  # sentence-initial capital belongs to the position, not the word
        words[0] = words[0].lower()
    pairs = [words[i : i + 2] for i in range(0, len(words), 2)]
    if len(pairs) < 2:
        return None
    for attempt in range(12):
        perm = pairs[1:] + pairs[:1] if attempt == 11 else rng.sample(pairs, len(pairs))
        new = [w for p in perm for w in p] + tail
        if capital:
            new[0] = new[0][:1].upper() + new[0][1:]
        neg = "".join(("" if i == 0 or w[0] in _NO_SPACE_BEFORE else " ") + w for i, w in enumerate(new))
        if _norm(neg) != _norm(caption):
            return neg
    return None  # every pair is identical, e.g. "go go go go"


_GENERATORS = {"swap": _swap, "replace": _replace, "shuffle": _shuffle}


def make_hard_negatives(
    captions: Sequence[str],
    kinds: Sequence[str] = HN_KINDS,
    seed: int | None = None,
) -> tuple[list[str], torch.Tensor]:
    """Generate K rule-based hard negatives for each of B captions.

    Args:
        captions: B caption strings (a list/tuple, not a single str).
        kinds: K distinct kinds from :data:`HN_KINDS`; their order sets the output order.
        seed: int for reproducible output, ``None`` for fresh randomness per call.
            The negative of caption b depends only on (seed, kind, captions[b]), never
            on the rest of the batch or on the other kinds requested.

    Returns:
        negatives: flat list of K*B strings in type-major order:
            ``negatives[k * B + b]`` is the ``kinds[k]`` negative of ``captions[b]``.
            Slots where the kind could not apply hold the placeholder ``""``.
        neg_valid: ``torch.bool`` tensor of shape (B, K); False marks a placeholder
            slot that the loss must ignore.

    Raises:
        TypeError: ``captions`` is a str or holds non-str items; ``kinds`` is a
            str; ``seed`` is neither int nor None.
        ValueError: ``kinds`` is empty, repeats a kind, or names an unknown one.
    """
    if isinstance(captions, (str, bytes)):
        raise TypeError(
            "captions must be a sequence of str, got a single "
            f"{type(captions).__name__}; wrap it in a list: [captions]"
        )
    if not isinstance(captions, Sequence):
        raise TypeError(f"captions must be a sequence of str, got {type(captions).__name__}")
    for i, c in enumerate(captions):
        if not isinstance(c, str):
            raise TypeError(f"captions[{i}] must be str, got {type(c).__name__}")
    if isinstance(kinds, str):
        raise TypeError(f"kinds must be a sequence of kind names, got the str {kinds!r}; use ({kinds!r},)")
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds must not be empty; choose from {HN_KINDS}")
    for k in kinds:
        if k not in _GENERATORS:
            raise ValueError(f"unknown kind {k!r} in kinds; valid kinds are {HN_KINDS}")
    if len(set(kinds)) != len(kinds):
        # A repeated kind would silently double one column's weight in the loss.
        raise ValueError(f"kinds must not repeat a kind, got {kinds}")
    if seed is not None and not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if seed is None:
        seed = random.SystemRandom().getrandbits(64)

    negatives: list[str] = []
    valid = [[False] * len(kinds) for _ in captions]
    for k, kind in enumerate(kinds):
        for b, caption in enumerate(captions):
            # str seeds are hashed with SHA-512 by `random`, so this is stable across
            # processes (unlike the salted built-in hash) and per caption.
            rng = random.Random(f"{seed}\x1f{kind}\x1f{caption}")
            neg = _GENERATORS[kind](caption, _tokenize(caption), rng)
            valid[b][k] = neg is not None
            negatives.append("" if neg is None else neg)
    mask = torch.tensor(valid, dtype=torch.bool).reshape(len(captions), len(kinds))
    return negatives, mask
