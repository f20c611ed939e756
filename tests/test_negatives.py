"""Tests for fsc_losses.negatives (rule-based hard-negative captions)."""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path

import pytest
import torch

from benchmarks.bench_negatives import is_coordination_swap, is_symmetric_swap
from fsc_losses.negatives import HN_KINDS, LEXICON, make_hard_negatives

DEMO = [
    "a small red cube left of a large blue sphere",
    "two green triangles above a yellow circle",
    "a man riding a horse on the beach",
    "two dogs playing with a frisbee in the park",
]
CATEGORY: dict[str, str] = {}  # word -> its first category (nouns come first: "square" the shape)
for _cat, _groups in LEXICON.items():
    for _word in (w for g in _groups for w in g):
        CATEGORY.setdefault(_word.replace(" ", "_"), _cat)
PHRASES = sorted((w for w in CATEGORY if "_" in w), key=len, reverse=True)


def words(text: str) -> list[str]:
    """Lower-case words; lexicon phrases glued into one item ("left_of")."""
    text = f" {text.lower().replace(',', ' ,').replace('.', ' .')} "
    for p in PHRASES:
        text = text.replace(f" {p.replace('_', ' ')} ", f" {p} ")
    # Articles are normalised because the generator re-agrees "a"/"an".
    return ["a" if w == "an" else w for w in text.split()]


def column(captions, kind, seed):
    negs, valid = make_hard_negatives(captions, kinds=(kind,), seed=seed)
    return negs, valid[:, 0]


def test_hn_kinds_default():
    assert HN_KINDS == ("swap", "replace", "shuffle")


def test_shapes_and_type_major_order():
    negs, valid = make_hard_negatives(DEMO, seed=0)
    B, K = len(DEMO), len(HN_KINDS)
    assert len(negs) == K * B and all(isinstance(n, str) for n in negs)
    assert valid.dtype == torch.bool and valid.shape == (B, K)
    for k, kind in enumerate(HN_KINDS):
        col, col_valid = column(DEMO, kind, seed=0)
        assert negs[k * B : (k + 1) * B] == col
        assert torch.equal(valid[:, k], col_valid)
    assert valid.all(), "every demo caption supports every kind"


def test_custom_kinds_order():
    kinds = ("shuffle", "swap")
    negs, valid = make_hard_negatives(DEMO + ["dog"], kinds=kinds, seed=3)
    B = len(DEMO) + 1
    assert len(negs) == 2 * B and valid.shape == (B, 2)
    assert negs[:B] == column(DEMO + ["dog"], "shuffle", 3)[0]
    assert negs[B:] == column(DEMO + ["dog"], "swap", 3)[0]
    # Reordering kinds permutes the columns and nothing else.
    negs2, valid2 = make_hard_negatives(DEMO + ["dog"], kinds=kinds[::-1], seed=3)
    assert negs2 == negs[B:] + negs[:B]
    assert torch.equal(valid2, valid.flip(1))


def test_deterministic_for_seed():
    a = make_hard_negatives(DEMO, seed=123)
    b = make_hard_negatives(DEMO, seed=123)
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    outputs = {tuple(make_hard_negatives(DEMO, seed=s)[0]) for s in range(6)}
    assert len(outputs) > 1, "different seeds should give different negatives"


def test_pinned_output_for_seed():
    # Computed in a separate process (different PYTHONHASHSEED): guards against a
    # salted hash() leaking into the per-caption RNG. Update deliberately if the
    # lexicon or rules change.
    negs, valid = make_hard_negatives([DEMO[0], DEMO[3]], seed=7)
    assert negs == [
        "a small red sphere left of a large blue cube",
        "two dogs playing in a frisbee with the park",
        "a huge red cube left of a large blue sphere",
        "two german shepherds playing with a frisbee in the park",
        "blue sphere a small a large left of red cube",
        "in the two dogs park playing with a frisbee",
    ]
    assert valid.all()


def test_seed_none_is_random_but_valid():
    cap = ["a small red cube left of a large blue sphere next to a green cone"]
    seen = set()
    for _ in range(10):
        negs, valid = make_hard_negatives(cap)
        assert valid.all()
        seen.add(tuple(negs))
    assert len(seen) > 1


def test_independent_of_batch_composition():
    target = "a man riding a horse on the beach"
    alone_n, alone_v = make_hard_negatives([target], seed=5)
    batch = ["go", DEMO[0], target, DEMO[3], "", target]
    negs, valid = make_hard_negatives(batch, seed=5)
    B = len(batch)
    for b in (2, 5):
        assert [negs[k * B + b] for k in range(3)] == alone_n
        assert torch.equal(valid[b], alone_v[0])


