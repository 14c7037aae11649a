"""Run as every rank: rank 1 dies (SIGKILL) in the middle of the job; the others are in an
all_reduce and must raise, naming rank 1, within seconds, not hang."""

import os
import signal
import sys
import time

import torch
import torch.distributed as dist

import cohort
import cohort.torch  # noqa: F401


def main():
    dist.init_process_group(backend="cohort")
    rank = dist.get_rank()
    tensor = torch.ones(1 << 20)
    for _ in range(3):
        dist.all_reduce(tensor)
    if rank == 1:
        time.sleep(0.5)  # the others are inside the next all_reduce by now
        os.kill(os.getpid(), signal.SIGKILL)
    began = time.monotonic()
    try:
        dist.all_reduce(tensor)
    except cohort.CommError as error:
        print(f"raised after {time.monotonic() - began:.2f} s: {error}", flush=True)
        return 0
    print("the all_reduce returned although rank 1 died", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
