"""The demo's protocol: pre-train a tiny open_clip model on the world, fine-tune copies of it with
each objective, and evaluate all of them on held-out scenes.

It mirrors the FSC-CLIP paper in miniature: a CLIP model pre-trained on plenty of data is
fine-tuned on a smaller caption set with hard negatives, then tested for compositionality (does
the true caption beat its hard negatives?) and for the multi-modal skills fine-tuning can erode
(zero-shot classification, image-text retrieval).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer

from fsc_losses import FSCLoss
from fsc_losses.integrations.open_clip import encode_dense
from fsc_losses.negatives import HN_KINDS, LEXICON, make_hard_negatives

from . import world

CONTEXT_LENGTH = 16  # the longest caption or negative is 13 tokens with start and end
# What a held-out hard negative gets wrong about its scene, whichever kind of negative it is.
TESTS: dict[str, str] = {
    "binding": "the scene's sizes, colours and shapes, bound to the wrong objects",
    "relation": "the scene's objects in the opposite spatial relation",
    "attribute": "a size, colour or shape the scene does not have",
    "shuffle": "the caption's words in an order outside the world's grammar",
}
METRICS: dict[str, str] = {
    **{
        test: f"true caption beats a negative with {what} (global similarity)" for test, what in TESTS.items()
    },
    "unseen_comp": "the four tests above, on scenes with a held-out colour-shape pair",
    "zero_shot": "one-object images classified among all size x colour x shape prompts",
    "i2t_r1": "image-to-text retrieval, recall@1 (any caption with the scene's meaning is right)",
    "t2i_r1": "text-to-image retrieval, recall@1 (any scene the caption describes is right)",
}


@dataclass(frozen=True)
class Method:
    """A fine-tuning objective: the ``FSCLoss`` arguments and whether it sees hard negatives."""

    name: str
    label: str
    loss_kwargs: dict
    uses_negatives: bool

    def make_loss(self) -> FSCLoss:
        return FSCLoss(**self.loss_kwargs)

    def describe(self) -> dict:
        """The loss's effective hyper-parameters, defaults included, for the results file."""
        loss = self.make_loss()
        names = ("global_weight", "local_weight", "focal_gamma", "label_smoothing", "normalizer", "sparsify")
        return {name: getattr(loss, name) for name in names}


METHODS: tuple[Method, ...] = (
    Method("clip", "CLIP", dict(global_weight=0.0, local_weight=0.0), False),
    # The paper's "HN loss alone" baseline is NegCLIP-style cross-entropy over the true caption
    # and its negatives.
    Method(
        "global_hn",
        "CLIP + global HN",
        dict(global_weight=0.5, local_weight=0.0, focal_gamma=0.0, label_smoothing=0.0),
        True,
    ),
    # Separates what SCR does from what the local loss does.
    Method("global_hn_scr", "CLIP + global HN + SCR", dict(global_weight=0.5, local_weight=0.0), True),
    Method("fsc_clip", "FSC-CLIP", dict(global_weight=0.5, local_weight=0.2), True),
)
PRETRAINED = "pretrained"
PRETRAINED_LABEL = "pre-trained (no FT)"


