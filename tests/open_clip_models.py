"""Tiny random open_clip models for the tests: a registered config name and a ``local-dir:`` folder."""

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

TINY_MODEL = "fsc-test-tiny-vit"
# A ViT-B-32-shaped config shrunk to run in well under a second per step on a CPU. It keeps the
# default tokenizer's vocabulary so open_clip.get_tokenizer works on it unchanged.
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_tiny_config(folder: Path) -> str:
    """Register ``TINY_CONFIG`` with open_clip under ``TINY_MODEL`` (a JSON file in ``folder``)."""
    config = Path(folder) / f"{TINY_MODEL}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    return TINY_MODEL


def save_local_dir(folder: Path, seed: int = 0) -> str:
    """A random ``TINY_CONFIG`` model saved in open_clip's ``local-dir`` layout.

    ``folder`` receives ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``) and the
    weights as ``open_clip_model.safetensors``, the file names open_clip's factory looks for.

    Returns:
        The model name to pass to open_clip: ``"local-dir:<folder>"``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():  # the caller's random state is left as it was
        torch.manual_seed(seed)
        model = open_clip.CLIP(**TINY_CONFIG)
    preprocess_cfg = {
        "size": TINY_CONFIG["vision_cfg"]["image_size"],
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
    }
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": preprocess_cfg})
    )
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    return f"local-dir:{folder}"
