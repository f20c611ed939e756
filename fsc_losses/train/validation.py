"""Compositional validation at the end of open_clip's validation (``--comp-validation-datasets``).

It runs ``fsc_losses.eval.evaluate`` on the main process and logs its metrics where open_clip's
``evaluate`` logs its own: the log line ``Eval Epoch: N name: value ...``, TensorBoard scalars
``val/<name>`` at step ``epoch``, a line of ``checkpoints/results.jsonl`` and W&B.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from torch import nn

__all__ = ["compositional_validation", "is_due"]


def is_due(epoch: int, args: argparse.Namespace) -> bool:
    """Whether open_clip validates ``--val-data`` at ``epoch``: the same schedule here."""
    return bool(args.val_frequency) and (epoch % args.val_frequency == 0 or epoch == args.epochs)


def _unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def compositional_validation(
    model: nn.Module, data: dict, epoch: int, args: argparse.Namespace, *, tb_writer, tokenizer, preprocess
) -> dict[str, float]:
    """Score ``model`` on ``args.comp_validation_datasets`` and log the results; returns them."""
    from fsc_losses.eval import evaluate

    metrics = evaluate(
        _unwrap(model),
        args.comp_validation_datasets,
        args.comp_data_root,
        tokenizer=tokenizer,
        preprocess=preprocess,
        batch_size=args.comp_batch_size,
        device=args.device,
        progress=False,
    )
    logging.info(
        f"Eval Epoch: {epoch} " + "\t".join(f"{name}: {value:.4f}" for name, value in metrics.items())
    )
    if args.save_logs:
        if tb_writer is not None:
            for name, value in metrics.items():
                tb_writer.add_scalar(f"val/{name}", value, epoch)
        with open(os.path.join(args.checkpoint_path, "results.jsonl"), "a+") as f:
            f.write(json.dumps({**metrics, "epoch": epoch}) + "\n")
    if args.wandb:
        import wandb

        # open_clip's evaluate logs at the first step of the next epoch, or without a step.
        step = None
        if "train" in data:
            step = data["train"].dataloader.num_batches // args.accum_freq * epoch
        wandb.log({**{f"val/{name}": value for name, value in metrics.items()}, "epoch": epoch}, step=step)
    return metrics
