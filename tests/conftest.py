"""Shared test set-up.

Without CUDA the Triton kernels run under Triton's CPU interpreter; it reads TRITON_INTERPRET when
a kernel is defined, so it is set here, before any test module imports ``fsc_losses.kernels``.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "data", "golden")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
