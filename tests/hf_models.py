"""Tiny, randomly initialised transformers CLIP and SigLIP models with word-level tokenizers and
image processors at 32 px, built from configs (no downloads), rows of random images with the
example captions, and the TrainingArguments of a short CPU run: what the Trainer tests and the
example's test train."""

import numpy as np
import torch
import transformers

from .example_data import CAPTIONS
from .hf_tokenizers import BOS, EOS, PAD, word_tokenizer

FAMILIES = ("clip", "siglip")
CONTEXT = 16
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
WORDS = {word for caption in CAPTIONS for word in caption.split()}


def config(family: str):
    # CLIP pools at the first end token unless its id is 2 (a legacy rule), hence EOS = 1
    text = dict(TOWER, vocab_size=64, max_position_embeddings=CONTEXT, pad_token_id=PAD, eos_token_id=EOS)
    vision = dict(TOWER, image_size=32, patch_size=8)
    if family == "clip":
        return transformers.CLIPConfig(
            text_config=dict(text, bos_token_id=BOS), vision_config=vision, projection_dim=16
        )
    return transformers.SiglipConfig(text_config=dict(text, bos_token_id=None), vision_config=vision)


def processor(family: str):
    """The family's processor: its image processor at 32 px and a word-level tokenizer laid out as
    the family's (CLIP: start and end token; SigLIP: end token only, padding with it)."""
    tokenizer = word_tokenizer(WORDS, with_bos=family == "clip", max_length=CONTEXT)
    if family == "clip":
        images = transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
        return transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer)
    images = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    return transformers.SiglipProcessor(image_processor=images, tokenizer=tokenizer)


def model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return transformers.AutoModel.from_config(config(family))


def rows(n: int = len(CAPTIONS), seed: int = 0) -> list[dict]:
    """``n`` dataset rows: a random ``uint8 (40, 48, 3)`` image and a caption."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)
    return [{"image": image, "caption": CAPTIONS[i % len(CAPTIONS)]} for i, image in enumerate(images)]


def training_args(out, **overrides) -> transformers.TrainingArguments:
    """A short, quiet CPU run into ``out``: 2 steps of 4 rows, a log every step, no checkpoints."""
    defaults = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
    )
    return transformers.TrainingArguments(**{**defaults, **overrides})
