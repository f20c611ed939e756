"""Rule-based hard-negative captions for FSC-CLIP style training.

FSC-CLIP (Oh et al., EMNLP 2024) trains on image-text pairs plus K hard-negative
captions per positive. This module makes them with a built-in lexicon of everyday
caption words (``fsc_losses.negatives_lexicon``) and a few rules: no parser, no
model, no download, about 3,000 captions a second for the three kinds.

Kinds (see ``docs/negatives.md``):

* ``swap``    -- exchange two nouns (with their modifiers), two adjectives of one
  category, two verbs, two relations or two numbers, each slot keeping its
  grammatical number.  Exchanges that keep the meaning are never made: the sides
  of a coordination ("red and white"), the two ends of a symmetric relation ("a
  dog next to a cat"), two adjectives of one noun.
* ``replace`` -- change one word or phrase to a contrasting one of its category
  ("left of" -> "right of", "red" -> "blue", "dog" -> "cow", "two" -> "five").
* ``shuffle`` -- cut the caption into word pairs and permute the pairs.

The generator never guarantees grammaticality, only that a valid negative differs
from its caption.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import NamedTuple

import torch

from . import negatives_lexicon as _lexicon

__all__ = ["HN_KINDS", "LEXICON", "make_hard_negatives"]

HN_KINDS: tuple[str, ...] = ("swap", "replace", "shuffle")


def _groups(raw: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(w.strip() for w in group.split("/")) for group in raw.split(","))


def _words(raw: str) -> list[str]:
    return [w.strip() for w in raw.split(",")]


# Part of speech of each category: nouns, adjectives, verbs (base forms), relations, numbers.
_POS: dict[str, str] = {
    **dict.fromkeys(_lexicon.NOUNS, "noun"),
    "generic": "noun",
    **dict.fromkeys(_lexicon.ADJECTIVES, "adj"),
    **dict.fromkeys(_lexicon.VERBS, "verb"),
    "relation": "rel",
    "number": "num",
}
LEXICON: dict[str, tuple[tuple[str, ...], ...]] = {
    **{cat: _groups(raw) for cat, raw in _lexicon.NOUNS.items()},
    "generic": _groups(_lexicon.GENERIC_NOUNS),
    **{cat: _groups(raw) for cat, raw in _lexicon.ADJECTIVES.items()},
    **{cat: _groups(raw) for cat, raw in _lexicon.VERBS.items()},
    "relation": _groups(_lexicon.RELATIONS),
    "number": _groups(_lexicon.NUMBERS),
}

_UNCOUNTABLE = frozenset(_words(_lexicon.UNCOUNTABLE))
_IRREGULAR = dict(pair.split() for pair in _words(_lexicon.IRREGULAR_PLURALS))
_DOUBLING = frozenset(_words(_lexicon.DOUBLING_VERBS))
_SYMMETRIC = frozenset(_words(_lexicon.SYMMETRIC_RELATIONS))
_NUMBER_WORDS = frozenset(w for g in LEXICON["number"] for w in g)
# Words that tie two phrases together without saying how they relate.
_COORDINATORS = frozenset({"and", "or", "&", ",", "plus", "nor"})
_DETERMINERS = frozenset(
    "a an the this that these those some his her their its my your our both either each every "
    "another several many few no all".split()
)
# What may stand between two phrases whose exchange keeps the meaning ("red and white").
_LINKING = _COORDINATORS | _DETERMINERS
# After one of these a word that can be a noun or a verb is a verb ("a man skis down a hill").
_BEFORE_VERB = frozenset("he she it they who that which is are was were be been being also still".split())
# A verb's base form is read as a verb only after one of these or a plural noun ("trying to
# catch", "two birds stand"): elsewhere it is more often a noun ("a swing", "the rest").
_BEFORE_BASE = frozenset("to can will would could should must may might not they we you i".split())
# Words that are not nouns in a caption (function words, common adjectives the lexicon does not
# list), and may follow one.
_NOT_NOUNS = frozenset(
    "of that and or nor but is are was were be been being has have had as to it its for "
    "from while who whom whose which what where when there here than then so very too also just "
    "only not no all both each every few many much more most other another such own same some "
    "any this these those his her their our your my him them they we you she he one ones either "
    "right left alone hard better best worse odd nice good great cute pretty fancy fun ready free "
    "able sure real single double triple dead live various whole".split()
)
# Endings of adjectives and adverbs ("tallest", "demonic", "traditional", "slowly").
_NOT_NOUN_ENDINGS = ("est", "ic", "ous", "ful", "ive", "al", "able", "ible", "less", "ish", "ly", "ed", "ing")


def _plural(noun: str) -> str:
    """The plural of a singular lexicon noun (the last word of a phrase inflects)."""
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR:
        last = _IRREGULAR[last]
    elif last.endswith("man") and last != "human":
        last = last[:-3] + "men"
    else:
        last = _with_s(last, ("s", "x", "z", "ch", "sh"))
    return f"{head} {last}" if head else last


def _with_s(word: str, es_after: tuple[str, ...]) -> str:
    """``word`` with the regular -s ending of a plural noun or a present-tense verb: "-es" after
    one of ``es_after``, "-ies" for a consonant before a final "y"."""
    if word.endswith(es_after):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        return word[:-1] + "ies"
    return word + "s"


def _inflect(verb: str, form: str) -> str:
    """``verb`` (base form; the first word of a phrase inflects) in ``form``: "base", "ing" or "s"."""
    first, _, rest = verb.partition(" ")
    if form == "base":
        return verb
    if form == "ing":
        if first.endswith("ie"):
            first = first[:-2] + "ying"
        elif first.endswith("e") and not first.endswith(("ee", "ye", "oe")):
            first = first[:-1] + "ing"
        elif first in _DOUBLING:
            first += first[-1] + "ing"
        else:
            first += "ing"
    else:
        first = _with_s(first, ("s", "x", "z", "ch", "sh", "o"))
    return f"{first} {rest}" if rest else first


class _Reading(NamedTuple):
    pos: str  # "noun", "adj", "verb", "rel", "num", or "function" (counted, never edited)
    category: str  # a LEXICON category; "unknown" for a noun the lexicon does not know
    lemma: str  # singular noun, base verb, the phrase itself otherwise
    form: str  # noun: "sg", "pl" or "inv" (uncountable / plural only); verb: "base", "ing" or "s"


def _build_forms() -> dict[str, tuple[_Reading, ...]]:
    """Every surface phrase the generator recognises -> its readings (several where ambiguous)."""
    forms: dict[str, list[_Reading]] = {}
    adjectives = {w for cat, groups in LEXICON.items() if _POS[cat] == "adj" for g in groups for w in g}

    def add(phrase: str, reading: _Reading, *, explicit: bool = True) -> None:
        readings = forms.setdefault(phrase, [])
        same_pos = [r for r in readings if r.pos == reading.pos]
        if not same_pos:
            readings.append(reading)
        elif explicit and all(r.form == "pl" for r in same_pos):  # a listed word beats a made plural
            readings[readings.index(same_pos[0])] = reading

    for cat, groups in LEXICON.items():
        pos = _POS[cat]
        for word in (w for g in groups for w in g):
            if pos == "noun":
                if word in _UNCOUNTABLE:
                    add(word, _Reading("noun", cat, word, "inv"))
                else:
                    add(word, _Reading("noun", cat, word, "sg"))
            elif pos == "verb":
                for form in ("ing", "s"):
                    add(_inflect(word, form), _Reading("verb", cat, word, form))
                if word not in adjectives:  # "open", "clean": the adjective
                    add(word, _Reading("verb", cat, word, "base"))
            else:
                add(word, _Reading(pos, cat, word, ""))
    for word in _words(_lexicon.FUNCTION_NOUNS):
        add(word, _Reading("function", "function", word, "sg"))
    # Made plurals last, so that a listed word ("glasses", "fries") keeps its own reading. An
    # uncountable noun's plural ("skies", "waters") is recognised but has no number of its own.
    for cat, groups in LEXICON.items():
        if _POS[cat] == "noun":
            for word in (w for g in groups for w in g if not (w in _UNCOUNTABLE and w.endswith("s"))):
                form = "inv" if word in _UNCOUNTABLE else "pl"
                add(_plural(word), _Reading("noun", cat, word, form), explicit=False)
    for word in _words(_lexicon.FUNCTION_NOUNS):
        add(_plural(word), _Reading("function", "function", word, "pl"), explicit=False)
    return {phrase: tuple(readings) for phrase, readings in forms.items()}


def _longest_phrases(forms: dict[str, tuple[_Reading, ...]]) -> dict[str, int]:
    """word -> the most words of a phrase that starts with it."""
    longest: dict[str, int] = {}
    for phrase in forms:
        words = phrase.split()
        longest[words[0]] = max(longest.get(words[0], 0), len(words))
    return longest


_FORMS = _build_forms()
_LONGEST = _longest_phrases(_FORMS)
# (category, word) -> index of its synonym group.
_GROUP = {(cat, w): gi for cat, groups in LEXICON.items() for gi, g in enumerate(groups) for w in g}


def _build_contrasts() -> dict[str, frozenset[str]]:
    contrasts: dict[str, set[str]] = {}
    for rule in _lexicon.CONTRASTS.split(";"):
        lhs, rhs = ([w.strip() for w in side.split("/")] for side in rule.split(">"))
        for a in lhs:
            for b in rhs:
                contrasts.setdefault(a, set()).add(b)
                contrasts.setdefault(b, set()).add(a)
    return {w: frozenset(c) for w, c in contrasts.items()}


_CONTRASTS = _build_contrasts()
# (part of speech, word): a contrast of "cut" the verb is never "whole", a contrast of "cut" the
# adjective.
_VOCABULARY = {(_POS[cat], w) for cat, groups in LEXICON.items() for g in groups for w in g}
# (category, group index) -> the first (most common) word of each of the category's other
# groups, sorted: "dog" becomes "cow", not "cattle".
_SIBLINGS = {
    (cat, gi): tuple(sorted(g[0] for gj, g in enumerate(groups) if gj != gi))
    for cat, groups in LEXICON.items()
    for gi in range(len(groups))
}

_TOKEN_RE = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = set(",.;:!?)]}'’%")

Token = tuple[str, str]  # (whitespace before the token, token text)


class _Unit(NamedTuple):
    start: int  # token span [start, end)
    end: int
    reading: _Reading
    modifier: str  # nouns: the nouns before the head ("tennis" of "tennis racket"), as written


def _tokenize(text: str) -> list[Token]:
    toks, pos = [], 0
    for m in _TOKEN_RE.finditer(text):
        toks.append((text[pos : m.start()], m.group()))
        pos = m.end()
    return toks


def _render(toks: list[Token]) -> str:
    return "".join(gap + tok for gap, tok in toks).strip()


def _resolve(
    readings: tuple[_Reading, ...], prev_word: str, prev: _Unit | None, next_readings: tuple[_Reading, ...]
) -> _Reading | None:
    """One reading of an ambiguous phrase, from its neighbours (None: not a lexicon unit here)."""
    base = next((r for r in readings if r.form == "base"), None)
    if base is not None:
        if prev_word in _BEFORE_BASE or (
            prev is not None and prev.reading.pos == "noun" and _is_plural(prev)
        ):
            return base
        readings = tuple(r for r in readings if r is not base)
        if not readings:
            return None
    by_pos = {r.pos: r for r in reversed(readings)}  # the first reading of each part of speech
    if len(by_pos) == 1:
        return readings[0]
    noun = by_pos.get("noun") or by_pos.get("function")
    if "adj" in by_pos and noun is not None:  # "a glass table" / "a glass of wine"
        return by_pos["adj"] if any(r.pos in ("noun", "adj") for r in next_readings) else noun
    if "verb" in by_pos and noun is not None:  # "a man skis down a hill" / "a man on skis"
        if prev_word in _BEFORE_VERB:
            return by_pos["verb"]
        if (
            prev_word in _DETERMINERS
            or prev_word in _NUMBER_WORDS
            or prev_word == "of"
            or prev_word.endswith(("'s", "’s"))
            or (prev is not None and prev.reading.pos in ("adj", "num", "rel"))
        ):
            return noun
        if prev is not None and prev.reading.pos in ("noun", "function"):
            return by_pos["verb"]
        return noun
    return readings[0]


def _unknown_noun(words: list[str], i: int, spans: list[tuple[int, int, tuple[_Reading, ...]]]) -> bool:
    """Whether ``words[i]``, which the lexicon does not know, reads as a noun: it ends a phrase
    that a determiner, a number, "of" or an adjective starts ("a skiier travels", "two ferrets
    in", "made of pottery")."""
    word = words[i]
    if len(word) < 3 or not word.isalpha() or word in _NOT_NOUNS or word.endswith(_NOT_NOUN_ENDINGS):
        return False
    before = words[i - 1] if i else ""
    if before == "that":  # more often "a sign that says" than "that dog"
        return False
    after_adjective = bool(spans) and spans[-1][1] == i and any(r.pos == "adj" for r in spans[-1][2])
    if not (before in _DETERMINERS or before in _NUMBER_WORDS or before == "of" or after_adjective):
        return False
    if i + 1 == len(words):
        return True
    after = words[i + 1]
    if after in ("to", "looking"):  # "hard to miss", "an odd looking chair"
        return False
    if not after[:1].isalpha() or after in _NOT_NOUNS:
        return True
    readings = _FORMS.get(after)
    return readings is not None and not any(r.pos in ("noun", "adj", "function") for r in readings)


def _guess_number(word: str) -> str:
    return "pl" if word.endswith("s") and not word.endswith(("ss", "us", "is")) else "sg"


def _find(toks: list[Token]) -> list[_Unit]:
    """The lexicon's units in ``toks``: longest phrase first, ambiguity resolved, and runs of nouns
    joined into one compound unit whose head is the last noun."""
    words = [t.lower() for _, t in toks]
    spans: list[tuple[int, int, tuple[_Reading, ...]]] = []
    i = 0
    while i < len(words):
        for n in range(min(_LONGEST.get(words[i], 0), len(words) - i), 0, -1):
            readings = _FORMS.get(" ".join(words[i : i + n]))
            if readings is not None:
                spans.append((i, i + n, readings))
                i += n
                break
        else:
            if _unknown_noun(words, i, spans):
                spans.append((i, i + 1, (_Reading("noun", "unknown", words[i], _guess_number(words[i])),)))
            i += 1
    units: list[_Unit] = []
    for k, (start, end, readings) in enumerate(spans):
        prev = units[-1] if units and units[-1].end == start else None
        following = spans[k + 1][2] if k + 1 < len(spans) and spans[k + 1][0] == end else ()
        reading = _resolve(readings, words[start - 1] if start else "", prev, following)
        if reading is None:
            continue
        if (
            reading.pos == "noun"
            and prev is not None
            and prev.reading.pos == "noun"
            and "generic" not in (reading.category, prev.reading.category)  # "a couple vases"
        ):
            modifier = " ".join(t for _, t in toks[prev.start : prev.end])
            if prev.start == 0 and modifier.istitle():  # the sentence's capital is not the word's
                modifier = modifier[:1].lower() + modifier[1:]
            units[-1] = _Unit(prev.start, end, reading, modifier)
        else:
            units.append(_Unit(start, end, reading, ""))
    return units


def _article(word: str) -> str:
    vowel = word[:1] in tuple("aeiou") and not word.startswith(("uni", "use", "usu", "eu", "one", "ewe"))
    return "an" if vowel or word.startswith(("hour", "honest", "honor", "heir")) else "a"


def _apply(toks: list[Token], edits: list[tuple[int, int, str]]) -> str | None:
    """Replace token spans [start, end) by phrases, keeping spacing, the capital of the sentence's
    first word, an all-capitals caption's capitals and "a"/"an" agreeing; None if two edits
    overlap."""
    edits = sorted(set(edits))  # two swapped numbers may re-inflect one noun
    if any(a[1] > b[0] for a, b in zip(edits, edits[1:], strict=False)):
        return None
    shout = any(c.isalpha() for _, t in toks for c in t) and all(t.isupper() for _, t in toks if t.isalpha())
    out: list[Token] = []
    pos = 0
    for start, end, phrase in edits:
        out.extend(toks[pos:start])
        if shout:
            phrase = phrase.upper()
        elif start == 0 and toks[0][1][:1].isupper():
            phrase = phrase[:1].upper() + phrase[1:]
        words = phrase.split()
        if out and out[-1][1].lower() in ("a", "an"):
            article = _article(words[0].lower())
            if out[-1][1].isupper():
                article = article.upper() if len(out[-1][1]) > 1 or shout else article.capitalize()
            elif out[-1][1][:1].isupper():
                article = article.capitalize()
            out[-1] = (out[-1][0], article)
        out.append((toks[start][0], words[0]))
        out.extend((" ", w) for w in words[1:])
        pos = end
    out.extend(toks[pos:])
    return _render(out)


def _is_plural(unit: _Unit) -> bool:
    """Whether a noun unit is plural: a plural form, or a noun that has only one ("jeans")."""
    return unit.reading.form == "pl" or (unit.reading.form == "inv" and unit.reading.lemma.endswith("s"))


def _noun_text(modifier: str, lemma: str, plural: bool) -> str:
    noun = _plural(lemma) if plural and lemma not in _UNCOUNTABLE else lemma
    return f"{modifier} {noun}" if modifier else noun


def _put(slot: _Unit, lemma: str, units: list[_Unit], modifier: str = "") -> list[tuple[int, int, str]]:
    """Edits that write ``lemma`` (with a noun's ``modifier``) into ``slot``, keeping agreement:
    a noun takes the slot's number, a verb its form, a number re-inflects its noun."""
    reading = slot.reading
    if reading.pos == "noun":
        return [(slot.start, slot.end, _noun_text(modifier, lemma, _is_plural(slot)))]
    if reading.pos == "verb":
        return [(slot.start, slot.end, _inflect(lemma, reading.form))]
    edits = [(slot.start, slot.end, lemma)]
    if reading.pos == "num":
        # Re-inflect the counted noun ("one dog" -> "three dogs"); look a few tokens ahead to
        # skip adjectives ("two small red cubes").
        noun = next(
            (u for u in units if u.reading.pos == "noun" and slot.end <= u.start <= slot.end + 3), None
        )
        many = lemma != "one"
        if (
            noun is not None
            and noun.reading.form != "inv"
            and noun.reading.category != "unknown"
            and _is_plural(noun) != many
        ):
            edits.append((noun.start, noun.end, _noun_text(noun.modifier, noun.reading.lemma, many)))
    return edits


def _swap_class(unit: _Unit) -> tuple[str, ...] | None:
    reading = unit.reading
    if reading.pos in ("noun", "rel", "num"):
        return (reading.pos,)
    if reading.pos == "adj":
        return ("adj", reading.category)
    if reading.pos == "verb":
        return ("verb", reading.form)
    return None


def _synonym_group(unit: _Unit) -> tuple[str, int | str]:
    category, lemma = unit.reading.category, unit.reading.lemma
    return category, _GROUP.get((category, lemma), lemma)


def _keeps_meaning(a: _Unit, b: _Unit, words: list[str], units: list[_Unit]) -> bool:
    """Whether exchanging ``a`` and ``b`` (a before b) would leave the caption's meaning: nothing
    but "and", "or", commas and determiners between them ("red and white"), a list ("red, white
    and blue"), two adjectives of one noun, or a symmetric relation ("a dog next to a cat")."""
    between = words[a.end : b.start]
    content = [i for i, w in enumerate(between, a.end) if w not in _LINKING]
    if not content:
        return True
    inside = [u for u in units if a.end <= u.start and u.end <= b.start]

    def covered(pred) -> bool:
        return all(any(u.start <= i < u.end and pred(u) for u in inside) for i in content)

    if "of" not in between and any(w in _COORDINATORS for w in between):
        if covered(lambda u: _swap_class(u) == _swap_class(a)):
            return True
        # A list of three or more with words the lexicon does not know: "hot dogs, ribs, burgers".
        if sum(w in _COORDINATORS for w in between) >= 2 and not any(
            _swap_class(u) != _swap_class(a) for u in inside
        ):
            return True
    if a.reading.pos == "adj" and covered(lambda u: u.reading.pos == "adj"):
        return True
    return " ".join(words[i] for i in content) in _SYMMETRIC


def _slot_needs(slot: _Unit, words: list[str], units: list[_Unit]) -> str:
    """Which nouns read well in ``slot``: "a" after "a"/"an" (a countable one: not "a water"),
    "bare" in the singular without a determiner (an uncountable or plural one: not "in dog"),
    "singular" (not "jeans"), or "any" (a plural slot, or not a noun)."""
    if slot.reading.pos != "noun" or _is_plural(slot):
        return "any"
    start = slot.start
    while any(u.end == start and u.reading.pos == "adj" for u in units):  # "a blurry red"
        start = next(u.start for u in units if u.end == start)
    before = words[start - 1] if start else ""
    if before in ("a", "an"):
        return "a"
    if (
        before in _DETERMINERS
        or before in _NUMBER_WORDS
        or before.endswith(("'s", "’s"))
        or start < slot.start
    ):
        return "singular"
    return "bare"


def _fits(need: str, lemma: str) -> bool:
    plural_only = lemma in _UNCOUNTABLE and lemma.endswith("s")
    mass = lemma in _UNCOUNTABLE and not plural_only
    if need == "a":
        return not (mass or plural_only)
    if need == "bare":
        return mass or plural_only
    return need == "any" or not plural_only


def _changes(toks: list[Token], edits: list[tuple[int, int, str]]) -> bool:
    """Whether ``edits`` change a word (case aside): "a"/"an" only follow the words they precede."""
    return any(phrase.lower().split() != [t.lower() for _, t in toks[s:e]] for s, e, phrase in edits)


def _move(unit: _Unit, slot: _Unit, toks: list[Token], units: list[_Unit]) -> list[tuple[int, int, str]]:
    """Edits that write ``unit`` into ``slot``: as written ("Nintendo Wii") where it needs no new
    inflection (the sentence's capital aside), else re-inflected from its lemma."""
    reading = unit.reading
    if reading.pos == "noun" and (_is_plural(unit) == _is_plural(slot) or reading.category == "unknown"):
        text = " ".join(t for _, t in toks[unit.start : unit.end])
        if unit.start == 0 and text[:1].isupper() and not text.split()[0].isupper():
            text = text[:1].lower() + text[1:]
        return [(slot.start, slot.end, text)]
    return _put(slot, reading.lemma, units, unit.modifier)


def _swap(toks: list[Token], units: list[_Unit], rng: random.Random) -> str | None:
    words = [t.lower() for _, t in toks]
    candidates = [u for u in units if _swap_class(u) is not None]
    needs = {u: _slot_needs(u, words, units) for u in candidates}
    pairs = [
        (a, b)
        for i, a in enumerate(candidates)
        for b in candidates[i + 1 :]
        if _swap_class(a) == _swap_class(b) and _synonym_group(a) != _synonym_group(b)
    ]
    rng.shuffle(pairs)
    # Pairs that would read badly go last: "a plate of food" -> "a food of plate", "a water".
    pairs.sort(
        key=lambda p: (
            [w for w in words[p[0].end : p[1].start] if w not in _DETERMINERS] == ["of"]
            or not _fits(needs[p[0]], p[1].reading.lemma)
            or not _fits(needs[p[1]], p[0].reading.lemma)
        )
    )
    for a, b in pairs:
        if _keeps_meaning(a, b, words, units):
            continue
        edits = _move(b, a, toks, units) + _move(a, b, toks, units)
        neg = _apply(toks, edits) if _changes(toks, edits) else None
        if neg is not None:
            return neg
    return None


def _options(unit: _Unit, present: set[str], words: list[str], units: list[_Unit]) -> tuple[str, ...]:
    """What may replace ``unit``: its contrasts, else (except for relations and generic nouns) its
    category's other groups; preferably neither a word already in the caption nor an awkward one."""
    reading = unit.reading
    if reading.pos not in ("noun", "adj", "verb", "rel", "num") or reading.category in ("generic", "unknown"):
        return ()
    options = tuple(sorted(o for o in _CONTRASTS.get(reading.lemma, ()) if (reading.pos, o) in _VOCABULARY))
    if not options and reading.pos != "rel":
        options = _SIBLINGS[reading.category, _GROUP[reading.category, reading.lemma]]
    need = _slot_needs(unit, words, units)
    fitting = tuple(o for o in options if o not in present and _fits(need, o))
    return fitting or tuple(o for o in options if o not in present) or options


def _replace(toks: list[Token], units: list[_Unit], rng: random.Random) -> str | None:
    words = [t.lower() for _, t in toks]
    present = {u.reading.lemma for u in units}
    order = list(units)
    rng.shuffle(order)
    for unit in order:
        options = _options(unit, present, words, units)
        if not options:
            continue
        edits = _put(unit, rng.choice(options), units, unit.modifier)
        neg = _apply(toks, edits) if _changes(toks, edits) else None
        if neg is not None:
            return neg
    return None


def _shuffle(toks: list[Token], units: list[_Unit], rng: random.Random) -> str | None:
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
        if [w.lower() for w in new] != [t.lower() for _, t in toks]:
            return "".join(("" if i == 0 or w[0] in _NO_SPACE_BEFORE else " ") + w for i, w in enumerate(new))
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

    negatives = [""] * (len(kinds) * len(captions))
    valid = [[False] * len(kinds) for _ in captions]
    for b, caption in enumerate(captions):
        toks = _tokenize(caption)  # parsed once, read (never changed) by every kind
        units = _find(toks)
        for k, kind in enumerate(kinds):
            # str seeds are hashed with SHA-512 by `random`, so this is stable across
            # processes (unlike the salted built-in hash) and per caption.
            rng = random.Random(f"{seed}\x1f{kind}\x1f{caption}")
            neg = _GENERATORS[kind](toks, units, rng)
            valid[b][k] = neg is not None
            negatives[k * len(captions) + b] = "" if neg is None else neg
    mask = torch.tensor(valid, dtype=torch.bool).reshape(len(captions), len(kinds))
    return negatives, mask
