"""The FSC-CLIP loss as open_clip_train's ``train_one_epoch`` calls a loss, built from the flags.

``train_one_epoch`` calls ``loss(**model_out, output_dict=True)``, sums the values of the dict it
returns and logs each under its key with the first letter capitalised: ``contrastive_loss``,
``global_hn_loss`` and ``local_hn_loss`` (``FSCLoss``'s keys, each already weighted) show as
``Contrastive_loss``, ``Global_hn_loss`` and ``Local_hn_loss``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ..losses import FSCLoss

__all__ = ["TrainerLoss", "fsc_loss_kwargs", "reported_terms"]


def fsc_loss_kwargs(args: argparse.Namespace) -> dict:
    """``FSCLoss`` keyword arguments for the fork's flags (docs/training.md has the table)."""
    sigmoid = bool(args.siglip)
    return {
        "global_weight": args.neg_loss_weight if args.apply_global_neg_loss else 0.0,
        "local_weight": args.local_neg_weight if args.apply_local_neg_loss else 0.0,
        "normalizer": args.sim_normalizer,
        "sparsify": args.sim_sparsify,
        # The fork's focal gamma applies to focal_loss only; cross_entropy is gamma 0.
        "focal_gamma": args.focal_gamma if args.neg_loss_name == "focal_loss" else 0.0,
        "label_smoothing": args.neg_label_smoothing,
        "contrastive": "sigmoid" if sigmoid else "softmax",
        "local_loss": args.local_loss,
        # open_clip's SigLipLoss always exchanges the captions with their gradient.
        "gather_with_grad": args.gather_with_grad or sigmoid,
        "rank": args.rank,
        "world_size": args.world_size,
    }


def reported_terms(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``FSCLoss`` terms the flags turn on, in ``FSCLoss``'s order."""
    terms = ("contrastive_loss",)
    if args.apply_global_neg_loss:
        terms += ("global_hn_loss",)
    if args.apply_local_neg_loss:
        terms += ("local_hn_loss",)
    return terms


class TrainerLoss(nn.Module):
    """``FSCLoss`` restricted to the terms the flags turn on.

    ``FSCLoss`` always computes its global HN term; with ``--apply-global-neg-loss`` off its
    weight is 0 and the term is left out of the result, so neither the sum nor the log sees it.

    Shape:
        forward(**model_out, output_dict) with the grouped model outputs
        (``fsc_losses.train.models``) -> scalar, or with ``output_dict=True`` a dict of the
        weighted terms named in ``terms``.
    """

    def __init__(self, loss: FSCLoss, terms: tuple[str, ...]):
        super().__init__()
        self.loss = loss
        self.terms = terms

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainerLoss:
        return cls(FSCLoss(**fsc_loss_kwargs(args)), reported_terms(args))

    def forward(self, output_dict: bool = False, **model_out: torch.Tensor):
        losses = self.loss(**model_out, output_dict=True)
        losses = {name: losses[name] for name in self.terms}
        return losses if output_dict else sum(losses.values())

    def extra_repr(self) -> str:
        return f"terms={self.terms}"
