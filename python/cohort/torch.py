"""A torch.distributed backend named ``cohort`` for CPU tensors.

``import cohort.torch`` registers it; then, in a script started by ``cohort run -n N --
python train.py`` or ``srun --cohort python train.py``::

    import torch.distributed as dist
    import cohort.torch  # noqa: F401  (registers the backend)

    dist.init_process_group(backend="cpu:cohort,cuda:nccl")

needs no other argument: rank, world size, rendezvous, secret and plan come from the
``COHORT_*`` environment the launcher set. CPU tensors go through Cohort's collectives
(shared memory on one machine, TCP or RDMA between machines, topology-aware algorithms);
CUDA tensors go to NCCL when the backend string pairs it (``cuda:nccl``), and raise a clear
error otherwise: the backend never stages GPU memory through the host behind your back.

Supported: all_reduce (sum, avg, min, max, product) and reduce on float32, float64, float16,
bfloat16, int32, int64 and uint8; broadcast, all_gather and all_gather_into_tensor on any
dtype (they move bytes); reduce_scatter and reduce_scatter_tensor; barrier. Every operation
runs to completion when it is called, so the work object it returns is already done
(``wait()`` returns at once) and DDP's gradient communication does not overlap its backward
pass. A dead rank or a missed deadline raises ``cohort.CommError`` naming the rank and host,
in every rank. The backend spans the whole job: a group of another size (``dist.new_group``
of some ranks) needs another backend.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, Iterable, List, Optional

import torch
import torch.distributed as dist
from torch.futures import Future

from . import _native

try:  # The one way torch offers to make a work object from a future.
    from torch._C._distributed_c10d import _create_work_from_future
except ImportError as error:  # pragma: no cover - depends on the torch version
    raise ImportError(
        "cohort.torch needs torch.distributed's _create_work_from_future (PyTorch >= 2.2)"
    ) from error

__all__ = ["ProcessGroupCohort", "BACKEND"]

#: The name to give ``init_process_group``.
BACKEND = "cohort"

_OPS = {
    dist.ReduceOp.SUM: "sum",
    dist.ReduceOp.PRODUCT: "product",
    dist.ReduceOp.MIN: "min",
    dist.ReduceOp.MAX: "max",
    dist.ReduceOp.AVG: "avg",
}

#: The element types the reductions take; other types are moved as bytes where no arithmetic
#: is needed (broadcast, all_gather).
_REDUCIBLE = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.uint8: "uint8",
}

# One communicator per process, shared by every group of the whole job (a group made again
# after destroy_process_group, or a new_group of every rank): it stays connected until exit.
_COMMUNICATOR: Optional[Any] = None


def _communicator(timeout: Optional[timedelta]) -> Any:
    global _COMMUNICATOR
    if _COMMUNICATOR is None:
        seconds = None
        # torch always passes a timeout; its default (30 min) gives way to COHORT_TIMEOUT.
        if timeout is not None and not (
            timeout == dist.default_pg_timeout and os.environ.get("COHORT_TIMEOUT")
        ):
            seconds = timeout.total_seconds()
        _COMMUNICATOR = _native.Communicator.shared(seconds)
    return _COMMUNICATOR


def _op_name(op: Any) -> str:
    for known, name in _OPS.items():
        if op == known:
            return name
    raise ValueError(f"the cohort backend reduces with SUM, AVG, MIN, MAX or PRODUCT, not {op}")


def _dtype(tensor: torch.Tensor) -> str:
    try:
        return _REDUCIBLE[tensor.dtype]
    except KeyError:
        raise TypeError(
            f"the cohort backend reduces float32, float64, float16, bfloat16, int32, int64 and "
            f"uint8 tensors, not {tensor.dtype}"
        ) from None


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor as its bytes, for operations that only move data."""
    return tensor if tensor.dtype == torch.uint8 else tensor.view(-1).view(torch.uint8)


def _done(result: Any) -> Any:
    future: Future = Future()
    future.set_result(result)
    return _create_work_from_future(future)