def test_negative_never_equals_caption_and_placeholders():
    caps = DEMO + [
        "A red ball.",
        "dog",
        "",
        "go go go go",
        "hello world",
        "one cat next to three dogs",
        "An apple on a table, near a cup.",
        "a  RED   cube",
        "red red",
        "left of left of",
        "two blue balls and two blue balls",
    ]
    for seed in range(20):
        negs, valid = make_hard_negatives(caps, seed=seed)
        B = len(caps)
        for k in range(3):
            for b, cap in enumerate(caps):
                neg = negs[k * B + b]
                if valid[b, k]:
                    assert " ".join(neg.lower().split()) != " ".join(cap.lower().split())
                    assert neg.strip()
                else:
                    assert neg == ""


@pytest.mark.parametrize(
    "caption, expected",  # (swap, replace, shuffle)
    [
        ("dog", (False, True, False)),
        ("", (False, False, False)),
        ("go go go go", (False, False, False)),  # every bigram identical
        ("left of left of", (False, True, False)),
        ("hello world again please", (False, False, True)),  # no lexicon word
        ("hello world", (False, False, False)),  # a single bigram cannot move
        ("red red", (False, True, False)),  # nothing different to swap, one pair
        ("a red cube", (False, True, True)),
    ],
)
def test_invalid_slots(caption, expected):
    _, valid = make_hard_negatives([caption], seed=0)
    assert tuple(valid[0].tolist()) == expected


def test_empty_batch():
    negs, valid = make_hard_negatives([], kinds=("replace", "swap"), seed=0)
    assert negs == [] and valid.dtype == torch.bool and valid.shape == (0, 2)


def test_swap_keeps_words_changes_order():
    cap = "a red cube above a blue sphere below a green star"
    kinds_seen = set()
    for seed in range(40):
        (neg,), valid = column([cap], "swap", seed)
        assert valid.item()
        assert Counter(words(neg)) == Counter(words(cap)) and words(neg) != words(cap)
        moved = {w for w, o in zip(words(neg), words(cap), strict=True) if w != o}
        assert len(moved) == 2 and len({CATEGORY[w] for w in moved}) == 1, neg
        kinds_seen |= {CATEGORY[w] for w in moved}
    assert kinds_seen == {"colour", "shape", "relation"}


def test_swap_keeps_grammatical_number_of_each_slot():
    for seed in range(20):
        (neg,), _ = column(["two dogs playing with a frisbee"], "swap", seed)
        assert neg == "two frisbees playing with a dog"


def replaced(cap: str, neg: str) -> tuple[str, str]:
    """The single (old, new) phrase pair that differs between cap and neg."""
    a, b = words(cap), words(neg)
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b).get_opcodes() if op[0] != "equal"]
    assert len(ops) == 1 and ops[0][0] == "replace", (neg, ops)
    _, i1, i2, j1, j2 = ops[0]
    return " ".join(a[i1:i2]), " ".join(b[j1:j2])


def test_replace_changes_one_phrase_within_category():
    cap = "a red cube left of a blue sphere"
    cats = set()
    for seed in range(60):
        (neg,), valid = column([cap], "replace", seed)
        assert valid.item()
        old, new = replaced(cap, neg)
        assert new.replace("_", " ") in {w for g in LEXICON[CATEGORY[old]] for w in g} and old != new
        if old == "left_of":
            assert new == "right_of"  # relations flip to their opposite
        cats.add(CATEGORY[old])
    assert cats == {"colour", "shape", "relation"}


@pytest.mark.parametrize(
    "caption, word, allowed",
    [
        ("a cube above a ball", "above", {"below", "beneath", "underneath", "under"}),
        ("a cat in front of a dog", "in_front_of", {"behind", "in_the_back_of"}),
        ("a tiny dog", "tiny", {"large", "big", "huge", "giant"}),
        ("a big dog", "big", {"small", "little", "tiny"}),  # never the synonym "large"
    ],
)
def test_replace_uses_contrasts(caption, word, allowed):
    hits = 0
    for seed in range(30):
        (neg,), _ = column([caption], "replace", seed)
        old, new = replaced(caption, neg)
        if old == word:
            assert new in allowed, neg
            hits += 1
    assert hits > 0


def test_replace_number_reinflects_noun():
    for seed in range(30):
        (neg,), _ = column(["one cat"], "replace", seed)
        num, noun = neg.split(" ", 1)
        if num != "one":
            assert CATEGORY[num] == "number" and noun == "cats"


def test_replace_keeps_case_and_punctuation():
    for seed in range(20):
        (neg,), _ = column(["A red cube left of a blue ball."], "replace", seed)
        assert neg[0].isupper() and neg.endswith(".")


