"""Smoke test of examples/train_hf_clip.py (a transformers Trainer script): 3 real steps on tiny
CLIP and SigLIP models built from configs, a word-level tokenizer and a tiny CSV, then the saved
checkpoint back through ``from_pretrained``. No downloads."""

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("PIL.Image")
pytest.importorskip("tokenizers")
pytest.importorskip("accelerate")

from . import hf_models  # noqa: E402
from .example_data import load_example, write_pairs_csv  # noqa: E402
from .hf_tokenizers import EOS  # noqa: E402


@pytest.fixture(scope="module")
def example():
    return load_example("train_hf_clip")


@pytest.fixture(scope="module", params=hf_models.FAMILIES)
def model_dir(request, tmp_path_factory):
    """A folder as from_pretrained reads it: the tiny model's config (no weights) and processor."""
    folder = tmp_path_factory.mktemp(request.param)
    hf_models.config(request.param).save_pretrained(folder)
    hf_models.processor(request.param).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    return write_pairs_csv(tmp_path_factory.mktemp("data"))


def argv(model_dir, csv_path, out, max_steps, *extra):
    run = ["--csv", str(csv_path), "--model", str(model_dir), "--from_config", "--output_dir", str(out)]
    run += ["--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--use_cpu", "--seed", "3"]
    run += ["--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true"]
    return [*run, "--max_steps", str(max_steps), *extra]


@pytest.mark.slow
def test_example_trains_three_steps_in_bf16_and_saves_loadable_checkpoints(
    example, model_dir, pairs_csv, tmp_path
):
    """3 steps of batch 4 on 8 rows run into the second epoch; a checkpoint after step 2 and the
    final model both reload."""
    initial = example.make_trainer(
        *example.parse_args(argv(model_dir, pairs_csv, tmp_path / "initial", 0))
    ).model
    run = argv(
        model_dir, pairs_csv, tmp_path / "out", 3, "--bf16", "--save_strategy", "steps", "--save_steps", "2"
    )
    trainer = example.main(run)

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["epoch"] for entry in logs] == [0.5, 1.0, 1.5]
    for entry in logs:
        terms = [entry[name] for name in ("contrastive_loss", "global_hn_loss", "local_hn_loss")]
        assert all(math.isfinite(value) for value in terms) and entry["local_hn_loss"] > 0
        assert entry["loss"] == pytest.approx(sum(terms), rel=1e-5)

    model = trainer.model
    before, after = initial.state_dict(), model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert {"logit_scale", "text_model.embeddings.token_embedding.weight"} <= changed
    assert any(name.startswith("vision_model.encoder") for name in changed)

    for folder in (tmp_path / "out", tmp_path / "out" / "checkpoint-2"):
        loaded = transformers.AutoModel.from_pretrained(folder)
        assert type(loaded) is type(model) and loaded.state_dict().keys() == after.keys()
        assert transformers.AutoProcessor.from_pretrained(folder).tokenizer("a cat")["input_ids"][-1] == EOS
    final = transformers.AutoModel.from_pretrained(tmp_path / "out").state_dict()
    assert all(torch.equal(value, after[name]) for name, value in final.items())


def test_example_reads_precomputed_negatives_and_picks_the_contrastive_term(
    example, model_dir, pairs_csv, tmp_path
):
    negatives_csv = pairs_csv.parent / "with_negatives.csv"
    lines = pairs_csv.read_text(encoding="utf-8").splitlines()
    with_negatives = [lines[0] + ",negatives"]
    for line in lines[1:]:
        cell = json.dumps(["a cat on a bench", ""]).replace('"', '""')
        with_negatives.append(f'{line},"{cell}"')
    negatives_csv.write_text("\n".join(with_negatives) + "\n", encoding="utf-8")

    trainer = example.make_trainer(
        *example.parse_args(argv(model_dir, negatives_csv, tmp_path, 1, "--negatives_column", "negatives"))
    )
    batch = trainer.data_collator(trainer.train_dataset[:4])
    assert batch["neg_valid"].tolist() == [[True, False]] * 4
    assert trainer.train_dataset[0]["image"] == pairs_csv.parent / "0.png"
    expected = "sigmoid" if isinstance(trainer.model, transformers.SiglipModel) else "softmax"
    assert trainer.loss_fn.contrastive == expected
    forced = example.make_trainer(
        *example.parse_args(argv(model_dir, pairs_csv, tmp_path, 1, "--contrastive", "softmax"))
    )
    assert forced.loss_fn.contrastive == "softmax"
