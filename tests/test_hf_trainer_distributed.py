"""The fsc_losses trainers on two CPU processes under torchrun (gloo) equal one process on the whole
batch: after one SGD step the CLIP, SigLIP and LVLM (LoRA + soft prompt) weights and the logged
loss terms are those of one process, which needs the contrastive term gathered across the
processes and the gradients synchronised through the model's forward. ContrastiveNTPTrainer's
loss on the LVLM sharded with FSDP2 (``fully_shard``) gives one process's gradients too.
Everything runs in tests/hf_trainer_worker.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")
safetensors = pytest.importorskip("safetensors.torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with gloo", allow_module_level=True)

from . import hf_trainer_worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"clip": "model.safetensors", "siglip": "model.safetensors", "lvlm": "adapter_model.safetensors"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The worker's outputs on two processes and on one."""
    two, one = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("one")
    # the worktree first, as a user's clone would be: the processes import tests.hf_trainer_worker
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, "-m", "tests.hf_trainer_worker", str(two)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    hf_trainer_worker.main(one)
    return two, one


@pytest.mark.slow
@pytest.mark.parametrize("name", list(WEIGHTS))
def test_two_processes_take_the_step_of_one(runs, name):
    two, one = runs
    got = safetensors.load_file(two / name / WEIGHTS[name])
    expected = safetensors.load_file(one / name / WEIGHTS[name])
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)
    logs, expected_logs = (json.loads((run / name / "logs.json").read_text()) for run in (two, one))
    terms = {
        "loss",
        "contrastive_loss",
        *(["ntp_loss"] if name == "lvlm" else ["global_hn_loss", "local_hn_loss"]),
    }
    for term in terms:
        assert logs[term] == pytest.approx(expected_logs[term], rel=1e-5), term


@pytest.mark.slow
def test_fsdp2_sharded_loss_gives_the_gradients_of_one_process(runs, tmp_path):
    two, _ = runs
    collator, rows, model = hf_trainer_worker.lvlm_parts()
    trainer = hf_trainer_worker.ContrastiveNTPTrainer(
        model=model, args=hf_trainer_worker.training_args(tmp_path, 1), data_collator=collator
    )
    trainer.compute_loss(model, collator(rows)).backward()
    expected = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    got = torch.load(two / "fsdp_grads.pt", weights_only=True)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-6, msg=name)
