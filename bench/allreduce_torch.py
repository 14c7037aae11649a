#!/usr/bin/env python3
"""One rank of the torch.distributed all_reduce benchmark (bench/compare-gloo.sh starts the
ranks with `cohort run`): times all_reduce of float32 tensors through the backend named by
--backend and prints, on rank 0, "bytes time_us busbw_GBps" per size (busbw as nccl-tests
count it: 2 (n - 1) / n x bytes / time)."""

import argparse
import time

import torch
import torch.distributed as dist

import cohort.torch  # noqa: F401  (registers the cohort backend)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--min", type=int, default=1 << 20)
    parser.add_argument("--max", type=int, default=128 << 20)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group(backend=args.backend)
    rank, size = dist.get_rank(), dist.get_world_size()
    nbytes = args.min
    while nbytes <= args.max:
        tensor = torch.ones(max(1, nbytes // 4), dtype=torch.float32)
        for _ in range(args.warmup):
            dist.all_reduce(tensor)
        dist.barrier()
        began = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(tensor)
        seconds = (time.perf_counter() - began) / args.iters
        if rank == 0:
            busbw = 2 * (size - 1) / size * tensor.numel() * 4 / seconds / 1e9
            print(f"{tensor.numel() * 4} {seconds * 1e6:.2f} {busbw:.3f}", flush=True)
        nbytes *= 2
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
