"""last_token_embedding and ContrastiveNTPLoss against independent computations."""

import pytest
import torch
import torch.nn.functional as F

from fsc_losses import ContrastiveNTPLoss, checks, last_token_embedding, reference

IGNORE = -100


# ---- last_token_embedding -------------------------------------------------------------------


def loop_last_token(hidden_states, attention_mask):
    rows = []
    for b in range(hidden_states.shape[0]):
        last = max(i for i in range(hidden_states.shape[1]) if attention_mask[b, i])
        rows.append(hidden_states[b, last])
    return torch.stack(rows)


@pytest.mark.parametrize("padding", ["left", "right", "random"])
@pytest.mark.parametrize("mask_dtype", [torch.long, torch.bool, torch.int32])
def test_last_token_for_every_padding(padding, mask_dtype):
    g = torch.Generator().manual_seed(0)
    batch, length, width = 5, 9, 4
    hidden = torch.randn(batch, length, width, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([9, 1, 4, 7, 2])
    positions = torch.arange(length)
    if padding == "right":
        mask = positions < lengths[:, None]
    elif padding == "left":
        mask = positions >= length - lengths[:, None]
    else:
        mask = torch.rand(batch, length, generator=g) < 0.5
        mask[:, 3] = True
    got = last_token_embedding(hidden, mask.to(mask_dtype))
    want = loop_last_token(hidden, mask)
    assert torch.equal(got, want)
    if padding == "left":
        assert torch.equal(got, hidden[:, -1])
    upstream = torch.randn(batch, width, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(got, hidden, upstream)
    (want_grad,) = torch.autograd.grad(want, hidden, upstream)
    assert torch.equal(grad, want_grad)


def test_last_token_row_without_real_token():
    hidden = torch.randn(3, 4, 2)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]])
    with pytest.raises(ValueError, match=r"attention_mask\[1\] marks no position"):
        last_token_embedding(hidden, mask)
    unchecked = last_token_embedding(hidden, mask, check_inputs=False)
    assert torch.isnan(unchecked[1]).all()
    assert torch.equal(unchecked[[0, 2]], hidden[[0, 2], [1, 3]])


@pytest.mark.parametrize(
    "hidden, mask, error, message",
    [
        (
            torch.randn(3, 4),
            torch.ones(3, 4, dtype=torch.long),
            ValueError,
            r"hidden_states must have shape \(B, L, H\)",
        ),
        (torch.randn(3, 4, 2), torch.ones(3, 5, dtype=torch.long), ValueError, r"attention_mask has L = 5"),
        (torch.randn(3, 4, 2), torch.ones(2, 4, dtype=torch.long), ValueError, r"attention_mask has B = 2"),
        (torch.randn(3, 4, 2), torch.ones(3, 4), TypeError, r"attention_mask must be a bool or integer"),
        (
            torch.ones(3, 4, 2, dtype=torch.long),
            torch.ones(3, 4, dtype=torch.long),
            TypeError,
            "hidden_states",
        ),
        (torch.randn(3, 0, 2), torch.ones(3, 0, dtype=torch.long), ValueError, r"no position \(L = 0\)"),
        (torch.randn(3, 4, 2), torch.ones(3, 4, dtype=torch.long, device="meta"), ValueError, "on meta"),
    ],
)
def test_last_token_bad_inputs(hidden, mask, error, message):
    with pytest.raises(error, match=message):
        last_token_embedding(hidden, mask)


# ---- ContrastiveNTPLoss ---------------------------------------------------------------------


def expected_contrastive(kind, images, texts, scale, bias):
    """The formulas of open_clip's ClipLoss (through reference.clip_loss, which the golden
    vectors pin) and SigLipLoss (written out) on the normalised float64 embeddings: what
    ContrastiveNTPLoss must add to normalising and casting."""
    images, texts = F.normalize(images.double(), dim=-1), F.normalize(texts.double(), dim=-1)
    if kind == "softmax":
        return reference.clip_loss(images, texts, scale.double(), None if bias is None else bias.double())
    if kind == "sigmoid":
        logits = scale * images @ texts.T + bias
        labels = 2 * torch.eye(len(images), dtype=logits.dtype) - 1
        return -F.logsigmoid(labels * logits).sum() / len(images)
    pytest.fail(f"no independent expectation written for contrastive={kind!r}")


