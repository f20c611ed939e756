"""Discriminative fine-tuning of an LVLM with ContrastiveNTPLoss on transformers' Trainer, in miniature.

    python examples/finetune_lvlm.py                  # 300 steps, a minute or two on a 2-core CPU
    python examples/finetune_lvlm.py --steps 3        # what the test runs

A tiny LLaVA-style model (a CLIP vision tower and a Llama language model, randomly initialised from
transformers configs: nothing is downloaded) becomes a dual encoder, VladVA's way: an image, or a
caption, is followed by a summarising prompt and the last position's hidden state is its embedding.
``ContrastiveNTPTrainer`` (``fsc_losses.integrations.hf_trainer``) trains LoRA adapters on the
language model (peft), a soft prompt placed just before the summarising instruction
(``fsc_losses.integrations.lvlm.SoftPrompt``), the temperature and the multimodal projector, with
``ContrastiveNTPLoss``:

- a contrastive loss between the images and their short captions (the demo world's captions,
  "a small red square to the left of a big blue circle");
- next-token prediction of a long, detailed caption of the same image
  (``fsc_losses.demo.world.long_caption``: every object's size, colour, shape and position, and
  the relation), conditioned on the image.

The dataset is a list of rows (image, caption, long caption); ``ContrastiveNTPCollator`` makes the
three sequences with a ``LlavaProcessor`` over a word-level tokenizer of the demo world's
vocabulary. Image-text retrieval (R@1 both ways, on held-out scenes, by last-token embeddings) is
printed before and after training; the adapter checkpoint (LoRA, soft prompt, temperature,
projector) is saved to ``--output-dir``.
"""

from __future__ import annotations

import argparse

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    TrainingArguments,
)

from fsc_losses import ContrastiveNTPLoss
from fsc_losses.demo.world import long_caption, render, sample_scenes
from fsc_losses.integrations.hf_trainer import ContrastiveNTPCollator, ContrastiveNTPTrainer
from fsc_losses.integrations.lvlm import (
    SoftPrompt,
    add_dual_encoder_modules,
    lora_target_modules,
    sequence_embeddings,
)

IMAGE_SIZE, PATCH_SIZE = 32, 8
PAD, BOS, EOS, UNK, IMAGE, SOFT = "<pad>", "<bos>", "<eos>", "<unk>", "<image>", "<soft>"
# E5-V's wording; VladVA does not publish its prompts. {soft} is where the soft prompt goes.
IMAGE_PROMPT = IMAGE + " {soft} summary above image in one word :"
TEXT_PROMPT = "{caption} {soft} summary above sentence in one word :"
NTP_PROMPT = IMAGE + " describe the image in detail :"


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the closed vocabulary of ``texts`` (lower-cased words and
    punctuation marks), with the image and soft-prompt placeholders as special tokens; it starts
    every sequence with ``<bos>`` and pads on the left."""
    split = pre_tokenizers.Whitespace()  # words and runs of punctuation
    words = sorted({word for text in texts for word, _ in split.pre_tokenize_str(text.lower())})
    vocab = {token: i for i, token in enumerate([PAD, BOS, EOS, UNK, IMAGE, SOFT, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = split
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        extra_special_tokens=[IMAGE, SOFT],
        padding_side="left",
    )


def build_processor(tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    """LLaVA's processor: CLIP's image preprocessing at 32 px, and one image token per patch."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",  # the class token is dropped...
        num_additional_image_tokens=1,  # ...from the tower's patches + 1 outputs
        image_token=IMAGE,
    )


