#!/usr/bin/env python3
"""What agreeing on when to stop costs: `Tracker.should_stop(step)` on every rank (one
allreduce of one byte over the job's shared Cohort communicator), against one training step
(forward, backward, DDP's gradient allreduce, optimizer) of the PyTorch example's model over
Cohort's torch.distributed backend, both measured in the same ranks. Worst case: a worker that
asks every step rather than every epoch.

    cohort run -n 4 -- python bench/stop_agreement.py [--steps 2000]
"""

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "python"))
import cohort  # noqa: E402
import cohort.torch  # noqa: E402,F401
from train import BATCH, CLASSES, FEATURES, dataset  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group(backend="cohort")
    rank, size = dist.get_rank(), dist.get_world_size()
    tracker = cohort.Tracker.from_env()

    model = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
    inputs, labels = dataset()

    def train(steps: int) -> float:
        dist.barrier()
        began = time.perf_counter()
        for step in range(steps):
            begin = (step * BATCH) % (len(inputs) - BATCH)
            optimizer.zero_grad()
            F.cross_entropy(ddp(inputs[begin : begin + BATCH]), labels[begin : begin + BATCH]).backward()
            optimizer.step()
        return (time.perf_counter() - began) / steps

    def agree(steps: int) -> float:
        dist.barrier()
        began = time.perf_counter()
        for step in range(steps):
            if tracker.should_stop(step):
                raise SystemExit("asked to stop during the benchmark")
        return (time.perf_counter() - began) / steps

    train(100)
    agree(100)
    # Interleaved rounds, the median of each: the machine is shared.
    rounds = [(train(args.steps // 5), agree(args.steps)) for _ in range(5)]
    step_time = sorted(r[0] for r in rounds)[2]
    agree_time = sorted(r[1] for r in rounds)[2]
    if rank == 0:
        print(f"{size} ranks: training step {step_time * 1e6:.0f} us, should_stop {agree_time * 1e6:.1f} us "
              f"= {100 * agree_time / step_time:.2f}% of a step", flush=True)
    tracker.finish()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
