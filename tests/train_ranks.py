"""``torchrun ... tests/train_ranks.py -- ARGS``: ``fsc_losses.train.main`` on every rank, with the
command line torchrun passes it (the leading ``--`` included), then each rank's trained
parameters saved to ``$FSC_TEST_RANKS_DIR/rank{RANK}.pt`` (the trainer saves rank 0's only)."""

import os

import torch
from torch.nn.modules.module import register_module_forward_hook

from fsc_losses.train import main
from fsc_losses.train.models import GroupedCLIP
from tests.gloo import end_worker

models = []


def remember(module, inputs, output):
    if isinstance(module, GroupedCLIP) and not models:
        models.append(module)


handle = register_module_forward_hook(remember)
main()
handle.remove()
folder = os.environ["FSC_TEST_RANKS_DIR"]
torch.save(models[0].state_dict(), os.path.join(folder, f"rank{os.environ['RANK']}.pt"))
end_worker()  # open_clip's main leaves the gloo group up