def test_shuffle_keeps_words_changes_order():
    cap = "two dogs playing with a frisbee in the park"
    results = set()
    for seed in range(30):
        (neg,), valid = column([cap], "shuffle", seed)
        assert valid.item()
        assert Counter(words(neg)) == Counter(words(cap)) and words(neg) != words(cap)
        results.add(neg)
        # Shuffling whole bigrams means every original pair survives (except the
        # odd last word of this 9-word caption).
        pairs = {" ".join(cap.split()[i : i + 2]) for i in range(0, 8, 2)}
        assert all(p in neg for p in pairs)
    assert len(results) > 3


def test_shuffle_two_pairs_and_final_punctuation():
    (neg,), valid = column(["A red cube."], "shuffle", 0)
    assert valid.item() and neg == "Cube a red."


def test_bad_inputs():
    with pytest.raises(TypeError, match="captions"):
        make_hard_negatives("a red cube")
    with pytest.raises(TypeError, match=r"captions\[1\]"):
        make_hard_negatives(["a red cube", 3])
    with pytest.raises(TypeError, match="captions"):
        make_hard_negatives({"a red cube"})
    with pytest.raises(ValueError, match=r"'flip'.*swap"):
        make_hard_negatives(["a red cube"], kinds=("swap", "flip"))
    with pytest.raises(ValueError, match="kinds"):
        make_hard_negatives(["a red cube"], kinds=())
    with pytest.raises(ValueError, match="kinds"):
        make_hard_negatives(["a red cube"], kinds=("swap", "swap"))
    with pytest.raises(TypeError, match="kinds"):
        make_hard_negatives(["a red cube"], kinds="swap")
    with pytest.raises(TypeError, match="seed"):
        make_hard_negatives(["a red cube"], seed="0")


def test_swap_never_exchanges_synonyms():
    # "big" and "large" share a synonym group: swapping them would only paraphrase the caption.
    for seed in range(20):
        negatives, neg_valid = make_hard_negatives(["a big dog near a large cat"], kinds=("swap",), seed=seed)
        assert neg_valid[0, 0]
        assert negatives[0] == "a big cat near a large dog"
    _, neg_valid = make_hard_negatives(["a small box near a tiny box"], kinds=("swap",), seed=0)
    assert not neg_valid[0, 0]


# --- real captions (tests/data/coco_captions_sample.txt: 300 COCO captions, see its README) ---

SAMPLE = Path(__file__).parent / "data" / "coco_captions_sample.txt"


@pytest.fixture(scope="module")
def sample():
    captions = SAMPLE.read_text(encoding="utf-8").splitlines()
    assert len(captions) == 300
    return captions


def test_real_captions_get_every_kind(sample):
    """The measured figures on these captions are swap 95.7%, replace and shuffle 100%
    (benchmarks/bench_negatives.py); the old built-in lexicon gave swap about 56%."""
    for seed in (0, 1):
        negatives, valid = make_hard_negatives(sample, seed=seed)
        rates = valid.float().mean(0).tolist()
        assert rates[0] >= 0.93 and rates[1] >= 0.99 and rates[2] == 1.0, rates
        n = len(sample)
        for k in range(3):
            for b, caption in enumerate(sample):
                if valid[b, k]:
                    assert negatives[k * n + b].lower().split() != caption.lower().split()


def test_real_swaps_never_only_reorder_a_coordination(sample):
    # Checked with the benchmark's own detector, which reads only the caption and the negative.
    # Without the rule 14 of these captions' swaps only reorder a coordination.
    negatives, valid = make_hard_negatives(sample, kinds=("swap",), seed=0)
    assert valid.float().mean() > 0.9
    reordered = [
        (caption, negatives[b])
        for b, caption in enumerate(sample)
        if valid[b, 0]
        and (is_coordination_swap(caption, negatives[b]) or is_symmetric_swap(caption, negatives[b]))
    ]
    assert reordered == []


@pytest.mark.parametrize(
    "caption",
    [
        "a red and white room",  # the two sides of a coordination
        "a toilet and a sink",
        "red, white and blue",  # a list
        "a dog next to a cat",  # a symmetric relation
        "a big tall tower",  # two adjectives of one noun
        "a huge, tall tower",
    ],
)
def test_swaps_that_keep_the_meaning_are_not_made(caption):
    for seed in range(10):
        _, valid = make_hard_negatives([caption], kinds=("swap",), seed=seed)
        assert not valid[0, 0], caption


