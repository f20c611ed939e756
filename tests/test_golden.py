"""The golden vectors of the released implementation (float64), through the public API."""

import glob
import os

import pytest
import torch

from fsc_losses import (
    FSCLoss,
    GlobalHNLoss,
    LocalHNLoss,
    SelectiveCalibratedReg,
    local_hn_scores,
    unpack_negatives,
)

from .conftest import GOLDEN_DIR

FILES = sorted(glob.glob(os.path.join(GOLDEN_DIR, "*.pt")))
LEAVES = ("image_features", "image_tokens", "text_features", "text_tokens", "logit_scale")


def test_golden_files_present():
    assert len(FILES) == 7


def _criterion_params(meta):
    gamma = meta["focal_gamma"] if meta["loss_name"] == "focal_loss" else 0.0
    return gamma, meta["label_smoothing"] or 0.0


class Case:
    """One golden file unpacked into the grouped layout, with leaves that require grad."""

    def __init__(self, path):
        self.data = torch.load(path, weights_only=True)
        self.meta = meta = self.data["meta"]
        self.leaves = {name: self.data[name].clone().requires_grad_() for name in LEAVES[:4]}
        self.leaves["logit_scale"] = torch.tensor(
            meta["logit_scale"], dtype=torch.float64, requires_grad=True
        )
        masks = self.data["neg_text_masks"]
        b = meta["B"]
        self.text_features, self.neg_valid = unpack_negatives(self.leaves["text_features"], masks, b)
        self.text_tokens, _ = unpack_negatives(self.leaves["text_tokens"], masks, b)
        self.text_mask, _ = unpack_negatives(self.data["attn_mask"], masks, b)
        self.gamma, self.eps = _criterion_params(meta)

    def fsc_loss(self):
        m = self.meta
        return FSCLoss(
            global_weight=m["global_weight"],
            local_weight=m["local_weight"],
            normalizer=m["normalizer"],
            sparsify=m["sparsify"],
            focal_gamma=self.gamma,
            label_smoothing=self.eps,
        )

    def terms(self):
        return self.fsc_loss()(
            self.leaves["image_features"],
            self.text_features,
            self.leaves["logit_scale"],
            image_tokens=self.leaves["image_tokens"],
            text_tokens=self.text_tokens,
            text_mask=self.text_mask,
            neg_valid=self.neg_valid,
            output_dict=True,
        )

    def grads(self, loss):
        leaves = [self.leaves[name] for name in LEAVES]
        grads = torch.autograd.grad(loss, leaves, retain_graph=True, allow_unused=True)
        return {
            name: torch.zeros_like(leaf) if grad is None else grad
            for name, leaf, grad in zip(LEAVES, leaves, grads, strict=True)
        }


@pytest.fixture(params=FILES, ids=lambda p: os.path.basename(p)[:-3])
def case(request):
    return Case(request.param)


def close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-9)


def test_fsc_loss_terms(case):
    terms = case.terms()
    close(terms["contrastive_loss"], case.data["orig_clip_loss"])
    close(terms["global_hn_loss"], case.data["masked_clip_neg_loss"])
    close(terms["local_hn_loss"], case.data["masked_local_neg_loss"])
    if case.meta["all_valid"]:
        close(terms["global_hn_loss"], case.data["orig_clip_neg_loss"])
        close(terms["local_hn_loss"], case.data["orig_local_neg_loss"])
    else:
        # The file exists to show the deliberate difference: missing negatives leave the softmax.
        assert not torch.allclose(terms["local_hn_loss"], case.data["orig_local_neg_loss"], rtol=1e-6)


def test_modules_match_fsc_terms(case):
    m = case.meta
    scr = SelectiveCalibratedReg(case.gamma, case.eps)
    local = LocalHNLoss(m["normalizer"], m["sparsify"], criterion=scr)
    value = local(
        case.leaves["image_tokens"],
        case.text_tokens,
        case.text_mask,
        case.leaves["logit_scale"],
        case.neg_valid,
    )
    close(m["local_weight"] * value, case.data["masked_local_neg_loss"])
    glob_ = GlobalHNLoss(criterion=scr)
    value = glob_(
        case.leaves["image_features"], case.text_features, case.leaves["logit_scale"], case.neg_valid
    )
    close(m["global_weight"] * value, case.data["masked_clip_neg_loss"])


def test_gradients(case):
    if not case.meta["all_valid"]:
        pytest.skip("golden gradients follow the released code's semantics for missing negatives")
    terms = case.terms()
    total = sum(terms.values())
    for term, loss in (
        ("local_neg_loss", terms["local_hn_loss"]),
        ("clip_neg_loss", terms["global_hn_loss"]),
        ("total", total),
    ):
        for leaf, grad in case.grads(loss).items():
            expected = case.data[f"grad_{term}_{leaf}"]
            # The released code keeps its smoothed targets in float32, which moves its gradients
            # by ~1e-8 of their scale: compare relative to each tensor's largest entry.
            atol = 1e-6 * float(expected.abs().max())
            torch.testing.assert_close(
                grad, expected, rtol=1e-6, atol=atol, msg=lambda m, where=f"{term}/{leaf}": f"{where}: {m}"
            )


def test_local_scores(case):
    m = case.meta
    scores = local_hn_scores(
        case.leaves["image_tokens"],
        case.text_tokens,
        case.text_mask,
        case.leaves["logit_scale"],
        m["normalizer"],
        m["sparsify"],
        neg_valid=case.neg_valid,
    )
    b = m["B"]
    packed = torch.cat([scores[:, 0], scores[:, 1:].T.reshape(-1)[case.data["neg_text_masks"].bool()]])
    assert packed.shape == (b + int(case.data["neg_text_masks"].sum()),)
    close(packed, case.data["local_scores"])


def test_flat_layout_matches_grouped(case):
    """Trainers pass flat B*G rows; the released packing unpacked and re-flattened must agree."""
    grouped = case.terms()
    flat = case.fsc_loss()(
        case.leaves["image_features"],
        case.text_features.transpose(0, 1).reshape(-1, case.meta["D"]),
        case.leaves["logit_scale"],
        image_tokens=case.leaves["image_tokens"],
        text_tokens=case.text_tokens.transpose(0, 1).flatten(0, 1),
        text_mask=case.text_mask.transpose(0, 1).flatten(0, 1),
        neg_valid=case.neg_valid,
        output_dict=True,
    )
    for key in grouped:
        torch.testing.assert_close(flat[key], grouped[key], rtol=0, atol=0)