@dataclass(frozen=True)
class DemoConfig:
    """Model sizes, data sizes, steps and learning rates of one demo run."""

    seed: int = 0
    image_size: int = 32
    patch_size: int = 8
    vision_layers: int = 2
    vision_width: int = 64
    text_layers: int = 2
    text_width: int = 64
    embed_dim: int = 64
    batch_size: int = 128
    pretrain_scenes: int = 16384
    pretrain_steps: int = 1500
    pretrain_lr: float = 1e-3
    finetune_scenes: int = 4096
    # 2: two objects in every fine-tuning scene, as COCO captions, the paper's fine-tuning set,
    # name several objects while the zero-shot test classifies single objects (as ImageNet does);
    # 0: one or two, like pre-training.
    finetune_objects: int = 2
    finetune_steps: int = 300
    finetune_lr: float = 3e-4
    eval_scenes: int = 4000  # half "seen", half "unseen"
    zero_shot_scenes: int = 2000  # half "seen", half "unseen"

    @classmethod
    def quick(cls, **overrides) -> DemoConfig:
        """A run of about a minute on a laptop CPU: the pipeline end to end, not a result."""
        small = dict(
            pretrain_scenes=2048,
            pretrain_steps=150,
            finetune_scenes=1024,
            finetune_steps=40,
            eval_scenes=300,
            zero_shot_scenes=200,
        )
        return cls(**{**small, **overrides})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_model(config: DemoConfig, vocab_size: int) -> CLIP:
    """A randomly initialised ViT CLIP small enough to train on a CPU in minutes.

    Patches of 8 pixels give a 4 x 4 grid at 32 px: a small object covers one to four patches,
    which is what the local loss pools over. Heads are 32 wide in both towers.
    """
    vision = CLIPVisionCfg(
        layers=config.vision_layers,
        width=config.vision_width,
        head_width=32,
        patch_size=config.patch_size,
        image_size=config.image_size,
    )
    text = CLIPTextCfg(
        context_length=CONTEXT_LENGTH,
        vocab_size=vocab_size,
        width=config.text_width,
        heads=config.text_width // 32,
        layers=config.text_layers,
    )
    return CLIP(embed_dim=config.embed_dim, vision_cfg=vision, text_cfg=text)


