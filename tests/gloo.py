"""Gloo process groups for the tests' worker processes (``torch.multiprocessing.spawn``)."""

import contextlib
import socket

import torch.distributed as dist


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process_group(rank: int, world_size: int, port: int):
    """This worker's gloo group for the block. Torn down after a barrier when the block succeeds:
    a rank that tears its group down, or exits, while another still uses it aborts the other
    ("terminate called without an active exception"), now and then."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()
