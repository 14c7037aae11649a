//! Benchmarks of the collectives in nccl-tests' conventions: sizes from `-b` to `-e` by factor
//! `-f`, `-w` warm-up and `-n` timed iterations per size, time per operation (the slowest
//! rank's), algorithm and bus bandwidth, and a correctness check of every size.

use std::time::Instant;

use crate::dtype::{DataType, Element, ReduceOp};
use crate::error::CommError;
use crate::{bf16, f16, Communicator};

/// Which operation to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchOp {
    /// Allreduce.
    Allreduce,
    /// Broadcast from rank 0.
    Broadcast,
    /// Allgather (size is the gathered total).
    Allgather,
    /// Reduce-scatter (size is the total sent by each rank).
    ReduceScatter,
}

impl BenchOp {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            BenchOp::Allreduce => "allreduce",
            BenchOp::Broadcast => "broadcast",
            BenchOp::Allgather => "allgather",
            BenchOp::ReduceScatter => "reduce_scatter",
        }
    }

    /// Bus bandwidth over algorithm bandwidth, as nccl-tests defines it.
    pub fn bus_factor(self, ranks: u32) -> f64 {
        let n = f64::from(ranks.max(1));
        match self {
            BenchOp::Allreduce => 2.0 * (n - 1.0) / n,
            BenchOp::Broadcast => 1.0,
            BenchOp::Allgather | BenchOp::ReduceScatter => (n - 1.0) / n,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Operation.
    pub op: BenchOp,
    /// Element type.
    pub dtype: DataType,
    /// Reduction.
    pub redop: ReduceOp,
    /// Message sizes in bytes.
    pub sizes: Vec<usize>,
    /// Timed iterations per size.
    pub iters: u32,
    /// Untimed warm-up iterations per size.
    pub warmup: u32,
    /// Whether to check results.
    pub check: bool,
}

/// One line of results.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// Bytes.
    pub size: usize,
    /// Elements.
    pub count: usize,
    /// Microseconds per operation (slowest rank).
    pub time_us: f64,
    /// Algorithm bandwidth, GB/s.
    pub algbw: f64,
    /// Bus bandwidth, GB/s.
    pub busbw: f64,
    /// Wrong elements found by the check, summed over ranks.
    pub wrong: u64,
}

/// Sizes from `begin` to `end` (bytes), multiplying by `factor`.
pub fn sizes(begin: usize, end: usize, factor: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut size = begin.max(1);
    while size <= end {
        sizes.push(size);
        let next = size.saturating_mul(factor.max(2));
        if next == size {
            break;
        }
        size = next;
    }
    sizes
}

/// Runs the benchmark on this rank; every rank gets the same rows.
pub fn run(comm: &Communicator, config: &BenchConfig) -> Result<Vec<BenchRow>, CommError> {
    match config.dtype {
        DataType::F32 => run_typed::<f32>(comm, config),
        DataType::F64 => run_typed::<f64>(comm, config),
        DataType::F16 => run_typed::<f16>(comm, config),
        DataType::Bf16 => run_typed::<bf16>(comm, config),
        DataType::I32 => run_typed::<i32>(comm, config),
        DataType::I64 => run_typed::<i64>(comm, config),
        DataType::U8 => run_typed::<u8>(comm, config),
    }
}

fn run_typed<T: Element>(
    comm: &Communicator,
    config: &BenchConfig,
) -> Result<Vec<BenchRow>, CommError> {
    let n = comm.size() as usize;
    let rank = comm.rank() as usize;
    let unit = std::mem::size_of::<T>();
    let mut rows = Vec::new();
    for &size in &config.sizes {
        // Allgather and reduce-scatter need a count divisible by the world size.
        let count = match config.op {
            BenchOp::Allgather | BenchOp::ReduceScatter => size / unit / n * n,
            _ => size / unit,
        };
        let bytes = count * unit;
        let fill = |r: usize| -> Vec<T> { (0..count).map(|i| T::test_value(r, i)).collect() };
        let mut data = fill(rank);
        let mut out = vec![T::zeroed(); count / n.max(1)];
        let mut gathered = vec![T::zeroed(); count];
        let once =
            |data: &mut Vec<T>, out: &mut [T], gathered: &mut [T]| -> Result<(), CommError> {
                match config.op {
                    BenchOp::Allreduce => comm.allreduce(data, config.redop),
                    BenchOp::Broadcast => comm.broadcast(data, 0),
                    BenchOp::Allgather => comm.allgather(&data[..count / n], gathered),
                    BenchOp::ReduceScatter => comm.reduce_scatter(data, out, config.redop),
                }
            };
        let mut wrong = 0u64;
        if config.check {
            once(&mut data, &mut out, &mut gathered)?;
            wrong = count_wrong(config, n, rank, count, &data, &out, &gathered);
            data = fill(rank);
        }
        for _ in 0..config.warmup {
            once(&mut data, &mut out, &mut gathered)?;
        }
        comm.barrier()?;
        let start = Instant::now();
        for _ in 0..config.iters {
            once(&mut data, &mut out, &mut gathered)?;
        }
        let mut seconds = [start.elapsed().as_secs_f64() / f64::from(config.iters.max(1))];
        comm.allreduce(&mut seconds, ReduceOp::Max)?;
        let mut wrong_total = [i64::try_from(wrong).unwrap_or(i64::MAX)];
        comm.allreduce(&mut wrong_total, ReduceOp::Sum)?;
        #[allow(clippy::cast_precision_loss)]
        let algbw = if seconds[0] > 0.0 {
            bytes as f64 / seconds[0] / 1e9
        } else {
            0.0
        };
        rows.push(BenchRow {
            size: bytes,
            count,
            time_us: seconds[0] * 1e6,
            algbw,
            busbw: algbw * config.op.bus_factor(comm.size()),
            wrong: u64::try_from(wrong_total[0]).unwrap_or(0),
        });
    }
    Ok(rows)
}

fn count_wrong<T: Element>(
    config: &BenchConfig,
    n: usize,
    rank: usize,
    count: usize,
    data: &[T],
    out: &[T],
    gathered: &[T],
) -> u64 {
    let fill = |r: usize| -> Vec<T> { (0..count).map(|i| T::test_value(r, i)).collect() };
    let reduced = || {
        let mut acc = fill(0);
        for r in 1..n {
            T::reduce_into(&mut acc, &fill(r), config.redop);
        }
        if config.redop == ReduceOp::Avg {
            T::divide(&mut acc, n);
        }
        acc
    };
    let diff = |got: &[T], want: &[T]| -> u64 {
        got.iter().zip(want).filter(|(a, b)| a != b).count() as u64
            + got.len().abs_diff(want.len()) as u64
    };
    match config.op {
        BenchOp::Allreduce => diff(data, &reduced()),
        BenchOp::Broadcast => diff(data, &fill(0)),
        BenchOp::Allgather => {
            let block = count / n;
            let want: Vec<T> = (0..n).flat_map(|r| fill(r)[..block].to_vec()).collect();
            diff(gathered, &want)
        }
        BenchOp::ReduceScatter => {
            let block = count / n;
            diff(out, &reduced()[rank * block..(rank + 1) * block])
        }
    }
}