class Tokenizer:
    """open_clip's default BPE tokenizer at the demo's context length, refusing to truncate, with
    its ids renumbered into the few the world and its hard negatives use.

    The BPE ids of every word a caption or negative can hold (the world's words, the negative
    generator's colours, sizes, shapes and relations, and "an") become ``1 .. n``; start-of-text
    and end-of-text become ``n + 1`` and ``n + 2``, so that end-of-text stays the largest id, which
    is where open_clip's text tower pools; ``0`` stays padding. The model then needs ``n + 3``
    token embeddings instead of 49,408: the same text tower, with an optimiser step over 0.06 M
    instead of 3.2 M embedding weights, a quarter of a CLIP-loss step's time on a CPU.
    """

    def __init__(self):
        self._tokenizer = SimpleTokenizer(context_length=CONTEXT_LENGTH)
        words = set(world.VOCABULARY) | {"an"}
        words |= {
            w
            for c in ("colour", "size", "shape", "relation")
            for g in LEXICON[c]
            for p in g
            for w in p.split()
        }
        bpe_ids = sorted({i for w in words for i in self._tokenizer.encode(w)})
        self.sot_id = len(bpe_ids) + 1
        self.eot_id = len(bpe_ids) + 2
        self.vocab_size = len(bpe_ids) + 3
        table = torch.full((len(self._tokenizer.encoder),), -1, dtype=torch.long)
        table[torch.tensor(bpe_ids)] = torch.arange(1, len(bpe_ids) + 1)
        table[self._tokenizer.sot_token_id] = self.sot_id
        table[self._tokenizer.eot_token_id] = self.eot_id
        table[0] = 0  # padding (and the BPE id 0, "!", which no caption holds)
        self._table = table

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        bpe = self._tokenizer(list(texts))
        # Truncation would cut the end of a caption, often the part a negative changed.
        if (bpe[:, -1] != 0).any():
            raise ValueError(f"a caption needs more than {CONTEXT_LENGTH} tokens")
        ids = self._table[bpe]
        if (ids < 0).any():
            unknown = sorted({t for t, i in zip(texts, ids, strict=True) if (i < 0).any()})[:3]
            raise ValueError(f"texts hold words outside the demo's vocabulary, e.g. {unknown}")
        return ids


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` to the float input of the model, roughly zero-mean, unit-variance."""
    return (images.float() / 255.0 - 0.5) / 0.25


class Captioned(NamedTuple):
    """Scenes as tensors: ``images`` uint8 ``(N, 3, H, W)``, ``texts`` token ids ``(N, T)``."""

    scenes: list[world.Scene]
    images: torch.Tensor
    texts: torch.Tensor


class FinetuneSet(NamedTuple):
    """The fine-tuning scenes and their hard negatives, made once and shared by every method."""

    data: Captioned
    negatives: torch.Tensor  # (N, K, T) token ids, kind by kind as HN_KINDS
    neg_valid: torch.Tensor  # (N, K) bool


class Benchmark(NamedTuple):
    """Held-out scenes with everything the metrics need, tokenized once."""

    data: Captioned
    negatives: torch.Tensor  # (N, K, T)
    neg_test: torch.Tensor  # (N, K) int: index into TESTS, -1 where the negative does not count
    unseen: torch.Tensor  # (N,) bool: the scene has a held-out pair
    meaning: torch.Tensor  # (N,) int: scenes with the same number describe the same scenes
    zero_shot: Captioned
    zero_shot_labels: torch.Tensor  # (M,) index into the prompts
    prompts: torch.Tensor  # (C, T)


def captioned(scenes: list[world.Scene], image_size: int, tokenizer: Tokenizer) -> Captioned:
    images = torch.from_numpy(world.render(scenes, image_size)).permute(0, 3, 1, 2).contiguous()
    return Captioned(scenes, images, tokenizer([s.caption for s in scenes]))


def negatives_for(
    captions: list[str], seed: int, tokenizer: Tokenizer
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The package's hard negatives of ``captions``: ``(N, K, T)`` ids, ``(N, K)`` validity and
    the flat, kind-major strings ``make_hard_negatives`` returned."""
    negatives, valid = make_hard_negatives(captions, kinds=HN_KINDS, seed=seed)
    ids = tokenizer(negatives).view(len(HN_KINDS), len(captions), -1).transpose(0, 1)
    return ids.contiguous(), valid, negatives


def make_finetune_set(config: DemoConfig, tokenizer: Tokenizer) -> FinetuneSet:
    # A draw of the training split independent of the pre-training pool, as a fine-tuning caption
    # set is a new, smaller dataset. Negatives are made once per caption, like the precomputed
    # negatives of NegCLIP and FSC-CLIP.
    scenes = world.sample_scenes(
        config.finetune_scenes, "train", config.seed + 1, config.image_size, config.finetune_objects or None
    )
    data = captioned(scenes, config.image_size, tokenizer)
    negatives, valid, texts = negatives_for([s.caption for s in scenes], config.seed, tokenizer)
    # A swap often pairs a colour with a shape that the training split never pairs it with
    # ("a red square ... a blue circle" -> "a red circle ..."). Trained on such negatives, a model
    # learns that any held-out pair makes a caption false, from the text alone: it then rejects the
    # true captions of the "unseen" scenes and accepts their negatives. Those negatives are left
    # out, so held-out pairs never occur in any training text.
    held_out = torch.tensor([names_held_out_pair(t) for t in texts]).view(len(HN_KINDS), len(scenes)).T
    return FinetuneSet(data, negatives, valid & ~held_out)


def names_held_out_pair(text: str) -> bool:
    """Whether ``text`` has a colour word right before a shape word that :data:`world.HELD_OUT` pairs."""
    words = text.split()
    return any(pair in world.HELD_OUT for pair in zip(words[:-1], words[1:], strict=True))


def make_benchmark(config: DemoConfig, tokenizer: Tokenizer) -> Benchmark:
    half = config.eval_scenes // 2
    scenes = world.sample_scenes(half, "seen", config.seed, config.image_size) + world.sample_scenes(
        config.eval_scenes - half, "unseen", config.seed, config.image_size
    )
    data = captioned(scenes, config.image_size, tokenizer)
    # Another seed than the fine-tuning negatives: the test negatives are new captions.
    negatives, valid, texts = negatives_for([s.caption for s in scenes], config.seed + 1, tokenizer)
    neg_test = torch.full(valid.shape, -1)
    for k in range(len(HN_KINDS)):
        for b, scene in enumerate(scenes):
            test = negative_test(scene, texts[k * len(scenes) + b]) if valid[b, k] else None
            if test is not None:
                neg_test[b, k] = list(TESTS).index(test)
    unseen = torch.tensor([s.has_unseen_pair for s in scenes])
    index: dict[tuple, int] = {}
    meaning = torch.tensor([index.setdefault(_meaning(s), len(index)) for s in scenes])

    half = config.zero_shot_scenes // 2
    singles = world.sample_scenes(half, "seen", config.seed, config.image_size, num_objects=1)
    singles += world.sample_scenes(
        config.zero_shot_scenes - half, "unseen", config.seed, config.image_size, num_objects=1
    )
    classes = [
        (size, colour, shape) for size in world.SIZES for colour in world.COLOURS for shape in world.SHAPES
    ]
    labels = torch.tensor([classes.index((o.size, o.colour, o.shape)) for s in singles for o in s.objects])
    prompts = tokenizer([f"a {size} {colour} {shape}" for size, colour, shape in classes])
    zero_shot = captioned(singles, config.image_size, tokenizer)
    return Benchmark(data, negatives, neg_test, unseen, meaning, zero_shot, labels, prompts)


def negative_test(scene: world.Scene, negative: str) -> str | None:
    """Which of :data:`TESTS` a hard negative of ``scene`` makes, whatever rule made it.

    ``None`` where it does not count: a negative with a word the world never uses ("turquoise",
    "pyramid") is told apart by that word alone, as is a phrase outside the world's grammar ("X on
    Y", which the world says "X on top of Y"); and a negative can describe the scene as well as its
    caption ("right of" between two identical objects).
    """
    parsed = world.parse_caption(negative)
    if parsed is None:
        same_words = sorted(negative.split()) == sorted(scene.caption.split())
        return "shuffle" if same_words else None
    objects, relation = parsed
    truth = _attributes(scene)
    if world.meaning(objects, relation) == _meaning(scene):
        return None
    if sorted(objects) == sorted(truth):
        return "relation"
    if all(sorted(o[i] for o in objects) == sorted(o[i] for o in truth) for i in range(3)):
        return "binding"
    return "attribute"


def _lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 10% of steps, then cosine decay to zero."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _batch_order(num_items: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` indices: shuffled epochs, one fixed order per seed."""
    rng = np.random.default_rng(seed)
    epochs = math.ceil(steps * batch_size / num_items)
    order = np.concatenate([rng.permutation(num_items) for _ in range(epochs)])
    return order[: steps * batch_size].reshape(steps, batch_size)


def _train(
    model: CLIP,
    loss_fn: FSCLoss,
    steps: int,
    lr: float,
    batch: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
    tokenizer: Tokenizer,
    device: torch.device,
    on_step: Callable[[dict[str, float]], None],
) -> None:
    """AdamW with warm-up and cosine decay; ``batch(step)`` gives images, texts, neg_valid."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        images, texts, neg_valid = batch(step)
        out = encode_dense(
            model,
            to_pixels(images).to(device),
            texts.to(device),
            sot_id=tokenizer.sot_id,
            eot_id=tokenizer.eot_id,
        )
        if neg_valid is not None:
            out["neg_valid"] = neg_valid.to(device)
        terms = loss_fn(**out, output_dict=True)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            # open_clip's cap on the temperature.
            model.logit_scale.clamp_(0, math.log(100))
        on_step({name: value.item() for name, value in terms.items()})
    model.eval()