def expected_ntp(hidden, weight, labels, bias=None, label_smoothing=0.0, softcap=None):
    logits = hidden[:, :-1].double() @ weight.double().T
    if bias is not None:
        logits = logits + bias.double()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(
        logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE, label_smoothing=label_smoothing
    )


def lvlm_batch(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch, embed, seqs, length, width, vocab = 6, 16, 4, 10, 12, 50
    labels = torch.randint(0, vocab, (seqs, length), generator=g)
    labels[:, :3] = IGNORE  # the prompt
    labels[1, 7:] = IGNORE  # padding
    return dict(
        image_embeddings=torch.randn(batch, embed, generator=g, dtype=torch.float64).to(dtype),
        text_embeddings=torch.randn(batch, embed, generator=g, dtype=torch.float64).to(dtype),
        logit_scale=torch.tensor(20.0, dtype=torch.float64),
        hidden_states=torch.randn(seqs, length, width, generator=g, dtype=torch.float64).to(dtype),
        lm_head_weight=torch.randn(vocab, width, generator=g, dtype=torch.float64).to(dtype),
        labels=labels,
    )


def with_grad(inputs):
    return {k: v.detach().clone().requires_grad_() if v.is_floating_point() else v for k, v in inputs.items()}


@pytest.mark.parametrize("contrastive", checks.CONTRASTIVE)
@pytest.mark.parametrize("backend", ["chunked", "reference"])
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_contrastive_ntp_terms(contrastive, backend, softcap):
    inputs = with_grad(lvlm_batch())
    bias = torch.tensor(-5.0, dtype=torch.float64, requires_grad=True) if contrastive == "sigmoid" else None
    loss_fn = ContrastiveNTPLoss(
        ntp_weight=0.7, contrastive=contrastive, label_smoothing=0.1, softcap=softcap, backend=backend
    )
    terms = loss_fn(**inputs, logit_bias=bias, output_dict=True)
    assert set(terms) == {"contrastive_loss", "ntp_loss"}

    want_contrastive = expected_contrastive(
        contrastive, inputs["image_embeddings"], inputs["text_embeddings"], inputs["logit_scale"], bias
    )
    want_ntp = 0.7 * expected_ntp(
        inputs["hidden_states"], inputs["lm_head_weight"], inputs["labels"], None, 0.1, softcap
    )
    torch.testing.assert_close(terms["contrastive_loss"], want_contrastive, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms["ntp_loss"], want_ntp, rtol=1e-10, atol=1e-12)

    total = loss_fn(**inputs, logit_bias=bias)
    torch.testing.assert_close(total, want_contrastive + want_ntp, rtol=1e-10, atol=1e-12)
    leaves = [v for v in inputs.values() if v.requires_grad]
    upstream = torch.tensor(1.3, dtype=torch.float64)
    got_grads = torch.autograd.grad(total, leaves, upstream)
    want_grads = torch.autograd.grad(want_contrastive + want_ntp, leaves, upstream)
    for got, want in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("contrastive", checks.CONTRASTIVE)
def test_contrastive_only_without_hidden_states(contrastive):
    inputs = lvlm_batch()
    bias = torch.tensor(-5.0, dtype=torch.float64) if contrastive == "sigmoid" else None
    images, texts, scale = inputs["image_embeddings"], inputs["text_embeddings"], inputs["logit_scale"]
    loss_fn = ContrastiveNTPLoss(contrastive=contrastive)
    terms = loss_fn(images, texts, scale, logit_bias=bias, output_dict=True)
    assert set(terms) == {"contrastive_loss"}
    want = expected_contrastive(contrastive, images, texts, scale, bias)
    torch.testing.assert_close(loss_fn(images, texts, scale, logit_bias=bias), want, rtol=1e-10, atol=1e-12)


def test_normalize_false_uses_the_embeddings_as_given():
    inputs = lvlm_batch()
    images = F.normalize(inputs["image_embeddings"], dim=-1)
    texts = F.normalize(inputs["text_embeddings"], dim=-1)
    scale = inputs["logit_scale"]
    as_given = ContrastiveNTPLoss(normalize=False)(images * 3, texts, scale)
    torch.testing.assert_close(as_given, reference.clip_loss(images * 3, texts, scale), rtol=1e-12, atol=0)
    normalized = ContrastiveNTPLoss()(images * 3, texts, scale)
    torch.testing.assert_close(normalized, reference.clip_loss(images, texts, scale), rtol=1e-12, atol=0)


def test_bf16_embeddings_and_hidden_states():
    """16-bit LVLM outputs: the embeddings enter the contrastive term in float32, the NTP term
    accumulates in float32; gradients come back in bfloat16."""
    inputs = with_grad(lvlm_batch(dtype=torch.bfloat16))
    terms = ContrastiveNTPLoss()(**inputs, output_dict=True)
    assert all(v.dtype == torch.float32 for v in terms.values())
    want_contrastive = expected_contrastive(
        "softmax", inputs["image_embeddings"], inputs["text_embeddings"], inputs["logit_scale"], None
    )
    torch.testing.assert_close(terms["contrastive_loss"].double(), want_contrastive, rtol=1e-5, atol=1e-5)
    want_ntp = expected_ntp(inputs["hidden_states"], inputs["lm_head_weight"], inputs["labels"])
    torch.testing.assert_close(terms["ntp_loss"].double(), want_ntp, rtol=2e-2, atol=2e-2)
    sum(terms.values()).backward()
    assert all(v.grad.dtype == torch.bfloat16 for v in inputs.values() if v.requires_grad and v.dim() > 0)


@pytest.mark.parametrize("missing", ["lm_head_weight", "labels", "hidden_states"])
def test_partial_ntp_inputs_are_refused(missing):
    inputs = lvlm_batch()
    inputs[missing] = None
    with pytest.raises(ValueError, match=rf"the NTP term needs all of .*missing \['{missing}'\]"):
        ContrastiveNTPLoss()(**inputs)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(text_embeddings=torch.randn(5, 16)), ValueError, r"text_embeddings has B = 5"),
        (dict(text_embeddings=torch.randn(6, 15)), ValueError, r"text_embeddings has E = 15"),
        (
            dict(image_embeddings=torch.randn(6, 2, 8)),
            ValueError,
            r"image_embeddings must have shape \(B, E\)",
        ),
        (
            dict(image_embeddings=torch.ones(6, 16, dtype=torch.long)),
            TypeError,
            r"image_embeddings must be a float",
        ),
        (dict(labels=torch.zeros(4, 9, dtype=torch.long)), ValueError, r"targets must have hidden's shape"),
        (dict(labels=torch.full((4, 10), 50)), ValueError, r"targets\[0, 0\] = 50 is not a class index"),
        (dict(lm_head_weight=torch.randn(50, 11, dtype=torch.float64)), ValueError, r"weight has H = 11"),
    ],
)
def test_bad_inputs(change, error, message):
    inputs = {**lvlm_batch(), **change}
    with pytest.raises(error, match=message):
        ContrastiveNTPLoss()(**inputs)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(contrastive="hinge"), r"contrastive must be one of"),
        (dict(backend="triton"), r"backend must be one of"),
        (dict(label_smoothing=2.0), r"label_smoothing must be in"),
        (dict(rank=2, world_size=2), r"need 0 <= rank < world_size"),
        (dict(chunk_size=0), r"chunk_size must be a positive int"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        ContrastiveNTPLoss(**options)
