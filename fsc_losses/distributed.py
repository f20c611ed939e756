"""Communication across processes: feature gathering for the in-batch CLIP term, and the
all-rank count of positions that the NTP term's mean divides by.

Follows open_clip's ``ClipLoss`` conventions; the sigmoid (SigLIP) term gathers only the captions.
The HN terms need none of this: each image only meets its own captions, so they stay on their rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def gather_features(
    features: torch.Tensor, *, local_loss: bool, gather_with_grad: bool, rank: int, world_size: int
) -> torch.Tensor:
    """``(n, D)`` per process to ``(world_size * n, D)``, rank-major.

    With ``gather_with_grad`` the gather is differentiable: its backward sums every rank's
    gradient for this rank's rows, so after DDP's averaging the parameter gradients equal those of
    one process on the whole batch (no extra scaling by the world size). Without it only this
    rank's own rows carry gradient, and with ``local_loss`` not even those (the local rows enter
    the loss directly).
    """
    if world_size == 1:
        return features
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"world_size={world_size} needs an initialised torch.distributed process group")
    if gather_with_grad:
        return torch.cat(dist_fn.all_gather(features), dim=0)
    gathered = [torch.empty_like(features) for _ in range(world_size)]
    dist.all_gather(gathered, features.detach())
    if not local_loss:
        gathered[rank] = features
    return torch.cat(gathered, dim=0)


def sum_across_ranks(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """The sum of ``value`` over the ``world_size`` processes (no gradient; a device-side
    all-reduce, no host synchronisation); ``value`` itself for one process."""
    if world_size == 1:
        return value
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"world_size={world_size} needs an initialised torch.distributed process group")
    total = value.detach().clone()
    dist.all_reduce(total)
    return total
