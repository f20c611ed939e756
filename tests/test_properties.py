"""Properties of the reference losses through the public API."""

import pytest
import torch
import torch.nn.functional as F

from fsc_losses import (
    FSCLoss,
    GlobalHNLoss,
    LocalHNLoss,
    SelectiveCalibratedReg,
    group_captions,
    local_hn_scores,
    unpack_negatives,
)
from fsc_losses.reference import patch_weights


def make_inputs(B=3, K=3, T=7, P=5, D=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, 1 + K, T, generator=g) < 0.6
    mask[..., 0] = True  # every caption counts a position
    return dict(
        image_tokens=torch.randn(B, P, D, generator=g, dtype=dtype),
        text_tokens=torch.randn(B, 1 + K, T, D, generator=g, dtype=dtype),
        text_mask=mask,
        logit_scale=torch.tensor(7.0, dtype=dtype),
    )


def leaves(inputs):
    out = dict(inputs)
    for k in ("image_tokens", "text_tokens", "logit_scale"):
        out[k] = inputs[k].clone().requires_grad_()
    return out


def test_permuting_negatives_leaves_loss_unchanged():
    x = make_inputs(K=4)
    neg_valid = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    loss = LocalHNLoss()(**x, neg_valid=neg_valid)
    perm = torch.tensor([3, 1, 0, 2])
    cols = torch.cat([torch.zeros(1, dtype=torch.long), 1 + perm])
    permuted = dict(x, text_tokens=x["text_tokens"][:, cols], text_mask=x["text_mask"][:, cols])
    loss_perm = LocalHNLoss()(**permuted, neg_valid=neg_valid[:, perm])
    torch.testing.assert_close(loss_perm, loss, rtol=1e-12, atol=0)


def test_all_negatives_missing_is_exact_zero_that_backpropagates():
    x = leaves(make_inputs())
    neg_valid = torch.zeros(3, 3, dtype=torch.bool)
    x["text_mask"] = x["text_mask"].clone()
    x["text_mask"][:, 1:] = False  # missing negatives may have empty masks
    loss = LocalHNLoss()(**x, neg_valid=neg_valid)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    for k in ("image_tokens", "text_tokens", "logit_scale"):
        assert torch.equal(x[k].grad, torch.zeros_like(x[k])), k


def test_missing_negative_has_no_influence_and_no_gradient():
    x = leaves(make_inputs())
    neg_valid = torch.ones(3, 3, dtype=torch.bool)
    neg_valid[1, 2] = False
    loss = LocalHNLoss()(**x, neg_valid=neg_valid)
    loss.backward()
    assert torch.equal(x["text_tokens"].grad[1, 3], torch.zeros_like(x["text_tokens"].grad[1, 3]))
    assert x["text_tokens"].grad[1, 2].abs().sum() > 0

    changed = dict(x)
    changed["text_tokens"] = x["text_tokens"].detach().clone()
    changed["text_tokens"][1, 3] = torch.randn_like(changed["text_tokens"][1, 3]) * 100
    changed["text_mask"] = x["text_mask"].clone()
    changed["text_mask"][1, 3] = False
    torch.testing.assert_close(
        LocalHNLoss()(**changed, neg_valid=neg_valid), loss.detach(), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("with_missing", [False, True])
def test_plain_settings_equal_cross_entropy(with_missing):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64) * 5
    neg_valid = torch.rand(6, 3, generator=g) < 0.6 if with_missing else torch.ones(6, 3, dtype=torch.bool)
    neg_valid[0] = True
    loss = SelectiveCalibratedReg(focal_gamma=0, label_smoothing=0)(logits, neg_valid)
    rows = neg_valid.any(dim=1)
    masked = logits.masked_fill(~torch.cat([torch.ones(6, 1, dtype=torch.bool), neg_valid], 1), float("-inf"))
    expected = F.cross_entropy(masked[rows], torch.zeros(int(rows.sum()), dtype=torch.long))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_focal_and_smoothing_by_hand():
    logits = torch.tensor([[2.0, 1.0, -1.0]], dtype=torch.float64)
    p = logits.softmax(1)[0]
    eps, gamma = 0.1, 2.0
    q = torch.tensor([1 - eps + eps / 3, eps / 3, eps / 3], dtype=torch.float64)
    expected = -(q * (1 - p) ** gamma * p.log()).sum()
    torch.testing.assert_close(SelectiveCalibratedReg(gamma, eps)(logits), expected, rtol=1e-12, atol=0)


