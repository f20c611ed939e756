"""Smoke test of examples/train_hf_clip.py: 3 real steps on tiny CLIP and SigLIP models built from
configs, a word-level tokenizer and a tiny CSV, then the saved checkpoint back through
``from_pretrained``. No downloads."""

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("PIL.Image")
pytest.importorskip("tokenizers")

from .example_data import CAPTIONS, load_example, write_pairs_csv  # noqa: E402
from .hf_tokenizers import BOS, EOS, PAD, word_tokenizer  # noqa: E402

CONTEXT = 16
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="module")
def example():
    return load_example("train_hf_clip")


@pytest.fixture(scope="module", params=["clip", "siglip"])
def model_dir(request, tmp_path_factory):
    """A folder as from_pretrained reads it: the tiny model's config (no weights), tokenizer and
    image processor."""
    family = request.param
    folder = tmp_path_factory.mktemp(family)
    words = {w for caption in CAPTIONS for w in caption.split()}
    # CLIP pools at the first end token unless its id is 2 (a legacy rule), hence EOS = 1
    text = dict(TOWER, vocab_size=64, max_position_embeddings=CONTEXT, pad_token_id=PAD, eos_token_id=EOS)
    vision = dict(TOWER, image_size=32, patch_size=8)
    if family == "clip":
        config = transformers.CLIPConfig(
            text_config=dict(text, bos_token_id=BOS), vision_config=vision, projection_dim=16
        )
        processor = transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
    else:
        config = transformers.SiglipConfig(text_config=dict(text, bos_token_id=None), vision_config=vision)
        processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    config.save_pretrained(folder)
    word_tokenizer(words, with_bos=family == "clip", max_length=CONTEXT).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    return write_pairs_csv(tmp_path_factory.mktemp("data"))


def run(example, model_dir, csv_path, out, max_steps, *extra):
    argv = ["--csv", str(csv_path), "--model", str(model_dir), "--out", str(out), "--from-config"]
    argv += ["--batch-size", "4", "--epochs", "2", "--lr", "1e-3", "--device", "cpu", "--seed", "3"]
    return example.main([*argv, "--max-steps", str(max_steps), *extra])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_example_trains_three_steps_and_saves_a_loadable_checkpoint(
    example, model_dir, pairs_csv, tmp_path, capsys, amp
):
    initial, no_steps = run(example, model_dir, pairs_csv, tmp_path / "initial", 0)
    assert no_steps == []
    model, history = run(example, model_dir, pairs_csv, tmp_path / "out", 3, "--amp", amp)  # into epoch 2

    assert len(history) == 3
    for logs in history:
        terms = {name: value for name, value in logs.items() if name != "grad_norm"}
        assert set(terms) == {"loss", "contrastive_loss", "global_hn_loss", "local_hn_loss"}
        assert all(math.isfinite(value) for value in terms.values())
        assert terms["local_hn_loss"] > 0
        # fp16's loss scaler starts high and skips the steps whose scaled gradients overflow
        assert math.isfinite(logs["grad_norm"]) or amp == "fp16"
    assert any(math.isfinite(logs["grad_norm"]) for logs in history)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed[-4:-1]] == [
        "epoch 0 step 1",
        "epoch 0 step 2",
        "epoch 1 step 3",
    ]

    before, after = initial.state_dict(), model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert {"logit_scale", "text_model.embeddings.token_embedding.weight"} <= changed
    assert any(name.startswith("vision_model.encoder") for name in changed)

    loaded = transformers.AutoModel.from_pretrained(tmp_path / "out")
    assert type(loaded) is type(model)
    assert loaded.state_dict().keys() == after.keys()
    assert all(torch.equal(value, after[name]) for name, value in loaded.state_dict().items())
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "out")("a cat")["input_ids"][-1] == EOS


def test_example_uses_the_models_contrastive_term(example, model_dir, pairs_csv, tmp_path):
    model = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(model_dir))
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    args = example.parse_args(["--csv", str(pairs_csv), "--model", str(model_dir), "--out", str(tmp_path)])
    expected = "sigmoid" if isinstance(model, transformers.SiglipModel) else "softmax"
    assert example.Trainer(model, tokenizer, args).loss_fn.contrastive == expected
    args.contrastive = "softmax"
    assert example.Trainer(model, tokenizer, args).loss_fn.contrastive == "softmax"
