"""FSCLoss under torch.distributed (2 CPU processes, gloo) equals one process on the whole batch.

A tiny linear "model" makes every input (features and tokens) from shared weights, so the parameter
gradients see every path: the gathered CLIP term and the per-rank HN terms.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from fsc_losses import FSCLoss

WORLD, B, K, T, P, D, E = 2, 6, 2, 5, 4, 8, 6


def _data():
    g = torch.Generator().manual_seed(0)
    return dict(
        images=torch.randn(B, P + 1, E, generator=g, dtype=torch.float64),
        texts=torch.randn(B * (1 + K), T, E, generator=g, dtype=torch.float64),
        mask=torch.rand(B * (1 + K), T, generator=g) < 0.7,
        weight=torch.randn(E, D, generator=g, dtype=torch.float64),
    )


def _forward(loss_fn, data, weight, rows):
    """Encode images ``rows`` and their captions with ``weight``; return FSCLoss's terms."""
    images = data["images"][rows] @ weight
    grouped_texts = data["texts"].view(1 + K, B, T, E)[:, rows] @ weight  # (G, b, T, D)
    mask = data["mask"].view(1 + K, B, T)[:, rows].clone()
    mask[..., 0] = True
    flat_texts = grouped_texts.flatten(0, 1)
    return loss_fn(
        image_features=F.normalize(images[:, 0], dim=-1),
        text_features=F.normalize(flat_texts.mean(dim=1), dim=-1),
        logit_scale=torch.tensor(5.0, dtype=torch.float64),
        image_tokens=images[:, 1:],
        text_tokens=flat_texts,
        text_mask=mask.flatten(0, 1),
        output_dict=True,
    )


def _worker(rank, port, local_loss, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        data = _data()
        weight = data["weight"].clone().requires_grad_()
        loss_fn = FSCLoss(local_loss=local_loss, gather_with_grad=True, rank=rank, world_size=WORLD)
        per_rank = B // WORLD
        terms = _forward(loss_fn, data, weight, slice(rank * per_rank, (rank + 1) * per_rank))
        total = sum(terms.values())
        total.backward()
        # what DDP does: average the parameter gradients, and the logged loss, over the ranks
        grad = weight.grad.clone()
        dist.all_reduce(grad)
        stacked = torch.stack([total.detach(), *[v.detach() for v in terms.values()]])
        dist.all_reduce(stacked)
        torch.save({"grad": grad / WORLD, "losses": stacked / WORLD}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("local_loss", [False, True])
def test_two_processes_equal_one(local_loss, tmp_path):
    mp.spawn(_worker, args=(_free_port(), local_loss, str(tmp_path)), nprocs=WORLD, join=True)

    data = _data()
    weight = data["weight"].clone().requires_grad_()
    terms = _forward(FSCLoss(), data, weight, slice(0, B))
    total = sum(terms.values())
    total.backward()
    expected = torch.stack([total.detach(), *[v.detach() for v in terms.values()]])

    for rank in range(WORLD):
        got = torch.load(os.path.join(tmp_path, f"{rank}.pt"), weights_only=True)
        torch.testing.assert_close(got["losses"], expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got["grad"], weight.grad, rtol=1e-10, atol=1e-12)
