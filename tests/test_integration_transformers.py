"""Tests for ``fsc_losses.integrations.transformers`` on tiny, randomly initialised transformers
CLIP and SigLIP models built from configs (transformers 4.4x and 5.x)."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel  # noqa: E402

from fsc_losses import FSCLoss, contrastive_loss  # noqa: E402
from fsc_losses.integrations.transformers import (  # noqa: E402
    CLIP_TOKEN_IDS,
    SIGLIP_TOKEN_IDS,
    DenseEncoder,
    encode_dense,
    image_embeddings,
    text_embeddings,
    text_token_mask,
    token_ids,
)

from .ddp_counting import gradients_reduced_by_ddp  # noqa: E402
from .hf_tokenizers import clip_tokenizer, word_tokenizer  # noqa: E402

VOCAB, CONTEXT, IMAGE, PATCH = 100, 12, 32, 8
SOT, EOT = 98, 99  # the tiny CLIP's start and end tokens (its end token is the row's largest id)
IDS = {"clip": {"sot_id": SOT, "eot_id": EOT}, "siglip": SIGLIP_TOKEN_IDS}
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def tiny_clip(vocab=VOCAB, sot=SOT, eot=EOT):
    torch.manual_seed(0)
    text = dict(TOWER, vocab_size=vocab, max_position_embeddings=CONTEXT, bos_token_id=sot, eos_token_id=eot)
    vision = dict(TOWER, image_size=IMAGE, patch_size=PATCH)
    return CLIPModel(
        CLIPConfig(text_config=dict(text, pad_token_id=0), vision_config=vision, projection_dim=16)
    )


def tiny_siglip(image_size=IMAGE, vision_use_head=True):
    torch.manual_seed(0)
    text = dict(TOWER, vocab_size=VOCAB, max_position_embeddings=CONTEXT, bos_token_id=None, eos_token_id=1)
    vision = dict(TOWER, image_size=image_size, patch_size=PATCH, vision_use_head=vision_use_head)
    model = SiglipModel(SiglipConfig(text_config=dict(text, pad_token_id=1), vision_config=vision))
    with torch.no_grad():  # transformers initialises both at 0: make them visible
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-3.0)
    return model


MODELS = {"clip": tiny_clip, "siglip": tiny_siglip}


def caption_ids(family, n=6, seed=0):
    """``(n, CONTEXT)`` ids laid out as the family's tokenizer does, and the attention mask.

    CLIP: start token, words, end token, zero padding (mask 0). SigLIP: words, end token (id 1),
    padding with the end token, and no mask (the text mask must then find the padding itself).
    """
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, CONTEXT, dtype=torch.long)
    mask = torch.zeros(n, CONTEXT, dtype=torch.long)
    start = 1 if family == "clip" else 0
    for row in range(n):
        length = int(torch.randint(1, CONTEXT - start, (1,), generator=gen))  # words + end token
        ids[row, start : start + length - 1] = torch.randint(2, SOT, (length - 1,), generator=gen)
        ids[row, start + length - 1] = EOT if family == "clip" else 1
        mask[row, : start + length] = 1
    if family == "clip":
        ids[:, 0] = SOT
        return ids, mask
    ids[mask == 0] = 1
    return ids, None


def images(batch=2, size=IMAGE, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def pooled(output):
    """``get_*_features``' pooled embedding: a tensor in transformers 4.x, an output object in 5.x."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.mark.parametrize("family", MODELS)
def test_image_and_text_embeddings_are_encode_denses_features(family):
    """The one-tower functions ``fsc_losses.eval`` scores with give encode_dense's features, before
    the normalisation."""
    model = MODELS[family]().eval()
    ids, mask = caption_ids(family)
    pixels = images()
    with torch.no_grad():
        out = encode_dense(model, pixels, ids, mask, **IDS[family])
        assert torch.equal(F.normalize(image_embeddings(model, pixels), dim=-1), out["image_features"])
        assert torch.equal(F.normalize(text_embeddings(model, ids, mask), dim=-1), out["text_features"])
    with pytest.raises(TypeError, match="supports transformers CLIPModel and SiglipModel"):
        image_embeddings(torch.nn.Linear(2, 2), pixels)


