"""Tiny, randomly initialised instances of every LVLM architecture docs/lvlm.md lists, each built
from its own transformers config class, with its real processor and image processor classes over
an offline word-level tokenizer carrying the family's special tokens (tests/hf_tokenizers.py), and
rows of random images of several sizes with captions and long captions.

Sizes are the smallest each family's layout allows (32 px images, 4-16 image positions, width 32,
2 layers), so that a forward takes milliseconds; the structure (vision tower, projector, language
model, the processor's image layout, the model's position ids and attention masks) is the real
one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import transformers

from .example_data import CAPTIONS
from .hf_tokenizers import lvlm_tokenizer

SOFT = "<soft>"
SOFT_TOKENS = 2
# E5-V's wording (docs/lvlm.md); {image} is the architecture's image placeholder
IMAGE_PROMPT = "{image} " + SOFT * SOFT_TOKENS + " summary above image in one word :"
TEXT_PROMPT = "{caption} " + SOFT * SOFT_TOKENS + " summary above sentence in one word :"
NTP_PROMPT = "{image} describe the image in detail :"
DETAILS = [
    "the light is soft",
    "it is a photo taken outside on a grey day with trees far behind",
    "shot indoors",
]
LONG_CAPTIONS = [f"{caption} . {DETAILS[i % len(DETAILS)]} ." for i, caption in enumerate(CAPTIONS)]
WORDS = {w for text in [*LONG_CAPTIONS, IMAGE_PROMPT, TEXT_PROMPT, NTP_PROMPT] for w in text.split()} - {
    "{image}",
    "{caption}",
}
# (height, width) of the rows' images: different shapes give LLaVA-NeXT, OneVision, Qwen and
# Idefics3 different numbers of image positions per row
IMAGE_SIZES = [(40, 48), (24, 56), (32, 32), (56, 24)]

WIDTH = 32
TEXT = dict(
    hidden_size=WIDTH,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=512,
)
VISION = dict(hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
# LLaVA-NeXT / OneVision's any-resolution grids at 32 px tiles
PINPOINTS = [[32, 32], [32, 64], [64, 32]]
# PaliGemma 2's cap, scaled to the tiny model's logits (the released models cap at 30, where their
# logits reach tens): the capped and uncapped NTP terms differ by much more than the tests' tolerance
PALIGEMMA2_SOFTCAP = 0.05


def _text_config(cls, tokenizer, **overrides):
    return cls(
        **TEXT,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **overrides,
    )


def _llava(tokenizer):
    images = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = transformers.LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(image_size=32, patch_size=8, **VISION),
        text_config=_text_config(transformers.LlamaConfig, tokenizer),
        image_token_index=tokenizer.image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    return processor, config


def _llava_next(tokenizer):
    images = transformers.LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=PINPOINTS
    )
    processor = transformers.LlavaNextProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = transformers.LlavaNextConfig(
        vision_config=transformers.CLIPVisionConfig(image_size=32, patch_size=8, **VISION),
        text_config=_text_config(transformers.LlamaConfig, tokenizer),
        image_token_index=tokenizer.image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_grid_pinpoints=PINPOINTS,
    )
    return processor, config


def _llava_onevision(tokenizer):
    processor = transformers.LlavaOnevisionProcessor(
        image_processor=transformers.LlavaOnevisionImageProcessor(
            size={"height": 32, "width": 32}, image_grid_pinpoints=PINPOINTS
        ),
        tokenizer=tokenizer,
        video_processor=transformers.LlavaOnevisionVideoProcessor(size={"height": 32, "width": 32}),
        num_image_tokens=16,
        vision_feature_select_strategy="full",
    )
    config = transformers.LlavaOnevisionConfig(
        vision_config=transformers.SiglipVisionConfig(image_size=32, patch_size=8, **VISION),
        text_config=_text_config(transformers.Qwen2Config, tokenizer),
        image_token_index=tokenizer.image_token_id,
        video_token_index=tokenizer.video_token_id,
        vision_feature_layer=-1,
        image_grid_pinpoints=PINPOINTS,
    )
    return processor, config


def _mistral3(tokenizer):
    processor = transformers.PixtralProcessor(
        image_processor=transformers.PixtralImageProcessor(
            size={"longest_edge": 32}, patch_size={"height": 8, "width": 8}
        ),
        tokenizer=tokenizer,
        patch_size=4,
        spatial_merge_size=2,
    )
    vision = transformers.PixtralVisionConfig(image_size=32, patch_size=4, head_dim=16, **VISION)
    config = transformers.Mistral3Config(
        vision_config=vision,
        text_config=_text_config(transformers.MistralConfig, tokenizer),
        image_token_index=tokenizer.image_token_id,
        spatial_merge_size=2,
        vision_feature_layer=-1,
    )
    return processor, config


def _qwen(version):
    def build(tokenizer):
        pixels = dict(patch_size=4, merge_size=2, temporal_patch_size=2)
        images = transformers.Qwen2VLImageProcessor(min_pixels=32 * 32, max_pixels=32 * 32, **pixels)
        ids = dict(
            image_token_id=tokenizer.image_token_id,
            video_token_id=tokenizer.video_token_id,
            vision_start_token_id=tokenizer.vision_start_token_id,
            vision_end_token_id=tokenizer.vision_end_token_id,
        )
        tower = dict(
            depth=2, hidden_size=WIDTH, num_heads=2, patch_size=4, spatial_merge_size=2, temporal_patch_size=2
        )
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
        if version == "2":
            videos = transformers.Qwen2VLVideoProcessor(min_pixels=32 * 32, max_pixels=32 * 32, **pixels)
            processor = transformers.Qwen2VLProcessor(
                image_processor=images, tokenizer=tokenizer, video_processor=videos
            )
            vision = transformers.Qwen2VLVisionConfig(embed_dim=WIDTH, mlp_ratio=2, **tower)
            text = _text_config(transformers.Qwen2VLTextConfig, tokenizer, rope_parameters=rope)
            return processor, transformers.Qwen2VLConfig(vision_config=vision, text_config=text, **ids)
        if version == "2.5":
            videos = transformers.Qwen2VLVideoProcessor(min_pixels=32 * 32, max_pixels=32 * 32, **pixels)
            processor = transformers.Qwen2_5_VLProcessor(
                image_processor=images, tokenizer=tokenizer, video_processor=videos
            )
            vision = transformers.Qwen2_5_VLVisionConfig(
                intermediate_size=64,
                out_hidden_size=WIDTH,
                window_size=16,
                fullatt_block_indexes=[1],
                **tower,
            )
            text = _text_config(transformers.Qwen2_5_VLTextConfig, tokenizer, rope_parameters=rope)
            return processor, transformers.Qwen2_5_VLConfig(vision_config=vision, text_config=text, **ids)
        videos = transformers.Qwen3VLVideoProcessor(
            size={"shortest_edge": 32 * 32, "longest_edge": 32 * 32}, **pixels
        )
        processor = transformers.Qwen3VLProcessor(
            image_processor=images, tokenizer=tokenizer, video_processor=videos
        )
        vision = transformers.Qwen3VLVisionConfig(
            intermediate_size=64,
            out_hidden_size=WIDTH,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
            **tower,
        )
        text = _text_config(
            transformers.Qwen3VLTextConfig, tokenizer, rope_parameters={**rope, "mrope_interleaved": True}
        )
        return processor, transformers.Qwen3VLConfig(vision_config=vision, text_config=text, **ids)

    return build


def _paligemma(version):
    def build(tokenizer):
        images = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
        images.image_seq_length = 16  # what PaliGemma's preprocessor_config.json sets
        processor = transformers.PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
        if version == 1:
            text = _text_config(transformers.GemmaConfig, tokenizer)
        else:
            text = _text_config(
                transformers.Gemma2Config,
                tokenizer,
                final_logit_softcapping=PALIGEMMA2_SOFTCAP,
                sliding_window=8,
                query_pre_attn_scalar=8,
            )
        config = transformers.PaliGemmaConfig(
            vision_config=transformers.SiglipVisionConfig(image_size=32, patch_size=8, **VISION),
            text_config=text,
            image_token_index=tokenizer.image_token_id,
            vocab_size=len(tokenizer),
            projection_dim=WIDTH,
            hidden_size=WIDTH,
        )
        return processor, config

    return build


def _gemma3(tokenizer):
    processor = transformers.Gemma3Processor(
        image_processor=transformers.Gemma3ImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        image_seq_length=4,
    )
    config = transformers.Gemma3Config(
        vision_config=transformers.SiglipVisionConfig(image_size=32, patch_size=8, **VISION),
        text_config=_text_config(
            transformers.Gemma3TextConfig,
            tokenizer,
            sliding_window=8,
            query_pre_attn_scalar=8,
            layer_types=["sliding_attention", "full_attention"],  # Gemma 3 interleaves 5 to 1
        ),
        mm_tokens_per_image=4,
        boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id,
        image_token_index=tokenizer.image_token_id,
    )
    return processor, config


def _idefics3(smol):
    def build(tokenizer):
        sizes = dict(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
        vision = dict(image_size=32, patch_size=8, **VISION)
        text = _text_config(transformers.LlamaConfig, tokenizer)
        if not smol:
            images = transformers.Idefics3ImageProcessor(**sizes)
            processor = transformers.Idefics3Processor(
                image_processor=images, tokenizer=tokenizer, image_seq_len=4
            )
            config = transformers.Idefics3Config(
                vision_config=transformers.Idefics3VisionConfig(**vision),
                text_config=text,
                image_token_id=tokenizer.image_token_id,
                scale_factor=2,
            )
            return processor, config
        processor = transformers.SmolVLMProcessor(
            image_processor=transformers.SmolVLMImageProcessor(**sizes),
            tokenizer=tokenizer,
            video_processor=transformers.SmolVLMVideoProcessor(**sizes),
            image_seq_len=4,
        )
        config = transformers.SmolVLMConfig(
            vision_config=transformers.SmolVLMVisionConfig(**vision),
            text_config=text,
            image_token_id=tokenizer.image_token_id,
            scale_factor=2,
        )
        return processor, config

    return build


def _internvl(tokenizer):
    processor = transformers.InternVLProcessor(
        image_processor=transformers.GotOcr2ImageProcessor(
            size={"height": 32, "width": 32}, crop_to_patches=True, max_patches=4
        ),
        tokenizer=tokenizer,
        video_processor=transformers.InternVLVideoProcessor(size={"height": 32, "width": 32}),
        image_seq_length=4,
    )
    config = transformers.InternVLConfig(
        vision_config=transformers.InternVLVisionConfig(image_size=32, patch_size=8, **VISION),
        text_config=_text_config(transformers.Qwen2Config, tokenizer),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=4,
        downsample_ratio=0.5,
    )
    return processor, config


QWEN_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}
IDEFICS3_TOKENS = {
    "image_token": "<image>",
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}
IDEFICS3_TILES = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]


@dataclass(frozen=True)
class Architecture:
    """An architecture of the matrix: its name in docs/lvlm.md, its transformers model and
    processor classes, the special tokens its tokenizer carries (and whether it starts sequences
    with ``<bos>``), the image placeholder prompts hold, and how to build its processor and config."""

    name: str
    model_class: str
    processor_class: str
    special_tokens: dict
    placeholder: str
    build: Callable  # tokenizer -> (processor, config)
    with_bos: bool = True
    added_tokens: tuple = ()

    def require(self) -> None:
        """Skip the test, naming the architecture, when this transformers does not ship it (or,
        for SmolVLM, when num2words, which its processor needs and the test extra installs, is
        missing)."""
        missing = [c for c in (self.model_class, self.processor_class) if not hasattr(transformers, c)]
        if missing:
            pytest.skip(f"{self.name}: transformers {transformers.__version__} does not ship {missing}")
        if self.processor_class == "SmolVLMProcessor":
            pytest.importorskip("num2words", reason="SmolVLM: its processor needs num2words (the test extra)")

    def processor(self):
        tokenizer = lvlm_tokenizer(WORDS, self.special_tokens, self.added_tokens, self.with_bos)
        return self.build(tokenizer)[0]

    def model(self, processor, seed: int = 0):
        """The model for ``processor`` (its vocabulary: some processors add tokens)."""
        config = self.build(processor.tokenizer)[1]
        torch.manual_seed(seed)
        model = getattr(transformers, self.model_class)(config)
        # Weights the model initialises to zero, for the released ones to be loaded (Gemma 3's image
        # projection, InternVL's position embeddings), random: a random model would ignore its images.
        with torch.no_grad():
            for weight in model.parameters():
                if weight.dim() >= 2 and not weight.any():
                    weight.normal_(std=0.02)
        return model

    def prompts(self) -> dict[str, str]:
        return {
            "image_prompt": IMAGE_PROMPT.format(image=self.placeholder),
            "text_prompt": TEXT_PROMPT,
            "ntp_prompt": NTP_PROMPT.format(image=self.placeholder),
        }


QWEN_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
ARCHITECTURES = {
    a.name: a
    for a in [
        Architecture(
            "LLaVA-1.5",
            "LlavaForConditionalGeneration",
            "LlavaProcessor",
            {"image_token": "<image>"},
            "<image>",
            _llava,
        ),
        Architecture(
            "LLaVA-NeXT",
            "LlavaNextForConditionalGeneration",
            "LlavaNextProcessor",
            {"image_token": "<image>"},
            "<image>",
            _llava_next,
        ),
        Architecture(
            "LLaVA-OneVision",
            "LlavaOnevisionForConditionalGeneration",
            "LlavaOnevisionProcessor",
            {"image_token": "<image>", "video_token": "<video>"},
            "<image>",
            _llava_onevision,
            with_bos=False,
        ),
        Architecture(
            "Mistral 3",
            "Mistral3ForConditionalGeneration",
            "PixtralProcessor",
            {"image_token": "[IMG]", "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"},
            "[IMG]",
            _mistral3,
        ),
        Architecture(
            "Qwen2-VL",
            "Qwen2VLForConditionalGeneration",
            "Qwen2VLProcessor",
            QWEN_TOKENS,
            QWEN_PLACEHOLDER,
            _qwen("2"),
            with_bos=False,
        ),
        Architecture(
            "Qwen2.5-VL",
            "Qwen2_5_VLForConditionalGeneration",
            "Qwen2_5_VLProcessor",
            QWEN_TOKENS,
            QWEN_PLACEHOLDER,
            _qwen("2.5"),
            with_bos=False,
        ),
        Architecture(
            "Qwen3-VL",
            "Qwen3VLForConditionalGeneration",
            "Qwen3VLProcessor",
            QWEN_TOKENS,
            QWEN_PLACEHOLDER,
            _qwen("3"),
            with_bos=False,
        ),
        Architecture(
            "PaliGemma",
            "PaliGemmaForConditionalGeneration",
            "PaliGemmaProcessor",
            {"image_token": "<image>"},
            "<image>",
            _paligemma(1),
        ),
        Architecture(
            "PaliGemma 2",
            "PaliGemmaForConditionalGeneration",
            "PaliGemmaProcessor",
            {"image_token": "<image>"},
            "<image>",
            _paligemma(2),
        ),
        Architecture(
            "Gemma 3",
            "Gemma3ForConditionalGeneration",
            "Gemma3Processor",
            {
                "image_token": "<image_soft_token>",
                "boi_token": "<start_of_image>",
                "eoi_token": "<end_of_image>",
            },
            "<start_of_image>",
            _gemma3,
        ),
        Architecture(
            "Idefics3",
            "Idefics3ForConditionalGeneration",
            "Idefics3Processor",
            IDEFICS3_TOKENS,
            "<image>",
            _idefics3(smol=False),
            added_tokens=tuple(IDEFICS3_TILES),
        ),
        Architecture(
            "SmolVLM",
            "SmolVLMForConditionalGeneration",
            "SmolVLMProcessor",
            IDEFICS3_TOKENS,
            "<image>",
            _idefics3(smol=True),
            with_bos=False,
            added_tokens=tuple(IDEFICS3_TILES),
        ),
        Architecture(
            "InternVL",
            "InternVLForConditionalGeneration",
            "InternVLProcessor",
            {
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            },
            "<IMG_CONTEXT>",
            _internvl,
            with_bos=False,
        ),
    ]
}


def rows(n: int = len(IMAGE_SIZES), seed: int = 0) -> list[dict]:
    """``n`` dataset rows: a random ``uint8`` image (the sizes of ``IMAGE_SIZES`` in turn), a
    caption and a long caption."""
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.integers(0, 256, (*IMAGE_SIZES[i % len(IMAGE_SIZES)], 3), dtype=np.uint8),
            "caption": CAPTIONS[i % len(CAPTIONS)],
            "long_caption": LONG_CAPTIONS[i % len(LONG_CAPTIONS)],
        }
        for i in range(n)
    ]
