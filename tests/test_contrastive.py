"""The in-batch contrastive term ``functional.contrastive_loss`` on one process: CLIP's softmax
InfoNCE and SigLIP's pairwise sigmoid loss, against written-out formulas and open_clip's losses.

The 2-process versions are in test_distributed.py; the transformers models' own losses in
test_integration_transformers.py.
"""

import pytest
import torch
import torch.nn.functional as F

from fsc_losses import FSCLoss, contrastive_loss, reference


def features(n, d=8, seed=0):
    """Float64 ``(n, d)`` image and caption features (L2-normalised, requiring grad), scale, bias."""
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.5, dtype=torch.float64, requires_grad=True)
    return image, text, scale, bias


def sigmoid_by_pairs(image, text, scale, bias):
    """SigLIP's loss written pair by pair: -sum_ij log sigmoid(+-(scale <x_i, y_j> + bias)) / n."""
    n = image.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(text.shape[0]):
            logit = scale * torch.dot(image[i], text[j]) + (0.0 if bias is None else bias)
            total = total - F.logsigmoid(logit if i == j else -logit)
    return total / n


def grads(loss, leaves, upstream):
    return torch.autograd.grad(loss, leaves, upstream)


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("with_bias", [True, False])
def test_sigmoid_equals_pairwise_formula(n, with_bias):
    image, text, scale, bias = features(n, seed=n)
    bias = bias if with_bias else None
    leaves = [image, text, scale] + ([bias] if with_bias else [])
    upstream = torch.tensor(0.7, dtype=torch.float64)
    got = contrastive_loss(image, text, scale, bias, contrastive="sigmoid")
    expected = sigmoid_by_pairs(image, text, scale, bias)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    for g, e in zip(grads(got, leaves, upstream), grads(expected, leaves, upstream), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-15)


def test_sigmoid_of_chunks_averages_to_whole_batch():
    """What the processes compute: each its own images against every caption (label_offset),
    divided by its own count; their mean is the one-process loss."""
    image, text, scale, bias = features(6, seed=3)
    whole = reference.sigmoid_loss(image, text, scale, bias)
    chunks = [reference.sigmoid_loss(image[r : r + 3], text, scale, bias, label_offset=r) for r in (0, 3)]
    torch.testing.assert_close((chunks[0] + chunks[1]) / 2, whole, rtol=1e-12, atol=0)
    assert not torch.allclose(chunks[0], chunks[1])


@pytest.mark.parametrize("n", [1, 5])
def test_sigmoid_equals_open_clip_siglip_loss(n):
    open_clip_loss = pytest.importorskip("open_clip.loss")
    image, text, scale, bias = features(n, seed=10 + n)
    leaves = [image, text, scale, bias]
    upstream = torch.tensor(-1.3, dtype=torch.float64)
    got = contrastive_loss(image, text, scale, bias, contrastive="sigmoid")
    expected = open_clip_loss.SigLipLoss()(image, text, scale, bias)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    for g, e in zip(grads(got, leaves, upstream), grads(expected, leaves, upstream), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-15)


def test_softmax_equals_open_clip_clip_loss():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    image, text, scale, _ = features(5, seed=4)
    leaves = [image, text, scale]
    upstream = torch.tensor(0.4, dtype=torch.float64)
    got = contrastive_loss(image, text, scale)
    expected = open_clip_loss.ClipLoss()(image, text, scale)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    for g, e in zip(grads(got, leaves, upstream), grads(expected, leaves, upstream), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-15)


def test_fsc_loss_passes_contrastive_through():
    B, K, D = 4, 2, 8
    g = torch.Generator().manual_seed(5)
    image = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(B * (1 + K), D, generator=g, dtype=torch.float64), dim=-1)
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    sigmoid = FSCLoss(contrastive="sigmoid")(image, text, scale, logit_bias=bias, output_dict=True)
    softmax = FSCLoss()(image, text, scale, logit_bias=bias, output_dict=True)
    expected = contrastive_loss(image, text[:B], scale, bias, contrastive="sigmoid")
    torch.testing.assert_close(sigmoid["contrastive_loss"], expected, rtol=1e-12, atol=0)
    assert not torch.allclose(sigmoid["contrastive_loss"], softmax["contrastive_loss"])
    torch.testing.assert_close(sigmoid["global_hn_loss"], softmax["global_hn_loss"], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_bad_inputs_name_the_argument(kind):
    image, text, scale, bias = features(3)
    with pytest.raises(ValueError, match="contrastive must be one of .*'hinge'"):
        contrastive_loss(image, text, scale, contrastive="hinge")
    with pytest.raises(ValueError, match="contrastive must be one of"):
        FSCLoss(contrastive="Sigmoid")
    with pytest.raises(ValueError, match="text_features has n = 2"):
        contrastive_loss(image, text[:2], scale, bias, contrastive=kind)
    with pytest.raises(ValueError, match="logit_bias must be a scalar"):
        contrastive_loss(image, text, scale, torch.zeros(2), contrastive=kind)
    with pytest.raises(TypeError, match="image_features must be a floating-point"):
        contrastive_loss(image.detach().long(), text, scale, bias, contrastive=kind)
    with pytest.raises(RuntimeError, match="world_size=2 needs an initialised"):
        contrastive_loss(image, text, scale, bias, contrastive=kind, rank=1, world_size=2)
    with pytest.raises(ValueError, match=r"image_features has shape \(0, 8\): the batch is empty"):
        contrastive_loss(image[:0], text[:0], scale, bias, contrastive=kind)
    dtypes = r"image_features and text_features must share a dtype, got image_features torch.float32, "
    with pytest.raises(TypeError, match=dtypes + "text_features torch.float64"):
        contrastive_loss(image.float(), text, scale, bias, contrastive=kind)


def test_fsc_loss_bad_batches_name_the_argument():
    image, text, scale, bias = features(3)
    with pytest.raises(ValueError, match=r"image_features has shape \(0, 8\): the batch is empty"):
        FSCLoss()(image[:0], text[:0], scale)
    with pytest.raises(TypeError, match="image_features and text_features must share a dtype"):
        FSCLoss()(image, text.float(), scale)
