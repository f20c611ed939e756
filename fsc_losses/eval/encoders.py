"""The models ``fsc_losses.eval`` scores, behind one small interface.

An encoder turns a PIL image into the model's input tensor (``transform``, run in the data
loader's workers), a batch of those into image embeddings, and a list of strings into text
embeddings. Two kinds:

* ``EncodeMethods``: any object with ``encode_image`` / ``encode_text``, an open_clip model
  among them, with its tokenizer and preprocess transform;
* ``TransformersEncoder``: a transformers ``CLIPModel`` or ``SiglipModel`` with its processor,
  through ``fsc_losses.integrations.transformers`` (imported only for such a model).

The embeddings come back as the model gives them (any dtype, not normalised); the scorer
normalises them in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EncodeMethods:
    """A model with ``encode_image(pixels)`` and ``encode_text(tokens)``, as open_clip's are."""

    def __init__(self, model, tokenizer: Callable, preprocess: Callable, device: torch.device):
        self.model, self.tokenizer, self.transform, self.device = model, tokenizer, preprocess, device

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels.to(self.device, non_blocking=True))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


class _ImageProcessor:
    """A transformers image processor as a one-image transform (a class, not a lambda, so that
    data-loader workers can receive it)."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


class TransformersEncoder:
    """A transformers ``CLIPModel`` or ``SiglipModel`` and its processor.

    Captions are cut to the text tower's positions. SigLIP's are padded to them too: SigLIP was
    trained on captions padded to full length, and its text embedding changes with the padding.
    """

    def __init__(self, model, processor, device: torch.device):
        from transformers import CLIPModel, SiglipModel

        from fsc_losses.integrations import transformers as integration

        if not isinstance(model, (CLIPModel, SiglipModel)):
            raise TypeError(
                f"processor= is for a transformers CLIPModel or SiglipModel, got {type(model).__name__}"
            )
        for part in ("tokenizer", "image_processor"):
            if getattr(processor, part, None) is None:
                raise TypeError(
                    f"processor must be a transformers processor with a {part} (AutoProcessor), "
                    f"got {type(processor).__name__}"
                )
        self.model, self.device, self.integration = model, device, integration
        self.tokenizer = processor.tokenizer
        self.transform = _ImageProcessor(processor.image_processor)
        self.max_length = model.config.text_config.max_position_embeddings
        self.padding = True if isinstance(model, CLIPModel) else "max_length"

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.integration.image_embeddings(self.model, pixels.to(self.device, non_blocking=True))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            texts, padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        mask = tokens.get("attention_mask")
        return self.integration.text_embeddings(
            self.model, tokens["input_ids"].to(self.device), None if mask is None else mask.to(self.device)
        )


def make_encoder(model, tokenizer=None, preprocess=None, processor=None, device=None):
    """The encoder for ``model`` (DDP and DataParallel wrappers are looked through).

    Args:
        model: an open_clip model or any object with ``encode_image`` / ``encode_text`` (then
            ``tokenizer`` and ``preprocess`` are needed), or a transformers ``CLIPModel`` /
            ``SiglipModel`` (then ``processor``).
        device: where the inputs go; default: the device of the model's first parameter (the CPU
            for a model without parameters). The model is not moved.

    Raises:
        TypeError: a model of neither kind, or the wrong helpers for it.
        ValueError: ``device`` is not where the model's parameters are.
    """
    module = unwrap(model)
    params = next(iter(module.parameters()), None) if isinstance(module, nn.Module) else None
    if device is None:
        device = params.device if params is not None else torch.device("cpu")
    device = torch.device(device)
    if params is not None and params.device.type != device.type:
        raise ValueError(
            f"device={device} but the model's parameters are on {params.device}: move the model first"
        )
    if processor is not None:
        if tokenizer is not None or preprocess is not None:
            raise TypeError(
                "pass processor= for a transformers model, or tokenizer= and preprocess=, not both"
            )
        return TransformersEncoder(module, processor, device)
    if not (hasattr(module, "encode_image") and hasattr(module, "encode_text")):
        raise TypeError(
            f"{type(module).__name__} has no encode_image / encode_text; for a transformers CLIPModel "
            "or SiglipModel pass processor=AutoProcessor.from_pretrained(...)"
        )
    if tokenizer is None or preprocess is None:
        raise TypeError(
            "a model with encode_image / encode_text needs tokenizer= and preprocess= "
            "(open_clip: open_clip.get_tokenizer(name) and the preprocess it creates)"
        )
    return EncodeMethods(module, tokenizer, preprocess, device)


def unwrap(model):
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


@contextmanager
def scoring_mode(model, device: torch.device) -> Iterator[None]:
    """Eval mode, ``torch.inference_mode`` and, on CUDA, autocast; afterwards every submodule is
    back in the mode it had (a trainer calls this mid-epoch, maybe with frozen parts in eval)."""
    module = unwrap(model)
    modes = [(m, m.training) for m in module.modules()] if isinstance(module, nn.Module) else []
    if isinstance(module, nn.Module):
        module.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"):
            yield
    finally:
        for m, training in modes:
            m.training = training
