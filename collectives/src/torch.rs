//! libtorch (tch) integration: collectives on tensors, and a gradient synchroniser for
//! data-parallel training.
//!
//! This module wraps libtorch and is the crate's second place with unsafe code: an in-place
//! view of a contiguous CPU tensor's memory as a slice, so allreduce and broadcast of CPU
//! tensors cost no extra copies. Every libtorch call goes through tch's fallible `f_*` API, so
//! a libtorch error becomes a `TensorError`, never a panic. CUDA tensors are staged through
//! host memory (GPUDirect is not used yet).

#![allow(unsafe_code)]

use tch::{Device, Kind, Tensor};

use crate::dtype::{DataType, ReduceOp};
use crate::error::CommError;
use crate::{bf16, f16, Communicator, Element, Handle};

/// Why a tensor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// The tensor's element type has no collective (complex, bool, ...).
    #[error("tensors of kind {0:?} are not supported (use f32, f64, f16, bf16, i32, i64 or u8)")]
    UnsupportedKind(Kind),
    /// libtorch refused an operation.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The collective failed.
    #[error(transparent)]
    Comm(#[from] CommError),
    /// Gradients changed shape or kind between steps.
    #[error("gradient synchroniser: {0}")]
    Layout(String),
}

/// Calls the generic function `$f::<T>($args)` with `T` the Rust type of a tensor kind.
macro_rules! dispatch {
    ($kind:expr, $f:ident($($arg:expr),*)) => {
        match $kind {
            Kind::Float => $f::<f32>($($arg),*),
            Kind::Double => $f::<f64>($($arg),*),
            Kind::Half => $f::<f16>($($arg),*),
            Kind::BFloat16 => $f::<bf16>($($arg),*),
            Kind::Int => $f::<i32>($($arg),*),
            Kind::Int64 => $f::<i64>($($arg),*),
            Kind::Uint8 => $f::<u8>($($arg),*),
            other => Err(TensorError::UnsupportedKind(other)),
        }
    };
}

fn allreduce_cpu<T: Element>(
    comm: &Communicator,
    tensor: &mut Tensor,
    op: ReduceOp,
) -> Result<(), TensorError> {
    with_cpu_slice::<T, _>(tensor, |data| comm.allreduce(data, op))??;
    Ok(())
}

fn broadcast_cpu<T: Element>(
    comm: &Communicator,
    tensor: &mut Tensor,
    root: u32,
) -> Result<(), TensorError> {
    with_cpu_slice::<T, _>(tensor, |data| comm.broadcast(data, root))??;
    Ok(())
}

/// The libtorch kind of an element type. (Not tch's `Element::KIND`: tch 0.26 gives bf16 the
/// kind `Half`.)
fn kind_of(dtype: DataType) -> Kind {
    match dtype {
        DataType::F32 => Kind::Float,
        DataType::F64 => Kind::Double,
        DataType::F16 => Kind::Half,
        DataType::Bf16 => Kind::BFloat16,
        DataType::I32 => Kind::Int,
        DataType::I64 => Kind::Int64,
        DataType::U8 => Kind::Uint8,
    }
}

/// Runs `f` on the memory of a contiguous CPU tensor of element type `T`.
fn with_cpu_slice<T: Element, R>(
    tensor: &mut Tensor,
    f: impl FnOnce(&mut [T]) -> R,
) -> Result<R, TensorError> {
    let kind = tensor.f_kind()?;
    let expected = kind_of(T::TYPE);
    if kind != expected || tensor.device() != Device::Cpu || !tensor.is_contiguous() {
        return Err(TensorError::Layout(format!(
            "internal: slice view of a {kind:?} tensor on {:?} (contiguous: {}) as {:?}",
            tensor.device(),
            tensor.is_contiguous(),
            expected
        )));
    }
    let len = tensor.numel();
    if len == 0 {
        return Ok(f(&mut []));
    }
    let ptr = tensor.data_ptr().cast::<T>();
    // SAFETY: the tensor is a contiguous CPU tensor whose element kind is T's (checked above),
    // so its storage holds `numel` properly aligned, initialised values of T starting at
    // `data_ptr`. The `&mut Tensor` borrow keeps the storage alive and unaliased by this
    // caller for the duration of `f`; libtorch does not touch it concurrently because this
    // thread is the one that would call into libtorch.
    let slice = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    Ok(f(slice))
}

/// Runs an in-place collective on a tensor: directly on a contiguous CPU tensor, otherwise on
/// a contiguous CPU copy that is copied back.
fn in_place(
    tensor: &mut Tensor,
    run: &dyn Fn(&mut Tensor) -> Result<(), TensorError>,
) -> Result<(), TensorError> {
    if tensor.device() == Device::Cpu && tensor.is_contiguous() {
        return run(tensor);
    }
    let mut staged = tensor.f_to_device(Device::Cpu)?.f_contiguous()?;
    run(&mut staged)?;
    tensor.f_copy_(&staged)?;
    Ok(())
}

