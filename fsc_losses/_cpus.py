"""How many CPUs this process may run on, for the commands' default worker and thread counts."""

import os


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # honours taskset and container CPU sets; Linux only
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
