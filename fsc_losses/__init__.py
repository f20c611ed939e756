"""fsc_losses: the losses of FSC-CLIP (Oh et al., EMNLP 2024) for CLIP fine-tuning with hard
negatives, as small ``nn.Module``s backed by fused Triton kernels.

The core imports neither open_clip nor Triton: the kernels load on first use on CUDA tensors and
the integrations live in ``fsc_losses.integrations``.
"""

from .functional import contrastive_loss, global_hn_loss, hn_contrast, local_hn_loss, local_hn_scores
from .layout import group_captions, unpack_negatives
from .losses import FSCLoss, GlobalHNLoss, LocalHNLoss, SelectiveCalibratedReg

__version__ = "0.1.0"

__all__ = [
    "FSCLoss",
    "GlobalHNLoss",
    "LocalHNLoss",
    "SelectiveCalibratedReg",
    "contrastive_loss",
    "global_hn_loss",
    "group_captions",
    "hn_contrast",
    "local_hn_loss",
    "local_hn_scores",
    "unpack_negatives",
    "__version__",
]
