"""Smoke test of examples/train_open_clip.py: a few real steps on a tiny model and a tiny CSV."""

import math

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("PIL.Image")

from .example_data import load_example, write_pairs_csv  # noqa: E402
from .open_clip_models import register_tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def example():
    return load_example("train_open_clip")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return register_tiny_config(tmp_path_factory.mktemp("configs"))


@pytest.fixture
def pairs_csv(tmp_path):
    return write_pairs_csv(tmp_path)


def run(example, model_name, csv_path, max_steps, *extra):
    argv = ["--csv", str(csv_path), "--model", model_name, "--batch-size", "4", "--epochs", "2"]
    argv += ["--lr", "1e-3", "--device", "cpu", "--seed", "3", "--max-steps", str(max_steps)]
    return example.main([*argv, *extra])


def test_example_trains_a_few_steps(example, tiny_model, pairs_csv, capsys):
    initial, no_steps = run(example, tiny_model, pairs_csv, max_steps=0)
    assert no_steps == []
    model, history = run(example, tiny_model, pairs_csv, max_steps=3)  # crosses into epoch 2

    assert len(history) == 3
    for logs in history:
        assert set(logs) == {"loss", "contrastive_loss", "global_hn_loss", "local_hn_loss"}
        assert all(math.isfinite(value) for value in logs.values())
        assert logs["local_hn_loss"] > 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and printed[-1].startswith("epoch 1 step 3: loss ")

    before, after = initial.state_dict(), model.state_dict()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    for name in (
        "visual.conv1.weight",
        "visual.proj",
        "token_embedding.weight",
        "text_projection",
        "logit_scale",
    ):
        assert name in changed


def test_example_starts_from_a_local_checkpoint(example, tiny_model, pairs_csv, tmp_path):
    trained, _ = run(example, tiny_model, pairs_csv, 1)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save(trained.state_dict(), checkpoint)
    loaded, _ = run(example, tiny_model, pairs_csv, 0, "--pretrained", str(checkpoint))
    expected = trained.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in loaded.state_dict().items())
