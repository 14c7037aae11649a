"""Run as every rank of a job: each operation of the cohort backend, on each dtype, against
results computed here from every rank's inputs (each rank can make any rank's input), with
torch's own arithmetic, not the collectives'."""

import sys

import torch
import torch.distributed as dist

import cohort.torch  # noqa: F401

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8]
N = 1000  # elements per rank: spans several chunks of the small-message path, not a multiple of 8


def data(rank, dtype, n=N):
    """Rank `rank`'s input: small values so that sums and products stay exact in every dtype."""
    values = (torch.arange(n, dtype=torch.int64) * (rank + 3) + rank) % 5 + 1
    return values.to(dtype)


def reference(op, inputs):
    stacked = torch.stack([t.to(torch.float64) for t in inputs])
    if op == "sum":
        out = stacked.sum(0)
    elif op == "product":
        out = stacked.prod(0)
    elif op == "min":
        out = stacked.min(0).values
    elif op == "max":
        out = stacked.max(0).values
    elif op == "avg":
        out = stacked.sum(0) / len(inputs)
    return out


OPS = {"sum": dist.ReduceOp.SUM, "product": dist.ReduceOp.PRODUCT, "min": dist.ReduceOp.MIN,
       "max": dist.ReduceOp.MAX, "avg": dist.ReduceOp.AVG}


def check(what, got, want, dtype):
    got = got.to(torch.float64)
    if dtype.is_floating_point:
        ok = torch.allclose(got, want, rtol=1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-9)
    else:
        ok = torch.equal(got, want)
    if not ok:
        raise AssertionError(f"{what}: got {got[:8].tolist()} want {want[:8].tolist()}")


def main():
    dist.init_process_group(backend="cpu:cohort,cuda:nccl")
    rank, size = dist.get_rank(), dist.get_world_size()
    assert dist.get_backend() in ("cohort", "cpu:cohort,cuda:nccl"), dist.get_backend()
    inputs = {d: [data(r, d) for r in range(size)] for d in DTYPES}
    checked = 0
    for dtype in DTYPES:
        mine = inputs[dtype][rank]
        for name, op in OPS.items():
            if name == "product" and dtype in (torch.float16, torch.bfloat16, torch.uint8) and size > 2:
                continue  # 5^4 overflows these
            want = reference(name, inputs[dtype])
            if name == "avg" and not dtype.is_floating_point:
                want = torch.div(reference("sum", inputs[dtype]), size, rounding_mode="trunc")
            if dtype == torch.uint8 and name == "sum":
                want = want % 256
            if dtype == torch.uint8 and name == "product":
                want = want % 256
            # all_reduce, in place, blocking and asynchronous
            t = mine.clone()
            dist.all_reduce(t, op=op)
            check(f"all_reduce {name} {dtype}", t, want, dtype)
            t = mine.clone()
            dist.all_reduce(t, op=op, async_op=True).wait()
            check(f"all_reduce async {name} {dtype}", t, want, dtype)
            # reduce to the last rank
            t = mine.clone()
            dist.reduce(t, dst=size - 1, op=op)
            if rank == size - 1:
                check(f"reduce {name} {dtype}", t, want, dtype)
            checked += 3
        # a non-contiguous tensor: every other element
        t = torch.stack([mine, mine], 1)[:, 0]
        assert not t.is_contiguous()
        dist.all_reduce(t)
        check(f"all_reduce strided {dtype}", t, reference("sum", inputs[dtype]) % (256 if dtype == torch.uint8 else 2**62), dtype)
        # broadcast from rank 1 % size
        root = 1 % size
        t = mine.clone()
        dist.broadcast(t, src=root)
        check(f"broadcast {dtype}", t, inputs[dtype][root].to(torch.float64), dtype)
        # all_gather (list) and all_gather_into_tensor
        outs = [torch.empty_like(mine) for _ in range(size)]
        dist.all_gather(outs, mine)
        for r in range(size):
            check(f"all_gather {dtype} from {r}", outs[r], inputs[dtype][r].to(torch.float64), dtype)
        flat = torch.empty(size * N, dtype=dtype)
        dist.all_gather_into_tensor(flat, mine)
        check(f"all_gather_into_tensor {dtype}", flat, torch.cat(inputs[dtype]).to(torch.float64), dtype)
        # reduce_scatter (list) and reduce_scatter_tensor: every rank's input is size blocks
        per = N // size
        blocks = [data(rank * size + b, dtype, per) for b in range(size)]
        out = torch.empty(per, dtype=dtype)
        dist.reduce_scatter(out, blocks)
        want = reference("sum", [data(r * size + rank, dtype, per) for r in range(size)])
        if dtype == torch.uint8:
            want = want % 256
        check(f"reduce_scatter {dtype}", out, want, dtype)
        out = torch.empty(per, dtype=dtype)
        dist.reduce_scatter_tensor(out, torch.cat(blocks), op=dist.ReduceOp.MAX)
        want = reference("max", [data(r * size + rank, dtype, per) for r in range(size)])
        check(f"reduce_scatter_tensor {dtype}", out, want, dtype)
        checked += 5
    dist.barrier()
    # What the backend refuses, it says.
    for attempt, words in [
        (lambda: dist.all_reduce(torch.zeros(3, dtype=torch.bool)), "dtype bool"),
        (lambda: dist.all_reduce(torch.ones(2), op=dist.ReduceOp.BAND), "SUM, AVG"),
        (lambda: dist.all_reduce(torch.ones(2, device="meta")), "CPU tensors"),
        (lambda: dist.send(torch.ones(2), dst=(rank + 1) % size), "has no send"),
    ]:
        try:
            attempt()
        except Exception as error:  # noqa: BLE001
            if words not in str(error):
                raise AssertionError(f"expected {words!r} in {error!r}") from error
        else:
            raise AssertionError(f"no error for {words}")
    dist.barrier()
    print(f"rank {rank}: {checked} checks passed", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