def build_lvlm(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlavaForConditionalGeneration:
    """A tiny, randomly initialised LLaVA: CLIP ViT (32 px, patch 8, width 64, 2 layers) and Llama
    (width 64, 2 layers)."""
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    return LlavaForConditionalGeneration(config)


def make_rows(scenes) -> list[dict]:
    """The dataset: one row per scene, with its rendered image (``uint8 (32, 32, 3)``), its short
    caption and its long caption."""
    images = render(scenes, IMAGE_SIZE)
    return [
        {"image": image, "caption": scene.caption, "long_caption": long_caption(scene, IMAGE_SIZE)}
        for image, scene in zip(images, scenes, strict=True)
    ]


def build(args: argparse.Namespace):
    """The processor, the collator, the training and evaluation rows, and the peft model with its
    LoRA adapters, soft prompt and temperature."""
    train_rows = make_rows(sample_scenes(args.train_scenes, "train", seed=args.seed, image_size=IMAGE_SIZE))
    eval_rows = make_rows(sample_scenes(args.eval_scenes, "seen", seed=args.seed, image_size=IMAGE_SIZE))
    soft = SOFT * args.soft_tokens
    prompts = {
        "image_prompt": IMAGE_PROMPT.replace("{soft}", soft),
        "text_prompt": TEXT_PROMPT.replace("{soft}", soft),
        "ntp_prompt": NTP_PROMPT,
    }
    texts = [*prompts.values()] + [
        row[k] for row in train_rows + eval_rows for k in ("caption", "long_caption")
    ]
    processor = build_processor(build_tokenizer(texts))
    collator = ContrastiveNTPCollator(processor, **prompts)

    lvlm, trained_modules = dual_encoder_base(processor.tokenizer, args)
    lora = LoraConfig(
        r=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        # the language model's attention projections, not the vision tower's (which LLaVA's CLIP
        # names alike), wherever the architecture keeps its language model
        target_modules=lora_target_modules(lvlm),
        # saved in the adapter checkpoint with the LoRA weights; base weights stay frozen
        modules_to_save=[*trained_modules, "multi_modal_projector"],
    )
    return processor, collator, train_rows, eval_rows, get_peft_model(lvlm, lora)


def dual_encoder_base(tokenizer, args: argparse.Namespace):
    """The LVLM with the dual encoder's soft prompt and temperature added
    (``add_dual_encoder_modules``), before peft wraps it; and those modules' names."""
    lvlm = build_lvlm(tokenizer, args.seed)
    width = lvlm.config.text_config.hidden_size
    soft_prompt = SoftPrompt(args.soft_tokens, width, tokenizer.convert_tokens_to_ids(SOFT))
    return lvlm, add_dual_encoder_modules(lvlm, soft_prompt, temperature=args.temperature)


def load_trained(folder: str, args: argparse.Namespace) -> PeftModel:
    """The fine-tuned dual encoder from its adapter checkpoint: the same base model (here the
    seed's random initialisation; for a real LVLM its ``from_pretrained``), the modules added
    again, then the adapter, which fills in the LoRA weights, soft prompt, temperature and
    projector."""
    tokenizer = LlavaProcessor.from_pretrained(folder).tokenizer
    lvlm, _ = dual_encoder_base(tokenizer, args)
    return PeftModel.from_pretrained(lvlm, folder)


@torch.no_grad()
def retrieval(model, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, float]:
    """R@1 of image -> text and text -> image retrieval among the batch's pairs."""
    lvlm = model.get_base_model()
    model.eval()
    images = sequence_embeddings(
        lvlm, soft_prompt=lvlm.soft_prompt, **batch["image_sequences"], **batch["images"]
    )
    texts = sequence_embeddings(lvlm, soft_prompt=lvlm.soft_prompt, **batch["text_sequences"])
    model.train()
    similarity = (
        torch.nn.functional.normalize(images.float(), dim=-1)
        @ torch.nn.functional.normalize(texts.float(), dim=-1).T
    )
    truth = torch.arange(len(images))
    return {
        "image_to_text_r1": (similarity.argmax(dim=1) == truth).float().mean().item(),
        "text_to_image_r1": (similarity.argmax(dim=0) == truth).float().mean().item(),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train-scenes", type=int, default=2000)
    parser.add_argument("--eval-scenes", type=int, default=100)
    parser.add_argument("--soft-tokens", type=int, default=4, help="soft-prompt vectors (our default)")
    parser.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (our default)")
    parser.add_argument("--ntp-weight", type=float, default=1.0, help="weight of the NTP term (our default)")
    parser.add_argument("--temperature", type=float, default=0.05, help="initial temperature (learned)")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (Trainer's bf16)")
    parser.add_argument("--output-dir", default="finetune_lvlm_out", help="where the adapter is saved")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (one is fastest for a model this small)"
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Train on ``--threads`` CPU threads (restored afterwards); returns what :func:`train` does."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return train(args)
    finally:
        torch.set_num_threads(threads)


def train(args: argparse.Namespace) -> dict:
    """Returns the retrieval scores before and after training and the ``Trainer`` (its
    ``state.log_history`` holds the logged loss terms; ``trainer.model`` is the peft model)."""
    processor, collator, train_rows, eval_rows, model = build(args)
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,  # no clipping
        logging_steps=args.log_every,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,  # print the logs instead of a progress bar
        seed=args.seed,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = ContrastiveNTPTrainer(
        model=model,
        args=training_args,
        train_dataset=train_rows,
        data_collator=collator,
        processing_class=processor,
        loss_fn=ContrastiveNTPLoss(
            ntp_weight=args.ntp_weight,
            gather_with_grad=True,
            rank=training_args.process_index,
            world_size=training_args.world_size,
        ),
    )
    say = print if trainer.is_world_process_zero() else lambda *_: None  # once under torchrun
    trainable, total = model.get_nb_trainable_parameters()
    say(f"{trainable:,} trainable parameters of {total:,}")

    eval_batch = {
        part: {name: value.to(training_args.device) for name, value in inputs.items()}
        for part, inputs in collator(eval_rows).items()
    }
    before = retrieval(model, eval_batch)
    say(f"before: {format_scores(before)}")
    trainer.train()
    after = retrieval(model, eval_batch)
    say(f"after:  {format_scores(after)}")
    trainer.save_model()
    say(f"adapter saved to {args.output_dir}")
    return {"before": before, "after": after, "trainer": trainer}


def format_scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {100 * v:.1f}%" for k, v in scores.items())


if __name__ == "__main__":
    main()
