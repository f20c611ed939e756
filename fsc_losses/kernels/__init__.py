"""Fused Triton kernels (docs/kernels.md). Importing this package needs Triton; the functional
layer imports it lazily and falls back to ``fsc_losses.reference`` when it cannot."""

from .local_hn import local_hn_loss, local_hn_scores, unsupported_reason

__all__ = ["local_hn_loss", "local_hn_scores", "unsupported_reason"]
