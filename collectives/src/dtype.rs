//! Element types and reductions. The loops are plain iterator zips the compiler vectorises;
//! f16 and bf16 are reduced in f32 and rounded once per step.

use half::{bf16, f16};

/// Element types a collective can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// Byte.
    U8,
}

impl DataType {
    /// Every type, for tests and benchmarks.
    pub const ALL: [DataType; 7] = [
        DataType::F32,
        DataType::F64,
        DataType::F16,
        DataType::Bf16,
        DataType::I32,
        DataType::I64,
        DataType::U8,
    ];

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DataType::F32 | DataType::I32 => 4,
            DataType::F64 | DataType::I64 => 8,
            DataType::F16 | DataType::Bf16 => 2,
            DataType::U8 => 1,
        }
    }

    /// The name nccl-tests uses.
    pub fn name(self) -> &'static str {
        match self {
            DataType::F32 => "float",
            DataType::F64 => "double",
            DataType::F16 => "half",
            DataType::Bf16 => "bfloat16",
            DataType::I32 => "int32",
            DataType::I64 => "int64",
            DataType::U8 => "uint8",
        }
    }

    /// Parses a name (`float`, `f32`, `half`, ...).
    pub fn parse(name: &str) -> Option<DataType> {
        Some(match name {
            "float" | "f32" | "float32" => DataType::F32,
            "double" | "f64" | "float64" => DataType::F64,
            "half" | "f16" | "float16" => DataType::F16,
            "bfloat16" | "bf16" => DataType::Bf16,
            "int32" | "i32" | "int" => DataType::I32,
            "int64" | "i64" => DataType::I64,
            "uint8" | "u8" | "byte" => DataType::U8,
            _ => return None,
        })
    }
}

/// Reductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Product.
    Prod,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Sum divided by the number of ranks (integer types divide with truncation).
    Avg,
}

impl ReduceOp {
    /// Every reduction.
    pub const ALL: [ReduceOp; 5] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::Avg,
    ];

    /// The name nccl-tests uses.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Avg => "avg",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<ReduceOp> {
        ReduceOp::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// A type collectives can carry. Sealed: implemented for the seven [`DataType`]s.
pub trait Element: bytemuck::Pod + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// Its runtime type tag.
    const TYPE: DataType;
    /// Combines `src` into `dst` element by element (`Avg` sums; the division is separate).
    fn reduce_into(dst: &mut [Self], src: &[Self], op: ReduceOp);
    /// Divides every element by `n` (the last step of `Avg`).
    fn divide(values: &mut [Self], n: usize);
    /// A test value for rank `rank` and position `i`, small enough that sums and products of
    /// eight ranks stay exact in every type.
    fn test_value(rank: usize, i: usize) -> Self;
}

macro_rules! float_like {
    ($t:ty, $tag:expr, $to:expr, $from:expr) => {
        impl Element for $t {
            const TYPE: DataType = $tag;
            fn reduce_into(dst: &mut [Self], src: &[Self], op: ReduceOp) {
                let to = $to;
                let from = $from;
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = from(to(*d) + to(*s));
                        }
                    }
                    ReduceOp::Prod => {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = from(to(*d) * to(*s));
                        }
                    }
                    ReduceOp::Min => {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = from(to(*d).min(to(*s)));
                        }
                    }
                    ReduceOp::Max => {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = from(to(*d).max(to(*s)));
                        }
                    }
                }
            }
            fn divide(values: &mut [Self], n: usize) {
                let to = $to;
                let from = $from;
                #[allow(clippy::cast_precision_loss)]
                let n = n as f64;
                // The quotient is rounded once to the element type, on purpose.
                #[allow(clippy::cast_possible_truncation)]
                for v in values {
                    *v = from((f64::from(to(*v)) / n) as _);
                }
            }
            fn test_value(rank: usize, i: usize) -> Self {
                // Signed powers of two: sums and products of up to eight of them are exact
                // in every float type, so any reduction order gives the same bits.
                const VALUES: [f32; 4] = [-1.0, 0.5, 1.0, 2.0];
                let from = $from;
                from(VALUES[(rank * 7 + i * 3) % 4] as _)
            }
        }
    };
}

float_like!(f32, DataType::F32, |v: f32| v, |v: f32| v);
float_like!(f64, DataType::F64, |v: f64| v, |v: f64| v);
float_like!(f16, DataType::F16, f16::to_f32, f16::from_f32);
float_like!(bf16, DataType::Bf16, bf16::to_f32, bf16::from_f32);

macro_rules! int_like {
    ($t:ty, $tag:expr) => {
        impl Element for $t {
            const TYPE: DataType = $tag;
            fn reduce_into(dst: &mut [Self], src: &[Self], op: ReduceOp) {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = d.wrapping_add(*s);
                        }
                    }
                    ReduceOp::Prod => {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = d.wrapping_mul(*s);
                        }
                    }
                    ReduceOp::Min => {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = (*d).min(*s);
                        }
                    }
                    ReduceOp::Max => {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = (*d).max(*s);
                        }
                    }
                }
            }
            fn divide(values: &mut [Self], n: usize) {
                let n = <$t>::try_from(n).unwrap_or(<$t>::MAX);
                for v in values {
                    *v /= n;
                }
            }
            fn test_value(rank: usize, i: usize) -> Self {
                <$t>::try_from((rank * 7 + i * 3) % 3 + 1).unwrap_or(1)
            }
        }
    };
}

int_like!(i32, DataType::I32);
int_like!(i64, DataType::I64);
int_like!(u8, DataType::U8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_combine_elementwise() {
        let mut a = [1.0f32, 5.0, -2.0];
        f32::reduce_into(&mut a, &[2.0, 3.0, 4.0], ReduceOp::Max);
        assert_eq!(a, [2.0, 5.0, 4.0]);
        let mut b = [3i64, 4];
        i64::reduce_into(&mut b, &[5, 6], ReduceOp::Prod);
        assert_eq!(b, [15, 24]);
        let mut c = [f16::from_f32(1.5)];
        f16::reduce_into(&mut c, &[f16::from_f32(2.0)], ReduceOp::Sum);
        assert_eq!(c[0].to_f32(), 3.5);
        let mut d = [10u8, 7];
        u8::divide(&mut d, 2);
        assert_eq!(d, [5, 3]);
        for t in DataType::ALL {
            assert_eq!(DataType::parse(t.name()), Some(t));
        }
    }
}
