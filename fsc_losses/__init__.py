"""fsc_losses: losses for fine-tuning vision-language models, as small ``nn.Module``s.

- FSC-CLIP (Oh et al., EMNLP 2024): CLIP fine-tuning with hard negatives, backed by fused Triton
  kernels.
- Discriminative fine-tuning of LVLMs (VladVA, Ouali et al., CVPR 2025): a contrastive plus
  next-token-prediction loss, with a linear cross-entropy that never holds the ``(N, V)`` logits
  and last-token embeddings.

The core imports neither open_clip, transformers nor Triton: the kernels load on first use on CUDA
tensors and the integrations live in ``fsc_losses.integrations``.
"""

from .functional import (
    contrastive_loss,
    global_hn_loss,
    hn_contrast,
    linear_cross_entropy,
    local_hn_loss,
    local_hn_scores,
)
from .layout import group_captions, unpack_negatives
from .losses import (
    ContrastiveNTPLoss,
    FSCLoss,
    GlobalHNLoss,
    LinearCrossEntropy,
    LocalHNLoss,
    SelectiveCalibratedReg,
)
from .pooling import last_token_embedding

__version__ = "0.1.0"

__all__ = [
    "ContrastiveNTPLoss",
    "FSCLoss",
    "GlobalHNLoss",
    "LinearCrossEntropy",
    "LocalHNLoss",
    "SelectiveCalibratedReg",
    "contrastive_loss",
    "global_hn_loss",
    "group_captions",
    "hn_contrast",
    "last_token_embedding",
    "linear_cross_entropy",
    "local_hn_loss",
    "local_hn_scores",
    "unpack_negatives",
    "__version__",
]
