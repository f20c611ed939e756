"""Discriminative fine-tuning of an LVLM with ContrastiveNTPLoss, in miniature.

    python examples/finetune_lvlm.py                  # 300 steps, a minute or two on a 2-core CPU
    python examples/finetune_lvlm.py --steps 3        # what the test runs

A tiny LLaVA-style model (a CLIP vision tower and a Llama language model, randomly initialised from
transformers configs: nothing is downloaded) becomes a dual encoder, VladVA's way: an image, or a
caption, is followed by a summarising prompt and the last position's hidden state is its embedding.
It trains LoRA adapters on the language model (peft), a soft prompt placed just before the
summarising instruction (``fsc_losses.integrations.lvlm.SoftPrompt``), the multimodal projector
and the temperature, with ``ContrastiveNTPLoss``:

- a contrastive loss between the images and their short captions (the demo world's captions,
  "a small red square to the left of a big blue circle");
- next-token prediction of a long, detailed caption of the same image
  (``fsc_losses.demo.world.long_caption``: every object's size, colour, shape and position, and
  the relation), conditioned on the image.

Image-text retrieval (R@1 both ways, on held-out scenes, by last-token embeddings) is printed before
and after training. The vocabulary is the demo world's own words, tokenised by a small word-level
tokenizer. The loss is computed inside the model's ``forward`` (``DualEncoder``): that is the
pattern FSDP needs, where the LM head's full weight exists only inside the sharded module's forward.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from fsc_losses import ContrastiveNTPLoss, last_token_embedding
from fsc_losses.demo.world import long_caption, render, sample_scenes
from fsc_losses.integrations.lvlm import SoftPrompt, hidden_states

IMAGE_SIZE, PATCH_SIZE = 32, 8
# vision_feature_select_strategy="default" drops the class token: one position per patch
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<image>", "<soft>")
# E5-V's wording; VladVA does not publish its prompts
IMAGE_PROMPT = "summary above image in one word :"
TEXT_PROMPT = "summary above sentence in one word :"
NTP_PROMPT = "describe the image in detail :"
IGNORE = -100


class WordTokenizer:
    """Lower-cased words and punctuation marks to ids, over the closed vocabulary of ``texts``."""

    def __init__(self, texts: list[str]):
        words = sorted({word for text in texts for word in self.split(text)})
        self.ids = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())

    def __call__(self, text: str) -> list[int]:
        return [self.ids[word] for word in self.split(text)]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Batch:
    pixel_values: torch.Tensor  # (B, 3, 32, 32)
    image_ids: torch.Tensor  # (B, Li): <bos> <image>*16 <soft>*n prompt
    image_mask: torch.Tensor
    text_ids: torch.Tensor  # (B, Lt): <bos> short caption <soft>*n prompt, left-padded
    text_mask: torch.Tensor
    ntp_ids: torch.Tensor  # (B, Ln): <bos> <image>*16 prompt long caption <eos>, right-padded
    ntp_mask: torch.Tensor
    ntp_labels: torch.Tensor  # the long caption and <eos>; IGNORE elsewhere


def pad(rows: list[list[int]], value: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids to ``(B, L)`` ids and attention mask, padded on the left or the right."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), value, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(length - len(row), length) if left else slice(0, len(row))
        ids[i, cols] = torch.tensor(row)
        mask[i, cols] = 1
    return ids, mask


def make_batch(scenes, tokenizer: WordTokenizer, soft_tokens: int) -> Batch:
    tok = tokenizer.ids
    pixels = torch.from_numpy(render(scenes, IMAGE_SIZE)).permute(0, 3, 1, 2).float() / 127.5 - 1
    soft = [tok["<soft>"]] * soft_tokens
    image_row = [tok["<bos>"], *[tok["<image>"]] * IMAGE_TOKENS, *soft, *tokenizer(IMAGE_PROMPT)]
    image_ids, image_mask = pad([image_row] * len(scenes), tok["<pad>"], left=True)
    text_rows = [[tok["<bos>"], *tokenizer(s.caption), *soft, *tokenizer(TEXT_PROMPT)] for s in scenes]
    text_ids, text_mask = pad(text_rows, tok["<pad>"], left=True)
    prefix = [tok["<bos>"], *[tok["<image>"]] * IMAGE_TOKENS, *tokenizer(NTP_PROMPT)]
    answers = [[*tokenizer(long_caption(s, IMAGE_SIZE)), tok["<eos>"]] for s in scenes]
    ntp_ids, ntp_mask = pad([prefix + a for a in answers], tok["<pad>"], left=False)
    ntp_labels, _ = pad([[IGNORE] * len(prefix) + a for a in answers], IGNORE, left=False)
    return Batch(pixels, image_ids, image_mask, text_ids, text_mask, ntp_ids, ntp_mask, ntp_labels)


def build_lvlm(tokenizer: WordTokenizer, seed: int) -> LlavaForConditionalGeneration:
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
        pad_token_id=tokenizer.ids["<pad>"],
        bos_token_id=tokenizer.ids["<bos>"],
        eos_token_id=tokenizer.ids["<eos>"],
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.ids["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    return LlavaForConditionalGeneration(config)


class DualEncoder(nn.Module):
    """The LVLM (LoRA injected), its soft prompt, the temperature and the loss; ``forward`` returns
    the loss terms of a batch, ``embed`` the last-token embeddings of a set of sequences."""

    def __init__(
        self, lvlm: nn.Module, soft_prompt: SoftPrompt, loss_fn: ContrastiveNTPLoss, temperature: float
    ):
        super().__init__()
        self.lvlm = lvlm
        self.soft_prompt = soft_prompt
        self.loss_fn = loss_fn
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def embed(self, ids, mask, pixel_values=None) -> torch.Tensor:
        states = hidden_states(self.lvlm, ids, mask, pixel_values, self.soft_prompt)
        return last_token_embedding(states, mask)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        image_embeddings = self.embed(batch.image_ids, batch.image_mask, batch.pixel_values)
        text_embeddings = self.embed(batch.text_ids, batch.text_mask)
        long_caption_states = hidden_states(self.lvlm, batch.ntp_ids, batch.ntp_mask, batch.pixel_values)
        return self.loss_fn(
            image_embeddings,
            text_embeddings,
            self.log_scale.exp(),
            hidden_states=long_caption_states,
            lm_head_weight=self.lvlm.get_output_embeddings().weight,
            labels=batch.ntp_labels,
            output_dict=True,
        )


@torch.no_grad()
def retrieval(model: DualEncoder, batch: Batch) -> dict[str, float]:
    """R@1 of image -> text and text -> image retrieval among the batch's pairs."""
    model.eval()
    images = nn.functional.normalize(
        model.embed(batch.image_ids, batch.image_mask, batch.pixel_values), dim=-1
    )
    texts = nn.functional.normalize(model.embed(batch.text_ids, batch.text_mask), dim=-1)
    model.train()
    similarity = images.float() @ texts.float().T
    truth = torch.arange(len(images))
    return {
        "image_to_text_r1": (similarity.argmax(dim=1) == truth).float().mean().item(),
        "text_to_image_r1": (similarity.argmax(dim=0) == truth).float().mean().item(),
    }


