"""The FSC-CLIP authors' published result tables, shipped with the package, and how they are made.

Two tables (``published/README.md`` gives their sources, commits, papers and licences):

* vl_compo (Oh et al., 2024, arXiv:2406.09388; github ytaek-oh/vl_compo): 202 CLIP models, every
  key in ``individual_results.csv`` and each benchmark's summary in ``results.csv``;
* FSC-CLIP (Oh et al., EMNLP 2024; github ytaek-oh/fsc-clip): the 12 FSC-CLIP checkpoints,
  benchmark summaries only (``assets/extended_results.csv``).

``rows()`` reads both into ``Row``s, values as fractions like the package's results (the files are in
percent). ``SUMMARIES`` says how each benchmark column of vl_compo's ``results.csv`` is made from
its keys; neither repository writes this down, and the rules here were recovered from the two tables,
which they reproduce to 1e-8 for every row. ``Summary.value`` applies a rule to any keys, so a
published row and a user's results can be summarised over the same keys.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from . import mmvp_vlm

VL_COMPO = "vl_compo"
FSC_CLIP = "fsc_clip"
TABLES = {VL_COMPO: "vl_compo table", FSC_CLIP: "FSC-CLIP table"}
SOURCES = {
    VL_COMPO: "Oh et al., 2024, arXiv:2406.09388; github ytaek-oh/vl_compo @ 43e2eae, results.csv and "
    "individual_results.csv",
    FSC_CLIP: "Oh et al., EMNLP 2024, arXiv:2410.05210; github ytaek-oh/fsc-clip @ 604015d, "
    "assets/extended_results.csv",
}
# OpenAI's ViT-B/32, the base model of FSC-CLIP and of NegCLIP; NegCLIP; FSC-CLIP fine-tuned on COCO
# like NegCLIP.
DEFAULT_ROWS = ("ViT-B-32/openai", "NegCLIP/coco-ft", "fsc-clip-ViT-B-32/openai_coco")


@dataclass(frozen=True)
class Summary:
    """How a benchmark's column is made from its keys: the mean over ``groups`` of each group's
    value, which is the mean of its keys or, for a benchmark in ``POOLED_ITEMS``, their mean weighted
    by their items (the share of right items over the group)."""

    groups: tuple[tuple[str, ...], ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for group in self.groups for key in group)

    def restricted(self, keys) -> Summary:
        """The same rule over the keys of ``keys`` only (groups left empty are dropped)."""
        groups = tuple(tuple(k for k in group if k in keys) for group in self.groups)
        return Summary(tuple(group for group in groups if group))

    def value(self, values: Mapping[str, float], items: Mapping[str, int] | None = None) -> float:
        """The summary of ``values`` (which must hold every key of the rule).

        Args:
            items: each key's item count, for a pooled rule; None: the plain mean.
        """
        means = []
        for group in self.groups:
            if items is None:
                means.append(sum(values[k] for k in group) / len(group))
            else:
                means.append(sum(values[k] * items[k] for k in group) / sum(items[k] for k in group))
        return sum(means) / len(means)


def _each(prefix: str, names, suffix: str = "") -> tuple[tuple[str, ...], ...]:
    return tuple((f"{prefix}::{name}{suffix}",) for name in names)


_CHECKLIST = {
    "Object": (
        "Location_center",
        "Location_margin",
        "Location_mid",
        "Size_large",
        "Size_medium",
        "Size_small",
    ),
    "Attribute": ("action", "color", "material", "size", "state"),
    "Relation": ("action", "spatial"),
}

SUMMARIES: dict[str, Summary] = {
    "aro": Summary(_each("aro", ("VG_Relation", "VG_Attribute", "COCO_Order", "Flickr30k_Order"))),
    "colorswap": Summary((("colorswap::group",),)),
    "crepe": Summary(_each("crepe", ("atom", "swap", "negate"))),
    "eqben": Summary(
        _each("eqben", ("eqbenyoucook2", "eqbengebc", "eqbenag"), "::group")
        + (tuple(f"eqben::eqbenkubric_{k}::group" for k in ("loc", "cnt", "attr")),)
        + (("eqben::eqbensd::group",),)
    ),
    "imagecode": Summary((("imagecode::videos", "imagecode::static"),)),
    "mmvp_vlm": Summary(_each("mmvp_vlm", mmvp_vlm.CATEGORIES, "::group")),
    "sugarcrepe": Summary(
        tuple(
            tuple(f"sugarcrepe::{subset}" for subset in group)
            for group in (
                ("replace_obj", "replace_att", "replace_rel"),
                ("swap_obj", "swap_att"),
                ("add_obj", "add_att"),
            )
        )
    ),
    "svo_probes": Summary(_each("svo_probes", ("subj_neg", "verb_neg", "obj_neg"))),
    "valse": Summary(
        tuple(
            tuple(f"valse::{piece}" for piece in group)
            for group in (
                ("existence",),
                ("plurals",),
                ("counting-hard", "counting-small-quant", "counting-adversarial"),
                ("relations",),
                ("action-replacement", "actant-swap"),
                ("coreference-standard", "coreference-hard"),
                ("foil-it",),
            )
        )
    ),
    "vl_checklist": Summary(
        tuple(tuple(f"vl_checklist::{kind}_{name}" for name in names) for kind, names in _CHECKLIST.items())
    ),
    "whatsup": Summary(
        _each("whatsup", ("WhatsUp_A", "WhatsUp_B", "COCO_QA_ONE", "COCO_QA_TWO", "VG_QA_ONE", "VG_QA_TWO"))
    ),
    "winoground": Summary((("winoground::group",),)),
}
# The items of each key of the pooled benchmarks, as the published numbers weigh them: SugarCrepe's
# files and ImageCoDe's validation descriptions (video frames, Open Images).
POOLED_ITEMS: dict[str, dict[str, int]] = {
    "sugarcrepe": {
        "sugarcrepe::replace_obj": 1652,
        "sugarcrepe::replace_att": 788,
        "sugarcrepe::replace_rel": 1406,
        "sugarcrepe::swap_obj": 245,
        "sugarcrepe::swap_att": 666,
        "sugarcrepe::add_obj": 2062,
        "sugarcrepe::add_att": 692,
    },
    "imagecode": {"imagecode::videos": 1872, "imagecode::static": 430},
}
# The multi-modal keys of vl_compo's results.csv: retrieval R@1 (coco_i2t, coco_t2i, flickr_i2t,
# flickr_t2i); its zero-shot keys (elevator::...) come from ELEVATER's toolkit, not from an
# ImageFolder this package reads.
RETRIEVAL = {
    "coco_i2t": "coco_karpathy::i2t/R@1",
    "coco_t2i": "coco_karpathy::t2i/R@1",
    "flickr_i2t": "flickr30k::i2t/R@1",
    "flickr_t2i": "flickr30k::t2i/R@1",
}
# FSC-CLIP's columns under the names of vl_compo's where they mean the same; the others get names of
# their own.
_FSC_CLIP_COLUMNS = {
    "Comp": "comp_avg_11",
    "ZS": "21_tasks_avg",
    "I2T Ret": "i2t_avg_3",
    "T2I Ret": "t2i_avg_3",
}


@dataclass(frozen=True)
class Row:
    """One published model.

    Attributes:
        name: how to choose it: ``"<arch>/<pretrained>"`` (``"ViT-B-32/openai"``,
            ``"NegCLIP/coco-ft"``, ``"fsc-clip-ViT-B-32/openai_coco"``), prefixed with
            ``"<family>:"`` where two rows share arch and pretrained.
        family: the table's family column (``"OpenCLIP"``, ``"StructuredCLIP"``, ``"FSC-CLIP"``).
        table: ``VL_COMPO`` or ``FSC_CLIP``.
        keys: every key of ``individual_results.csv`` (vl_compo rows; empty for FSC-CLIP rows).
        columns: the table's summary columns (``"sugarcrepe"``, ``"comp_avg"``, ``"21_tasks_avg"``,
            ``"i2t_avg"``, ...; FSC-CLIP's ``"comp_avg_11"``, ``"i2t_avg_3"``, ``"t2i_avg_3"``).
        Values are fractions.
    """

    name: str
    family: str
    table: str
    keys: Mapping[str, float]
    columns: Mapping[str, float]


def _read(file: str) -> list[dict[str, str]]:
    with resources.files(__package__).joinpath("published", file).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _fractions(record: dict[str, str], skip=()) -> dict[str, float]:
    return {k: float(v) / 100 for k, v in record.items() if k not in skip and k}


@functools.cache
def rows() -> tuple[Row, ...]:
    """Every published row: vl_compo's 202, then FSC-CLIP's 12."""
    meta = ("arch", "pretrained", "family")
    individual = _read("vl_compo_individual_results.csv")
    by_model: dict[tuple[str, str], list[dict[str, str]]] = {}
    for record in individual:
        by_model.setdefault((record["arch"], record["pretrained"]), []).append(record)
    out = []
    for record in _read("vl_compo_results.csv"):
        model = (record["arch"], record["pretrained"])
        candidates = by_model[model]
        # the two tables name one model's family differently (ALIP); where two models share arch and
        # pretrained (CLIP_ViT-B-16 / cc12m), the family tells them apart
        match = (
            candidates[0]
            if len(candidates) == 1
            else next(c for c in candidates if c["family"] == record["family"])
        )
        name = "/".join(model) if len(candidates) == 1 else f"{record['family']}:{'/'.join(model)}"
        columns = _fractions(record, skip=meta)
        out.append(Row(name, record["family"], VL_COMPO, _fractions(match, skip=meta), columns))
    for record in _read("fsc_clip_extended_results.csv"):
        name = f"{record['CLIP']}-{record['Arch']}/{record['Pretrained_Finetined']}"
        columns = {
            _FSC_CLIP_COLUMNS.get(k, k): v
            for k, v in _fractions(record, skip=("CLIP", "Arch", "Pretrained_Finetined")).items()
        }
        out.append(Row(name, "FSC-CLIP", FSC_CLIP, {}, columns))
    return tuple(out)


def find(names) -> list[Row]:
    """The rows named (``Row.name``; ``"<arch>/<pretrained>"`` also finds a row whose name has a
    family prefix when it is the only one).

    Raises:
        ValueError: a name that matches no row, or several (the message lists them).
    """
    everything = rows()
    found = []
    for name in names:
        matches = [r for r in everything if r.name == name] or [
            r for r in everything if r.name.split(":")[-1] == name
        ]
        if len(matches) != 1:
            close = [r.name for r in everything if name.lower() in r.name.lower()][:12]
            problem = "matches several rows" if matches else "is not a published row"
            raise ValueError(
                f"{name!r} {problem}; "
                + (f"rows like it: {', '.join(close)}" if close else "list them with --list-published")
            )
        found.append(matches[0])
    return found
