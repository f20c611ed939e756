"""Every bad input raises before computing, with a message naming the argument; a number given
as logit_scale becomes a tensor once."""

import pytest
import torch

from fsc_losses import (
    FSCLoss,
    GlobalHNLoss,
    LocalHNLoss,
    SelectiveCalibratedReg,
    checks,
    group_captions,
    local_hn_scores,
    unpack_negatives,
)

B, K, T, P, D = 2, 2, 5, 4, 6
G = 1 + K


def good():
    return dict(
        image_tokens=torch.randn(B, P, D),
        text_tokens=torch.randn(B, G, T, D),
        text_mask=torch.ones(B, G, T, dtype=torch.bool),
        logit_scale=torch.tensor(10.0),
    )


def features():
    return dict(
        image_features=torch.randn(B, D), text_features=torch.randn(B, G, D), logit_scale=torch.tensor(10.0)
    )


LOCAL_CASES = {
    "image_tokens rank": (dict(image_tokens=torch.randn(B, P)), ValueError, "image_tokens"),
    "text_tokens rank": (dict(text_tokens=torch.randn(B, G, T, D, 1)), ValueError, "text_tokens"),
    "B disagrees": (dict(text_tokens=torch.randn(B + 1, G, T, D)), ValueError, "text_tokens"),
    "flat rows not a multiple of B": (
        dict(text_tokens=torch.randn(B * G + 1, T, D)),
        ValueError,
        "text_tokens",
    ),
    "D disagrees": (dict(text_tokens=torch.randn(B, G, T, D + 1)), ValueError, "text_tokens"),
    "G disagrees": (dict(text_mask=torch.ones(B, G + 1, T, dtype=torch.bool)), ValueError, "text_mask"),
    "T disagrees": (dict(text_mask=torch.ones(B, G, T + 1, dtype=torch.bool)), ValueError, "text_mask"),
    "float mask": (dict(text_mask=torch.ones(B, G, T)), TypeError, "text_mask"),
    "integer tokens": (dict(text_tokens=torch.ones(B, G, T, D, dtype=torch.long)), TypeError, "text_tokens"),
    "complex tokens": (
        dict(image_tokens=torch.randn(B, P, D, dtype=torch.complex64)),
        TypeError,
        "image_tokens",
    ),
    "token dtypes differ": (
        dict(text_tokens=torch.randn(B, G, T, D, dtype=torch.float64)),
        TypeError,
        "text_tokens",
    ),
    "vector scale": (dict(logit_scale=torch.ones(2)), ValueError, "logit_scale"),
    "tensor on another device": (
        dict(logit_scale=torch.tensor(10.0, device="meta")),
        ValueError,
        "logit_scale",
    ),
    "empty mask of a present caption": (
        dict(text_mask=torch.ones(B, G, T, dtype=torch.bool).index_fill_(1, torch.tensor([2]), False)),
        ValueError,
        "text_mask[0, 2]",
    ),
}


@pytest.mark.parametrize("case", LOCAL_CASES, ids=list(LOCAL_CASES))
@pytest.mark.parametrize("entry", ["LocalHNLoss", "local_hn_scores", "FSCLoss"])
def test_local_bad_inputs(case, entry):
    override, error, name = LOCAL_CASES[case]
    x = {**good(), **override}
    with pytest.raises(error, match=__import__("re").escape(name)):
        if entry == "LocalHNLoss":
            LocalHNLoss()(**x)
        elif entry == "local_hn_scores":
            local_hn_scores(**x)
        else:
            f = features()
            f["logit_scale"] = x.pop("logit_scale")
            FSCLoss()(**f, **x)


@pytest.mark.parametrize(
    "neg_valid,error",
    [
        (torch.ones(B, K + 1, dtype=torch.bool), ValueError),
        (torch.ones(B + 1, K, dtype=torch.bool), ValueError),
        (torch.ones(B, K), TypeError),
    ],
)
def test_bad_neg_valid(neg_valid, error):
    with pytest.raises(error, match="neg_valid"):
        LocalHNLoss()(**good(), neg_valid=neg_valid)
    with pytest.raises(error, match="neg_valid"):
        GlobalHNLoss()(**features(), neg_valid=neg_valid)
    with pytest.raises(error, match="neg_valid"):
        SelectiveCalibratedReg()(torch.randn(B, G), neg_valid)