def build(args: argparse.Namespace):
    """The tokenizer, the data and the model with its adapters."""
    train_scenes = sample_scenes(args.train_scenes, "train", seed=args.seed, image_size=IMAGE_SIZE)
    eval_scenes = sample_scenes(args.eval_scenes, "seen", seed=args.seed, image_size=IMAGE_SIZE)
    texts = [IMAGE_PROMPT, TEXT_PROMPT, NTP_PROMPT]
    texts += [t for s in train_scenes + eval_scenes for t in (s.caption, long_caption(s, IMAGE_SIZE))]
    tokenizer = WordTokenizer(texts)

    lvlm = build_lvlm(tokenizer, args.seed)
    lora = LoraConfig(
        r=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
        modules_to_save=["multi_modal_projector"],
    )
    lvlm = get_peft_model(lvlm, lora).get_base_model()  # adapters injected in place; base frozen
    width = lvlm.config.text_config.hidden_size
    soft_prompt = SoftPrompt(args.soft_tokens, width, tokenizer.ids["<soft>"])
    loss_fn = ContrastiveNTPLoss(ntp_weight=args.ntp_weight)
    model = DualEncoder(lvlm, soft_prompt, loss_fn, args.temperature)
    return tokenizer, train_scenes, eval_scenes, model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train-scenes", type=int, default=2000)
    parser.add_argument("--eval-scenes", type=int, default=100)
    parser.add_argument("--soft-tokens", type=int, default=4, help="soft-prompt vectors (our default)")
    parser.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (our default)")
    parser.add_argument("--ntp-weight", type=float, default=1.0, help="weight of the NTP term (our default)")
    parser.add_argument("--temperature", type=float, default=0.05, help="initial temperature (learned)")
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
    """Returns the retrieval scores before and after training, each step's loss terms and the
    trained ``DualEncoder``."""
    tokenizer, train_scenes, eval_scenes, model = build(args)
    eval_batch = make_batch(eval_scenes, tokenizer, args.soft_tokens)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    total = sum(p.numel() for p in model.parameters())
    print(f"{sum(p.numel() for p in trainable):,} trainable parameters of {total:,}")

    before = retrieval(model, eval_batch)
    print(f"before: {format_scores(before)}")
    generator = torch.Generator().manual_seed(args.seed)
    history = []
    for step in range(1, args.steps + 1):
        picked = torch.randperm(len(train_scenes), generator=generator)[: args.batch_size]
        terms = model(make_batch([train_scenes[i] for i in picked], tokenizer, args.soft_tokens))
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.log_scale.clamp_(max=math.log(100))
        history.append({"loss": loss.item(), **{k: v.item() for k, v in terms.items()}})
        if step % args.log_every == 0 or step == args.steps:
            logs = ", ".join(f"{k} {v:.3f}" for k, v in history[-1].items())
            print(f"step {step}: {logs}", flush=True)
    after = retrieval(model, eval_batch)
    print(f"after:  {format_scores(after)}")
    return {"before": before, "after": after, "history": history, "model": model}


def format_scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {100 * v:.1f}%" for k, v in scores.items())


if __name__ == "__main__":
    main()