@pytest.mark.parametrize("family", MODELS)
def test_features_are_the_models_embeddings(family):
    model = MODELS[family]().eval()
    ids, mask = caption_ids(family)
    pixels = images()
    with torch.no_grad():
        out = encode_dense(model, pixels, ids, mask, **IDS[family])
        image_embedding = pooled(model.get_image_features(pixel_values=pixels))
        text_embedding = pooled(model.get_text_features(input_ids=ids, attention_mask=mask))
        forward = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)

    expected_keys = {
        "image_features",
        "text_features",
        "image_tokens",
        "text_tokens",
        "text_mask",
        "logit_scale",
    }
    assert set(out) == expected_keys | ({"logit_bias"} if family == "siglip" else set())
    width = 16 if family == "clip" else 32
    assert out["image_features"].shape == (2, width) and out["text_features"].shape == (6, width)
    assert out["image_tokens"].shape == (2, (IMAGE // PATCH) ** 2, width)
    assert out["text_tokens"].shape == (6, CONTEXT, width)
    assert out["text_mask"].shape == (6, CONTEXT) and out["text_mask"].dtype == torch.bool
    assert torch.equal(out["image_features"], F.normalize(image_embedding, dim=-1))
    assert torch.equal(out["text_features"], F.normalize(text_embedding, dim=-1))
    torch.testing.assert_close(out["image_features"], forward.image_embeds)
    torch.testing.assert_close(out["text_features"], forward.text_embeds)
    assert out["logit_scale"].shape == () and torch.equal(
        out["logit_scale"], model.logit_scale.exp().reshape(())
    )
    if family == "siglip":
        assert out["logit_bias"].shape == () and out["logit_bias"].item() == -3.0
    assert not torch.allclose(out["image_tokens"].norm(dim=-1), torch.ones(2, (IMAGE // PATCH) ** 2))


def test_clip_tokens_are_the_projected_patch_and_position_outputs():
    model = tiny_clip().eval()
    ids, mask = caption_ids("clip")
    pixels = images()
    with torch.no_grad():
        out = encode_dense(model, pixels, ids, mask, **IDS["clip"])
        hidden = model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        patches = model.visual_projection(model.vision_model.post_layernorm(hidden[:, 1:]))
        text_embedding = pooled(model.get_text_features(input_ids=ids, attention_mask=mask))
    torch.testing.assert_close(out["image_tokens"], patches)
    # CLIP pools the text at its end token: that position's token is the text embedding
    end = (ids == EOT).int().argmax(dim=1)
    torch.testing.assert_close(out["text_tokens"][torch.arange(6), end], text_embedding)


def _pooling_head_on_one_patch(head, patches):
    """SigLIP's pooling head with all its attention on one patch, written out: the attention's
    value and output projections, then the residual MLP."""
    width = patches.shape[-1]
    value = F.linear(
        patches, head.attention.in_proj_weight[2 * width :], head.attention.in_proj_bias[2 * width :]
    )
    attended = head.attention.out_proj(value)
    return attended + head.mlp(head.layernorm(attended))


def test_siglip_image_tokens_are_the_pooling_head_on_each_patch():
    model = tiny_siglip().eval()
    ids, _ = caption_ids("siglip")
    pixels = images()
    with torch.no_grad():
        out = encode_dense(model, pixels, ids)
        patches = model.vision_model(pixel_values=pixels).last_hidden_state  # after post_layernorm
        expected = _pooling_head_on_one_patch(model.vision_model.head, patches)
    torch.testing.assert_close(out["image_tokens"], expected)


def test_siglip_one_patch_token_is_the_image_embedding():
    """With one patch the head has nothing to mix: the token and the pooled embedding coincide,
    so the tokens live where the image embedding does."""
    model = tiny_siglip(image_size=PATCH).eval()
    ids, _ = caption_ids("siglip")
    pixels = images(size=PATCH)
    with torch.no_grad():
        out = encode_dense(model, pixels, ids)
        image_embedding = pooled(model.get_image_features(pixel_values=pixels))
    assert out["image_tokens"].shape == (2, 1, 32)
    torch.testing.assert_close(out["image_tokens"][:, 0], image_embedding)


def test_siglip_last_position_token_is_the_text_embedding():
    model = tiny_siglip().eval()
    ids, _ = caption_ids("siglip")
    with torch.no_grad():
        out = encode_dense(model, images(), ids)
        text_embedding = pooled(model.get_text_features(input_ids=ids))
    torch.testing.assert_close(out["text_tokens"][:, -1], text_embedding)


def test_text_token_mask_layouts():
    # CLIP: start, words, end, padding; the mask marks the padding
    ids = torch.tensor([[98, 5, 6, 99, 0, 0], [98, 7, 99, 99, 99, 99]])
    attention = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    expected = [[False, True, True, True, False, False], [False, True, True, False, False, False]]
    assert text_token_mask(ids, attention, sot_id=98, eot_id=99).tolist() == expected
    assert text_token_mask(ids, attention.bool(), sot_id=98, eot_id=99).tolist() == expected
    # no attention mask: padding with the end token is cut after the first one
    assert text_token_mask(ids, None, sot_id=98, eot_id=99).tolist()[1] == expected[1]
    # SigLIP: no start token, end token 1 doubling as padding
    ids = torch.tensor([[37, 5, 1, 1, 1], [8, 9, 10, 11, 1], [8, 9, 10, 11, 12]])
    assert text_token_mask(ids, sot_id=None, eot_id=1).tolist() == [
        [True, True, True, False, False],
        [True] * 5,
        [True] * 5,  # truncated without an end token: every position counts
    ]
    # the start id only counts as the start token at position 0
    ids = torch.tensor([[5, 98, 99, 0]])
    assert text_token_mask(ids, sot_id=98, eot_id=99).tolist() == [[True, True, True, False]]


def test_token_ids_of_tokenizers(tmp_path):
    assert token_ids(word_tokenizer({"a"}, with_bos=True)) == {"sot_id": 2, "eot_id": 1}
    assert token_ids(word_tokenizer({"a"}, with_bos=False)) == {"sot_id": None, "eot_id": 1}


def test_released_clip_tokenizer_ids_and_mask(tmp_path):
    pytest.importorskip("open_clip")
    tokenizer = clip_tokenizer(tmp_path)
    assert token_ids(tokenizer) == CLIP_TOKEN_IDS
    captions = ["a red cube", "a photo of a dog on the grass", ""]
    batch = tokenizer(captions, padding="max_length", max_length=16, return_tensors="pt")
    ids, attention = batch["input_ids"], batch["attention_mask"]
    assert ids[0, -1] == CLIP_TOKEN_IDS["eot_id"]  # it pads with its end token
    for with_attention in (True, False):
        mask = text_token_mask(ids, attention if with_attention else None, **CLIP_TOKEN_IDS)
        for row, caption in enumerate(captions):
            n_words = len(tokenizer.tokenize(caption))
            assert mask[row].tolist() == [False] + [True] * (n_words + 1) + [False] * (14 - n_words)


@pytest.mark.parametrize("family", MODELS)
def test_default_ids_are_the_familys(family):
    ids, mask = caption_ids(family)
    if family == "clip":
        # The released tokenizer's start and end ids, so that the defaults have tokens to find.
        sot, eot = CLIP_TOKEN_IDS["sot_id"], CLIP_TOKEN_IDS["eot_id"]
        ids = torch.where(ids == SOT, sot, torch.where(ids == EOT, eot, ids))
        model = tiny_clip(vocab=eot + 1, sot=sot, eot=eot).eval()
        defaults, others = CLIP_TOKEN_IDS, SIGLIP_TOKEN_IDS
    else:
        model = tiny_siglip().eval()
        defaults, others = SIGLIP_TOKEN_IDS, CLIP_TOKEN_IDS
    with torch.no_grad():
        out = encode_dense(model, images(), ids, mask)
    assert torch.equal(out["text_mask"], text_token_mask(ids, mask, **defaults))
    # The other family's ids give another mask here, so the test tells the two apart.
    assert not torch.equal(out["text_mask"], text_token_mask(ids, mask, **others))


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_autocast_and_gradients_reach_both_towers_through_tokens(family, dtype):
    model = MODELS[family]()
    ids, mask = caption_ids(family)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = encode_dense(model, images(), ids, mask, **IDS[family])
    assert out["image_tokens"].dtype == dtype and out["text_tokens"].dtype == dtype
    (out["image_tokens"].float().square().mean() + out["text_tokens"].float().square().mean()).backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    # all but the temperature and bias, and SigLIP's attention query: with one patch per head
    # call the attention weight is 1 whatever the query
    expected = (
        {"logit_scale"} if family == "clip" else {"logit_scale", "logit_bias", "vision_model.head.probe"}
    )
    assert no_grad == expected
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all() and param.grad.dtype == torch.float32, name


def test_model_left_unchanged():
    model = tiny_siglip()
    ids, _ = caption_ids("siglip")
    pixels = images()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model.eval()(input_ids=ids, pixel_values=pixels).logits_per_image
    model.train()
    out = encode_dense(model, pixels, ids)
    (out["image_tokens"].sum() + out["text_tokens"].sum() + out["image_features"].sum()).backward()

    assert all(m.training for m in model.modules())
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids, pixel_values=pixels).logits_per_image, before)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks and not module._backward_pre_hooks


def _tiny_siglip2():
    config = transformers.Siglip2Config(
        text_config=dict(TOWER, vocab_size=VOCAB, max_position_embeddings=CONTEXT),
        vision_config=dict(TOWER, num_patches=16, patch_size=PATCH),
    )
    return transformers.Siglip2Model(config)


@pytest.mark.parametrize(
    "build, error, match",
    [
        (_tiny_siglip2, TypeError, "Siglip2Model"),
        (lambda: transformers.CLIPVisionModel(tiny_clip().config.vision_config), TypeError, "CLIPModel and"),
        (lambda: torch.nn.Linear(2, 2), TypeError, "got Linear"),
        (lambda: tiny_siglip(vision_use_head=False), ValueError, "pooling head"),
    ],
    ids=["siglip2", "vision-only", "not-a-model", "siglip-without-head"],
)
def test_unsupported_models_raise(build, error, match):
    if build is _tiny_siglip2 and not hasattr(transformers, "Siglip2Model"):
        pytest.skip("this transformers has no Siglip2Model")
    ids, mask = caption_ids("clip")
    with pytest.raises(error, match=match):
        encode_dense(build(), images(), ids, mask)
    with pytest.raises(error, match=match):
        DenseEncoder(build())


def test_bad_text_inputs_raise():
    model = tiny_clip()
    ids, mask = caption_ids("clip")
    for bad in (ids.float(), ids[0]):
        with pytest.raises(ValueError, match="input_ids must be a .* tensor of token ids"):
            encode_dense(model, images(), bad)
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids \(6, 12\)"):
        encode_dense(model, images(), ids, mask[:, :-1])


@pytest.mark.parametrize("family", MODELS)
def test_contrastive_term_equals_the_models_own_loss(family):
    """CLIP's ``return_loss=True`` loss is the softmax term, SigLIP's the sigmoid term: values
    and the gradients of every parameter (float32: transformers 4.x cannot run CLIP in float64)."""
    contrastive = "softmax" if family == "clip" else "sigmoid"
    model = MODELS[family]()
    ids, mask = caption_ids(family, n=3)
    pixels = images(3)
    own = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss
    own_grads = torch.autograd.grad(own, list(model.parameters()))

    out = encode_dense(model, pixels, ids, mask, **IDS[family])
    bias = out.get("logit_bias")
    ours = contrastive_loss(
        out["image_features"], out["text_features"], out["logit_scale"], bias, contrastive=contrastive
    )
    fsc = FSCLoss(contrastive=contrastive)(**out, output_dict=True)["contrastive_loss"]
    torch.testing.assert_close(ours, own)
    torch.testing.assert_close(fsc, own)
    ours_grads = torch.autograd.grad(ours, list(model.parameters()))
    for (name, _), got, expected in zip(model.named_parameters(), ours_grads, own_grads, strict=True):
        torch.testing.assert_close(got, expected, msg=name)


@pytest.mark.parametrize("family", MODELS)
def test_output_feeds_fsc_loss(family):
    model = MODELS[family]()
    ids, mask = caption_ids(family, n=6)  # B=2, K=2
    neg_valid = torch.tensor([[True, False], [True, True]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encode_dense(model, images(), ids, mask, **IDS[family])
        terms = FSCLoss(contrastive="softmax" if family == "clip" else "sigmoid")(
            **out, neg_valid=neg_valid, output_dict=True
        )
    assert set(terms) == {"contrastive_loss", "global_hn_loss", "local_hn_loss"}
    assert all(torch.isfinite(value) for value in terms.values())
    sum(terms.values()).backward()
    assert model.logit_scale.grad is not None and torch.isfinite(model.logit_scale.grad).all()


def test_package_import_does_not_import_transformers():
    code = "import sys, fsc_losses, fsc_losses.integrations; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dense_encoder_gradients_go_through_ddp(tmp_path):
    model = tiny_siglip()
    ids, _ = caption_ids("siglip")
    with torch.no_grad():
        direct = encode_dense(model.eval(), images(), ids)
        wrapped = DenseEncoder(model)(images(), ids)
    assert all(torch.equal(direct[k], wrapped[k]) for k in direct)

    def loss_of(out):
        return sum(FSCLoss(contrastive="sigmoid")(**out, output_dict=True).values())

    reduced = gradients_reduced_by_ddp(
        tmp_path / "store", DenseEncoder(model.train()), loss_of, (images(), ids)
    )
    assert reduced == 2 * len(list(model.parameters()))
