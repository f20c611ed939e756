"""Tests for ``fsc_losses.integrations.open_clip`` on randomly initialised open_clip models."""

import subprocess
import sys

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from open_clip.model import CLIP, CustomTextCLIP  # noqa: E402

from fsc_losses.integrations.open_clip import (  # noqa: E402
    DEFAULT_EOT_ID,
    DEFAULT_PAD_ID,
    DEFAULT_SOT_ID,
    DenseEncoder,
    encode_dense,
    text_token_mask,
)

from .ddp_counting import gradients_reduced_by_ddp  # noqa: E402

CONTEXT = 16
IMAGE = 32


def tiny_vision(**overrides):
    cfg = {"image_size": IMAGE, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16}
    return {**cfg, **overrides}


def tiny_text(**overrides):
    cfg = {"context_length": CONTEXT, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 2}
    return {**cfg, **overrides}


def tiny_clip(vision=None, text=None, model_class=CLIP, **kwargs):
    torch.manual_seed(0)
    return model_class(16, tiny_vision(**(vision or {})), tiny_text(**(text or {})), **kwargs)


def random_ids(n=6, context=CONTEXT, vocab=1000, seed=0):
    """Start id, word ids, end id (the row's largest), zero padding: the default layout."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, context, dtype=torch.long)
    for row in range(n):
        length = int(torch.randint(1, context - 1, (1,), generator=gen))
        ids[row, 0] = vocab - 2
        ids[row, 1 : 1 + length] = torch.randint(1, vocab - 2, (length,), generator=gen)
        ids[row, 1 + length] = vocab - 1
    return ids


def images(batch=2, size=IMAGE, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_matches_encoders(model, imgs, ids, out):
    assert torch.equal(out["image_features"], model.encode_image(imgs, normalize=True))
    assert torch.equal(out["text_features"], model.encode_text(ids, normalize=True))


@pytest.fixture(scope="module")
def vit_b32():
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32", pretrained=None).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.get_tokenizer("ViT-B-32")


def test_vit_b32_features_equal_encoders_and_shapes(vit_b32, tokenizer):
    captions = ["a red cube", "a blue sphere", "a cube red", "a green sphere"]  # B=2, G=2
    ids = tokenizer(captions)
    imgs = images(2, 224)
    with torch.no_grad():
        out = encode_dense(vit_b32, imgs, ids)
        assert_matches_encoders(vit_b32, imgs, ids, out)

    assert set(out) == {
        "image_features",
        "text_features",
        "image_tokens",
        "text_tokens",
        "text_mask",
        "logit_scale",
    }
    assert out["image_features"].shape == (2, 512)
    assert out["text_features"].shape == (4, 512)
    assert out["image_tokens"].shape == (2, 49, 512)
    assert out["text_tokens"].shape == (4, 77, 512)
    assert out["text_mask"].shape == (4, 77) and out["text_mask"].dtype == torch.bool
    assert torch.equal(out["text_mask"], text_token_mask(ids))
    assert torch.equal(out["logit_scale"], vit_b32.logit_scale.exp())
    assert not torch.allclose(out["image_tokens"].norm(dim=-1), torch.ones(2, 49))


def test_default_ids_are_the_default_tokenizers(tokenizer):
    assert (DEFAULT_SOT_ID, DEFAULT_EOT_ID) == (tokenizer.sot_token_id, tokenizer.eot_token_id)
    assert tokenizer(["a"])[0, 3:].eq(DEFAULT_PAD_ID).all()


def test_text_mask_on_real_tokenizer_output(tokenizer):
    captions = ["a red cube", "a photo of a dog on the grass", "", "cube " * 100]
    ids = tokenizer(captions)
    mask = text_token_mask(ids)
    eot = ids.argmax(dim=1)
    for row, caption in enumerate(captions):
        n_words = len(tokenizer.encode(caption))
        assert ids[row, 0] == DEFAULT_SOT_ID and not mask[row, 0], "start-of-text excluded"
        assert mask[row, eot[row]], "end-of-text included"
        if n_words + 2 <= 77:
            assert eot[row] == n_words + 1
            assert mask[row, 1 : n_words + 1].all(), "word tokens included"
            assert not mask[row, n_words + 2 :].any(), "padding excluded"
            assert int(mask[row].sum()) == n_words + 1
        else:  # truncated: EOT overwrites the last position, nothing is padding
            assert eot[row] == 76 and mask[row, 1:].all()


def test_text_mask_tokenizer_variants():
    # SigLIP's T5 tokenizer: no start token, pads with its end-of-text id 1.
    ids = torch.tensor([[37, 5, 1, 1, 1], [8, 9, 10, 11, 12]])
    mask = text_token_mask(ids, pad_id=1, sot_id=None, eot_id=1)
    assert mask.tolist() == [[True, True, True, False, False], [True] * 5]
    # BERT-style: [CLS] 101 first, [SEP] 102 last, zero padding.
    ids = torch.tensor([[101, 7, 8, 102, 0, 0]])
    assert text_token_mask(ids, pad_id=0, sot_id=101, eot_id=102).tolist() == [
        [False, True, True, True, False, False]
    ]
    # The start id only counts as start-of-text at position 0.
    ids = torch.tensor([[5, 101, 102, 0]])
    assert text_token_mask(ids, pad_id=0, sot_id=101, eot_id=102).tolist() == [[True, True, True, False]]


@pytest.mark.parametrize(
    "vision, text",
    [
        ({}, {}),
        ({"pool_type": "avg"}, {"pool_type": "last", "no_causal_mask": True}),
        (
            {"pool_type": "avg", "final_ln_after_pool": True, "no_ln_pre": True},
            {"pool_type": "first"},
        ),
        ({"pos_embed_type": "sin_cos_2d"}, {"pool_type": "eos", "eos_id": 999, "proj_bias": True}),
    ],
)
def test_tiny_clip_variants_equal_encoders(vision, text):
    model = tiny_clip(vision, text).eval()
    imgs, ids = images(), random_ids()
    with torch.no_grad():
        out = encode_dense(model, imgs, ids)
        assert_matches_encoders(model, imgs, ids, out)
        # open_clip's own forward_intermediates gives the final-block outputs after the final
        # norms (class token split off), which projected must be the tokens.
        inter = model.forward_intermediates(
            imgs,
            ids,
            image_indices=1,
            text_indices=1,
            normalize_intermediates=True,
            intermediates_only=True,
            image_output_fmt="NLC",
        )
        patches = inter["image_intermediates"][-1] @ model.visual.proj
        positions = inter["text_intermediates"][-1]
        if isinstance(model.text_projection, torch.nn.Linear):
            positions = model.text_projection(positions)
        else:
            positions = positions @ model.text_projection
    assert out["image_tokens"].shape == (2, (IMAGE // 8) ** 2, 16)
    assert out["text_tokens"].shape == (6, CONTEXT, 16)
    torch.testing.assert_close(out["image_tokens"], patches)
    torch.testing.assert_close(out["text_tokens"], positions)


def test_custom_text_clip_siglip_style():
    # SigLIP-like text tower: bidirectional, Linear projection, last-position pooling, logit bias.
    model = tiny_clip(
        text={"no_causal_mask": True, "proj_bias": True, "pool_type": "last"},
        model_class=CustomTextCLIP,
        init_logit_bias=-10.0,
    ).eval()
    assert isinstance(model.text.text_projection, torch.nn.Linear)
    imgs = images()
    ids = torch.randint(2, 1000, (6, CONTEXT), generator=torch.Generator().manual_seed(1))
    ids[:, 10:] = 1  # T5-style padding with the end-of-text id
    with torch.no_grad():
        out = encode_dense(model, imgs, ids, pad_id=1, sot_id=None, eot_id=1)
        assert_matches_encoders(model, imgs, ids, out)
    assert out["logit_bias"] is model.logit_bias
    assert out["text_mask"][:, :11].all() and not out["text_mask"][:, 11:].any()


def test_custom_text_clip_default_text_tower():
    model = tiny_clip(model_class=CustomTextCLIP).eval()
    imgs, ids = images(), random_ids()
    with torch.no_grad():
        assert_matches_encoders(model, imgs, ids, encode_dense(model, imgs, ids))


def _tiny_resnet_clip():
    return CLIP(
        16,
        {"layers": (1, 1, 1, 1), "width": 16, "image_size": IMAGE, "head_width": 16},
        tiny_text(),
    )


def _non_transformer_text_tower():
    model = tiny_clip(model_class=CustomTextCLIP)
    model.text = torch.nn.Identity()  # stands in for an HF text tower (transformers is optional)
    return model


@pytest.mark.parametrize(
    "build, error, match",
    [
        (_tiny_resnet_clip, TypeError, "ModifiedResNet"),
        (
            lambda: tiny_clip({"attentional_pool": True, "attn_pooler_queries": 4}),
            ValueError,
            "attentional",
        ),
        (lambda: tiny_clip({"pool_type": "none"}), ValueError, "pool_type"),
        (lambda: tiny_clip(text={"pool_type": "none"}), ValueError, "text pool"),
        (
            lambda: tiny_clip(text={"embed_cls": True}, model_class=CustomTextCLIP),
            ValueError,
            "class token",
        ),
        (_non_transformer_text_tower, TypeError, "TextTransformer"),
        (lambda: torch.nn.Linear(2, 2), TypeError, "CLIP or CustomTextCLIP"),
    ],
)
def test_unsupported_models_raise(build, error, match):
    with pytest.raises(error, match=match):
        encode_dense(build(), images(), random_ids())
    with pytest.raises(error, match=match):
        DenseEncoder(build())


@pytest.mark.parametrize("texts", [random_ids().float(), random_ids().bool(), random_ids()[0]])
def test_texts_that_are_not_id_matrices_raise(texts):
    with pytest.raises(ValueError, match="token ids"):
        encode_dense(tiny_clip(), images(), texts)


def test_gradients_reach_both_towers_through_tokens():
    model = tiny_clip(text={"proj_bias": True}, model_class=CustomTextCLIP, init_logit_bias=-1.0)
    out = encode_dense(model, images(), random_ids())
    (out["image_tokens"].square().mean() + out["text_tokens"].square().mean()).backward()
    towers = {
        "visual.conv1.weight",
        "visual.class_embedding",
        "visual.positional_embedding",
        "visual.transformer.resblocks.0.attn.in_proj_weight",
        "visual.proj",
        "text.token_embedding.weight",
        "text.positional_embedding",
        "text.transformer.resblocks.0.mlp.c_fc.weight",
        "text.text_projection.weight",
    }
    for name, param in model.named_parameters():
        if name in towers:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert model.logit_scale.grad is None  # not part of this loss
    (out["logit_scale"] + out["logit_bias"]).backward()
    assert model.logit_scale.grad is not None and model.logit_bias.grad is not None


def test_autocast_bf16():
    model = tiny_clip()
    imgs, ids = images(), random_ids()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encode_dense(model, imgs, ids)
        assert_matches_encoders(model, imgs, ids, out)
    assert out["image_tokens"].dtype == torch.bfloat16 and out["text_tokens"].dtype == torch.bfloat16
    loss = out["image_tokens"].float().square().mean() + out["text_tokens"].float().square().mean()
    loss.backward()
    assert torch.isfinite(model.visual.proj.grad).all() and model.visual.proj.grad.dtype == torch.float32


def test_patch_dropout_keeps_fewer_patches_in_training():
    model = tiny_clip({"patch_dropout": 0.5})
    assert encode_dense(model.train(), images(), random_ids())["image_tokens"].shape[1] == 8
    assert encode_dense(model.eval(), images(), random_ids())["image_tokens"].shape[1] == 16


def test_model_left_unchanged():
    model = tiny_clip(model_class=CLIP)
    imgs, ids = images(), random_ids()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before_out = model.eval()(imgs, ids)
    model.train()
    out = encode_dense(model, imgs, ids)
    (out["image_tokens"].sum() + out["text_tokens"].sum() + out["image_features"].sum()).backward()

    assert model.training and all(m.training for m in model.modules())
    after_state = model.state_dict()
    assert after_state.keys() == before_state.keys()
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)
    with torch.no_grad():
        after_out = model.eval()(imgs, ids)
    assert all(torch.equal(a, b) for a, b in zip(before_out, after_out, strict=True))
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks and not module._backward_pre_hooks
    assert type(model).forward is CLIP.forward and "forward" not in vars(model)


def test_package_import_does_not_import_open_clip():
    code = "import sys, fsc_losses.integrations; assert 'open_clip' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("autocast", [False, True])
def test_output_feeds_fsc_loss(autocast):
    from fsc_losses import FSCLoss

    model = tiny_clip(model_class=CustomTextCLIP, init_logit_bias=-1.0)
    neg_valid = torch.tensor([[True, False], [True, True]])  # B=2, K=2
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = encode_dense(model, images(), random_ids(6))
        terms = FSCLoss()(**out, neg_valid=neg_valid, output_dict=True)
    assert set(terms) == {"contrastive_loss", "global_hn_loss", "local_hn_loss"}
    assert all(torch.isfinite(value) for value in terms.values())
    sum(terms.values()).backward()
    for param in (model.visual.proj, model.text.text_projection, model.logit_bias):
        assert param.grad is not None and torch.isfinite(param.grad).all()


def test_dense_encoder_gradients_go_through_ddp(tmp_path):
    model = tiny_clip()
    imgs, ids = images(), random_ids()
    assert_matches_encoders(model.eval(), imgs, ids, DenseEncoder(model)(imgs, ids))

    def loss_of(out):
        tokens = out["image_tokens"].square().mean() + out["text_tokens"].square().mean()
        return tokens + out["logit_scale"]

    reduced = gradients_reduced_by_ddp(tmp_path / "store", DenseEncoder(model.train()), loss_of, (imgs, ids))
    assert reduced == 2 * len(list(model.parameters()))
