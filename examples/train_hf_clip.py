"""Fine-tune a Hugging Face transformers CLIP or SigLIP model with FSCLoss on a CSV of
``image_path,caption`` rows.

    python examples/train_hf_clip.py --csv pairs.csv --model openai/clip-vit-base-patch32 \
        --out finetuned --epochs 1 --batch-size 64 --device cuda

``--model`` is anything ``from_pretrained`` takes (a hub id or a local folder); the model, its
tokenizer and its image processor are loaded from it. Every step makes K rule-based hard negatives
per caption (``fsc_losses.negatives``), encodes the images and the ``B * (1 + K)`` captions once
with ``encode_dense`` (global features plus patch and text tokens) under autocast, and minimises
``FSCLoss``: the CLIP term (softmax for CLIP, SigLIP's sigmoid for SigLIP) + global HN loss + local
HN loss, with gradient clipping. The fine-tuned model is saved with ``save_pretrained`` (with the
tokenizer and image processor), so ``from_pretrained(out)`` loads it. With ``--from-config`` the
model starts from random weights built from the config in ``--model`` (useful only for smoke
tests).
"""

from __future__ import annotations

import argparse
import csv
import math
from contextlib import nullcontext
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer, SiglipModel

from fsc_losses import FSCLoss
from fsc_losses.integrations.transformers import encode_dense, token_ids
from fsc_losses.negatives import make_hard_negatives

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def read_pairs(csv_path: str | Path) -> list[tuple[Path, str]]:
    """``(image path, caption)`` rows of a CSV with an ``image_path,caption`` header; relative
    paths are resolved against the CSV's folder."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8") as f:
        return [(csv_path.parent / row["image_path"], row["caption"]) for row in csv.DictReader(f)]


class Collate:
    """A batch of ``(path, caption)`` rows to pixel values and captions, with the model's image
    processor (in the loader's workers)."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, rows):
        images = []
        for path, _ in rows:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        pixel_values = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pixel_values, [caption for _, caption in rows]


class Trainer:
    """The model, its tokenizer, the loss, the optimiser and the mixed-precision set-up."""

    def __init__(self, model, tokenizer, args):
        self.model, self.tokenizer, self.args = model, tokenizer, args
        self.token_ids = token_ids(tokenizer)  # which start / end tokens text_mask leaves out / keeps
        self.max_length = model.config.text_config.max_position_embeddings
        contrastive = args.contrastive or ("sigmoid" if isinstance(model, SiglipModel) else "softmax")
        self.loss_fn = FSCLoss(contrastive=contrastive)
        # CLIP's recipe keeps its temperature at most 100; SigLIP's learns it without a bound.
        self.clamp_logit_scale = not isinstance(model, SiglipModel)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
        device_type = torch.device(args.device).type
        dtype = AMP_DTYPES[args.amp]
        self.autocast = nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)
        # fp16 gradients can underflow: scale the loss (bf16 has fp32's range and needs no scaler)
        self.scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)

    def step(self, pixel_values, captions, seed):
        """One optimisation step on ``B`` images and their ``B`` captions; returns the total loss,
        its weighted terms and the gradient norm before clipping, as floats."""
        device = self.args.device
        negatives, neg_valid = make_hard_negatives(list(captions), seed=seed)
        # FSCLoss's flat layout: the B true captions, then K blocks of B negatives (type-major),
        # exactly the order make_hard_negatives returns them in.
        texts = self.tokenizer(
            list(captions) + negatives,
            padding="max_length",  # SigLIP was trained on captions padded to its full length
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        attention_mask = texts.get("attention_mask")
        with self.autocast:
            out = encode_dense(
                self.model,
                pixel_values.to(device),
                texts["input_ids"].to(device),
                None if attention_mask is None else attention_mask.to(device),
                **self.token_ids,
            )
            terms = self.loss_fn(**out, neg_valid=neg_valid.to(device), output_dict=True)
            loss = sum(terms.values())

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.clamp_logit_scale:
            with torch.no_grad():
                self.model.logit_scale.clamp_(0, math.log(100))
        logs = {"loss": loss.item(), **{name: value.item() for name, value in terms.items()}}
        return {**logs, "grad_norm": grad_norm.item()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="CSV file with an image_path,caption header")
    parser.add_argument("--model", required=True, help="model id or folder for from_pretrained")
    parser.add_argument("--out", required=True, help="folder to save the fine-tuned model in")
    parser.add_argument(
        "--from-config", action="store_true", help="random weights from --model's config (smoke tests)"
    )
    parser.add_argument(
        "--contrastive",
        choices=("softmax", "sigmoid"),
        default=None,
        help="the CLIP term; default: sigmoid for SigLIP models, softmax otherwise",
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping")
    parser.add_argument("--amp", choices=tuple(AMP_DTYPES), default="bf16", help="autocast dtype")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    """Train as the command line says and save the model; returns it and the per-step logs."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.from_config:
        model = AutoModel.from_config(AutoConfig.from_pretrained(args.model))
    else:
        model = AutoModel.from_pretrained(args.model)
    model.to(args.device).train()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    image_processor = AutoImageProcessor.from_pretrained(args.model)
    loader = DataLoader(
        read_pairs(args.csv),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=Collate(image_processor),
        num_workers=args.workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    trainer = Trainer(model, tokenizer, args)

    history = []

    def steps_left() -> bool:
        return args.max_steps is None or len(history) < args.max_steps

    for epoch in range(args.epochs):
        if not steps_left():
            break
        for pixel_values, captions in loader:
            # A new seed per step: fresh negatives each time, yet the run is reproducible.
            logs = trainer.step(pixel_values, captions, seed=args.seed + len(history))
            history.append(logs)
            terms = ", ".join(f"{name} {value:.4f}" for name, value in logs.items())
            print(f"epoch {epoch} step {len(history)}: {terms}", flush=True)
            if not steps_left():
                break

    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    image_processor.save_pretrained(args.out)
    print(f"saved to {args.out}", flush=True)
    return model, history


if __name__ == "__main__":
    main()