def _flatten(groups: Iterable[Any]) -> List[torch.Tensor]:
    tensors: List[torch.Tensor] = []
    for item in groups:
        if isinstance(item, torch.Tensor):
            tensors.append(item)
        else:
            tensors.extend(_flatten(item))
    return tensors


class _Contiguous:
    """A contiguous view of ``tensor`` for the collective, copied back afterwards when
    ``tensor`` itself is not contiguous."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.flat = tensor if tensor.is_contiguous() else tensor.contiguous()

    def __enter__(self) -> torch.Tensor:
        return self.flat

    def __exit__(self, *exc: Any) -> None:
        if self.flat is not self.tensor and exc[0] is None:
            self.tensor.copy_(self.flat)


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    a_start, b_start = a.data_ptr(), b.data_ptr()
    a_end = a_start + a.numel() * a.element_size()
    b_end = b_start + b.numel() * b.element_size()
    return a.numel() > 0 and b.numel() > 0 and a_start < b_end and b_start < a_end


class ProcessGroupCohort(dist.ProcessGroup):
    """The ``cohort`` backend's process group; made by ``init_process_group``."""

    def __init__(self, store: Any, rank: int, size: int, timeout: Optional[timedelta]) -> None:
        super().__init__(rank, size)
        self._store = store
        self._timeout = timeout
        self._cuda: Any = None
        env_rank = os.environ.get("COHORT_RANK")
        env_size = os.environ.get("COHORT_WORLD_SIZE")
        if env_rank is not None and env_size is not None and (
            int(env_rank) != rank or int(env_size) != size
        ):
            raise ValueError(
                f"the cohort backend spans the whole job (COHORT_RANK={env_rank}, "
                f"COHORT_WORLD_SIZE={env_size}); this group is rank {rank} of {size}: "
                "use gloo for groups of some ranks"
            )
        self._comm = _communicator(timeout)

    def getBackendName(self) -> str:  # noqa: N802 - torch's name
        return BACKEND

    def __repr__(self) -> str:
        return (
            f"<cohort ProcessGroup rank {self.rank()} of {self.size()} "
            f"({self._comm.transport_summary()})>"
        )

    # Where the tensors of an operation go: every one on the CPU, here; every one on CUDA,
    # to NCCL when the backend string pairs it; anything else is refused before any memory
    # is touched.
    def _on_cuda(self, *groups: Any) -> bool:
        kinds = {t.device.type for t in _flatten(groups)}
        if kinds <= {"cpu"}:
            return False
        if kinds == {"cuda"}:
            return True
        raise RuntimeError(
            "the cohort backend takes CPU tensors (and CUDA ones through NCCL), and all of an "
            f"operation's on one device, not {sorted(kinds)}"
        )

    def _cuda_backend(self) -> Any:
        if self._cuda is None:
            try:
                config = str(dist.get_backend_config(self))
            except Exception:  # noqa: BLE001 - not registered yet: no pairing known
                config = ""
            if "cuda:nccl" not in config:
                raise RuntimeError(
                    "the cohort backend takes CPU tensors; for CUDA tensors pair it with "
                    'NCCL: dist.init_process_group(backend="cpu:cohort,cuda:nccl")'
                )
            options = dist.ProcessGroupNCCL.Options()
            if self._timeout is not None:
                options._timeout = self._timeout
            self._cuda = dist.ProcessGroupNCCL(
                dist.PrefixStore("cohort-cuda/", self._store), self.rank(), self.size(), options
            )
        return self._cuda

    def _delegate(self, name: str, *args: Any) -> Any:
        return getattr(self._cuda_backend(), name)(*args)

    def _allreduce_each(self, tensors: List[torch.Tensor], op: str) -> None:
        for tensor in tensors:
            kind = _dtype(tensor)
            with _Contiguous(tensor) as flat:
                self._comm.allreduce(flat.data_ptr(), flat.numel(), kind, op)

    def allreduce(self, tensors: List[torch.Tensor], opts: Any) -> Any:
        if self._on_cuda(tensors):
            return self._delegate("allreduce", tensors, opts)
        self._allreduce_each(tensors, _op_name(opts.reduceOp))
        return _done(tensors)

    def allreduce_coalesced(self, tensors: List[torch.Tensor], opts: Any) -> Any:
        if self._on_cuda(tensors):
            return self._delegate("allreduce_coalesced", tensors, opts)
        self._allreduce_each(tensors, _op_name(opts.reduceOp))
        return _done(tensors)

    def broadcast(self, tensors: List[torch.Tensor], opts: Any) -> Any:
        if self._on_cuda(tensors):
            return self._delegate("broadcast", tensors, opts)
        for tensor in tensors:
            with _Contiguous(tensor) as flat:
                raw = _bytes(flat)
                self._comm.broadcast(raw.data_ptr(), raw.numel(), "uint8", opts.rootRank)
        return _done(tensors)

    def reduce(self, tensors: List[torch.Tensor], opts: Any) -> Any:
        if self._on_cuda(tensors):
            return self._delegate("reduce", tensors, opts)
        op = _op_name(opts.reduceOp)
        for tensor in tensors:
            kind = _dtype(tensor)
            # Other ranks' buffers are the collective's scratch: leave the caller's intact.
            work = tensor if self.rank() == opts.rootRank else tensor.clone()
            with _Contiguous(work) as flat:
                self._comm.reduce(flat.data_ptr(), flat.numel(), kind, op, opts.rootRank)
        return _done(tensors)

    def _gather_flat(self, output: torch.Tensor, input: torch.Tensor) -> None:
        if output.numel() != input.numel() * self.size():
            raise ValueError(
                f"all_gather: the output has {output.numel()} elements, not "
                f"{self.size()} x {input.numel()}"
            )
        if output.dtype != input.dtype:
            raise ValueError(f"all_gather: output {output.dtype}, input {input.dtype}")
        send = input.contiguous()
        if _overlap(send, output):
            send = send.clone()  # an in-place gather: the input is a view of the output
        with _Contiguous(output) as flat:
            raw_send, raw_recv = _bytes(send), _bytes(flat)
            self._comm.allgather(raw_send.data_ptr(), raw_recv.data_ptr(), raw_send.numel(), "uint8")

    def allgather(
        self, output_tensors: List[List[torch.Tensor]], input_tensors: List[torch.Tensor], opts: Any
    ) -> Any:
        if self._on_cuda(output_tensors, input_tensors):
            return self._delegate("allgather", output_tensors, input_tensors, opts)
        for outputs, input in zip(output_tensors, input_tensors):
            if len(outputs) != self.size():
                raise ValueError(f"all_gather: {len(outputs)} output tensors for {self.size()} ranks")
            for out in outputs:
                if out.numel() != input.numel() or out.dtype != input.dtype:
                    raise ValueError(
                        f"all_gather: an output of {out.numel()} {out.dtype} elements for an "
                        f"input of {input.numel()} {input.dtype}"
                    )
            gathered = torch.empty((self.size() * input.numel(),), dtype=input.dtype)
            self._gather_flat(gathered, input)
            for rank, out in enumerate(outputs):
                out.copy_(gathered[rank * input.numel() : (rank + 1) * input.numel()].view_as(out))
        return _done(output_tensors)

    def _allgather_base(self, output: torch.Tensor, input: torch.Tensor, opts: Any) -> Any:
        if self._on_cuda(output, input):
            return self._delegate("_allgather_base", output, input, opts)
        self._gather_flat(output, input)
        return _done([output])

    # Newer PyTorch (2.13) hands all_gather_into_tensor to the group as all_gather_single.
    all_gather_single = _allgather_base

    def allgather_into_tensor_coalesced(
        self, outputs: List[torch.Tensor], inputs: List[torch.Tensor], opts: Any
    ) -> Any:
        if self._on_cuda(outputs, inputs):
            return self._delegate("allgather_into_tensor_coalesced", outputs, inputs, opts)
        for output, input in zip(outputs, inputs):
            self._gather_flat(output, input)
        return _done(outputs)

    all_gather_single_coalesced = allgather_into_tensor_coalesced

    def _scatter_flat(self, output: torch.Tensor, input: torch.Tensor, op: str) -> None:
        if input.numel() != output.numel() * self.size():
            raise ValueError(
                f"reduce_scatter: the input has {input.numel()} elements, not "
                f"{self.size()} x {output.numel()}"
            )
        if output.dtype != input.dtype:
            raise ValueError(f"reduce_scatter: output {output.dtype}, input {input.dtype}")
        kind = _dtype(output)
        send = input.contiguous()
        if _overlap(send, output):
            send = send.clone()
        with _Contiguous(output) as flat:
            self._comm.reduce_scatter(send.data_ptr(), flat.data_ptr(), flat.numel(), kind, op)

    def reduce_scatter(
        self, output_tensors: List[torch.Tensor], input_tensors: List[List[torch.Tensor]], opts: Any
    ) -> Any:
        if self._on_cuda(output_tensors, input_tensors):
            return self._delegate("reduce_scatter", output_tensors, input_tensors, opts)
        op = _op_name(opts.reduceOp)
        for output, inputs in zip(output_tensors, input_tensors):
            if len(inputs) != self.size():
                raise ValueError(f"reduce_scatter: {len(inputs)} input tensors for {self.size()} ranks")
            for block in inputs:
                if block.numel() != output.numel() or block.dtype != output.dtype:
                    raise ValueError(
                        f"reduce_scatter: an input of {block.numel()} {block.dtype} elements for "
                        f"an output of {output.numel()} {output.dtype}"
                    )
            self._scatter_flat(output, torch.cat([t.reshape(-1) for t in inputs]), op)
        return _done(output_tensors)

    def _reduce_scatter_base(self, output: torch.Tensor, input: torch.Tensor, opts: Any) -> Any:
        if self._on_cuda(output, input):
            return self._delegate("_reduce_scatter_base", output, input, opts)
        self._scatter_flat(output, input, _op_name(opts.reduceOp))
        return _done([output])

    # Newer PyTorch (2.13) hands reduce_scatter_tensor to the group as reduce_scatter_single.
    reduce_scatter_single = _reduce_scatter_base

    def reduce_scatter_tensor_coalesced(
        self, outputs: List[torch.Tensor], inputs: List[torch.Tensor], opts: Any
    ) -> Any:
        if self._on_cuda(outputs, inputs):
            return self._delegate("reduce_scatter_tensor_coalesced", outputs, inputs, opts)
        op = _op_name(opts.reduceOp)
        for output, input in zip(outputs, inputs):
            self._scatter_flat(output, input, op)
        return _done(outputs)

    reduce_scatter_single_coalesced = reduce_scatter_tensor_coalesced

    def barrier(self, opts: Any = None) -> Any:
        self._comm.barrier()
        return _done([])

    def abort(self) -> None:
        """Makes every pending and later operation of the job's communicator fail."""
        self._comm.abort()

    def shutdown(self) -> None:
        """Nothing to release: the communicator stays connected for groups made later, until
        the process exits."""


def _refuse(name: str) -> Callable[..., Any]:
    def refuse(self: ProcessGroupCohort, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"the cohort backend has no {name}; use gloo (or nccl on GPUs) for it")

    refuse.__name__ = name
    return refuse


for _name in (
    "send",
    "recv",
    "recv_anysource",
    "gather",
    "scatter",
    "alltoall",
    "alltoall_base",
    "all_to_all_single",
):
    setattr(ProcessGroupCohort, _name, _refuse(_name))


def _create(store: Any, rank: int, size: int, timeout: Optional[timedelta]) -> ProcessGroupCohort:
    return ProcessGroupCohort(store, rank, size, timeout)


if BACKEND.upper() not in dist.Backend._plugins:
    dist.Backend.register_backend(BACKEND, _create, devices=["cpu"])
