"""The losses under torch.distributed (2 CPU processes, gloo) equal one process on the whole batch.

One spawn runs every case; the tests compare what the ranks saved:

* ``FSCLoss`` with the softmax and the sigmoid CLIP term: a tiny linear "model" makes every input
  (features and tokens) from shared weights, so the parameter gradients see every path: the
  gathered CLIP term and the per-rank HN terms.
* a tiny transformers ``SiglipModel`` under ``DistributedDataParallel(DenseEncoder(...))`` against
  the model's own ``return_loss=True`` loss on the whole batch.

The sigmoid term against open_clip's ``SigLipLoss`` on 2 and 3 processes: test_distributed_siglip.py.
"""

import importlib.util
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from fsc_losses import FSCLoss, contrastive_loss

from .gloo import spawn
from .tolerances import assert_close_to_scale

WORLD, B, K, T, P, D, E = 2, 6, 2, 5, 4, 8, 6
PER_RANK = B // WORLD
FSC_CASES = {  # FSCLoss options per case; gradients equal one process wherever the gather has grad
    "softmax": dict(gather_with_grad=True),
    "softmax-local_loss": dict(gather_with_grad=True, local_loss=True),
    "sigmoid": dict(contrastive="sigmoid", gather_with_grad=True),
    "sigmoid-local_loss": dict(contrastive="sigmoid", gather_with_grad=True, local_loss=True),
    "sigmoid-default": dict(contrastive="sigmoid"),  # gathers with gradient (the only choice)
}
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def _data():
    g = torch.Generator().manual_seed(0)
    return dict(
        images=torch.randn(B, P + 1, E, generator=g, dtype=torch.float64),
        texts=torch.randn(B * (1 + K), T, E, generator=g, dtype=torch.float64),
        mask=torch.rand(B * (1 + K), T, generator=g) < 0.7,
        weight=torch.randn(E, D, generator=g, dtype=torch.float64),
        pixel_values=torch.randn(B, 3, 16, 16, generator=g, dtype=torch.float64),
        input_ids=torch.randint(2, 50, (B, 7), generator=g),
    )


def _leaves(data):
    """The "parameters": projection weight, log scale and bias."""
    return (
        data["weight"].clone().requires_grad_(),
        torch.tensor(1.5, dtype=torch.float64, requires_grad=True),
        torch.tensor(-1.0, dtype=torch.float64, requires_grad=True),
    )


def _encode(data, weight, rows):
    """Images ``rows`` and their captions (true, then K blocks) encoded with ``weight``."""
    images = data["images"][rows] @ weight
    grouped_texts = data["texts"].view(1 + K, B, T, E)[:, rows] @ weight  # (G, b, T, D)
    mask = data["mask"].view(1 + K, B, T)[:, rows].clone()
    mask[..., 0] = True
    flat_texts = grouped_texts.flatten(0, 1)
    return dict(
        image_features=F.normalize(images[:, 0], dim=-1),
        text_features=F.normalize(flat_texts.mean(dim=1), dim=-1),
        image_tokens=images[:, 1:],
        text_tokens=flat_texts,
        text_mask=mask.flatten(0, 1),
    )


def _fsc_terms(loss_fn, data, leaves, rows):
    weight, log_scale, bias = leaves
    return loss_fn(
        **_encode(data, weight, rows), logit_scale=log_scale.exp(), logit_bias=bias, output_dict=True
    )


def _tiny_siglip():
    from transformers import SiglipConfig, SiglipModel

    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    text = dict(
        tower, vocab_size=50, max_position_embeddings=7, bos_token_id=None, eos_token_id=1, pad_token_id=1
    )
    torch.manual_seed(0)
    config = SiglipConfig(text_config=text, vision_config=dict(tower, image_size=16, patch_size=8))
    return SiglipModel(config).double()


def _all_reduce_mean(tensors):
    """The tensors flattened into one vector, averaged over the ranks (what DDP does to gradients)."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    return flat / WORLD


def _worker(rank, out_dir):
    data = _data()
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    saved = {}
    for name, options in FSC_CASES.items():
        leaves = _leaves(data)
        loss_fn = FSCLoss(rank=rank, world_size=WORLD, **options)
        terms = _fsc_terms(loss_fn, data, leaves, rows)
        total = sum(terms.values())
        total.backward()
        # what DDP does: average the parameter gradients, and the logged losses, over the ranks
        saved[name] = {
            "losses": _all_reduce_mean([total, *terms.values()]),
            "grads": _all_reduce_mean([leaf.grad for leaf in leaves]),
        }

    if HAS_TRANSFORMERS:
        from torch.nn.parallel import DistributedDataParallel

        from fsc_losses.integrations.transformers import DenseEncoder

        model = _tiny_siglip()
        encoder = DistributedDataParallel(DenseEncoder(model))
        out = encoder(data["pixel_values"][rows], data["input_ids"][rows])
        loss = contrastive_loss(
            out["image_features"],
            out["text_features"],
            out["logit_scale"],
            out["logit_bias"],
            contrastive="sigmoid",
            gather_with_grad=True,
            rank=rank,
            world_size=WORLD,
        )
        loss.backward()  # DDP averages the gradients
        saved["transformers"] = {
            "loss": _all_reduce_mean([loss]),
            "grads": {name: p.grad.clone() for name, p in model.named_parameters()},
        }
    torch.save(saved, os.path.join(out_dir, f"{rank}.pt"))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each rank saved."""
    out_dir = tmp_path_factory.mktemp("ranks")
    spawn(_worker, WORLD, str(out_dir))
    return [torch.load(out_dir / f"{rank}.pt", weights_only=True) for rank in range(WORLD)]


def _one_process_fsc(options):
    """Losses and parameter gradients of ``FSCLoss(**options)`` on one process, whole batch."""
    data = _data()
    leaves = _leaves(data)
    options = {k: v for k, v in options.items() if k not in ("local_loss", "gather_with_grad")}
    terms = _fsc_terms(FSCLoss(**options), data, leaves, slice(0, B))
    total = sum(terms.values())
    total.backward()
    losses = torch.stack([total.detach(), *[v.detach() for v in terms.values()]])
    return losses, torch.cat([leaf.grad.flatten() for leaf in leaves])


@pytest.mark.parametrize("case", FSC_CASES)
def test_two_processes_equal_one(ranks, case):
    expected_losses, expected_grads = _one_process_fsc(FSC_CASES[case])
    for saved in ranks:
        assert_close_to_scale({"losses": saved[case]["losses"]}, {"losses": expected_losses})
        assert_close_to_scale({"grads": saved[case]["grads"]}, {"grads": expected_grads})


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="needs transformers")
def test_siglip_model_under_ddp_equals_its_own_loss_on_the_whole_batch(ranks):
    data = _data()
    model = _tiny_siglip()
    loss = model(input_ids=data["input_ids"], pixel_values=data["pixel_values"], return_loss=True).loss
    loss.backward()
    for saved in ranks:
        got = saved["transformers"]
        assert_close_to_scale({"loss": got["loss"]}, {"loss": loss.detach().reshape(1)})
        assert_close_to_scale(got["grads"], {name: param.grad for name, param in model.named_parameters()})