def pretrain(config: DemoConfig, tokenizer: Tokenizer, device: torch.device, on_step) -> CLIP:
    """The shared starting point: a random-init model trained with the CLIP loss alone."""
    torch.manual_seed(config.seed)
    model = build_model(config, tokenizer.vocab_size).to(device)
    pool = captioned(
        world.sample_scenes(config.pretrain_scenes, "train", config.seed, config.image_size),
        config.image_size,
        tokenizer,
    )
    order = _batch_order(len(pool.scenes), config.pretrain_steps, config.batch_size, config.seed)

    def batch(step):
        idx = torch.from_numpy(order[step])
        return pool.images[idx], pool.texts[idx], None

    _train(
        model,
        FSCLoss(global_weight=0.0, local_weight=0.0),
        config.pretrain_steps,
        config.pretrain_lr,
        batch,
        tokenizer,
        device,
        on_step,
    )
    return model


def finetune(
    pretrained: CLIP,
    method: Method,
    data: FinetuneSet,
    config: DemoConfig,
    tokenizer: Tokenizer,
    device: torch.device,
    on_step,
) -> CLIP:
    """A copy of ``pretrained`` fine-tuned with ``method``: same batches and steps for every method."""
    model = copy.deepcopy(pretrained)
    order = _batch_order(len(data.data.scenes), config.finetune_steps, config.batch_size, config.seed + 1)

    def batch(step):
        idx = torch.from_numpy(order[step])
        texts = data.data.texts[idx]
        if not method.uses_negatives:
            return data.data.images[idx], texts, None
        # FSCLoss's flat layout: the B true captions, then one block of B negatives per kind.
        negatives = data.negatives[idx].transpose(0, 1).reshape(-1, texts.shape[1])
        return data.data.images[idx], torch.cat([texts, negatives]), data.neg_valid[idx]

    loss = method.make_loss()
    _train(model, loss, config.finetune_steps, config.finetune_lr, batch, tokenizer, device, on_step)
    return model