def test_empty_mask_of_missing_negative_is_fine_and_check_can_be_turned_off():
    x = good()
    x["text_mask"][1, 2] = False
    neg_valid = torch.ones(B, K, dtype=torch.bool)
    neg_valid[1, 1] = False
    assert torch.isfinite(LocalHNLoss()(**x, neg_valid=neg_valid))
    assert torch.isinf(local_hn_scores(**x, neg_valid=neg_valid)[1, 2])
    with pytest.raises(ValueError, match="text_mask"):
        LocalHNLoss()(**x)
    # without the value check the caller owns the consequence: an empty present caption is -inf
    assert torch.isinf(local_hn_scores(**x, check_inputs=False)[1, 2])


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: LocalHNLoss(normalizer="maxmin"), "normalizer"),
        (lambda: LocalHNLoss(normalizer="softmax", sparsify=True), "sparsify"),
        (lambda: LocalHNLoss(backend="cuda"), "backend"),
        (lambda: SelectiveCalibratedReg(focal_gamma=-1.0), "focal_gamma"),
        (lambda: SelectiveCalibratedReg(label_smoothing=1.0), "label_smoothing"),
        (lambda: SelectiveCalibratedReg(label_smoothing=-0.1), "label_smoothing"),
        (lambda: FSCLoss(focal_gamma=-0.5), "focal_gamma"),
        (lambda: FSCLoss(normalizer="mean"), "normalizer"),
        (lambda: FSCLoss(rank=2, world_size=2), "rank"),
        (lambda: LocalHNLoss(criterion="scr"), "criterion"),
    ],
)
def test_bad_hyper_parameters(make, name):
    with pytest.raises((ValueError, TypeError), match=name):
        make()


def test_bad_functional_normalizer():
    with pytest.raises(ValueError, match="normalizer"):
        local_hn_scores(**good(), normalizer="max")


def test_global_bad_inputs():
    f = features()
    with pytest.raises(ValueError, match="text_features"):
        GlobalHNLoss()(f["image_features"], torch.randn(B, G, D + 1), f["logit_scale"])
    with pytest.raises(ValueError, match="image_features"):
        GlobalHNLoss()(torch.randn(B, D, 1), f["text_features"], f["logit_scale"])
    with pytest.raises(TypeError, match="image_features"):
        GlobalHNLoss()(torch.ones(B, D, dtype=torch.long), f["text_features"], f["logit_scale"])
    with pytest.raises(ValueError, match="logits"):
        SelectiveCalibratedReg()(torch.randn(B, G, 1))


def test_fsc_needs_all_token_inputs_and_matching_widths():
    f, x = features(), good()
    with pytest.raises(ValueError, match="text_mask"):
        FSCLoss()(**f, image_tokens=x["image_tokens"], text_tokens=x["text_tokens"])
    with pytest.raises(ValueError, match="image_tokens"):
        FSCLoss()(
            f["image_features"][:, :-1],
            f["text_features"][..., :-1],
            f["logit_scale"],
            x["image_tokens"],
            x["text_tokens"],
            x["text_mask"],
        )
    with pytest.raises(RuntimeError, match="torch.distributed"):
        FSCLoss(world_size=2)(**f)


def test_layout_bad_inputs():
    with pytest.raises(ValueError, match="num_images"):
        group_captions(torch.randn(6, 3), 0)
    with pytest.raises(ValueError, match="flat"):
        group_captions(torch.randn(7, 3), 2)
    with pytest.raises(ValueError, match="x must have"):
        unpack_negatives(torch.randn(4, 3), torch.ones(4, dtype=torch.bool), 2)
    with pytest.raises(TypeError, match="neg_text_masks"):
        unpack_negatives(torch.randn(4, 3), torch.ones(4), 2)


def test_triton_backend_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        LocalHNLoss(backend="triton")(**good())


def test_a_number_as_logit_scale_becomes_a_tensor_once(monkeypatch):
    """Making a tensor of a Python number on a GPU is a synchronising copy (and fails during
    CUDA-graph capture): once per value and device, not per call."""
    made = []
    tensor = torch.tensor
    monkeypatch.setattr(
        torch, "tensor", lambda *args, **kwargs: made.append(args[0]) or tensor(*args, **kwargs)
    )
    value = 12.375  # no other test uses it, so the first call below makes it
    inputs = good()
    scores = [local_hn_scores(**{**inputs, "logit_scale": value}) for _ in range(3)]
    assert made.count(value) == 1
    torch.testing.assert_close(scores[2], local_hn_scores(**{**inputs, "logit_scale": tensor(value)}))
    like = torch.zeros(())
    assert checks.as_scale("logit_scale", value, like) is checks.as_scale("logit_scale", value, like)
    with torch.inference_mode():  # an inference tensor could not be saved for a backward later
        inference = checks.as_scale("logit_scale", value, like)
    assert inference.is_inference() and not checks.as_scale("logit_scale", value, like).is_inference()


@pytest.mark.parametrize("groups", [1, 3])
def test_the_value_check_returns_the_most_positions_an_image_counts(groups):
    """What the kernels size their buffers by: per image, the positions of its present captions
    (a missing negative's count for nothing), the most over the batch; a mask of any integer
    dtype; with no negatives at all (neg_valid ``(B, 0)``) the true captions alone."""
    torch.manual_seed(groups)
    mask = torch.rand(4, groups, 7) < 0.5
    mask[:, :, 0] = True  # every caption counts a position
    neg_valid = torch.rand(4, groups - 1) < 0.5
    present = torch.cat([torch.ones(4, 1, dtype=torch.bool), neg_valid], dim=1)
    expected = int((mask & present[..., None]).sum(dim=(1, 2)).max())
    assert checks.check_masks_not_empty(mask.long(), neg_valid, True) == expected
    assert checks.check_masks_not_empty(mask, None, True) == int(mask.sum(dim=(1, 2)).max())
    assert checks.check_masks_not_empty(mask, neg_valid, False) is None