def test_noncontiguous_grouped_view_equals_contiguous_copy():
    B, K, T, P, D = 3, 2, 6, 5, 8
    x = make_inputs(B=B, K=K, T=T, P=P, D=D)
    flat_tokens = x["text_tokens"].transpose(0, 1).reshape(-1, T, D).clone()
    flat_mask = x["text_mask"].transpose(0, 1).reshape(-1, T).clone()
    view = group_captions(flat_tokens, B)
    assert not view.is_contiguous() and view.data_ptr() == flat_tokens.data_ptr()
    a = LocalHNLoss()(x["image_tokens"], view, group_captions(flat_mask, B), x["logit_scale"])
    b = LocalHNLoss()(
        x["image_tokens"], view.contiguous(), group_captions(flat_mask, B).contiguous(), x["logit_scale"]
    )
    c = LocalHNLoss()(x["image_tokens"], flat_tokens, flat_mask, x["logit_scale"])
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    torch.testing.assert_close(c, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("sparsify", [False, True])
def test_degenerate_minmax_row_uses_uniform_weights(sparsify):
    sim = torch.tensor([[3.0, 3.0, 3.0, 3.0], [0.0, 1.0, 2.0, 5.0]], dtype=torch.float64)
    w = patch_weights(sim, "minmax", sparsify)
    torch.testing.assert_close(w[0], torch.full((4,), 0.25, dtype=torch.float64))
    assert torch.isfinite(w).all()
    x = make_inputs(P=4)
    x["text_tokens"][0, 0, 0] = 0.0  # a zero token: every patch scores 0
    x["text_mask"][0, 0] = False
    x["text_mask"][0, 0, 0] = True
    scores = local_hn_scores(**x, sparsify=sparsify)
    assert torch.isfinite(scores).all()
    # its pooled patch is the mean patch, so its score is scale * cos(mean patch, token) = 0 here
    torch.testing.assert_close(scores[0, 0], torch.zeros((), dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("normalizer,sparsify", [("minmax", False), ("minmax", True), ("softmax", False)])
def test_float32_agrees_with_float64(normalizer, sparsify):
    x64 = make_inputs(B=4, K=3, T=9, P=7, D=16, seed=3)
    x32 = {k: v.float() if v.is_floating_point() else v for k, v in x64.items()}
    loss = LocalHNLoss(normalizer, sparsify)
    torch.testing.assert_close(loss(**x32).double(), loss(**x64), rtol=1e-5, atol=1e-5)


def test_fsc_total_is_sum_of_weighted_terms_and_logit_bias():
    g = torch.Generator().manual_seed(4)
    B, K, D = 4, 2, 8
    img = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(B * (1 + K), D, generator=g, dtype=torch.float64), dim=-1)
    x = make_inputs(B=B, K=K, D=D)
    loss = FSCLoss()
    terms = loss(
        img, txt, x["logit_scale"], x["image_tokens"], x["text_tokens"], x["text_mask"], output_dict=True
    )
    assert set(terms) == {"contrastive_loss", "global_hn_loss", "local_hn_loss"}
    total = loss(img, txt, x["logit_scale"], x["image_tokens"], x["text_tokens"], x["text_mask"])
    torch.testing.assert_close(total, sum(terms.values()), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        terms["global_hn_loss"], 0.5 * GlobalHNLoss()(img, txt, x["logit_scale"]), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        terms["local_hn_loss"],
        0.2 * LocalHNLoss()(x["image_tokens"], x["text_tokens"], x["text_mask"], x["logit_scale"]),
        rtol=1e-12,
        atol=0,
    )
    # no tokens, or a zero local weight: no local term
    assert set(loss(img, txt, x["logit_scale"], output_dict=True)) == {"contrastive_loss", "global_hn_loss"}
    no_local = FSCLoss(local_weight=0)(
        img,
        txt,
        x["logit_scale"],
        **{k: x[k] for k in ("image_tokens", "text_tokens", "text_mask")},
        output_dict=True,
    )
    assert "local_hn_loss" not in no_local
    # the bias shifts every CLIP logit
    bias = torch.tensor(-3.0, dtype=torch.float64)
    logits = x["logit_scale"] * img @ txt[:B].T + bias
    labels = torch.arange(B)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    got = loss(img, txt, x["logit_scale"], logit_bias=bias, output_dict=True)["contrastive_loss"]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_nan_input_is_not_hidden():
    x = make_inputs()
    x["image_tokens"][0, 0, 0] = float("nan")
    assert torch.isnan(LocalHNLoss()(**x))


def test_unpack_negatives_roundtrip():
    B, K = 3, 2
    present = torch.tensor([1, 0, 1, 1, 1, 0], dtype=torch.bool)  # type-major (K*B,)
    x = torch.arange((B + int(present.sum())) * 2, dtype=torch.float64).view(-1, 2).requires_grad_()
    grouped, neg_valid = unpack_negatives(x, present, B)
    assert grouped.shape == (B, 1 + K, 2)
    assert torch.equal(neg_valid, present.view(K, B).T)
    torch.testing.assert_close(grouped[:, 0], x[:B])
    torch.testing.assert_close(grouped[0, 1], x[3])
    assert torch.equal(grouped[1, 1], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(grouped[2, 1], x[4])
    torch.testing.assert_close(grouped[1, 2], x[6])
    grouped.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_uncounted_position_far_above_counted_ones_keeps_gradients_finite():
    """An uncounted position may score far above the counted ones (here exp(200) overflows fp32);
    it must neither contribute nor poison the gradient."""
    image = torch.tensor([[[1.0, 0.0]]])  # one patch, so every position pools exactly it
    text = torch.tensor([[[[-1.0, 0.0], [1.0, 0.0]], [[-1.0, 0.0], [1.0, 0.0]]]], requires_grad=True)
    mask = torch.tensor([[[True, False], [True, False]]])
    scale = torch.tensor(100.0, requires_grad=True)
    scores = local_hn_scores(image, text, mask, scale)
    torch.testing.assert_close(scores, torch.full((1, 2), -100.0))
    scores.sum().backward()
    assert torch.isfinite(text.grad).all() and torch.isfinite(scale.grad)
    assert torch.equal(text.grad[..., 1, :], torch.zeros_like(text.grad[..., 1, :]))
