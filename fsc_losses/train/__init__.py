"""FSC-CLIP on open_clip's own trainer: ``python -m fsc_losses.train ARGS``.

It runs the installed ``open_clip_train.main.main`` (open_clip_torch ``SUPPORTED_OPEN_CLIP``) with
the released FSC-CLIP fork's flags, and changes only the loss, the training captions (which gain
hard negatives, made in the data workers) and the training forward (which gains patch and text
tokens); nothing of the trainer is forked or copied. docs/training.md has the commands, the flags
and how they map onto ``FSCLoss``.

Needs the ``train`` extra (``pip install -e ".[train]"`` in a checkout).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .compat import SUPPORTED_OPEN_CLIP
from .flags import UsageError
from .wise_ft import wise_ft

__all__ = ["SUPPORTED_OPEN_CLIP", "UsageError", "main", "wise_ft"]


def main(argv: Sequence[str] | None = None):
    """Train (or evaluate) as ``argv`` (default ``sys.argv[1:]``) says; returns what open_clip's
    ``main`` returns (``-1`` when it refuses to overwrite an experiment).

    A leading ``--`` is dropped: ``torchrun ... -m fsc_losses.train -- ARGS`` needs it so that
    torchrun leaves flags such as ``--logs`` to the trainer.

    Raises:
        UsageError: an unsupported open_clip_torch, or flags that cannot work together.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    from .compat import load_trainer

    trainer = load_trainer()
    from .trainer import run  # imports open_clip's model code: only once the version is known

    return run(trainer, argv)
