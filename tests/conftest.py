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
        # A module may rehearse its GPU tests on the CPU (tests/test_kernels_gpu.py's
        # FSC_GPU_DRY_RUN=1): it says so with a true GPU_DRY_RUN and skips what needs CUDA itself.
        if "gpu" in item.keywords and not getattr(item.module, "GPU_DRY_RUN", False):
            item.add_marker(skip)
