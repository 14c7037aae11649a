//! A tensor's memory as a typed slice, for the collectives.
//!
//! `cohort._native.Communicator`'s operations take memory as a data pointer, an element count
//! and a dtype name. Their caller (`cohort/torch.py`; the module is private) passes a
//! contiguous CPU tensor and holds a reference to it for the call, so its storage cannot be
//! freed; as with every torch backend, another thread that resizes or writes the tensor
//! during the collective races with it. Anything but a live tensor's pointer corrupts memory.
//! This is the package's one place with unsafe code: it trusts that contract, after checking
//! what can be checked (a known dtype, a non-null, aligned pointer, a size that fits the
//! address space).

#![allow(unsafe_code)]

use cohort_collectives::{bf16, f16};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::PyResult;

/// Where a tensor's elements are: a pointer, a count and a dtype name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory<'a> {
    pub(crate) ptr: usize,
    pub(crate) count: usize,
    pub(crate) dtype: &'a str,
}

/// A tensor's elements as a slice of their Rust type.
#[derive(Debug)]
pub(crate) enum Slice<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
    F16(&'a mut [f16]),
    Bf16(&'a mut [bf16]),
    I32(&'a mut [i32]),
    I64(&'a mut [i64]),
    U8(&'a mut [u8]),
}

fn raw<'a, T>(memory: Memory<'_>) -> PyResult<&'a mut [T]> {
    if memory.count == 0 {
        return Ok(&mut []);
    }
    if memory.ptr == 0 || memory.ptr % std::mem::align_of::<T>() != 0 {
        return Err(PyValueError::new_err(format!(
            "tensor memory at {:#x} is null or not aligned for {}",
            memory.ptr, memory.dtype
        )));
    }
    let fits = memory
        .count
        .checked_mul(std::mem::size_of::<T>())
        .is_some_and(|b| isize::try_from(b).is_ok() && memory.ptr.checked_add(b).is_some());
    if !fits {
        return Err(PyValueError::new_err(
            "tensor larger than the address space",
        ));
    }
    // SAFETY: by the module's contract the caller passes the data pointer and element count
    // of a live, contiguous CPU tensor of this dtype and holds a reference to it until the
    // call returns, so the memory stays allocated for the slice's lifetime (the call); the
    // pointer is non-null and aligned and the size fits (checked above). Overlap with another
    // slice of the same call is refused by `disjoint` before both are made.
    Ok(unsafe { std::slice::from_raw_parts_mut(memory.ptr as *mut T, memory.count) })
}

/// The elements at `memory`, typed by its dtype name (`float32`, `bfloat16`, ...).
pub(crate) fn view<'a>(memory: Memory<'_>) -> PyResult<Slice<'a>> {
    Ok(match memory.dtype {
        "float32" => Slice::F32(raw(memory)?),
        "float64" => Slice::F64(raw(memory)?),
        "float16" => Slice::F16(raw(memory)?),
        "bfloat16" => Slice::Bf16(raw(memory)?),
        "int32" => Slice::I32(raw(memory)?),
        "int64" => Slice::I64(raw(memory)?),
        "uint8" => Slice::U8(raw(memory)?),
        other => {
            return Err(PyTypeError::new_err(format!(
                "tensors of dtype {other} have no collectives (use float32, float64, float16, bfloat16, int32, int64 or uint8)"
            )))
        }
    })
}

/// Refuses two tensors whose memory overlaps (one read while the other is written).
pub(crate) fn disjoint(a: Memory<'_>, a_size: usize, b: Memory<'_>, b_size: usize) -> PyResult<()> {
    let a_end = a.ptr.saturating_add(a.count.saturating_mul(a_size));
    let b_end = b.ptr.saturating_add(b.count.saturating_mul(b_size));
    if a.count > 0 && b.count > 0 && a.ptr < b_end && b.ptr < a_end {
        return Err(PyValueError::new_err(
            "the input and output tensors overlap; pass a copy of the input",
        ));
    }
    Ok(())
}

/// Bytes per element of a dtype name (0 for an unknown one, which `view` refuses).
pub(crate) fn element_size(dtype: &str) -> usize {
    match dtype {
        "float64" | "int64" => 8,
        "float32" | "int32" => 4,
        "float16" | "bfloat16" => 2,
        "uint8" => 1,
        _ => 0,
    }
}