def _in_chunks(encode: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, chunk: int = 512):
    return torch.cat([encode(inputs[i : i + chunk]) for i in range(0, len(inputs), chunk)]).cpu()


def _embed_images(model: CLIP, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return _in_chunks(lambda x: model.encode_image(to_pixels(x).to(device), normalize=True), images)


def _embed_texts(model: CLIP, texts: torch.Tensor, device: torch.device) -> torch.Tensor:
    return _in_chunks(lambda x: model.encode_text(x.to(device), normalize=True), texts)


@torch.no_grad()
def evaluate(model: CLIP, bench: Benchmark, device: torch.device) -> dict[str, float]:
    """Every metric of :data:`METRICS` for ``model``, each a fraction in [0, 1]."""
    model.eval()
    images = _embed_images(model, bench.data.images, device)
    texts = _embed_texts(model, bench.data.texts, device)
    negatives = _embed_texts(model, bench.negatives.flatten(0, 1), device)
    negatives = negatives.view(*bench.negatives.shape[:2], -1)

    true_score = (images * texts).sum(-1)
    wins = true_score[:, None] > torch.einsum("nd,nkd->nk", images, negatives)
    results = {test: wins[bench.neg_test == t].float().mean().item() for t, test in enumerate(TESTS)}
    results["unseen_comp"] = wins[(bench.neg_test >= 0) & bench.unseen[:, None]].float().mean().item()

    zs_images = _embed_images(model, bench.zero_shot.images, device)
    prompts = _embed_texts(model, bench.prompts, device)
    results["zero_shot"] = ((zs_images @ prompts.T).argmax(1) == bench.zero_shot_labels).float().mean().item()

    # Scenes can share a meaning ("a small red ring", "a tiny red ring"); retrieving any is right.
    meaning = bench.meaning
    similarity = images @ texts.T
    results["i2t_r1"] = (meaning[similarity.argmax(1)] == meaning).float().mean().item()
    results["t2i_r1"] = (meaning[similarity.argmax(0)] == meaning).float().mean().item()
    return {name: results[name] for name in METRICS}


def _attributes(scene: world.Scene) -> tuple[world.Attributes, ...]:
    return tuple((o.size, o.colour, o.shape) for o in scene.objects)


def _meaning(scene: world.Scene) -> tuple:
    return world.meaning(_attributes(scene), scene.relation)


def counts(bench: Benchmark) -> dict[str, int]:
    """How many comparisons or queries each metric averages over."""
    n = {test: int((bench.neg_test == t).sum()) for t, test in enumerate(TESTS)}
    n["unseen_comp"] = int(((bench.neg_test >= 0) & bench.unseen[:, None]).sum())
    n["zero_shot"] = len(bench.zero_shot.scenes)
    n["i2t_r1"] = n["t2i_r1"] = len(bench.data.scenes)
    return n
