"""``python -m fsc_losses.train`` in two gloo processes under torchrun, on the CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("open_clip_train.main")

from .trainer_runs import PAPER_FLAGS, Workspace, checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_two_gloo_processes_end_with_equal_parameters(tmp_path):
    space = Workspace(tmp_path)
    argv = [*space.base_argv("ddp"), *space.csv_argv(), *PAPER_FLAGS, "--batch-size=2"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [str(ROOT / "tests" / "train_ranks.py"), "--", *argv]  # -- keeps --logs from torchrun
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FSC_TEST_RANKS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=space.folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    log = (space.run_dir("ddp") / "out.log").read_text()
    assert "Running in distributed mode with multiple processes. Device: cpu." in log and "total 2" in log
    assert log.count("Train Epoch: 0") == 2  # 8 pairs, 2 per process: 2 steps
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    initial = open_clip.create_model(space.model_dir).state_dict()
    # Rank 0's, saved by open_clip from the DDP wrapper (keys "module.*", as open_clip's own
    # multi-process checkpoints), which open_clip's loader takes.
    saved = checkpoint(space.run_dir("ddp"))
    assert list(saved) == [f"module.{key}" for key in initial]
    loaded = open_clip.create_model(
        space.model_name, pretrained=str(space.run_dir("ddp") / "checkpoints" / "epoch_1.pt")
    )
    assert all(torch.equal(value, ranks[0][key]) for key, value in loaded.state_dict().items())
    for key, value in ranks[0].items():
        assert torch.equal(ranks[1][key], value), key
        assert torch.equal(saved[f"module.{key}"], value), key
    assert not torch.equal(ranks[0]["visual.proj"], initial["visual.proj"])
