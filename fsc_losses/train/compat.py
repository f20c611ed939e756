"""Which open_clip_train this trainer runs on, checked before anything of it is used."""

from __future__ import annotations

import importlib
import re
from types import ModuleType

from .flags import UsageError

__all__ = ["REPLACED", "SUPPORTED_OPEN_CLIP", "load_trainer"]

# open_clip_torch versions whose open_clip_train these replacements were written and tested against.
SUPPORTED_OPEN_CLIP = ">=3.3,<3.4"
_LOWEST, _BEYOND = (3, 3), (3, 4)
# The names open_clip_train.main looks up in its own module that fsc_losses.train replaces.
REPLACED = ("parse_args", "create_model_and_transforms", "get_data", "create_loss", "evaluate")
# What else of the trainer the replacements rely on, module by module.
_NEEDED = {
    "open_clip_train.main": ("main", *REPLACED),
    "open_clip_train.data": ("SharedEpoch", "CsvDataset"),
    "open_clip.factory": ("resize_text_pos_embed",),
    "open_clip_train.zero_shot": ("accuracy",),
}


def load_trainer() -> ModuleType:
    """``open_clip_train.main``, once the installed open_clip_torch is one this trainer supports.

    Raises:
        UsageError: an open_clip_torch outside ``SUPPORTED_OPEN_CLIP``, an ``open_clip_train`` that
            does not import (the ``train`` extra is missing), or one without a name the
            replacements need; the message names the installed version.
    """
    import open_clip

    version = getattr(open_clip, "__version__", "unknown")
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or not _LOWEST <= (int(found[1]), int(found[2])) < _BEYOND:
        raise UsageError(
            f"fsc_losses.train runs on open_clip_torch {SUPPORTED_OPEN_CLIP}; the installed one is {version}"
        )
    for name, needed in _NEEDED.items():
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise UsageError(
                f"open_clip_torch {version}: {name} does not import ({e}); install the train extra "
                '(pip install -e ".[train]" in a checkout)'
            ) from e
        missing = [attr for attr in needed if not hasattr(module, attr)]
        if missing:
            raise UsageError(
                f"open_clip_torch {version}: {name} has no {', '.join(missing)}, so its trainer does not "
                f"have the shape fsc_losses.train ({SUPPORTED_OPEN_CLIP}) relies on"
            )
    return importlib.import_module("open_clip_train.main")
