#!/usr/bin/env python3
"""Data-parallel training of a small MLP with PyTorch's DistributedDataParallel over Cohort's
torch.distributed backend, recorded in the catalog.

Every rank trains on its own shard of a synthetic four-class data set; DDP averages the
gradients after each backward pass. Rank 0 logs the loss and accuracy (averaged over all
ranks) after every epoch and checkpoints at the end.

Under a search it takes ``lr`` and ``hidden`` from its trial, resumes from the trial's
latest checkpoint, and stops where the search says.

    cohort run -n 4 -- python examples/python/train.py --epochs 5
    srun --cohort python examples/python/train.py          (see examples/sbatch/python.sbatch)
    cohort search start examples/search/python.toml --local 2

``--backend gloo`` runs the same training over Gloo, for comparison; ``--save FILE`` writes
rank 0's final parameters.
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

import cohort
import cohort.torch  # noqa: F401  (registers the "cohort" backend)

FEATURES, CLASSES, SAMPLES, BATCH = 16, 4, 8192, 64


def dataset():
    """Four Gaussian blobs, the same on every rank."""
    generator = torch.Generator().manual_seed(42)
    centers = torch.randn(CLASSES, FEATURES, generator=generator) * 2.0
    labels = torch.randint(CLASSES, (SAMPLES,), generator=generator)
    noise = torch.randn(SAMPLES, FEATURES, generator=generator)
    return centers[labels] + noise, labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--backend", default="cpu:cohort,cuda:nccl")
    parser.add_argument("--save", help="write rank 0's final parameters here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    dist.init_process_group(backend=args.backend)
    rank, size = dist.get_rank(), dist.get_world_size()

    tracker = cohort.Tracker.from_env()
    hidden = int(tracker.hparams.get("hidden", 64))
    lr = float(tracker.hparams.get("lr", 0.05))
    torch.manual_seed(1234)
    model = nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))

    # A restarted or promoted trial continues from its latest checkpoint (every rank finds the
    # same one; DDP's construction broadcasts rank 0's parameters to every rank anyway).
    start = torch.zeros(1, dtype=torch.int64)
    checkpoint = tracker.latest_checkpoint()
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint.path))
        start[0] = checkpoint.step
        print(f"resumed from {checkpoint.path} (epoch {checkpoint.step})", flush=True)
    dist.all_reduce(start, op=dist.ReduceOp.MAX)
    first_epoch = int(start[0])

    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr)
    inputs, labels = dataset()
    shard = SAMPLES // size
    inputs, labels = inputs[rank * shard : (rank + 1) * shard], labels[rank * shard : (rank + 1) * shard]

    losses = []
    step = first_epoch
    began = time.perf_counter()
    batches_run = 0
    for epoch in range(first_epoch, args.epochs):
        total, batches = 0.0, 0
        for begin in range(0, shard - BATCH + 1, BATCH):
            optimizer.zero_grad()
            loss = F.cross_entropy(ddp(inputs[begin : begin + BATCH]), labels[begin : begin + BATCH])
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        batches_run += batches
        with torch.no_grad():
            accuracy = (model(inputs).argmax(-1) == labels).float().mean().item()
        mean = torch.tensor([total / batches, accuracy], dtype=torch.float64)
        dist.all_reduce(mean, op=dist.ReduceOp.AVG)
        step = epoch + 1  # the state after `step` epochs, as checkpoints count them
        if rank == 0:
            print(f"epoch {epoch}: loss {mean[0]:.4f} accuracy {mean[1]:.3f}", flush=True)
        tracker.log({"loss": float(mean[0]), "accuracy": float(mean[1])}, step)
        losses.append(float(mean[0]))
        # The search's length, its stop request, Slurm's warning before the time limit or its
        # SIGTERM at a preemption: the ranks agree, so all of them stop after the same epoch.
        if tracker.should_stop(step):
            break
    seconds = time.perf_counter() - began

    if tracker.enabled:
        path = os.path.join(tracker.trial_dir, f"checkpoint-{step}.pt")
        torch.save(model.state_dict(), path)
        tracker.checkpoint(path, step)
    if args.save and rank == 0:
        torch.save(model.state_dict(), args.save)
    if rank == 0 and batches_run:
        print(f"{args.backend}: {1000 * seconds / batches_run:.3f} ms per training step", flush=True)
    tracker.finish()
    dist.destroy_process_group()
    if tracker.exit_status:
        # Stopped at Slurm's warning, checkpointed: the status says so to the plugin, which
        # records the trial as preempted (and requeues the job with --cohort-requeue).
        print(f"stopped at epoch {step} by a warning from Slurm", flush=True)
        return tracker.exit_status
    if len(losses) > 1 and losses[-1] >= losses[0] and checkpoint is None:
        print(f"the loss did not fall: {losses[0]:.4f} -> {losses[-1]:.4f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
