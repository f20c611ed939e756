"""Fine-tune an open_clip model with FSCLoss on a CSV of ``image_path,caption`` rows.

    python examples/train_open_clip.py --csv pairs.csv --model ViT-B-32 \
        --pretrained /path/to/open_clip_checkpoint.pt --epochs 1 --batch-size 64 --device cuda

Every step makes K rule-based hard negatives per caption (``fsc_losses.negatives``), encodes the
images and the ``B * (1 + K)`` captions once with ``encode_dense`` (global features plus patch and
text tokens), and minimises ``FSCLoss``: CLIP loss + global HN loss + local HN loss. Without
``--pretrained`` the model starts from random weights (useful only for smoke tests).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import open_clip
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fsc_losses import FSCLoss
from fsc_losses.integrations.open_clip import encode_dense
from fsc_losses.negatives import make_hard_negatives


class CaptionCSV(Dataset):
    """``(image, caption)`` pairs from a CSV with an ``image_path,caption`` header.

    Relative image paths are resolved against the CSV's folder.
    """

    def __init__(self, csv_path: str | Path, transform):
        csv_path = Path(csv_path)
        with open(csv_path, newline="", encoding="utf-8") as f:
            self.rows = [(csv_path.parent / row["image_path"], row["caption"]) for row in csv.DictReader(f)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path, caption = self.rows[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), caption


def train_step(model, tokenizer, loss_fn, optimizer, images, captions, seed, device):
    """One optimisation step on a batch of ``B`` images and their ``B`` captions.

    Returns the total loss and its weighted terms as floats.
    """
    negatives, neg_valid = make_hard_negatives(list(captions), seed=seed)
    # FSCLoss's flat layout: the B true captions, then K blocks of B negatives (type-major),
    # exactly the order make_hard_negatives returns them in.
    texts = tokenizer(list(captions) + negatives)
    out = encode_dense(model, images.to(device), texts.to(device))
    terms = loss_fn(**out, neg_valid=neg_valid.to(device), output_dict=True)
    loss = sum(terms.values())

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        # As in open_clip's training: keep the temperature at most 100.
        model.logit_scale.clamp_(0, math.log(100))
    return {"loss": loss.item(), **{name: value.item() for name, value in terms.items()}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="CSV file with an image_path,caption header")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model name (a ViT model)")
    parser.add_argument(
        "--pretrained", default=None, help="local open_clip checkpoint file; random init if omitted"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    """Train as the command line says; returns the model and the per-step loss logs."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model, preprocess_train, _ = open_clip.create_model_and_transforms(
        args.model, pretrained=args.pretrained, device=args.device
    )
    tokenizer = open_clip.get_tokenizer(args.model)
    loader = DataLoader(
        CaptionCSV(args.csv, preprocess_train),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    loss_fn = FSCLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    model.train()
    history = []
    for epoch in range(args.epochs):
        for images, captions in loader:
            if args.max_steps is not None and len(history) >= args.max_steps:
                return model, history
            # A new seed per step: fresh negatives each time, yet the run is reproducible.
            seed = args.seed + len(history)
            logs = train_step(model, tokenizer, loss_fn, optimizer, images, captions, seed, args.device)
            history.append(logs)
            terms = ", ".join(f"{name} {value:.4f}" for name, value in logs.items())
            print(f"epoch {epoch} step {len(history)}: {terms}", flush=True)
    return model, history


if __name__ == "__main__":
    main()
