"""Whether DistributedDataParallel all-reduces every parameter's gradient, on one CPU process."""

import pytest
import torch


def gradients_reduced_by_ddp(store, module, loss_of_outputs, inputs, steps=2):
    """How many gradients DDP's reducer all-reduced over ``steps`` training steps of ``module``.

    One process is enough to see whether the reducer handles the gradients: its communication
    hook runs once per gradient bucket it all-reduces, and a step after one that left a
    parameter unreduced fails. ``store`` is a file path for the process group's rendezvous.
    """
    dist = pytest.importorskip("torch.distributed")
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_available() or not dist.is_gloo_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed with gloo and no process group yet")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        reduced = []

        def count_and_pass(state, bucket):
            reduced.append(len(bucket.gradients()))
            result = torch.futures.Future()
            result.set_result(bucket.buffer())
            return result

        wrapped = DistributedDataParallel(module)
        wrapped.register_comm_hook(None, count_and_pass)
        for _ in range(steps):
            loss_of_outputs(wrapped(*inputs)).backward()
    finally:
        dist.destroy_process_group()
    return sum(reduced)
