"""Gloo process groups for the tests' worker processes, on the CPU."""

import gc
import os
import socket
import sys

import torch.distributed as dist
import torch.multiprocessing as mp


def spawn(work, world_size: int, *args) -> None:
    """``work(rank, *args)`` in ``world_size`` processes joined in one gloo group; raises if any of
    them fails."""
    with socket.socket() as s:  # a free port for the group's store
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_run, args=(world_size, port, work, args), nprocs=world_size, join=True)


def _run(rank: int, world_size: int, port: int, work, args: tuple) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        work(rank, *args)
    except BaseException:
        dist.destroy_process_group()
        raise
    end_worker()


def end_worker() -> None:
    """End a worker process whose work is done and saved, in the default process group (spawn's,
    or torchrun's): the group's last users (sharded modules, DTensors, pending works) are freed
    while every rank still runs, no rank tears the group down while another still uses it, and the
    process exits without interpreter shutdown. What gloo leaves behind can still be destroyed
    there, where it aborts the process now and then ("terminate called without an active
    exception": in CI about one full run in three, and in the torchrun workers on a loaded
    machine)."""
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
