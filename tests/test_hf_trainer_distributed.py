"""The fsc_losses trainers on two CPU processes under torchrun (gloo) equal one process on the whole
batch: after one SGD step the CLIP, SigLIP and LVLM (LoRA + soft prompt) weights and the logged
loss terms are those of one process, which needs the contrastive term gathered across the
processes and the gradients synchronised through the model's forward. ContrastiveNTPTrainer's
loss on the LVLM sharded with FSDP2 (``fully_shard``) gives one process's gradients too.
Everything runs in tests/hf_trainer_worker.py, in float64, so that the comparison's bound is set by
float64 rounding (tests/tolerances.py) and not by the order in which a library version sums."""

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
from .tolerances import (  # noqa: E402
    LLAMA_FLOAT32_PARTS,
    REORDERED_FLOAT64,
    ROUNDED_TO_FLOAT32,
    assert_close_to_scale,
)

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"clip": "model.safetensors", "siglip": "model.safetensors", "lvlm": "adapter_model.safetensors"}
# CLIP and SigLIP compute in float64 throughout; the LVLM's Llama does not (tests/tolerances.py)
BOUND = {"clip": REORDERED_FLOAT64, "siglip": REORDERED_FLOAT64, "lvlm": LLAMA_FLOAT32_PARTS}


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
    got, expected, initial = (
        safetensors.load_file(folder / WEIGHTS[name])
        for folder in (two / name, one / name, one / name / "initial")
    )
    # the steps, whose scale is the gradients' (the weights' own would hide a wrong gradient)
    assert_close_to_scale(
        {k: v - initial[k] for k, v in got.items()},
        {k: v - initial[k] for k, v in expected.items()},
        BOUND[name],
    )
    logs, expected_logs = (json.loads((run / name / "logs.json").read_text()) for run in (two, one))
    terms = {
        "loss",
        "contrastive_loss",
        *(["ntp_loss"] if name == "lvlm" else ["global_hn_loss", "local_hn_loss"]),
    }
    for term in terms:  # the Trainer's own "loss" goes through a float32 accumulator
        rel = BOUND[name] if term != "loss" else max(BOUND[name], ROUNDED_TO_FLOAT32)
        assert logs[term] == pytest.approx(expected_logs[term], rel=rel), term


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
    assert_close_to_scale(got, expected, LLAMA_FLOAT32_PARTS)