impl Communicator {
    /// Allreduces a tensor in place (any device; CUDA tensors are staged through host memory).
    pub fn allreduce_tensor(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<(), TensorError> {
        let kind = tensor.f_kind()?;
        in_place(tensor, &|t| dispatch!(kind, allreduce_cpu(self, t, op)))
    }

    /// Copies rank `root`'s tensor into every rank's tensor (same shape and kind).
    pub fn broadcast_tensor(&self, tensor: &mut Tensor, root: u32) -> Result<(), TensorError> {
        let kind = tensor.f_kind()?;
        in_place(tensor, &|t| dispatch!(kind, broadcast_cpu(self, t, root)))
    }
}

/// One bucket of fused gradients in flight.
enum Pending {
    F32(Handle<Vec<f32>>),
    F64(Handle<Vec<f64>>),
}

/// Averages gradients across ranks after each backward pass, as Horovod's tensor fusion does:
/// gradients are packed, in reverse order of the parameters (the order backward produces
/// them), into buckets of about `bucket_bytes`, and each bucket's allreduce starts as soon as
/// it is packed, so communication overlaps the packing of the next buckets and the unpacking
/// of earlier ones. (tch exposes no per-gradient hooks, so the allreduces start after
/// `backward()` returns rather than during it.)
#[derive(Debug)]
pub struct GradSync {
    bucket_bytes: usize,
}

impl GradSync {
    /// A synchroniser with buckets of about `bucket_bytes` (25 MiB is a good default).
    pub fn new(bucket_bytes: usize) -> GradSync {
        GradSync {
            bucket_bytes: bucket_bytes.max(1),
        }
    }

    /// Replaces each parameter's gradient with its average over all ranks. Parameters
    /// without a gradient are skipped (identically on every rank, since every rank runs the
    /// same model). Supports f32 and f64 parameters.
    pub fn sync(&self, comm: &Communicator, params: &[Tensor]) -> Result<(), TensorError> {
        let grads: Vec<Tensor> = params
            .iter()
            .rev()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        // Group consecutive gradients of one kind into buckets.
        let mut buckets: Vec<Vec<usize>> = Vec::new();
        let mut bytes = 0usize;
        for (index, grad) in grads.iter().enumerate() {
            let size = grad.numel() * grad.f_kind()?.elt_size_in_bytes();
            let same_kind = buckets
                .last()
                .and_then(|b| b.first())
                .is_some_and(|&first| grads[first].kind() == grad.kind());
            if buckets.is_empty() || bytes + size > self.bucket_bytes || !same_kind {
                buckets.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(bucket) = buckets.last_mut() {
                bucket.push(index);
            }
        }
        let mut in_flight = Vec::with_capacity(buckets.len());
        for bucket in &buckets {
            let flat: Vec<Tensor> = bucket
                .iter()
                .map(|&i| grads[i].f_to_device(Device::Cpu)?.f_reshape([-1]))
                .collect::<Result<_, _>>()?;
            let packed = Tensor::f_cat(&flat, 0)?;
            let numel = packed.numel();
            let pending = match packed.f_kind()? {
                Kind::Float => {
                    let mut data = vec![0f32; numel];
                    packed.f_copy_data(&mut data, numel)?;
                    Pending::F32(comm.allreduce_async(data, ReduceOp::Avg))
                }
                Kind::Double => {
                    let mut data = vec![0f64; numel];
                    packed.f_copy_data(&mut data, numel)?;
                    Pending::F64(comm.allreduce_async(data, ReduceOp::Avg))
                }
                other => return Err(TensorError::UnsupportedKind(other)),
            };
            in_flight.push(pending);
        }
        for (bucket, pending) in buckets.iter().zip(in_flight) {
            let averaged = match pending {
                Pending::F32(handle) => Tensor::f_from_slice(&handle.wait()?)?,
                Pending::F64(handle) => Tensor::f_from_slice(&handle.wait()?)?,
            };
            let sizes: Vec<i64> = bucket
                .iter()
                .map(|&i| i64::try_from(grads[i].numel()).unwrap_or(i64::MAX))
                .collect();
            let pieces = averaged.f_split_with_sizes(sizes.as_slice(), 0)?;
            for (&i, piece) in bucket.iter().zip(pieces) {
                let mut grad = grads[i].shallow_clone();
                let shaped = piece.f_reshape(grad.size())?;
                tch::no_grad(|| grad.f_copy_(&shaped))?;
            }
        }
        Ok(())
    }
}

/// The default bucket size of [`GradSync`].
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;