@pytest.mark.parametrize(
    "caption, expected",
    [
        # a coordination whose sides carry their own attributes: the swap rebinds them
        ("a red car and a blue truck", {"a red truck and a blue car", "a blue car and a red truck"}),
        # the verb makes the relation one-sided
        ("a dog chasing a cat", {"a cat chasing a dog"}),
        # a relation that is not symmetric
        ("a cat on a table", {"a table on a cat"}),
    ],
)
def test_swaps_that_change_the_meaning_are_made(caption, expected):
    seen = {make_hard_negatives([caption], kinds=("swap",), seed=s)[0][0] for s in range(20)}
    assert seen == expected


def test_replace_never_writes_a_synonym_or_touches_in():
    for caption in ("a cat in a box", "a big dog in the water", "a man in a red shirt"):
        for seed in range(40):
            (neg,), valid = column([caption], "replace", seed)
            assert valid.item()
            old, new = replaced(caption, neg)
            assert old != "in" and new not in ("inside", "inside_of", "within")
            if old == "big":
                assert new in {"small", "little", "tiny"}


def test_contrasts_keep_the_part_of_speech():
    # "cut" the adjective contrasts with "whole"; "cut" the verb must not become "wholing".
    for seed in range(40):
        (neg,), _ = column(["a person cutting a cake"], "replace", seed)
        assert "whol" not in neg


@pytest.mark.parametrize(
    "caption, swap",
    [
        # compounds move whole; each slot keeps its number; "a"/"an" agree
        ("a man holding a tennis racket", "a tennis racket holding a man"),
        ("two dogs chasing an elephant", "two elephants chasing a dog"),
        # a capital that is the sentence's moves, a proper noun's stays
        ("A woman holding a Nintendo Wii controller", "A Nintendo Wii controller holding a woman"),
        ("Dogs chasing a ball", "Balls chasing a dog"),
        # uncountable and plural-only nouns are not inflected
        ("a boy in the water", "a water in the boy"),
        ("a man wearing jeans", "a jeans wearing men"),
        # a word the lexicon does not know, at the end of a noun phrase, is swapped as a noun
        ("a skiier travels down a slope", "a slope travels down a skiier"),
        # all capitals stay all capitals
        ("A DOG ON A BED", "A BED ON A DOG"),
    ],
)
def test_swap_agreement(caption, swap):
    assert column([caption], "swap", 0)[0] == [swap]


def test_the_lexicon_is_consistent():
    """Each word has one category per part of speech, and every word the other tables name is a
    word of the lexicon (no dead entries)."""
    from fsc_losses import negatives, negatives_lexicon

    seen: dict[tuple[str, str], str] = {}
    for cat, groups in LEXICON.items():
        for word in (w for g in groups for w in g):
            key = (negatives._POS[cat], word)
            assert key not in seen, f"{word!r} is in {seen[key]!r} and {cat!r}"
            seen[key] = cat
    words = {w for _, w in seen}
    nouns = {w for (pos, w) in seen if pos == "noun"}
    functions = set(negatives._words(negatives_lexicon.FUNCTION_NOUNS))
    assert set(negatives._words(negatives_lexicon.UNCOUNTABLE)) <= nouns
    assert {p.split()[0] for p in negatives._words(negatives_lexicon.IRREGULAR_PLURALS)} <= nouns | functions
    assert set(negatives._words(negatives_lexicon.DOUBLING_VERBS)) <= {
        w for (pos, w) in seen if pos == "verb"
    }
    assert set(negatives._words(negatives_lexicon.SYMMETRIC_RELATIONS)) <= set(CATEGORY_WORDS("relation"))
    for rule in negatives_lexicon.CONTRASTS.split(";"):
        for side in rule.split(">"):
            assert {w.strip() for w in side.split("/")} <= words, rule
    verbs = {w for (pos, w) in seen if pos == "verb"}
    assert not functions & (words - verbs)  # "a row of" / "rowing": told apart by context


def CATEGORY_WORDS(category: str) -> list[str]:
    return [w for g in LEXICON[category] for w in g]


def test_inflection():
    from fsc_losses.negatives import _inflect, _plural

    plurals = {"bus": "buses", "man": "men", "woman": "women", "policeman": "policemen", "knife": "knives"}
    plurals |= {"city": "cities", "toy": "toys", "person": "people", "hot dog": "hot dogs", "box": "boxes"}
    assert {w: _plural(w) for w in plurals} == plurals
    forms = {("ride", "ing"): "riding", ("run", "ing"): "running", ("lie", "ing"): "lying"}
    forms |= {("see", "ing"): "seeing", ("carry", "s"): "carries", ("watch", "s"): "watches"}
    forms |= {("take off", "ing"): "taking off", ("play", "s"): "plays", ("sit", "base"): "sit"}
    assert {k: _inflect(*k) for k in forms} == forms
