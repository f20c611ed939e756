"""ContrastiveNTPLoss under torch.distributed (2 CPU processes, gloo) equals one process on the
whole batch: with DDP-style gradient averaging, and under FSDP2 (``fully_shard``) with the LM head
sharded and the loss computed inside the sharded module's forward.

A tiny model makes the image and text embeddings and the long-caption hidden states from one
shared encoder, so the parameter gradients see both terms. The two processes count different
numbers of NTP positions, which a per-process mean would get wrong.
"""

import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fsc_losses import ContrastiveNTPLoss
from tests.gloo import spawn
from tests.test_distributed import _all_reduce_mean
from tests.tolerances import assert_close_to_scale

WORLD, PAIRS, SEQS, LENGTH, FEATURES, WIDTH, VOCAB = 2, 6, 4, 7, 5, 8, 30
DTYPE = torch.float64
LOGIT_SCALE = 10.0


def _data():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, VOCAB, (SEQS, LENGTH), generator=g)
    labels[:, :2] = -100  # prompt
    labels[2:, 4:] = -100  # rank 1's sequences are shorter: 2 * 2 counted positions against 2 * 4
    return dict(
        images=torch.randn(PAIRS, FEATURES, generator=g, dtype=DTYPE),
        texts=torch.randn(PAIRS, FEATURES, generator=g, dtype=DTYPE),
        sequences=torch.randn(SEQS, LENGTH, FEATURES, generator=g, dtype=DTYPE),
        labels=labels,
    )


class TinyLVLM(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.encoder = nn.Linear(FEATURES, WIDTH, dtype=DTYPE)
        self.lm_head = nn.Linear(WIDTH, VOCAB, bias=False, dtype=DTYPE)

    def forward(self, images, texts, sequences):
        return self.encoder(images), self.encoder(texts), torch.tanh(self.encoder(sequences))


class TrainingModule(nn.Module):
    """The model and the loss in one forward: under FSDP the LM head's full weight exists only
    inside the forward of the module that shards it."""

    def __init__(self, loss_fn):
        super().__init__()
        self.model = TinyLVLM()
        self.loss_fn = loss_fn

    def forward(self, images, texts, sequences, labels):
        image_embeddings, text_embeddings, hidden_states = self.model(images, texts, sequences)
        return self.loss_fn(
            image_embeddings,
            text_embeddings,
            torch.tensor(LOGIT_SCALE, dtype=DTYPE),
            hidden_states=hidden_states,
            lm_head_weight=self.model.lm_head.weight,
            labels=labels,
            output_dict=True,
        )


def _rank_batch(data, rank):
    pairs, seqs = (
        slice(rank * PAIRS // WORLD, (rank + 1) * PAIRS // WORLD),
        slice(rank * SEQS // WORLD, (rank + 1) * SEQS // WORLD),
    )
    return data["images"][pairs], data["texts"][pairs], data["sequences"][seqs], data["labels"][seqs]


def _loss_fn(rank, world_size, local_loss):
    return ContrastiveNTPLoss(
        ntp_weight=0.5, local_loss=local_loss, gather_with_grad=True, rank=rank, world_size=world_size
    )


def _ddp_worker(rank, local_loss, out_dir):
    module = TrainingModule(_loss_fn(rank, WORLD, local_loss))
    terms = module(*_rank_batch(_data(), rank))
    sum(terms.values()).backward()
    grads = {}
    for name, param in module.named_parameters():  # what DDP does: average the gradients
        grads[name] = param.grad.clone()
        dist.all_reduce(grads[name])
        grads[name] /= WORLD
    torch.save(
        {"grads": grads, "losses": _all_reduce_mean([sum(terms.values()), *terms.values()])},
        os.path.join(out_dir, f"{rank}.pt"),
    )


def _fsdp_worker(rank, out_dir):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    mesh = init_device_mesh("cpu", (WORLD,))
    module = TrainingModule(_loss_fn(rank, WORLD, local_loss=False))
    fully_shard(module.model.encoder, mesh=mesh)
    fully_shard(module, mesh=mesh)
    head = module.model.lm_head.weight
    # outside the forward the head is this rank's shard: passing it to the loss there would be wrong
    assert isinstance(head, DTensor) and head.to_local().shape == (VOCAB // WORLD, WIDTH)
    terms = module(*_rank_batch(_data(), rank))
    sum(terms.values()).backward()  # FSDP averages (reduce-scatters) the gradients
    grads = {name: param.grad.full_tensor() for name, param in module.named_parameters()}
    torch.save(
        {"grads": grads, "losses": _all_reduce_mean([sum(terms.values()), *terms.values()])},
        os.path.join(out_dir, f"{rank}.pt"),
    )


def _one_process():
    data = _data()
    module = TrainingModule(_loss_fn(0, 1, local_loss=False))
    terms = module(data["images"], data["texts"], data["sequences"], data["labels"])
    sum(terms.values()).backward()
    losses = torch.stack([sum(terms.values()).detach(), *[v.detach() for v in terms.values()]])
    return losses, {name: param.grad for name, param in module.named_parameters()}


def _check_ranks(out_dir):
    losses, grads = _one_process()
    for rank in range(WORLD):
        got = torch.load(os.path.join(out_dir, f"{rank}.pt"), weights_only=True)
        assert_close_to_scale({"losses": got["losses"]}, {"losses": losses})
        assert_close_to_scale(got["grads"], grads)


@pytest.mark.parametrize("local_loss", [False, True])
def test_two_processes_equal_one(local_loss, tmp_path):
    spawn(_ddp_worker, WORLD, local_loss, str(tmp_path))
    _check_ranks(tmp_path)


def test_fsdp_fully_shard_equals_one_process(tmp_path):
    spawn(_fsdp_worker, WORLD, str(tmp_path))
    _check_ranks(tmp_path)


def test_the_counts_differ_between_ranks():
    """The premise of the global NTP mean: a per-rank mean would weight rank 1's positions double."""
    counts = [(_rank_batch(_data(), r)[3][:, 1:] != -100).sum().item() for r in range(WORLD)]
    assert counts[0] != counts[1]
