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
            # reduce to the last rank; the others' tensors are left as they were
            t = mine.clone()
            dist.reduce(t, dst=size - 1, op=op)
            if rank == size - 1:
                check(f"reduce {name} {dtype}", t, want, dtype)
            else:
                check(f"reduce {name} {dtype} leaves rank {rank}'s tensor", t, mine.to(torch.float64), dtype)
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
    # Coalesced all_reduce of two tensors at once.
    a, b = data(rank, torch.float64, 10), data(rank + 1, torch.float64, 7)
    dist.all_reduce_coalesced([a, b])
    check("all_reduce_coalesced first", a, reference("sum", [data(r, torch.float64, 10) for r in range(size)]), torch.float64)
    check("all_reduce_coalesced second", b, reference("sum", [data(r + 1, torch.float64, 7) for r in range(size)]), torch.float64)
    # An in-place all_gather_into_tensor: the input is this rank's block of the output.
    out = torch.zeros(size * N)
    out[rank * N : (rank + 1) * N] = data(rank, torch.float32)
    dist.all_gather_into_tensor(out, out[rank * N : (rank + 1) * N])
    check("in-place all_gather_into_tensor", out, torch.cat([data(r, torch.float64) for r in range(size)]), torch.float64)
    # Non-contiguous outputs of all_gather.
    grid = torch.zeros(N, size)
    dist.all_gather([grid[:, r] for r in range(size)], data(rank, torch.float32))
    for r in range(size):
        check(f"all_gather into a strided view from {r}", grid[:, r], data(r, torch.float64), torch.float64)
    # Types the reductions do not take still broadcast and gather as bytes (DDP broadcasts
    # every buffer, bool ones included).
    flags = torch.tensor([rank % 2 == 0, True, rank == 0])
    dist.broadcast(flags, src=0)
    assert flags.tolist() == [True, True, True], flags
    small = torch.tensor([rank, -rank], dtype=torch.int8)
    parts = [torch.empty(2, dtype=torch.int8) for _ in range(size)]
    dist.all_gather(parts, small)
    assert [p.tolist() for p in parts] == [[r, -r] for r in range(size)], parts
    waves = torch.full((3,), complex(rank, 1))
    dist.broadcast(waves, src=size - 1)
    assert waves.tolist() == [complex(size - 1, 1)] * 3, waves
    checked += 6
    dist.barrier()
    # What the backend refuses, it says.
    for attempt, words in [
        (lambda: dist.all_reduce(torch.zeros(3, dtype=torch.bool)), "not torch.bool"),
        (lambda: dist.all_gather([torch.empty(2, device="meta") for _ in range(size)], torch.ones(2)), "on one device"),
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
